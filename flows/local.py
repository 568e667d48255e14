"""Stages run here, in the project folder: the local stage runner.

:class:`LocalRunner` is one of the flow's two stage runners (the other, for
workers that share only the DVC remote, is flows/remote.py): **restore** a
stage from DVC's run-cache, **run** its command, **record** its result, the
first and last through the control plane (flows/dvc_project.py). A job
(:class:`LocalJob`) holds only strings, so any Prefect task runner can take
it: threads here, or Dask workers that see the project folder at the same
path.

A stage's command runs as ``dvc repro`` runs it (:func:`run_command`): in
the project folder, with DVC's variables, its output streamed line by line,
its failure one message (its ``error:`` lines). A command that runs a module
of this project starts in a **ready interpreter**. Every stage is a process
of its own, and train and evaluate spend their first seconds importing
TensorFlow; so each process that runs stages keeps, per worker slot, one
*spawned* interpreter that has already imported the third-party libraries
the stages import (:data:`PRELOAD`), never a module of this project, and
waits. A stage is handed to it (argv, folder, environment) and runs as
``python -m`` would (``runpy``); the next one is spawned at once, so its
import overlaps the stage that runs. Spawned, not forked: a fork of a
process that imported TensorFlow can deadlock (tensorflow#51832). Results
do not depend on it (same interpreter, environment and code: it holds none
of ours, so an edit made meanwhile takes effect). One that died, or is not
ready within ``READY_WAIT_S`` of being needed, is never used: the stage runs
as a plain process and the log says why. A waiting interpreter exits when
its stdin closes, however the flow ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from flows.dvc_project import DvcProject
from flows.lifecycle import terminate
from mnist_cnn.cli.progress import STARTED_ENV

# Dask caps these at 1 in its worker processes; a stage is a whole program
# that sizes its own thread pools, and its numbers must not depend on where
# it ran.
_WORKER_CAPS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ERROR_TAIL = 8  # lines of a failed stage's output that become the failure's message
PROJECT = ("stages", "mnist_cnn")  # `python -m` of these runs in a ready interpreter
# What the stages import from outside this project (tests/test_local.py checks).
PRELOAD = ("numpy", "pydantic", "psutil", "filelock", "dvc.utils.serialize", "tensorflow",
           "keras", "dvclive", "dvclive.keras", "pandas", "matplotlib.figure")
READY_WAIT_S = 120.0  # longer than the imports on a busy machine: it hangs
READY_ENV = "MNIST_CNN_READY"  # "0": plain processes only (to compare, to rule it out)


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message ends with its error lines."""


def stage_env(root: str | None = None, stage: str | None = None) -> dict[str, str]:
    """The environment of a stage's command, as ``dvc repro`` gives it."""
    env = dict(os.environ)
    if _in_dask_worker():
        for var in _WORKER_CAPS:
            env.pop(var, None)
    # dvc.yaml says `python`: the interpreter running this code.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if root and stage:
        env.update(DVC_ROOT=root, DVC_STAGE=stage)  # as DVC sets them
    return env


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


# --- ready interpreters -----------------------------------------------------------------

_BOOT = r"""
import json, os, sys, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
noise, saved = tempfile.TemporaryFile(), os.dup(2)
os.dup2(noise.fileno(), 2)
try:
    for name in sys.argv[1:]:
        __import__(name)
except BaseException as exc:
    print("failed:", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", flush=True)
    sys.exit(1)
finally:
    os.dup2(saved, 2)
try:
    from setproctitle import setproctitle
except ImportError:
    setproctitle = lambda title: None
setproctitle("mnist-cnn: a ready interpreter, waiting for a stage")
print("ready", flush=True)
job = sys.stdin.readline()
if not job:
    sys.exit(0)
job = json.loads(job)
setproctitle(" ".join(job["argv"]))  # as `ps` and `top` would show the plain process
os.chdir(job["cwd"])
os.environ.clear()
os.environ.update(job["env"])
sys.stdin = open(os.devnull)
sys.path[0] = job["cwd"]
sys.argv = job["argv"][2:]
import runpy
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def runs_here(argv: list[str]) -> bool:
    """A ``python -m <module of this project>`` command."""
    return (len(argv) > 2 and argv[:2] == ["python", "-m"]
            and argv[2].split(".")[0] in PROJECT)


class _Interpreter:
    def __init__(self, env: dict[str, str]):
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, *PRELOAD], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.status: str | None = None  # "ready", or why not
        self.answered = threading.Event()
        threading.Thread(target=self._wait, daemon=True, name="ready-interpreter").start()

    def _wait(self) -> None:
        line = self.proc.stdout.readline().strip()
        self.status = line or f"it exited with status {self.proc.wait()}"
        self.answered.set()

    def usable(self) -> str | None:
        """None if it is ready (waiting up to READY_WAIT_S since it was
        spawned), else why not; one that is not is stopped."""
        self.answered.wait(max(0.0, READY_WAIT_S - (time.monotonic() - self.spawned)))
        if self.status == "ready" and self.proc.poll() is None:
            return None
        why = self.status or f"not ready after {READY_WAIT_S:.0f} s"
        self.kill()
        return why

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()


class Pool:
    """``size`` ready interpreters, spawned with ``env``."""

    def __init__(self, size: int, env: dict[str, str]):
        self.size, self.env = size, env
        self._idle: list[_Interpreter] = []
        self._lock = threading.Lock()
        self.closed = self._queued = False
        self.fill()

    def fill(self) -> None:
        """Up to ``size`` waiting interpreters, one import at a time: on a few
        cores, concurrent TensorFlow imports slow the one a stage waits for
        (a train stage started 2x later than a plain process with two at once)."""
        with self._lock:
            if self.closed or len(self._idle) >= self.size:
                return
            importing = next((i for i in self._idle if not i.answered.is_set()), None)
            if importing is None:
                importing = _Interpreter(self.env)
                self._idle.append(importing)
            if len(self._idle) >= self.size or self._queued:
                return
            self._queued = True

        def next_one() -> None:  # once this one has imported
            importing.answered.wait(READY_WAIT_S)
            with self._lock:
                self._queued = False
            self.fill()

        threading.Thread(target=next_one, daemon=True, name="ready-interpreters").start()

    def wait_ready(self, timeout: float = READY_WAIT_S) -> bool:
        """Whether the next interpreter to be used answered ready within ``timeout``."""
        with self._lock:
            first = self._idle[0] if self._idle else None
        return bool(first and first.answered.wait(timeout) and first.status == "ready")

    def launch(self, argv: list[str], cwd: str, env: dict[str, str],
               say: Callable[[str], None]) -> subprocess.Popen | None:
        """The stage's process, from a ready interpreter; None (and ``say``
        why) if there is none to use: then run it as a plain process."""
        with self._lock:
            taken = self._idle.pop(0) if self._idle and not self.closed else None
        if taken is None:
            return None
        why = taken.usable()
        threading.Thread(target=self.fill, daemon=True).start()  # the next one, now
        if why is not None:
            say(f"(a ready interpreter could not be used: {why}; running a plain process)")
            return None
        taken.proc.stdin.write(json.dumps({"argv": argv, "cwd": cwd, "env": env}) + "\n")
        taken.proc.stdin.close()
        return taken.proc

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for interpreter in idle:
            interpreter.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                interpreter.proc.wait(timeout=5)


_POOL: list[Pool] = []  # this process's ready interpreters, once started
_POOL_LOCK = threading.Lock()


def ready(size: int = 1) -> Pool:
    """This process's ready interpreters (``size`` of them), started on first use."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0].closed:
            _POOL[:] = [Pool(size, stage_env())]
            atexit.register(_POOL[0].close)
        _POOL[0].size = max(_POOL[0].size, size)
    _POOL[0].fill()
    return _POOL[0]


# --- a stage's command -------------------------------------------------------------------

_RUNNING: set[subprocess.Popen] = set()  # stage processes started here, to stop them


def run_command(cmd: str, root: str, stage: str, emit: Callable[[str], None],
                stop: threading.Event | None = None, env: dict[str, str] | None = None) -> None:
    """Run a stage's command as ``dvc repro`` would (in the project root, with
    DVC's variables set, and ``env`` over them), streaming each output line
    to ``emit``; ``stop`` set stops it. The command comes from dvc.yaml, not
    from params; it is split into words and run without a shell: in a ready
    interpreter if it runs a module of this project, else as a plain process."""
    env = {**stage_env(root, stage), **(env or {})}
    argv = shlex.split(cmd)
    proc = None
    if runs_here(argv) and os.environ.get(READY_ENV) != "0":
        proc = ready().launch(argv, root, {**env, STARTED_ENV: str(time.time())}, emit)
    if proc is None:
        proc = subprocess.Popen(argv, cwd=root, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _RUNNING.add(proc)
    if stop is not None:
        threading.Thread(target=_stop_on, args=(stop, proc), daemon=True).start()
    tail: deque[str] = deque(maxlen=ERROR_TAIL)
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            emit(line)
        code = proc.wait()
    finally:
        _RUNNING.discard(proc)
    if code != 0:  # its `error:` lines (mnist_cnn.cli.runner), or else its last ones
        errors = [line.removeprefix("error: ") for line in tail if line.startswith("error:")]
        raise StageFailed(f"{stage} exited with status {code}: "
                          + ("; ".join(errors) or " | ".join(tail)))


def stop_processes() -> None:
    """Stop every stage process this process started (each with what it
    started), and its ready interpreters."""
    if _POOL:
        _POOL[0].close()
    stopping = []
    for proc in list(_RUNNING):
        with contextlib.suppress(psutil.Error):
            group = psutil.Process(proc.pid)
            stopping += [group, *group.children(recursive=True)]
    terminate(stopping, wait_s=10)


def _stop_on(stop: threading.Event, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if stop.wait(0.5):
            with contextlib.suppress(psutil.Error):
                group = psutil.Process(proc.pid)
                terminate([group, *group.children(recursive=True)], wait_s=10)
            return


# --- the runner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalJob:
    """A stage to run in the project folder ``root``; ``env`` over the
    stage's environment (its place in the run, mnist_cnn/cli/progress.py)."""

    stage: str
    cmd: str
    root: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, emit: Callable[[str], None]) -> None:
        run_command(self.cmd, self.root, self.stage, emit, env=self.env)


class LocalRunner:
    """Stages here: restored from the local run-cache, run in the project
    folder, recorded in its dvc.lock."""

    def __init__(self, dvc: DvcProject, workers: int = 1, here: bool = True):
        self.dvc, self.workers = dvc, workers
        self.here = here and os.environ.get(READY_ENV) != "0"  # (else a Dask task runner runs them)

    def warm(self) -> None:
        """A stage will run: start the ready interpreters, which import while
        DVC checks the other stages. Not before: on a few cores, their imports
        would slow a run that has nothing to do."""
        if self.here:
            ready(self.workers)

    def restore(self, stage: str) -> bool:
        """Restored from the run-cache and recorded; or False: it must run."""
        if self.dvc.prepare(stage):
            self.dvc.commit(stage)
            return True
        return False

    def job(self, stage: str, env: dict[str, str] | None = None) -> LocalJob:
        return LocalJob(stage, self.dvc.command(stage), self.dvc.root, env or {})

    def record(self, stage: str, result=None) -> None:
        self.dvc.commit(stage)

    def stop(self) -> None:
        stop_processes()
