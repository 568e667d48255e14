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
from flows.executor import StageRequest
from mnist_cnn.params import PARAMS_FILE, flatten


class ProjectBusy(RuntimeError):
    """Another DVC process (``dvc repro``, a flow run) holds the project."""

    def __init__(self, root: str, detail: str = ""):
        super().__init__(
            f"{root}: another DVC process (a `dvc repro`, `dvc exp run` or another flow "
            "run) is working on this project; wait for it to finish and run again"
            + (f". DVC says: {detail}" if detail else ""))


def _params_changes(dep: ParamsDependency) -> list[str]:
    """``tasks.task1.optimizer.learning_rate 0.01 -> 0.05``, one per changed key."""
    old, new = flatten(dep.hash_info.value or {}), flatten(dep.read_params())
    return [f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


# DVC resolves stage addresses and its run cache against the current folder,
# as its CLI does: each call works from its project's root, one at a time in a
# process (a flow's control plane and an executor can share one).
_CWD = threading.RLock()


class DvcProject:
    """A DVC repository, locked while open; safe to use from several threads."""

    def __init__(self, root: str | Path, config: dict | None = None):
        self.root = str(Path(root).resolve())
        self._config = config  # DVC settings over the project's own (dvc config)
        self.repo: Repo | None = None

    # --- lifetime -----------------------------------------------------------

    def __enter__(self) -> DvcProject:
        # Undone in reverse order by _cleanup, also when entering fails.
        self._cleanup = contextlib.ExitStack()
        try:
            with self._dvc():
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
        with self._dvc():
            self._cleanup.close()

    @contextlib.contextmanager
    def _dvc(self):
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

    def lock_entry(self, name: str) -> dict:
        """The stage as dvc.lock would record it now."""
        with self._dvc():
            return dvc_internals.lock_entry(self._stages[name])

    # --- stages on other machines (flows/executor.py) --------------------------------

    def request(self, name: str, remote: str) -> StageRequest:
        """What a worker needs to run ``name`` (prepared: its deps saved), by
        hash and relative path: its definition, what it is computed from, the
        upstream outputs it reads and where the remote is."""
        with self._dvc():
            stage = self._stages[name]
            lock = {k: v for k, v in dvc_internals.lock_entry(stage).items() if k != "outs"}
            reads = [d["path"] for d in lock.get("deps", [])]
            inputs = [out for other in self._stages.values() if other is not stage
                      for out in dvc_internals.lock_entry(other).get("outs", [])
                      if "md5" in out and any(out["path"] == p or out["path"].startswith(
                          f"{p}/") for p in reads)]
            url = self.repo.config["remote"][remote]["url"]
            return StageRequest(
                stage=name, definition=dvc_internals.stage_definition(stage), lock=lock,
                inputs=inputs, params=Path(self.root, PARAMS_FILE).read_text(encoding="utf-8"),
                remote=remote, url=url)

    def restore_from_remote(self, name: str, remote: str) -> bool:
        """Restore ``name`` from the remote's run-cache (its record, then its
        outputs, each file checked against its hash); False if the remote
        has no record of these inputs."""
        return self._restore_from_remote(name, remote) is not None

    def _restore_from_remote(self, name: str, remote: str) -> dict | None:
        with self._dvc():
            stage = self._stages[name]
            if not dvc_internals.fetch_run_cache_record(self.repo, stage, remote):
                return None
            return dvc_internals.restore_record(self.repo, stage, remote)

    def record_remote(self, name: str, request: StageRequest, entry: dict) -> None:
        """Record what a worker returned for ``request``, as a local run would
        be recorded: its deps must be those asked for, and its record and
        outputs on the remote (fetched here, each file checked)."""
        from flows.executor import StageRefused, _differences

        if differ := _differences(entry, request.lock):
            raise StageRefused(f"{name}: the worker computed it from other inputs than asked: "
                               f"{', '.join(differ)}")
        record = self._restore_from_remote(name, request.remote)
        if record is None:
            raise StageRefused(f"{name}: the worker's result is not on the DVC remote "
                               f"{request.remote!r} (its record or an output is missing)")
        if record.get("outs") != entry.get("outs"):
            raise StageRefused(f"{name}: the remote's record differs from what the worker "
                               "returned")
        self.commit(name)

    def fetch(self, outs: list[dict], remote: str) -> None:
        """Fetch outputs by hash (lock entries) from ``remote`` and check them out."""
        with self._dvc():
            dvc_internals.fetch_outputs(self.repo, outs, remote)

    def push(self, name: str, remote: str) -> int:
        """Send the stage's run-cache record and its outputs to ``remote``;
        files sent."""
        with self._dvc():
            return dvc_internals.push_record(self.repo, self._stages[name], remote)
