"""The DVC project a flow run works on: its stages, their state, running one.

DVC stays the single source of truth. A flow run holds DVC's own repository
lock for its whole duration (a concurrent ``dvc repro`` fails at once with
DVC's message, and vice versa), runs each stage's ``cmd`` exactly as written
in dvc.yaml, and records the result in dvc.lock and DVC's cache the way
``dvc repro`` does (``dvc commit``). So after a flow run ``dvc status`` is
clean, and after ``dvc repro`` the flow finds nothing to do.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import networkx as nx
from dvc.lock import LockError
from dvc.repo import Repo, lock_repo
from dvc.stage.serialize import to_pipeline_file

from stages.io import atomic_path

log = logging.getLogger(__name__)


class ProjectBusy(RuntimeError):
    """Another DVC process (``dvc repro``, a flow run) holds the project."""

    def __init__(self, root: str, detail: str = ""):
        super().__init__(
            f"{root}: another DVC process (a `dvc repro`, `dvc exp run` or another flow "
            "run) is working on this project; wait for it to finish and run again"
            + (f". DVC says: {detail}" if detail else ""))


class StageFailed(RuntimeError):
    pass


class DvcProject:
    """A DVC repository, locked while open; safe to use from several threads."""

    def __init__(self, root: str | Path):
        self.root = str(Path(root).resolve())
        self._mutex = threading.RLock()  # the Repo object is not thread-safe
        self.repo: Repo | None = None

    # --- lifetime -----------------------------------------------------------

    def __enter__(self) -> DvcProject:
        # DVC resolves stage addresses and its run cache against the current
        # directory, as its CLI does: work from the project root.
        self._cwd = os.getcwd()
        os.chdir(self.root)
        self._patches = contextlib.ExitStack()
        self._patches.enter_context(_params_parsed_once())
        self._patches.enter_context(_atomic_dvc_writes())
        self.repo = Repo(self.root)
        self._lock = lock_repo(self.repo)
        try:
            self._lock.__enter__()
        except LockError:
            self.repo.close()
            self._patches.close()
            os.chdir(self._cwd)
            raise ProjectBusy(self.root) from None
        stages = self.repo.index.stages
        self._stages = {s.name: s for s in stages}
        # Dependencies first; among the stages ready at a time, the earlier
        # task in dvc.yaml first, and its train before its evaluate.
        items = list(dict.fromkeys(s.name.partition("@")[2] for s in stages))
        kinds = list(dict.fromkeys(s.name.partition("@")[0] for s in stages))

        def key(stage):
            kind, _, item = stage.name.partition("@")
            return (items.index(item), kinds.index(kind))

        graph = self.repo.index.graph.reverse()  # edges: stage -> stages that need it
        self._graph = {s.name: sorted(d.name for d in graph.predecessors(s))
                       for s in nx.lexicographical_topological_sort(graph, key=key)}
        return self

    def __exit__(self, *exc) -> None:
        for proc in list(_RUNNING):  # a crashed flow leaves no stage running here
            _terminate(proc)
        self._lock.__exit__(*exc)
        self.repo.close()
        self._patches.close()
        os.chdir(self._cwd)

    # --- the pipeline as DVC sees it ---------------------------------------
    # Stages are loaded once per open (parsing dvc.lock is the slow part) and
    # kept current: a stage this object runs is committed through the same
    # Stage object, and nothing else may write dvc.lock while the lock is held.

    @contextlib.contextmanager
    def _dvc(self):
        """Serialize use of the Repo object. DVC releases its repository lock
        while a `dvc repro` runs a stage's command and guards that stage's
        files with per-path locks instead: meeting one means the same."""
        with self._mutex:
            try:
                yield
            except LockError as exc:
                raise ProjectBusy(self.root, str(exc).splitlines()[0]) from None

    @property
    def graph(self) -> dict[str, list[str]]:
        """Every stage with the stages it depends on, dependencies first."""
        return self._graph

    def is_stale(self, name: str) -> bool:
        """True unless dvc.lock records this stage with its current command,
        dependencies and outputs (what ``dvc status`` reports)."""
        with self._dvc():
            return bool(self._stages[name].changed())

    def fingerprint(self, name: str) -> str:
        """What determines the stage's result: its definition (command, declared
        deps and outs) and the current content of every dependency, params
        values included; the values dvc.lock would record for them."""
        with self._dvc():
            stage = self._stages[name]
            deps = {str(d.def_path): d.get_hash().to_dict() for d in stage.deps}
            blob = json.dumps({"root": self.root, "definition": to_pipeline_file(stage),
                               "deps": deps}, sort_keys=True, default=str)
            return hashlib.sha256(blob.encode()).hexdigest()

    # --- running a stage ----------------------------------------------------

    def command(self, name: str) -> str:
        """The stage's ``cmd``, exactly as dvc.yaml has it."""
        return self._stages[name].cmd

    def commit(self, name: str) -> None:
        """Record the stage's current deps and outputs in dvc.lock and DVC's
        cache, as ``dvc repro`` does after running it (``dvc commit``)."""
        with self._dvc():
            stage = self._stages[name]
            stage.save()
            stage.commit()
            stage.dump(update_pipeline=False)
            stage.cmd_changed = False  # dvc.lock now records the current command

    def published(self, path: str) -> str | None:
        file = Path(self.root, path)
        return file.read_text() if file.is_file() else None


@contextlib.contextmanager
def _replaced(module, name: str, value):
    """``module.name`` is ``value`` inside the block; restored after."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield original
    finally:
        setattr(module, name, original)


def _is_local(fs) -> bool:
    return getattr(fs, "protocol", None) == "local"


@contextlib.contextmanager
def _atomic_dvc_writes():
    """Make DVC's writes of dvc.lock atomic while the flow works.

    DVC rewrites dvc.lock in place (open with truncation, then dump): a flow
    stopped during the write (SIGTERM raises inside the flow) left it cut
    short, and every stage after the cut looked stale. Written beside and
    renamed, it is the old file or the new one."""
    from dvc.utils.serialize import _common, _yaml

    original = _common._dump_data

    def dump_data(path, data, dumper, fs=None, **dumper_args):
        if fs is not None and not _is_local(fs):
            return original(path, data, dumper, fs=fs, **dumper_args)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fd:
            dumper(data, fd, **dumper_args)
        return None

    # _yaml imported the name from _common: replace it in both.
    with _replaced(_common, "_dump_data", dump_data), _replaced(_yaml, "_dump_data", dump_data):
        yield


@contextlib.contextmanager
def _params_parsed_once():
    """Parse each version of a params file once.

    DVC reads params.yaml afresh (ruamel.yaml, pure Python, ~50 ms) for every
    params dependency it checks: 40+ times in a flow run that checks each
    stage twice, most of a no-op run's time. Keyed by the file's mtime and
    size, so an edit is seen; only for local files."""
    from dvc.dependency import param

    original = param.load_path
    parsed: dict = {}

    def load_path(path, fs, **kwargs):
        if not _is_local(fs):
            return original(path, fs, **kwargs)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size, tuple(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = original(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    with _replaced(param, "load_path", load_path):
        yield


# Stage processes started by this process, to stop them if the flow dies.
_RUNNING: set[subprocess.Popen] = set()
# Dask caps these at 1 in its worker processes; a stage is a whole program
# that sizes its own thread pools, and its numbers must not depend on where
# it ran.
_WORKER_CAPS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_command(cmd: str, root: str, stage: str, emit: Callable[[str], None]) -> None:
    """Run a stage's command as ``dvc repro`` would: in the project root, with
    DVC's variables set, output streamed line by line to ``emit``."""
    env = dict(os.environ)
    if _in_dask_worker():
        for var in _WORKER_CAPS:
            env.pop(var, None)
    # dvc.yaml says `python`: the interpreter running this code.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_ROOT=root, DVC_STAGE=stage)  # as DVC sets them
    emit(f"> {cmd}")
    proc = subprocess.Popen(cmd, shell=True, cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _RUNNING.add(proc)
    try:
        for line in proc.stdout:
            emit(line.rstrip())
        code = proc.wait()
    finally:
        _RUNNING.discard(proc)
    if code != 0:
        raise StageFailed(f"stage {stage}: `{cmd}` exited with status {code}")


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
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def prefect_dir(root: str | Path) -> Path:
    """Where this project's Prefect cache records and results live (git-ignored),
    beside DVC's own cache rather than in the user's home."""
    return Path(root) / ".prefect"
