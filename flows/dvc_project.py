"""The DVC project a flow run works on: what is stale and why, restoring a
stage from DVC's run-cache, recording a stage's result.

DVC is the engine and its cache the one store. For each stage the flow makes
the calls ``dvc repro`` makes (dvc/stage/__init__.py ``Stage.run``): is the
stage changed; remove its outputs; restore them from the run-cache if a run
with the same command, params, data and code was recorded before; otherwise
run the command; then save (dvc.lock values, run-cache entry), commit the
outputs to the cache and dump dvc.lock. So after a flow run, dvc.lock, the
cache, the run-cache and ``git status`` are what ``dvc repro`` would leave.

A flow run holds DVC's repository lock for its whole duration: a concurrent
``dvc repro`` fails at once with DVC's message, and vice versa.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import networkx as nx
from dvc.repo import Repo

from flows import dvc_internals
from flows.dvc_internals import LockError, ParamsDependency, RunCacheNotFoundError, lock_repo
from mnist_cnn.params import flatten


class ProjectBusy(RuntimeError):
    """Another DVC process (``dvc repro``, a flow run) holds the project."""

    def __init__(self, root: str, detail: str = ""):
        super().__init__(
            f"{root}: another DVC process (a `dvc repro`, `dvc exp run` or another flow "
            "run) is working on this project; wait for it to finish and run again"
            + (f". DVC says: {detail}" if detail else ""))


class StageFailed(RuntimeError):
    """A stage's command exited non-zero; the message ends with its error lines."""


def _params_changes(dep: ParamsDependency) -> list[str]:
    """``tasks.task1.optimizer.learning_rate 0.01 -> 0.05``, one per changed key."""
    old, new = flatten(dep.hash_info.value or {}), flatten(dep.read_params())
    return [f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


class DvcProject:
    """A DVC repository, locked while open; safe to use from several threads."""

    def __init__(self, root: str | Path, config: dict | None = None):
        self.root = str(Path(root).resolve())
        self._config = config  # DVC settings over the project's own (dvc config)
        self._mutex = threading.RLock()  # the Repo object is not thread-safe
        self.repo: Repo | None = None

    # --- lifetime -----------------------------------------------------------

    def __enter__(self) -> DvcProject:
        # DVC resolves stage addresses and its run cache against the current
        # directory, as its CLI does: work from the project root.
        self._cwd = os.getcwd()
        os.chdir(self.root)
        # Undone in reverse order by _cleanup, also when entering fails.
        self._cleanup = contextlib.ExitStack()
        self._cleanup.callback(os.chdir, self._cwd)
        try:
            self._cleanup.enter_context(dvc_internals.applied())
            self.repo = self._cleanup.enter_context(Repo(self.root, config=self._config))
            try:
                self._cleanup.enter_context(lock_repo(self.repo))
            except LockError:
                raise ProjectBusy(self.root) from None
            running = dvc_internals.stages_running(self.repo)
            if running:  # a `dvc repro` between its locks, inside a stage's command
                raise ProjectBusy(self.root, "; ".join(running))
            self._enter()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def _enter(self) -> None:
        stages = self.repo.index.stages
        self._stages = {s.addressing: s for s in stages}
        # Dependencies first; among the stages ready at a time, the earlier
        # task in dvc.yaml first, and its train before its evaluate.
        items = list(dict.fromkeys(s.addressing.partition("@")[2] for s in stages))
        kinds = list(dict.fromkeys(s.addressing.partition("@")[0] for s in stages))

        def key(stage):
            kind, _, item = stage.addressing.partition("@")
            return (items.index(item), kinds.index(kind))

        graph = self.repo.index.graph.reverse()  # edges: stage -> stages that need it
        self._graph = {s.addressing: sorted(d.addressing for d in graph.predecessors(s))
                       for s in nx.lexicographical_topological_sort(graph, key=key)}

    def __exit__(self, *exc) -> None:
        stop_stages()  # a crashed flow leaves no stage running here
        self._cleanup.close()

    @contextlib.contextmanager
    def _dvc(self):
        """Serialize use of the Repo object. A lock DVC cannot take means
        another DVC process is at work."""
        with self._mutex:
            try:
                yield
            except LockError as exc:
                raise ProjectBusy(self.root, str(exc).splitlines()[0]) from None

    # --- the pipeline as DVC sees it ---------------------------------------

    @property
    def graph(self) -> dict[str, list[str]]:
        """Every stage with the stages it depends on, dependencies first."""
        return self._graph

    def command(self, name: str) -> str:
        return self._stages[name].cmd

    def is_stale(self, name: str) -> bool:
        """What ``dvc status`` reports: dvc.lock does not record this stage with
        its current command, dependencies and outputs."""
        with self._dvc():
            return bool(self._stages[name].changed())

    def why_stale(self, name: str) -> list[str]:
        """What changed since dvc.lock recorded the stage, one item each:
        params with old and new values, files, outputs, the command."""
        with self._dvc():
            stage = self._stages[name]
            if not any(dep.hash_info for dep in stage.deps):
                return ["never run (not in dvc.lock)"]
            found = ["its command in dvc.yaml"] if stage.changed_stage() else []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    found += _params_changes(dep)
                else:
                    found += [f"{path} {state}" for path, state in dep.status().items()]
            found += [f"output {path} {state}" for out in stage.outs
                      for path, state in out.status().items()]
            return found

    # --- running a stage, as Stage.run does ------------------------------------

    def prepare(self, name: str) -> bool:
        """Remove the stage's outputs, then restore them from the run-cache if
        this command with these dependencies ran before (DVC logs "Stage ... is
        cached - skipping run, checking out outputs"): True; else it must run.

        A stage whose inputs change while its command runs fails
        (mnist_cnn.cli.runner), so what the flow records afterwards is what
        the command read."""
        with self._dvc():
            stage = self._stages[name]
            stage.remove_outs(ignore_remove=False, force=False)
            try:
                self.repo.stage_cache.restore(stage)  # saves the deps' hashes first
                return True
            except RunCacheNotFoundError:
                stage.save_deps()
                return False

    def commit(self, name: str) -> None:
        """Record the stage's result as ``dvc repro`` does after running it:
        dependencies and outputs in dvc.lock, an entry in the run-cache, the
        outputs in the cache (and their .gitignore entries)."""
        with self._dvc():
            stage = self._stages[name]
            stage.save()
            stage.commit()
            stage.dump(update_pipeline=False)
            dvc_internals.command_recorded(stage)


# Stage processes started by this process, to stop them if the flow dies.
_RUNNING: set[subprocess.Popen] = set()
# Dask caps these at 1 in its worker processes; a stage is a whole program
# that sizes its own thread pools, and its numbers must not depend on where
# it ran.
_WORKER_CAPS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ERROR_TAIL = 8  # lines of a failed stage's output that become the failure's message
# TensorFlow's start-up lines, written by its C++ libraries straight to stderr
# (no environment variable silences them all): dropped from the stage logs.
NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                   r"|I\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\]"
                   r"|.*oneDNN custom operations are on"
                   r"|.*This TensorFlow binary is optimized"
                   r"|.*To enable the following instructions)")


def run_command(cmd: str, root: str, stage: str, emit: Callable[[str], None]) -> None:
    """Run a stage's command as ``dvc repro`` would (in the project root, with
    DVC's variables set), streaming each output line to ``emit``. The command
    comes from dvc.yaml, not from params; it is split into words and run
    without a shell."""
    import shlex

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
            if not NOISE.match(line):
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
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
