"""uv.lock: every package pinned with its hashes, and in step with pyproject.toml.

`uv lock --check --offline` (no network, well under a second) fails when
pyproject.toml's dependencies changed without `make lock`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"


def uv() -> str:
    """The uv that `make install` put beside the environment (.venv/bin/uv)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("uv", path=path)
    if found is None:
        pytest.fail("uv not found: `make install` puts it in .venv/bin")
    return found


def lock_check(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([uv(), "lock", "--check", "--offline"], cwd=project,
                          capture_output=True, text=True, timeout=60)


def test_lock_matches_pyproject():
    result = lock_check(ROOT)
    assert result.returncode == 0, (
        f"uv.lock is stale against pyproject.toml: run `make lock` and commit uv.lock\n"
        f"{result.stderr}")


def pin_moved(text: str) -> str:
    first = tomllib.loads(text)["project"]["dependencies"][0]   # e.g. "tensorflow-cpu==2.21.0"
    assert "==" in first
    return text.replace(f'"{first}"', f'"{first}.post99"', 1)


def dependency_added(text: str) -> str:
    return text.replace("dependencies = [", 'dependencies = [\n    "rich",', 1)


@pytest.mark.parametrize("edit", [pin_moved, dependency_added])
def test_stale_lock_is_caught(tmp_path, edit):
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(edit(text))
    assert pyproject.read_text() != text
    assert lock_check(tmp_path).returncode != 0
    assert (tmp_path / "uv.lock").read_bytes() == (ROOT / "uv.lock").read_bytes()


def test_every_package_pinned_with_hashes():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == "==3.11.*"
    assert lock["supported-markers"] == ["platform_machine == 'x86_64' and sys_platform == 'linux'"]
    problems = []
    for package in lock["package"]:
        if package["source"] == {"editable": "."}:  # this project
            continue
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        if package["source"] != {"registry": PYPI}:
            problems.append(f"{package['name']}: not from {PYPI}: {package['source']}")
        if not files or not all(f.get("hash", "").startswith("sha256:") for f in files):
            problems.append(f"{package['name']}: a file without a sha256 hash")
    assert not problems, "\n".join(problems)
    assert len(lock["package"]) > 200


def test_uv_version_is_one():
    makefile = (ROOT / "Makefile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    version = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, re.M).group(1)
    assert pyproject["tool"]["uv"]["required-version"] == f"=={version}"


# --- what the code imports is what pyproject.toml declares ----------------------------------

FIRST_PARTY = {"mnist_cnn", "stages", "flows", "tools", "tests", "benchmarks"}
# Not part of the environment, on purpose: installed by hand where they run.
BY_HAND = {"jax": "benchmarks/gpu_keras_jax.py, on a GPU machine (jax[cuda12])"}


def _imports(folders: list[str]) -> dict[str, str]:
    """Top-level names of the packages the code in ``folders`` imports: {name: a file}."""
    import ast

    found = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return {n: f for n, f in found.items()
            if n not in sys.stdlib_module_names and n not in FIRST_PARTY and n not in BY_HAND}


def _declared(*groups: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in groups:
        specs += project["optional-dependencies"][group]
    return {re.split(r"[=<>\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")
            for spec in specs}


@pytest.mark.parametrize(("folders", "groups"), [
    (["mnist_cnn", "stages", "flows", "tools", "benchmarks"], ()),
    (["tests"], ("dev",)),
], ids=["runtime", "tests"])
def test_every_package_imported_is_declared(folders, groups):
    """A package used directly must not arrive only because another one needs
    it today: an upgrade of that one could drop it."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    declared = _declared(*groups)
    missing = {}
    for name, where in _imports(folders).items():
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not owners & declared:
            missing[name] = f"{sorted(owners)} (imported by {where})"
    assert not missing, f"declare in pyproject.toml: {missing}"
