"""Throw-away copies of this project, each in its own git repository.

Used by the end-to-end tests and the benchmarks to run the real pipeline
(DVC, Keras, Prefect) on a small subset without touching the working copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dvc.utils.serialize import modify_yaml

ROOT = Path(__file__).resolve().parents[1]

# Small enough for CI, large enough that the models see every class.
SMALL = {"train_size": 2000, "test_size": 500, "epochs": 1}


def default_mnist() -> Path:
    """MNIST_NPZ, else the offline copy beside the project."""
    return Path(os.environ.get("MNIST_NPZ") or ROOT.parent / "shared" / "data" / "mnist.npz")


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
        env[key] = "pipeline-sandbox"
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
    """Apply ``edit`` to params.yaml's data, written back as `dvc exp run -S` does."""
    with modify_yaml(project / "params.yaml") as data:
        edit(data)


def shrink(data: dict, train_size=SMALL["train_size"], test_size=SMALL["test_size"],
           epochs=SMALL["epochs"]) -> None:
    data["seeds"] = 1
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
