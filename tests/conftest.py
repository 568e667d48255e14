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

import psutil
import pytest

from mnist_cnn.params import read
from tests.sandbox import ROOT, Project, default_mnist, make_project, project_env

__all__ = ["ROOT", "TASKS", "Project", "make_project", "project_env"]

TASKS = list(read(ROOT / "params.yaml")["tasks"])  # the study's tasks, in order

@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    path = default_mnist()
    if not path.is_file():
        pytest.fail(f"MNIST not found at {path}: set MNIST_NPZ to a local mnist.npz")
    return path


@pytest.fixture(scope="session")
def harness():
    """A temporary Prefect server for the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def project(tmp_path, mnist_npz) -> Project:
    """A fresh small-subset project copy (nothing run yet)."""
    return make_project(tmp_path / "project", mnist_npz)


@pytest.fixture(scope="session")
def built_template(tmp_path_factory, mnist_npz) -> Project:
    """A small-subset project after its first `dvc repro`, committed. Built
    once per session; tests that change it work on a copy (``built``)."""
    project = make_project(tmp_path_factory.mktemp("template") / "project", mnist_npz)
    repro = project.dvc("repro")
    project.first_repro, project.first_repro_stderr = repro.stdout, repro.stderr
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


def gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped counts: it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stage_processes(folder: Path) -> list[str]:
    """Command lines of the `python -m stages.*` processes working in ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if "-m stages." in cmd and Path(cwd) == folder:
            found.append(cmd)
    return found


def stage_of(task_run_name: str) -> str:
    """``train[task1] · cached`` -> ``train[task1]``: the flow puts the outcome
    in a task run's name too."""
    return task_run_name.split(" · ")[0]


# --- a Prefect server of its own ---------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    """`prefect server start` in a process group of its own, with its own
    database (``home``): to kill and start again on the same port."""

    def __init__(self, home: Path):
        self.home, self.port, self.proc = home, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> PrefectServer:
        env = {**os.environ, "PREFECT_HOME": str(self.home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-services"], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, timeout=240, interval=0.5)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def flow_runs(self) -> list[dict]:
        """Every flow run, oldest first."""
        import httpx

        runs = httpx.post(f"{self.url}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC"},
                          timeout=30)
        runs.raise_for_status()
        return runs.json()
