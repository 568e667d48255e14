"""The report as Markdown and self-contained HTML, and the report stage's core
(:func:`write_report`): the notebook's "Final Results" table with our figures,
its conclusions checked against them, and the plots to see why.

Writes ``report.md`` (figures beside it in ``figures/``), ``report.html``
(images embedded), ``results.csv`` and ``curves.csv`` (per-epoch training
curves, for ``dvc plots``).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mnist_cnn.io import atomic_dir, write_json, write_text
from mnist_cnn.metrics import METRICS, PRIMARY
from mnist_cnn.params import Task
from mnist_cnn.report.collect import collect, difference, number, with_spread
from mnist_cnn.report.figures import FIGURES, ReportData
from mnist_cnn.report.findings import Finding, caveats, check_all, notebook_inside_runs

log = logging.getLogger(__name__)

# --- the results table --------------------------------------------------------


def _metric_columns(df: pd.DataFrame, spread: bool) -> list[tuple[str, Callable]]:
    """(header, cell of a row) for each metric (mnist_cnn.metrics): ours, the
    notebook's where it reported it, and for metrics compared with it the
    difference and whether its figure lies within our seeds' range."""
    columns = []
    for m in METRICS.values():
        k = m.key
        columns.append((f"test {m.label}", lambda r, k=k: with_spread(r[k], r[f"{k}_std"],
                                                                     spread)))
        if not df[f"nb_{k}"].notna().any():
            continue
        columns.append((f"notebook {m.label}", lambda r, k=k: number(r[f"nb_{k}"])))
        if m.versus_notebook:
            columns.append((f"Δ {m.label}", lambda r, k=k: difference(r[k], r[f"nb_{k}"])))
            if spread:
                what = "" if m is PRIMARY else f"{m.label} "
                columns.append((f"notebook in our {what}range",
                                lambda r, m=m: inside_text(notebook_inside_runs(r, m))))
    return columns


def inside_text(inside: bool | None) -> str:
    return "–" if inside is None else "yes" if inside else "no"


def results_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the notebook's "Final Results" table, with ours."""
    spread = bool((df["seeds"] > 1).any())
    metrics = _metric_columns(df, spread)
    header = ["task", "layers", "params", "epochs", "optimizer", *(h for h, _ in metrics),
              "s/epoch"]
    rows = []
    for task, r in df.iterrows():
        same = pd.isna(r.nb_params) or r.params == r.nb_params
        rows.append([task, r.layers,
                     f"{r.params:,}" + ("" if same else f" (notebook {int(r.nb_params):,})"),
                     str(r.epochs), r.optimizer, *(cell(r) for _, cell in metrics),
                     f"{r.s_per_epoch:.1f}"])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- the document ----------------------------------------------------------------


def intro(df: pd.DataFrame, seed: int) -> str:
    n = int(df["seeds"].max())
    runs = (f"one run per task (seed {seed})" if n == 1 else
            f"mean ± standard deviation over {n} seeds per task ({seed}, {seed + 1}, ...)")
    return (f"Trained on {int(df['train_images'].max()):,} images; {runs}. The notebook's "
            "figures are single runs; Δ is ours minus theirs. s/epoch is the median epoch "
            "time on the machine that ran the pipeline.")


def environment(df: pd.DataFrame) -> str:
    """The versions the models were trained with (as each task's config.json has them)."""
    envs = {tuple(sorted(e.items())) for e in df["environment"] if e}
    if not envs:
        return "Environment: not recorded."
    text = "; ".join(", ".join(f"{k} {v}" for k, v in env) for env in sorted(envs))
    return f"Environment: {text}" + (" (the tasks differ)" if len(envs) > 1 else "") + "."


def render_markdown(df: pd.DataFrame, found: list[Finding], seed: int) -> str:
    notes = [f"> **Read with care.** {note}" for note in caveats(df)]
    parts = ["# MNIST CNN study: results", "", intro(df, seed), "", *notes,
             *([""] if notes else []), environment(df), "", "## Final results", "",
             markdown_table(*results_table(df)), "", "## The notebook's conclusions, checked",
             ""]
    parts += [f"- **{f.claim}**: {f.verdict}. {f.text}" for f in found]
    parts += ["", "## Figures", ""]
    parts += [f"![{fig.caption}](figures/{name})\n" for name, fig in FIGURES.items()]
    return "\n".join(parts)


def render_html(df: pd.DataFrame, found: list[Finding], seed: int,
                images: dict[str, bytes]) -> str:
    items = "".join(f"<li><b>{html.escape(f.claim)}</b>: <i>{f.verdict}</i>. "
                    f"{html.escape(f.text)}</li>" for f in found)
    figs = "".join(
        f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(images[name]).decode()}"><figcaption>{html.escape(fig.caption)}'
        "</figcaption></figure>" for name, fig in FIGURES.items())
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
             ".caveat{background:#fff4e5;border-left:4px solid #f0a030;padding:6px 10px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>MNIST CNN study: results</title><style>{style}</style></head><body>"
            f"<h1>MNIST CNN study: results</h1><p>{html.escape(intro(df, seed))}</p>"
            + "".join(f"<p class='caveat'><b>Read with care.</b> {html.escape(note)}</p>"
                      for note in caveats(df))
            + f"<p>{html.escape(environment(df))}</p>"
            f"<h2>Final results</h2>{html_table(*results_table(df))}"
            f"<h2>The notebook's conclusions, checked</h2><ul>{items}</ul>"
            f"<h2>Figures</h2>{figs}</body></html>")


def make_figures(df: pd.DataFrame, curve: pd.DataFrame, evals: Path,
                 data: Path) -> dict[str, bytes]:
    """Every registered figure (mnist_cnn.report.figures), as PNG bytes."""
    source = ReportData(df, curve, evals, data)
    return {name: fig.draw(source) for name, fig in FIGURES.items()}


def summary_metrics(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Every task's test metrics (mean over seeds; with several seeds their
    spread too), in one small file: the study's DVC metric, so `dvc exp show`
    columns read ``task1.acc``."""
    spread = bool((df["seeds"] > 1).any())
    out = {}
    for task, r in df.iterrows():
        out[task] = {m.short: r[m.key] for m in METRICS.values()}
        if spread:
            out[task].update({f"{m.short}_std": r[f"{m.key}_std"] for m in METRICS.values()})
    return out


def write_report(tasks: dict[str, Task], seeds: list[int], models: Path, evals: Path,
                 data: Path, out: Path, metrics: Path) -> pd.DataFrame:
    """Collect every task's results, check the notebook's conclusions, draw the
    figures and write the report folder ``out`` atomically; the study's
    summary metrics go to ``metrics``."""
    df, curve = collect(tasks, seeds, models, evals)
    found = check_all(df, curve)
    images = make_figures(df, curve, evals, data)
    with atomic_dir(out) as staging:
        (staging / "figures").mkdir()
        for name, png in images.items():
            (staging / "figures" / name).write_bytes(png)
        write_text(staging / "report.md", render_markdown(df, found, seeds[0]))
        write_text(staging / "report.html", render_html(df, found, seeds[0], images))
        df.drop(columns="environment").to_csv(staging / "results.csv")
        curve.to_csv(staging / "curves.csv", index=False)
    write_json(metrics, summary_metrics(df))
    log.info("wrote %s, %s and %s", out / "report.md", out / "report.html", metrics)
    return df
