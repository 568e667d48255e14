"""The stage executor: run one DVC stage from a self-contained request.

The control plane (flows/dvc_project.py, in the flow's process) decides what
is stale and records results; this runs a stage it hands over: plain
functions, usable under any Prefect task runner or none. Two ways:

- **in the project folder** (:func:`run_command`), on one machine or where
  every worker sees the folder at the same path: zero copies;
- **anywhere the DVC remote is reachable** (:func:`execute`): a
  :class:`StageRequest` names no path of the flow's machine. The executor
  makes a scratch DVC project of its own, fetches the stage's inputs from
  the remote by content hash (each file checked against its hash), checks
  that the code and params it would run are those the flow asked for (a
  worker on a stale image refuses, naming the file), runs the command, and
  pushes the outputs and the stage's run-cache record to the remote. It
  returns the stage's lock entry; the flow checks it and records it.
  :class:`DaskDispatcher` sends requests to Dask workers as plain Dask
  tasks, so a worker needs no access to the Prefect API.

What a worker needs: this project's locked environment and code at the
flow's commit (``MNIST_CNN_CODE``: a checkout; default, the installed
package's), the remote's credentials, and room for a cache of its own
(``MNIST_CNN_WORKER_DIR``; default, the Dask worker's local folder): inputs
fetched once are reused by the worker's later stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil

# Dask caps these at 1 in its worker processes; a stage is a whole program
# that sizes its own thread pools, and its numbers must not depend on where
# it ran.
_WORKER_CAPS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ERROR_TAIL = 8  # lines of a failed stage's output that become the failure's message
CODE = ("mnist_cnn", "stages")  # the packages a stage's command runs
PROVENANCE = ("uv.lock",)  # files the stages record the hash of
CODE_ENV, WORK_ENV = "MNIST_CNN_CODE", "MNIST_CNN_WORKER_DIR"

# Stage processes started by this process, to stop them if the flow dies.
_RUNNING: set[subprocess.Popen] = set()


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message ends with its error lines."""


class StageRefused(RuntimeError):
    """This worker's code or inputs are not what the flow asked for."""


# --- running a stage's command --------------------------------------------------------


def run_command(cmd: str, root: str, stage: str, emit: Callable[[str], None]) -> None:
    """Run a stage's command as ``dvc repro`` would (in the project root, with
    DVC's variables set), streaming each output line to ``emit``. The command
    comes from dvc.yaml, not from params; it is split into words and run
    without a shell."""
    env = dict(os.environ)
    if _in_dask_worker():
        for var in _WORKER_CAPS:
            env.pop(var, None)
    # dvc.yaml says `python`: the interpreter running this code.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_ROOT=root, DVC_STAGE=stage)  # as DVC sets them
    proc = subprocess.Popen(shlex.split(cmd), cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _RUNNING.add(proc)
    tail: deque[str] = deque(maxlen=ERROR_TAIL)
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            emit(line)
        code = proc.wait()
    finally:
        _RUNNING.discard(proc)
    if code != 0:
        errors = [line for line in tail if line.startswith("error:")] or list(tail)
        raise StageFailed(f"{stage} exited with status {code}: " + "\n".join(errors))


def stop_stages() -> None:
    """Stop every stage process this process started."""
    for proc in list(_RUNNING):
        _terminate(proc)


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _terminate(proc: subprocess.Popen) -> None:
    """Stop a stage's process group (the stage and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)  # a suspended stage (Ctrl-Z) gets its TERM now
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# --- a stage anywhere the remote is reachable -----------------------------------------


@dataclass(frozen=True)
class StageRequest:
    """Everything a worker needs to run a stage, and nothing of the flow's
    machine: paths are relative to the project's root."""

    stage: str         # train@task1
    definition: dict   # its dvc.yaml entry, templating resolved
    lock: dict         # what it must be computed from: deps and params with their hashes
    inputs: list[dict] = field(default_factory=list)  # upstream outputs, by hash
    params: str = ""   # params.yaml
    remote: str = ""   # the DVC remote's name ...
    url: str = ""      # ... and where it is (credentials: the worker's own)

    @property
    def cmd(self) -> str:
        return self.definition["cmd"]

    def size(self) -> int:
        """Bytes of its inputs, as the remote stores them."""
        return sum(int(out.get("size") or 0) for out in self.inputs)


def code_root() -> Path:
    """The checkout of this project whose code this worker runs."""
    import mnist_cnn

    return Path(os.environ.get(CODE_ENV) or Path(mnist_cnn.__file__).resolve().parents[1])


def work_root() -> Path:
    """Where this worker keeps its cache and scratch projects."""
    if found := os.environ.get(WORK_ENV):
        return Path(found)
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "mnist-cnn"
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir()) / f"mnist-cnn-worker-{os.getuid()}"


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


@contextlib.contextmanager
def _scratch(base: Path, stage: str) -> Iterator[Path]:
    """A fresh folder for one stage; scratch folders of dead processes go."""
    folder = base / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        pid = old.name.rsplit("-", 2)[-2] if old.name.count("-") >= 2 else ""
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(dir=folder, prefix=f"{stage.replace('@', '_')}-{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _project(root: Path, request: StageRequest) -> None:
    """A DVC project holding only this stage, this worker's code and the
    request's params."""
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True)
    code = code_root()
    for package in CODE:
        shutil.copytree(code / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in PROVENANCE:
        if (code / name).is_file():
            shutil.copy2(code / name, root / name)
    (root / "params.yaml").write_text(request.params, encoding="utf-8")
    name, _, item = request.stage.partition("@")
    stage = {"foreach": [item], "do": request.definition} if item else request.definition
    (root / "dvc.yaml").write_text(json.dumps({"stages": {name: stage}}), encoding="utf-8")


def _check_code(root: Path, request: StageRequest) -> None:
    """StageRefused naming each dependency that is not an input and differs
    in this worker's code from what the flow's commit has."""
    fetched = {out["path"] for out in request.inputs}
    wrong = []
    for dep in request.lock.get("deps", []):
        path = dep["path"]
        if path in fetched or any(p.startswith(f"{path}/") for p in fetched):
            continue
        if not (root / path).is_file():
            wrong.append(f"{path} (missing)")
        elif _md5(root / path) != dep.get("md5"):
            wrong.append(path)
    if wrong:
        raise StageRefused(
            f"{request.stage}: this worker's code differs from the flow's commit: "
            f"{', '.join(wrong)} (worker code: {code_root()}); deploy the flow's commit there")


def _differences(found: dict, asked: dict) -> list[str]:
    """The deps and params of ``found`` (a lock entry) that differ from ``asked``."""
    def values(entry: dict) -> dict:
        deps = {d["path"]: d.get("md5") for d in entry.get("deps", [])}
        return {**deps, **{f"{file}: {key}": value
                           for file, keys in (entry.get("params") or {}).items()
                           for key, value in keys.items()}}

    a, b = values(found), values(asked)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def execute(request: StageRequest, emit: Callable[[str], None]) -> dict:
    """Run ``request`` in a scratch project of this worker: fetch its inputs
    by hash, check code and params, run, push the outputs and the run-cache
    record to the remote. Returns the stage's lock entry."""
    from flows import dvc_internals
    from flows.dvc_project import DvcProject

    base = work_root()
    config = {"core": {"remote": request.remote},
              "remote": {request.remote: {"url": request.url, "verify": True}},
              "cache": {"dir": str(base / "cache"), "type": "reflink,hardlink,copy"}}
    with _scratch(base, request.stage) as root:
        _project(root, request)
        _check_code(root, request)
        with DvcProject(root, config) as dvc:
            emit(f"{request.stage}: fetching {len(request.inputs)} input(s), "
                 f"{request.size() / 1e6:.1f} MB, from the DVC remote {request.remote!r}")
            try:
                dvc.fetch(request.inputs, request.remote)
            except dvc_internals.RunCacheNotFoundError:
                raise StageRefused(f"{request.stage}: its inputs are not all on the DVC remote "
                                   f"{request.remote!r}, or not as their hashes say") from None
            restored = dvc.prepare(request.stage)
            if differ := _differences(dvc.lock_entry(request.stage), request.lock):
                raise StageRefused(f"{request.stage}: its inputs here differ from what the "
                                   f"flow asked for: {', '.join(differ)}")
        if not restored:  # a retry finds what an earlier attempt computed
            run_command(request.cmd, str(root), request.stage, emit)
        with DvcProject(root, config) as dvc:
            dvc.commit(request.stage)
            sent = dvc.push(request.stage, request.remote)
            entry = dvc.lock_entry(request.stage)
        emit(f"{request.stage}: pushed {sent} file(s) to the DVC remote {request.remote!r}")
        return entry


# --- sending requests to a Dask cluster --------------------------------------------------


class DaskDispatcher:
    """Runs requests on the workers of a Dask scheduler as plain Dask tasks:
    a worker needs the scheduler and the DVC remote, not the Prefect API (the
    flow's task run, in the flow's process, reports the stage; the worker's
    lines reach it as Dask events). A worker lost mid-stage is Dask's to
    retry (``distributed.scheduler.allowed-failures``); then the stage fails,
    naming it."""

    _clients: ClassVar[dict[str, object]] = {}  # one client per scheduler, per process
    _lock = threading.Lock()

    def __init__(self, address: str):
        from distributed import Client

        with self._lock:
            if address not in self._clients:
                self._clients[address] = Client(address, set_as_default=False)
            self.client = self._clients[address]

    def run(self, request: StageRequest, emit: Callable[[str], None]) -> dict:
        from distributed import KilledWorker

        topic = f"mnist-cnn-{uuid.uuid4().hex}"
        self.client.subscribe_topic(topic, lambda event: emit(event[1]))
        try:
            future = self.client.submit(_execute_on_worker, request, topic, pure=False,
                                        key=f"{request.stage}-{topic}")
            return future.result()
        except KilledWorker as exc:
            raise StageFailed(f"{request.stage}: its worker was lost and Dask gave up "
                              f"({exc}); nothing was recorded for it") from None
        finally:
            self.client.unsubscribe_topic(topic)


def _execute_on_worker(request: StageRequest, topic: str) -> dict:
    from distributed import get_worker

    worker = get_worker()
    return execute(request, lambda line: worker.log_event(topic, line))
