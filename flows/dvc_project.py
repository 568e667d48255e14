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
import threading
from pathlib import Path

import networkx as nx
from dvc.repo import Repo

from flows import dvc_internals
from flows.dvc_internals import LockError, ParamsDependency, RunCacheNotFoundError, lock_repo


class ProjectBusy(RuntimeError):
    """Another DVC process (``dvc repro``, a flow run) holds the project."""

    def __init__(self, root: str, detail: str = ""):
        super().__init__(
            f"{root}: another DVC process (a `dvc repro`, `dvc exp run` or another flow "
            "run) is working on this project; wait for it to finish and run again"
            + (f". DVC says: {detail}" if detail else ""))


class InputsChanged(RuntimeError):
    """A stage's inputs differ from those it was run (or restored) with: its
    result is not recorded as theirs."""


def changed_inputs(found: dict, asked: dict) -> list[str]:
    """The deps and params of lock entry ``found`` that differ from ``asked``'s."""
    def values(entry: dict) -> dict:
        deps = {d["path"]: d.get("md5") for d in entry.get("deps", [])}
        return {**deps, **{f"{file}: {key}": value
                           for file, keys in (entry.get("params") or {}).items()
                           for key, value in keys.items()}}

    a, b = values(found), values(asked)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def params_changes(old, new, prefix: str = "") -> list[str]:
    """``tasks.task1.optimizer.learning_rate 0.01 -> 0.05``, one per changed
    key; a whole section added or removed in one (``tasks.task9 removed``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(old.keys() | new.keys(), key=str)
                for change in params_changes(old.get(key, _ABSENT), new.get(key, _ABSENT),
                                             f"{prefix}{key}.")]
    key = prefix.removesuffix(".")
    if old == new:
        return []
    if old is _ABSENT or new is _ABSENT:
        return [f"{key} {'added' if old is _ABSENT else 'removed'}"]

    def short(value) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{key} {short(old)} -> {short(new)}"]


_ABSENT = object()


# DVC resolves stage addresses and its run cache against the current folder,
# as its CLI does: each call works from its project's root, one at a time in a
# process (a flow's control plane and an executor can share one).
_CWD = threading.RLock()


class DvcProject:
    """A DVC repository, locked while open; safe to use from several threads."""

    def __init__(self, root: str | Path, config: dict | None = None,
                 emit=lambda line: None):
        self.root = str(Path(root).resolve())
        self._config = config  # DVC settings over the project's own (dvc config)
        self._emit = emit  # where it says what it did besides DVC's calls
        self.repo: Repo | None = None
        # A stage's deps and params as prepare() saved them: what its command
        # runs with, so what commit() may record (never re-read afterwards).
        self._prepared: dict[str, dict] = {}

    # --- lifetime -----------------------------------------------------------

    def __enter__(self) -> DvcProject:
        # Undone in reverse order by _cleanup, also when entering fails.
        self._cleanup = contextlib.ExitStack()
        try:
            with self.locked():
                self._cleanup.enter_context(dvc_internals.applied())
                self.repo = self._cleanup.enter_context(Repo(self.root, config=self._config))
                try:
                    self._cleanup.enter_context(lock_repo(self.repo))
                except LockError:
                    raise ProjectBusy(self.root) from None
                running = dvc_internals.stages_running(self.repo)
                if running:  # a `dvc repro` between its locks, inside a stage's command
                    raise ProjectBusy(self.root, "; ".join(running))
                dvc_internals.remove_leftover_outputs(self.repo, self._emit)
                self._enter()
        except BaseException:
            self.__exit__()
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
        with self.locked():
            self._cleanup.close()

    @contextlib.contextmanager
    def locked(self):
        """One DVC call at a time in this process, from the project's root (the
        Repo object is not thread-safe either). A lock DVC cannot take means
        another DVC process is at work."""
        with _CWD, contextlib.chdir(self.root):
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

    def stage(self, name: str):
        """DVC's Stage object (use it inside :meth:`locked`)."""
        return self._stages[name]

    def is_stale(self, name: str) -> bool:
        """What ``dvc status`` reports: dvc.lock does not record this stage with
        its current command, dependencies and outputs."""
        with self.locked():
            return bool(self._stages[name].changed())

    def why_stale(self, name: str) -> list[str]:
        """What changed since dvc.lock recorded the stage, one item each:
        params with old and new values, files, outputs, the command."""
        with self.locked():
            stage = self._stages[name]
            if not any(dep.hash_info for dep in stage.deps):
                return ["never run (not in dvc.lock)"]
            found = ["its command in dvc.yaml"] if stage.changed_stage() else []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    found += params_changes(dep.hash_info.value or {}, dep.read_params())
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

        The deps' hashes saved here are what :meth:`commit` may record: a
        stage whose inputs change while its command runs fails
        (mnist_cnn.cli.runner), and one whose inputs change between this and
        its commit (here, or during a stage sent elsewhere) is refused."""
        with self.locked():
            stage = self._stages[name]
            stage.remove_outs(ignore_remove=False, force=False)
            try:
                self.repo.stage_cache.restore(stage)  # saves the deps' hashes first
                restored = True
            except RunCacheNotFoundError:
                stage.save_deps()
                restored = False
            self._prepared[name] = dvc_internals.lock_entry(stage)
            return restored

    def commit(self, name: str) -> None:
        """Record the stage's result as ``dvc repro`` does after running it:
        dependencies and outputs in dvc.lock, an entry in the run-cache, the
        outputs in the cache (and their .gitignore entries). InputsChanged,
        and nothing recorded, if its deps differ from what prepare() saw."""
        with self.locked():
            stage = self._stages[name]
            stage.save(run_cache=False)
            prepared = self._prepared.pop(name, None)
            if prepared and (differ := changed_inputs(dvc_internals.lock_entry(stage),
                                                      prepared)):
                raise InputsChanged(
                    f"{name}: its inputs changed after it started ({', '.join(differ)}), so "
                    "its outputs are from the old ones; nothing was recorded. Run it again")
            self.repo.stage_cache.save(stage)
            stage.commit()
            stage.dump(update_pipeline=False)
            dvc_internals.command_recorded(stage)

    def run_cache_key(self, name: str) -> str | None:
        """The stage's key in DVC's run-cache (its command, deps and params, as
        prepare() saved them): the same for the same inputs in any clone;
        None if DVC would not cache it."""
        with self.locked():
            with contextlib.suppress(AssertionError, ValueError):
                return dvc_internals.run_cache_key(self._stages[name])
            return None

    def lock_entry(self, name: str) -> dict:
        """The stage as dvc.lock would record it now."""
        with self.locked():
            return dvc_internals.lock_entry(self._stages[name])
