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
