"""The stage executor: run one DVC stage from a self-contained request, on
a worker that shares nothing with the flow but the DVC remote.

A :class:`StageRequest` names no path of the flow's machine (flows/remote.py
makes it). :func:`execute` makes a scratch DVC project of its own, fetches
the stage's inputs from the remote by content hash (each file checked
against its hash), checks that the code and params it would run are those
the flow asked for (a worker on a stale image refuses, naming the file),
runs the command (flows/local.py: in a ready interpreter of this worker),
and pushes the outputs and the stage's run-cache record to the remote. It
returns the stage's lock entry; the flow checks it and records it. A plain
function: a Dask task, or a call in the flow's own process.

What a worker needs: this project's locked environment and code at the
flow's commit (``MNIST_CNN_CODE``: a checkout; default, the installed
package's), the remote's credentials, and room for a cache of its own
(``MNIST_CNN_WORKER_DIR``; default, a folder only its user can write, see
flows/private.py): inputs fetched once are reused by the worker's later
stages. A cache is trusted: what it holds is restored.

Trust: whoever can reach the Dask scheduler can run code on its workers
(Dask's own model), so keep it on a private network or behind TLS; a
request is still checked here (a stage name, a command that runs one of
this project's modules), so a bad one fails naming what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from flows.private import check_private, private_dir

CODE = ("mnist_cnn", "stages")  # the packages a stage's command runs
PROVENANCE = ("uv.lock",)  # files the stages record the hash of
CODE_ENV, WORK_ENV = "MNIST_CNN_CODE", "MNIST_CNN_WORKER_DIR"
STAGE_NAME = re.compile(r"[a-z]+(@[A-Za-z][A-Za-z0-9_]{0,63})?")  # train@task1


class StageRefused(RuntimeError):
    """This worker's code or inputs are not what the flow asked for."""


# --- running a stage's command --------------------------------------------------------


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
    """Where this worker keeps its cache and scratch projects: a folder no
    other user can write (a record planted in its cache would be restored
    and pushed to the team's remote as this worker's result)."""
    if found := os.environ.get(WORK_ENV):
        path = Path(found)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return check_private(path)
    return private_dir("worker")


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


def check_request(request: StageRequest) -> None:
    """StageRefused naming what is wrong with a request that this project's
    flow would not send: its stage name goes into folder names, its command
    is run."""
    words = shlex.split(request.cmd) if isinstance(request.cmd, str) else []
    module = words[2] if len(words) > 2 else ""
    if not STAGE_NAME.fullmatch(request.stage):
        raise StageRefused(f"refused a request for stage {request.stage[:80]!r}: not a stage "
                           "name of this project")
    if words[:2] != ["python", "-m"] or module.split(".")[0] not in CODE:
        raise StageRefused(f"{request.stage}: refused its command {request.cmd[:200]!r}: a "
                           "stage runs `python -m` one of this project's modules "
                           f"({', '.join(CODE)})")


def execute(request: StageRequest, emit: Callable[[str], None],
            stop: threading.Event | None = None) -> dict:
    """Run ``request`` in a scratch project of this worker: fetch its inputs
    by hash, check code and params, run, push the outputs and the run-cache
    record to the remote. Returns the stage's lock entry. ``stop`` set
    stops the stage's command; nothing is pushed then."""
    from flows import dvc_internals
    from flows.dvc_project import DvcProject, changed_inputs
    from flows.local import run_command

    check_request(request)
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
                with dvc.locked():
                    dvc_internals.fetch_outputs(dvc.repo, request.inputs, request.remote)
            except dvc_internals.RunCacheNotFoundError:
                raise StageRefused(f"{request.stage}: its inputs are not all on the DVC remote "
                                   f"{request.remote!r} ({request.url}), or not as their hashes "
                                   "say") from None
            restored = dvc.prepare(request.stage)
            if differ := changed_inputs(dvc.lock_entry(request.stage), request.lock):
                raise StageRefused(f"{request.stage}: its inputs here differ from what the "
                                   f"flow asked for: {', '.join(differ)}")
        if not restored:  # a retry finds what an earlier attempt computed
            run_command(request.cmd, str(root), request.stage, emit, stop)
        with DvcProject(root, config) as dvc:
            dvc.commit(request.stage)
            with dvc.locked():  # the record last: on the remote, it means the outputs are
                sent = dvc_internals.push_record(dvc.repo, dvc.stage(request.stage),
                                                 request.remote)
            entry = dvc.lock_entry(request.stage)
        emit(f"{request.stage}: pushed {sent} file(s) to the DVC remote {request.remote!r}")
        return entry


# --- on a Dask worker ----------------------------------------------------------------------


def _execute_on_worker(request: StageRequest, topic: str) -> dict:
    from distributed import Event, get_worker

    worker = get_worker()
    stop, finished = threading.Event(), threading.Event()
    told = Event(topic)  # the flow sets it to stop this stage

    def listen() -> None:
        while not finished.is_set():
            with contextlib.suppress(Exception):
                if told.wait(timeout=1):
                    stop.set()
                    return

    threading.Thread(target=listen, name=f"stop-{request.stage}", daemon=True).start()
    try:
        return execute(request, lambda line: worker.log_event(topic, line), stop)
    finally:
        finished.set()
