"""The flow's scheduler: every stage of every point of a run, in dependency
order, each where its point's stage runner says (restore, run, record).

A *point* is one set of params a flow run computes: the project as it is,
one experiment (``-S``), or each point of a sweep. A stage that needs work
gets a task run (``run_stage``: ``Completed`` or ``Failed``; ``restored``:
``Cached``); a stage that is up to date gets none: one task run, ``check``,
lists every stage's verdict, so a no-op costs what DVC's checks cost.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import task_run
from prefect.states import Completed, Failed

from flows import experiment, ui
from flows.dvc_project import DvcProject, InputsChanged
from flows.executor import StageRefused
from flows.local import StageFailed, stop_processes
from flows.plan import Plan
from flows.remote import RemoteFailed, stop_sent
from flows.ui import DONE, Outcome, run_label
from mnist_cnn.cli.progress import PLAN_ENV

DOWNLOAD_RETRIES, RETRY_DELAY_S = 2, 5


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a task run that returned a Failed state with
    ``exc_info=True`` outside any exception, which prints a stray ``NoneType:
    None`` under the reason (prefect/task_engine.py, ``handle_retry``); the
    empty traceback is dropped (tests/test_ui.py checks the line is gone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())


@task(cache_policy=NO_CACHE, persist_result=False)
def run_stage(job, why: str, unit: str = "", retries: int = 0):
    """One stale DVC stage's command, where its runner's ``job`` says; its
    output lines stream to the log (``error:`` lines at ERROR) and move the
    run's progress (``unit``: its name in the run's plan). Returns the job's
    result (a worker's lock entry) as its state's data; the flow records it
    in dvc.lock. ``retries``: more attempts if it fails (the download); here,
    not Prefect's, whose exhausted retries log a traceback of no exception."""
    logger = get_run_logger()
    name = task_run.get_name() or run_label(job.stage)  # with its point's, in a sweep

    def emit(line: str) -> None:
        (logger.error if line.startswith("error:") else logger.info)("%s", line)
        if ui.PROGRESS:
            ui.PROGRESS[0].line(line, unit, name)

    try:
        for attempt in range(retries + 1):
            logger.info("> %s", job.cmd)
            try:
                result = job.run(emit)
                break
            except (StageFailed, StageRefused, InputsChanged) as exc:
                logger.error("%s", exc)
                if attempt == retries:
                    return Failed(message=str(exc))
                logger.info("attempt %d of %d failed; again in %d s", attempt + 1,
                            retries + 1, RETRY_DELAY_S)
                time.sleep(RETRY_DELAY_S)
    finally:  # its name says the epoch while it trains; then its plain name again
        with contextlib.suppress(Exception), get_client(sync_client=True) as client:
            client.set_task_run_name(task_run.get_id(), name)
    logger.info("%s: ran, because %s", job.stage, why)
    return Completed(message=f"ran; changed: {why}", data=result)


@task(cache_policy=NO_CACHE, persist_result=False)
def restored(stage: str, why: str):
    """A stale stage whose outputs DVC's run-cache had: restored, nothing ran."""
    message = f"restored from DVC's run-cache, nothing ran; changed: {why}"
    get_run_logger().info("%s: %s", stage, message)
    return Completed(name=Outcome.CACHED, message=message)


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="check")
def check(points: list) -> dict[tuple[int, str], str | None]:
    """Every wanted stage's verdict, of every point, in one task run: stale
    (why), up to date, or after a stale one (decided once that one is done).
    Returns {(point, stage): why it is stale, None if up to date, "" if
    decided later}."""
    logger, verdicts = get_run_logger(), {}
    for i, point in enumerate(points):
        dvc, of = point.dvc, (f"{point.name}: " if point.exp else "")
        for stage in point.wanted:
            if after := [u for u in dvc.graph[stage] if verdicts.get((i, u)) is not None]:
                verdicts[(i, stage)] = ""
                logger.info("%s%s: after %s", of, stage, ", ".join(after))
            elif dvc.is_stale(stage):
                verdicts[(i, stage)] = "; ".join(dvc.why_stale(stage)) or "changed"
                point.stages.warm()
                logger.info("%s%s: stale, %s", of, stage, verdicts[(i, stage)])
            else:
                verdicts[(i, stage)] = None
        if fresh := [s for s in point.wanted if verdicts[(i, s)] is None]:
            logger.info("%sup to date (dvc.lock records their current inputs): %s", of,
                        ", ".join(fresh))
    return verdicts


@dataclass
class Point:
    """One set of params a flow run computes: the project as it is, or its
    commit with overrides as a DVC experiment (in a clone of its own)."""

    name: str  # the experiment's ("" for the project itself)
    overrides: dict[str, Any]
    exp: experiment.Experiment | None = None
    reused: bool = False  # an experiment of this commit has these params: nothing to run
    work: Path | None = None
    dvc: DvcProject | None = None
    stages: Any = None  # its stage runner (flows/local.py, flows/remote.py)
    wanted: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)  # its report's results.csv, as records
    opened: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    closed: bool = False

    def open(self, guardian, config: dict, warn) -> None:
        """Its clone (an experiment's) and its DVC project, locked while open."""
        self.work = self.opened.enter_context(experiment.workspace(self.exp, guardian)) \
            if self.exp else self.work
        self.dvc = DvcProject(self.work, {**(self.exp.config if self.exp else {}),
                                          **config} or None, warn)
        self.opened.enter_context(self.dvc)

    def close(self) -> None:
        """Release its DVC project, save its experiment if all went well, and
        remove its clone. Once; also when the run is stopped."""
        if self.closed:
            return
        self.closed = True
        with self.opened:
            if self.dvc is not None and self.exp and self.ok and self.wanted and \
                    set(self.states) >= set(self.wanted):
                self.dvc.__exit__()  # DVC's lock: exp save takes it
                try:
                    experiment.save(self.exp, self.work)
                except RuntimeError as exc:  # a run of that name saved meanwhile
                    self.reasons["save"] = str(exc)
                    self.states["save"] = Outcome.FAILED

    def label(self, stage: str) -> str:
        """The name of a stage's task run: ``train[task1]``, with the point's in a sweep."""
        return run_label(stage) + (f" · {self.name}" if self.name and self.exp else "")

    @property
    def ok(self) -> bool:  # Skipped (waiting on a task left out) is not a failure
        return all(st in (*DONE, Outcome.SKIPPED) for st in self.states.values())


def stop_stages() -> None:
    """Stop every stage this flow run started, here and on Dask workers."""
    stop_sent()
    stop_processes()


class Scheduler:
    """Start each stage of each point once its upstream stages are done, as
    the point's runner says (restore, run, record). DVC is asked then (not
    before) whether it is stale, so it sees what upstream just wrote; a stage
    the ``check`` found up to date, with nothing upstream to run, is not
    asked again.

    A stage that is up to date gets no task run; a restored one a task run
    that takes no worker; at most ``workers`` stage commands run at once,
    point by point, in dvc.yaml's order (a task's evaluate before the next
    task's train). A stage that another point runs with the same inputs (its
    run-cache key) waits for it, then is restored from the run-cache: every
    distinct stage of a sweep is computed once. ``done(point)`` is called as
    each point's last stage ends."""

    def __init__(self, points: list[Point], workers: int, logger, done=lambda point: None):
        self.points, self.workers, self.logger, self.done = points, workers, logger, done
        self.futures: dict[tuple, PrefectFuture] = {}
        self.running: dict[PrefectFuture, tuple] = {}  # (point, stage) whose command runs
        self.to_run: list[tuple[tuple, str]] = []  # ((point, stage), why): waiting for a worker
        self.held: dict[tuple, tuple[str, str]] = {}  # unit: (run-cache key, why), see above
        self.owner: dict[str, tuple] = {}  # run-cache key: the unit computing it
        self.verdicts: dict[tuple, str | None] = {}
        self.plan: Plan | None = None

    # --- one stage of one point ---------------------------------------------------------

    def _submit(self, unit: tuple, why: str) -> PrefectFuture:
        i, stage = unit
        point = self.points[i]
        ups = [self.futures[(i, u)] for u in point.dvc.graph[stage] if (i, u) in self.futures]
        env = {PLAN_ENV: self.plan.start(f"{i}:{stage}").to_env()} if self.plan else {}
        future = run_stage.with_options(
            name=run_label(stage), task_run_name=point.label(stage),
        ).submit(point.stages.job(stage, env), why, f"{i}:{stage}",
                 DOWNLOAD_RETRIES if stage == "download" else 0, wait_for=ups)
        self.futures[unit] = future
        return future

    def _blockers(self, unit: tuple) -> list[str]:
        i, stage = unit
        point = self.points[i]
        ups = point.dvc.graph[stage]
        return ([u for u in ups if u in point.states and point.states[u] not in DONE]
                or [u for u in ups if u not in point.wanted and point.dvc.is_stale(u)])

    def start(self, unit: tuple) -> None:
        """Decide what a ready stage needs and start it."""
        i, stage = unit
        point = self.points[i]
        verdict = self.verdicts.get(unit, "")
        if blockers := self._blockers(unit):
            self.logger.warning("skipping %s: %s not up to date", point.label(stage),
                                ", ".join(blockers))
            self._end(unit, Outcome.SKIPPED)
        elif verdict is None or not (verdict or point.dvc.is_stale(stage)):
            if verdict == "":  # after a stage that ran: say so, the check could not
                self.logger.info("%s: up to date", point.label(stage))
            self._end(unit, Outcome.UP_TO_DATE)
        else:
            self._restore_or_queue(unit, verdict or "; ".join(point.dvc.why_stale(stage)))

    def _restore_or_queue(self, unit: tuple, why: str) -> None:
        i, stage = unit
        point = self.points[i]
        try:
            done = point.stages.restore(stage)
        except RemoteFailed as exc:  # one line naming the remote, not a traceback
            self.logger.error("%s", exc)
            self._end(unit, Outcome.FAILED, str(exc))
            return
        if done:
            restored.with_options(task_run_name=f"{point.label(stage)} · cached")(stage, why)
            self._end(unit, Outcome.CACHED)
        elif (key := point.dvc.run_cache_key(stage)) and key in self.owner:
            self.held[unit] = (key, why)  # another point computes it: then restored
        else:
            if key:
                self.owner[key] = unit
            self.to_run.append((unit, why))
            self.to_run.sort(key=lambda item: (item[0][0],
                                               self.points[item[0][0]].wanted.index(item[0][1])))

    def _end(self, unit: tuple, outcome: str, reason: str | None = None) -> None:
        i, stage = unit
        point = self.points[i]
        point.states[stage] = outcome
        if reason:
            point.reasons[stage] = reason
        if ui.PROGRESS and outcome != Outcome.UP_TO_DATE:
            ui.PROGRESS[0].finished(f"{i}:{stage}")
        for held, (key, why) in list(self.held.items()):  # identical stages of other points
            if self.owner.get(key) == unit:
                del self.held[held], self.owner[key]
                self._restore_or_queue(held, why)
        if set(point.states) >= set(point.wanted):
            self.done(point)

    def finish(self, future: PrefectFuture) -> None:
        future.wait()  # records the final state on the future
        unit, state = self.running.pop(future), future.state
        i, stage = unit
        if state.name != Outcome.RAN:
            self._end(unit, state.name, state.message or state.name)
            return
        try:  # checked, into dvc.lock before anything downstream starts
            self.points[i].stages.record(stage, state.result())
        except (InputsChanged, RemoteFailed) as exc:
            self.logger.error("%s", exc)
            with contextlib.suppress(Exception), get_client(sync_client=True) as client:
                client.set_task_run_state(future.task_run_id, Failed(message=str(exc)),
                                          force=True)
            self._end(unit, Outcome.FAILED, str(exc))
            return
        self._end(unit, Outcome.RAN)

    # --- the whole run -----------------------------------------------------------------

    def _unfinished(self, i: int) -> set[str]:
        """A point's stages whose outputs are not final yet: they run or wait."""
        return {s for (j, s) in [*self.running.values(), *(u for u, _ in self.to_run),
                                 *self.held] if j == i}

    def run(self) -> None:
        self.verdicts = check(self.points)
        if planned := [f"{i}:{s}" for (i, s), why in self.verdicts.items() if why is not None]:
            self.plan = Plan(planned, Path(self.points[0].dvc.root), self.workers)
            with contextlib.suppress(Exception):  # a progress bar never fails a run
                ui.PROGRESS[:] = [ui.Progress(self.plan)]
        waiting = [(i, s) for i, point in enumerate(self.points) for s in point.wanted]
        try:
            while waiting or self.running or self.to_run or self.held:
                for unit in list(waiting):
                    i, stage = unit
                    pending = {s for (j, s) in waiting if j == i} | self._unfinished(i)
                    if not set(self.points[i].dvc.graph[stage]) & pending:
                        waiting.remove(unit)
                        self.start(unit)
                while self.to_run and len(self.running) < self.workers:
                    unit, why = self.to_run.pop(0)
                    try:
                        self.running[self._submit(unit, why)] = unit
                    except (InputsChanged, RemoteFailed) as exc:  # its inputs cannot reach it
                        self.logger.error("%s", exc)
                        self._end(unit, Outcome.FAILED, str(exc))
                if self.running:
                    self.finish(next(as_completed(list(self.running))))
                elif self.held and not self.to_run:  # (cannot happen: an owner always runs)
                    raise RuntimeError(f"stages wait on nothing: {sorted(self.held)}")
        except (KeyboardInterrupt, TerminationSignal):
            # Ctrl-C, or `kill PID` (Prefect raises TerminationSignal here). The
            # stages run in sessions of their own (or on Dask workers): stopped
            # now, or this process would wait for them in the task runner's shut-down.
            stop_stages()
            raise
        finally:
            ui.PROGRESS.clear()


