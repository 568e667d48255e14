"""`dvc plots show` works without a network: .dvc/plots/offline.html.

DVC's own page (dvc_render) loads vega, vega-lite and vega-embed from a CDN,
through its scripts placeholder; offline it stays blank. The project's page
(built by .dvc/plots/build_template.py, named in .dvc/config) carries the three
libraries inline. These tests need no network and run no pipeline.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dvc_render import VegaRenderer, render_html

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ROOT / ".dvc" / "plots"
TEMPLATE = PLOTS / "offline.html"

# Every absolute URL the page may hold, and why none is ever fetched. A rebuild
# that brings a new one fails here until someone has looked at it.
KNOWN_URLS = {
    "http://www.w3.org/2000/svg": "SVG namespace name (vega)",
    "http://www.w3.org/1999/xlink": "XLink namespace name (vega)",
    "http://www.w3.org/2000/xmlns/": "XMLNS namespace name (vega)",
    "https://vega.github.io/schema/vega/v5.json": "$schema of compiled specs: an id, not loaded",
    "https://vega.github.io/schema/vega-lite/v5.json": "$schema of DVC's specs: an id, not loaded",
    "https://vega.github.io/editor/": "vega-embed's Open in Vega Editor menu entry, on click",
    "https://github.com/vega/vega-lite/issues/2415": "in a vega-lite warning message",
    "http://": "vega-embed tests whether its argument is a URL (startsWith)",
    "https://": "vega-embed tests whether its argument is a URL (startsWith)",
    "https://github.com/Starcounter-Jack/JSON-Patch": "fast-json-patch's licence comment",
    "https://github.com/scijs/integrate-adaptive-simpson": "a licence comment (vega)",
    "http://www.apache.org/licenses/LICENSE-2.0": "a licence text",
    "http://unlicense.org": "robust-predicates' licence text",
}
URL = re.compile(r"""https?://[^\s"'`<>()\\]*""")
NETWORK = re.compile(r"^\s*(https?:)?//", re.I)
# Attributes whose URL a browser fetches (or navigates to) without a click.
URL_ATTRIBUTES = {"src", "href", "srcset", "data", "poster", "background", "xlink:href"}
CSS_LOADS = re.compile(r"""@import\s+(url\()?\s*["']?\s*((https?:)?//[^"')\s]*)|"""
                       r"""url\(\s*["']?\s*((https?:)?//[^"')\s]*)""", re.I)
JS_LOADS = re.compile(r"""(\bimport\s*\(?|\bfrom|\bimportScripts\s*\()\s*["'`]((https?:)?//[^"'`]*)""")


class _Page(HTMLParser):
    """The URLs an HTML page makes the browser load, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[str] = []
        self.scripts: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        for name, value in attrs:
            if value is None:
                continue
            if name in URL_ATTRIBUTES and NETWORK.match(value.split(",")[0]):
                self.loads.append(f"<{tag} {name}={value}>")
            if name == "style":
                self.loads += [m.group(2) or m.group(4) for m in CSS_LOADS.finditer(value)]
            if tag == "meta" and name == "content" and re.search(r"url\s*=\s*(https?:)?//", value, re.I):
                self.loads.append(f"<meta content={value}>")
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "style":
            self.loads += [m.group(2) or m.group(4) for m in CSS_LOADS.finditer(data)]
        elif self._tag == "script":
            self.scripts[-1] += data
            self.loads += [m.group(2) for m in JS_LOADS.finditer(data)]


def network_loads(html: str) -> list[str]:
    page = _Page()
    page.feed(html)
    page.close()
    return page.loads


def unknown_urls(html: str) -> set[str]:
    return set(URL.findall(html)) - set(KNOWN_URLS)


def build_script():
    spec = importlib.util.spec_from_file_location("build_template", PLOTS / "build_template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def a_vega_plot() -> VegaRenderer:
    points = [{"epoch": 1, "loss": 2.0, "task": "task1", "rev": "workspace"},
              {"epoch": 2, "loss": 0.5, "task": "task1", "rev": "workspace"}]
    return VegaRenderer(points, "Training loss per epoch", template="linear", x="epoch", y="loss")


def test_the_checks_catch_dvcs_own_cdn_page(tmp_path):
    """The checks below would fail on DVC's default page (its CDN scripts)."""
    page = Path(render_html([a_vega_plot()], tmp_path / "index.html")).read_text()
    assert any("cdn.jsdelivr.net" in url for url in network_loads(page))
    assert any("cdn.jsdelivr.net" in url for url in unknown_urls(page))
    # ...and the loads a page can hide elsewhere than in <script src=...>.
    assert network_loads('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert network_loads("<style>@import url('https://cdn.example/x.css');</style>")
    assert network_loads('<div style="background: url(http://cdn.example/x.png)"></div>')
    assert network_loads('<script type="module">import v from "https://esm.sh/vega";</script>')
    assert network_loads('<meta http-equiv="refresh" content="0; url=https://example.org">')


def test_template_loads_nothing_from_the_network(template):
    assert network_loads(template) == []
    assert unknown_urls(template) == set()


def test_template_fits_dvcs_html_contract(template):
    # dvc_render.html.HTML: plots go where "{plot_divs}" is; its scripts
    # placeholder would bring DVC's CDN <script> tags back, so there is none.
    assert template.count("{plot_divs}") == 1
    assert "{scripts}" not in template
    assert "<script src" not in template.lower()


def test_template_holds_the_three_pinned_libraries_and_their_licences(template):
    pins = build_script().PINS
    assert set(pins) == {"vega", "vega-lite", "vega-embed"}
    parser = _Page()
    parser.feed(template)
    scripts = parser.scripts
    assert len(scripts) == 3
    for script, (library, version) in zip(scripts, pins.items(), strict=True):
        licences = script.split("*/", 1)[0]
        assert licences.lstrip().startswith(f"/*!\n{library}@{version}, ")
        assert f"\n{library} (BSD-3-Clause):\n" in licences or \
            re.search(rf"\n{library}, .*\(BSD-3-Clause\):\n", licences, re.S)
        assert "Redistribution and use in source and binary forms" in licences
        assert len(script) > 50_000  # the minified build itself
    # The UMD builds define the globals DVC's plot divs call.
    assert ".vega={}" in scripts[0] and ".vegaLite={}" in scripts[1]
    assert ".vegaEmbed=" in scripts[2]
    assert len(template.encode()) < 1_500_000


def test_dvc_page_with_the_template_loads_nothing_from_the_network(tmp_path):
    page = Path(render_html([a_vega_plot()], tmp_path / "index.html",
                            html_template=str(TEMPLATE))).read_text()
    assert network_loads(page) == []
    assert unknown_urls(page) == set()
    assert "vegaEmbed('#" in page
    assert "cdn.jsdelivr.net" not in page


def test_plain_dvc_plots_commands_use_the_template(monkeypatch):
    """What `dvc plots show` / `dvc plots diff` do with .dvc/config's setting."""
    from dvc.cli import parse_args

    monkeypatch.chdir(ROOT)
    for argv in (["plots", "show"], ["plots", "diff", "HEAD"]):
        args = parse_args(argv)
        command = args.func(args)
        try:
            assert Path(command._html_template_path()).resolve() == TEMPLATE
        finally:
            command.repo.close()


def test_dvc_plots_show_writes_an_offline_page(tmp_path):
    """`dvc plots show` in a fresh repository with this project's .dvc/config."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    env = {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    (repo / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text())
    (repo / ".dvc" / "plots").mkdir()
    (repo / ".dvc" / "plots" / "offline.html").write_text(TEMPLATE.read_text())
    (repo / "curves.json").write_text(json.dumps([{"epoch": 1, "loss": 2.0},
                                                   {"epoch": 2, "loss": 0.5}]))
    subprocess.run([*dvc, "plots", "show", "curves.json", "-x", "epoch", "-y", "loss"],
                   cwd=repo, env=env, check=True, capture_output=True)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed('#" in page and f"vega@{build_script().PINS['vega']}" in page
    assert network_loads(page) == []
    assert unknown_urls(page) == set()


def test_loss_template_is_the_line_template_on_a_log_scale():
    lines = json.loads((PLOTS / "task_lines.json").read_text())
    log = json.loads((PLOTS / "task_lines_log.json").read_text())
    assert log["encoding"]["y"].pop("scale") == {"type": "log"}
    assert log["encoding"]["y"].pop("title") == "<DVC_METRIC_Y_LABEL> (log scale)"
    del lines["encoding"]["y"]["scale"], lines["encoding"]["y"]["title"]
    assert log == lines
