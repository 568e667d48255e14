"""Shared fixtures: the offline MNIST copy and throw-away copies of the project.

End-to-end tests run the real pipeline (real DVC, real Keras) inside a fresh
git repository holding a copy of this project, with a small subset of MNIST.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TASKS = ["task1", "task2", "task2_15_epochs", "task2_one_conv", "task2_three_conv", "task3",
         "task4_sgd", "task4_adam", "task2_maxpool"]

# Small enough for CI, large enough that the models see every class.
SMALL = {"train_size": 2000, "test_size": 500, "epochs": 1}


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    path = Path(os.environ.get("MNIST_NPZ") or ROOT.parent / "shared" / "data" / "mnist.npz")
    if not path.is_file():
        pytest.fail(f"MNIST not found at {path}: set MNIST_NPZ to a local mnist.npz")
    return path


def project_env(mnist: Path | None, home: Path) -> dict[str, str]:
    """Environment for commands run in a project copy: this venv's python
    first on PATH (dvc.yaml runs `python`), no analytics, no Keras cache."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["KERAS_HOME"] = str(home / "keras")
    env.pop("MNIST_NPZ", None)
    if mnist is not None:
        env["MNIST_NPZ"] = str(mnist)
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env[key] = "pipeline-tests"
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env[key] = "tests@example.invalid"
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def edit_params(project: Path, edit) -> None:
    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def shrink(data: dict, train_size=SMALL["train_size"], test_size=SMALL["test_size"],
           epochs=SMALL["epochs"]) -> None:
    data["data"]["train_size"] = train_size
    data["data"]["test_size"] = test_size
    for task in data["tasks"].values():
        task["epochs"] = epochs


class Project:
    """A copy of this project in its own git repository."""

    def __init__(self, path: Path, env: dict[str, str]):
        self.path, self.env = path, env

    def run(self, *cmd: str, check: bool = True):
        return run(list(cmd), self.path, self.env, check=check)

    def dvc(self, *args: str, check: bool = True):
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def edit_params(self, edit) -> None:
        edit_params(self.path, edit)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)


def make_project(dest: Path, mnist: Path | None, edit=shrink) -> Project:
    """Copy the project's files (tracked, and untracked ones outside data/ that
    git does not ignore) to ``dest``, apply ``edit`` to its params, and commit
    it in a new git repo."""
    def ls(*args):
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        return [f for f in out.split("\0") if f]

    files = ls("--cached") + [f for f in ls("--others", "--exclude-standard")
                              if not f.startswith("data/")]
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    project = Project(dest, project_env(mnist, dest.parent / f"{dest.name}-home"))
    if edit is not None:
        project.edit_params(edit)
    project.run("git", "init", "-q")
    project.commit("project copy")
    return project


@pytest.fixture
def project(tmp_path, mnist_npz) -> Project:
    """A fresh small-subset project copy (nothing run yet)."""
    return make_project(tmp_path / "project", mnist_npz)


@pytest.fixture(scope="session")
def built_template(tmp_path_factory, mnist_npz) -> Project:
    """A small-subset project after its first `dvc repro`, committed. Built
    once per session; tests that change it work on a copy (``built``)."""
    project = make_project(tmp_path_factory.mktemp("template") / "project", mnist_npz)
    project.first_repro = project.dvc("repro").stdout
    project.commit("built")
    return project


@pytest.fixture
def built(built_template, tmp_path) -> Project:
    """A private copy of the built project (git history and DVC cache included)."""
    dest = tmp_path / "built"
    shutil.copytree(built_template.path, dest, symlinks=True)
    return Project(dest, project_env(Path(built_template.env["MNIST_NPZ"]), tmp_path))


# --- observing runs -----------------------------------------------------------


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def snapshot(project) -> dict[str, str]:
    data = project.path / "data"
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file()}


def start(project, *args) -> subprocess.Popen:
    """Start a command in its own process group (so a kill reaches its children).
    Its output goes to a file (a pipe nobody reads would fill and block it)."""
    log = project.path.parent / f"{project.path.name}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(list(args), cwd=project.path, env=project.env, text=True,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; return its output."""
    proc.wait(timeout=timeout)
    return proc.log.read_text()


def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> str:
    os.killpg(proc.pid, sig)
    return finish(proc, timeout=60)


def wait_for(condition, timeout=120.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting")
