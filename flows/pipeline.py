"""The whole study as one Prefect flow run over the DVC pipeline.

One task run per DVC stage (``download``, ``preprocess``, ``train[task1]``,
``evaluate[task1]``, ..., ``report``) in the dependency order of dvc.yaml.
DVC decides what each stage needs (flows/dvc_project.py), and each task run
ends in one of three states, also said in its name (``train[task1] · cached``):

- ``Completed``: the stage was stale and its command ran;
- ``Cached``: the stage was stale, but DVC's run-cache had its outputs for
  exactly these inputs; they were restored, nothing ran;
- ``UpToDate``: dvc.lock already records the stage with its current inputs
  and outputs; nothing to do.

Task runs carry no tags: Prefect checks each tag of a task run against the
server's concurrency limits, a call to the API per task run and tag.

Prefect caches nothing itself: DVC's cache is the one store.

    python -m flows.pipeline [--tasks task1,task3] [--workers N] [--project DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import experiment, lifecycle, ui
from flows.dvc_project import DvcProject
from flows.executor import (
    DaskDispatcher,
    StageFailed,
    StageRefused,
    StageRequest,
    execute,
    run_command,
    stop_stages,
)
from flows.experiment import checked_params
from mnist_cnn.cli import runner
from mnist_cnn.cli.checks import ParamsError
from mnist_cnn.params import Params

FLOW_NAME = "mnist-cnn-study"
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
DOWNLOAD_RETRIES = 2
RUN, CACHED, UP_TO_DATE = "ran", "cached", "up-to-date"  # what a stage needed
STATE_NAMES = {RUN: "Completed", CACHED: "Cached", UP_TO_DATE: "UpToDate"}
# In the task run's name too: the UI's graph colours all three the same green.
NAME_SUFFIX = {RUN: "", CACHED: " · cached", UP_TO_DATE: " · up to date"}
DONE = set(STATE_NAMES.values())


def run_name(stage: str) -> str:
    """``train@task1`` -> ``train[task1]``."""
    base, _, item = stage.partition("@")
    return f"{base}[{item}]" if item else base


@task(cache_policy=NO_CACHE, persist_result=False, retry_delay_seconds=5)
def run_stage(stage: str, action: str, why: str, cmd: str, root: str | None,
              request: StageRequest | None = None, dask_address: str | None = None):
    """One DVC stage: run its command (``action`` ``ran``), or report that DVC
    restored it from its cache or found it up to date. With a ``request`` it
    runs from the DVC remote (flows/executor.py) on a worker of the Dask
    scheduler at ``dask_address`` (else here), and returns the stage's lock
    entry as its state's data; without, in the project folder ``root``, which
    any worker must see at the same path. The flow records the result in
    dvc.lock."""
    logger = get_run_logger()
    if action == UP_TO_DATE:
        logger.info("%s: up to date, nothing to do (dvc.lock records its current inputs)",
                    stage)
        return Completed(name=STATE_NAMES[UP_TO_DATE], message="up to date in dvc.lock")
    if action == CACHED:
        message = f"restored from DVC's run-cache, nothing ran; changed: {why}"
        logger.info("%s: %s", stage, message)
        return Completed(name=STATE_NAMES[CACHED], message=message)
    logger.info("> %s", cmd)
    try:
        if request and dask_address:
            entry = DaskDispatcher(dask_address).run(request, logger.info)
        elif request:
            entry = execute(request, logger.info)
        else:
            entry = run_command(cmd, root, stage, logger.info)
    except (StageFailed, StageRefused) as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    logger.info("%s: ran, because %s", stage, why)
    return Completed(message=f"ran; changed: {why}", data=entry)


def check_tasks(tasks: list[str] | None, known: list[str]) -> None:
    """ValueError naming the unknown ones, if ``tasks`` are not all ``known``."""
    if tasks is None:
        return
    unknown = sorted(set(tasks) - set(known))
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(known)}")


def select(graph: dict[str, list[str]], tasks: list[str] | None) -> list[str]:
    """Stages to run: all of them, or the shared ones plus the named tasks'."""
    return [s for s in graph if tasks is None or "@" not in s or s.partition("@")[2] in tasks]


def _problems(exc: Exception) -> tuple[str, list[str]]:
    """(what went wrong, in a tag's words; the problems) of a refused run."""
    if isinstance(exc, ParamsError):
        return "invalid params", exc.problems
    return getattr(exc, "what", "invalid input"), [str(exc)]


class RunRefused(ValueError):
    """A flow run's input is refused before anything runs; ``what`` tags it."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


def dvc_remotes(root: Path) -> list[str]:
    """The DVC remotes a project has (its config files, as ``dvc remote list``)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted(repo.config["remote"])


def _params(root: Path, commit: str, overrides: dict[str, Any] | None,
            workers: int) -> Params:
    """The params a command-line run uses: any override of a key that exists."""
    return checked_params(root, overrides, commit)


def run_study(root: Path, tasks: list[str] | None, workers: int,
              overrides: dict[str, Any] | None,
              params_for: Callable[[Path, str, dict | None, int], Params] = _params,
              remote: str | None = None, dask_address: str | None = None):
    """The body of the flows in this package (``pipeline``, and the served
    ``study`` of flows/serve.py): check the input, then run the stages.
    ``params_for(root, commit, overrides, workers)`` gives the params a run
    uses, or ParamsError naming what this entry point does not allow.
    ``remote``: run stale stages from that DVC remote (flows/executor.py), on
    the workers of the Dask scheduler at ``dask_address`` if given."""
    logger = get_run_logger()
    commit, edited = ui.git_state(root)
    exp = None
    if overrides:  # HEAD with the overrides only, saved as an experiment
        exp = experiment.Experiment(root, experiment.git(root, "rev-parse", "HEAD").strip(),
                                    dict(overrides), flow_run.get_name())
        edited = []
    label = (exp.name, len(overrides)) if exp else None
    try:  # every problem in params.yaml, the overrides and tasks, named, before any stage
        if workers < 1:  # the UI's Run form does not check it
            raise RunRefused("invalid workers", f"workers must be at least 1, got {workers}")
        if exp:
            try:
                experiment.check_name(exp.name)
            except ValueError as exc:
                raise RunRefused("invalid run name", str(exc)) from None
        params = params_for(root, exp.commit if exp else "HEAD", overrides, workers)
        if remote and remote not in (known := dvc_remotes(root)):
            raise RunRefused("unknown remote", f"--remote {remote}: no such DVC remote in "
                             f"{root}; known: {', '.join(known) or 'none'} (dvc remote add)")
        try:
            check_tasks(tasks, list(params.tasks))
        except ValueError as exc:
            raise RunRefused("unknown task", str(exc)) from None
    except (ParamsError, ValueError) as exc:
        what, problems = _problems(exc)
        ui.label_run(commit, edited, f"{what}: {problems[0].split(':')[0]}",
                     ["failed", what.replace(" ", "-")], label)
        logger.error("%s", exc)
        return Failed(message="; ".join(problems))

    guardian = lifecycle.guardian()
    api = ui.api_url()
    # Marked Crashed if this process dies before Prefect gives the run a final state.
    guardian.flow_run(str(flow_run.get_id()), api if ui.api_is_set() else None)
    lifecycle.clean_leftovers(api)  # what crashed runs before this one could not undo
    ui.label_run(commit, edited, "running", ["running"], label)
    watching = lifecycle.watch_server(api, lambda why: lifecycle.exit_now(
        f"{why}; stopping this flow run. Stages that finished are recorded in dvc.lock: "
        "run the flow again to go on", before=stop_stages))
    try:
        with experiment.workspace(exp, guardian) if exp else nullcontext(root) as work:
            # Every file fetched from the remote is hashed before it is used.
            config = {**(exp.config if exp else {}),
                      **({"remote": {remote: {"verify": True}}} if remote else {})}
            with DvcProject(work, config or None) as dvc:
                states = Scheduler(dvc, select(dvc.graph, tasks), workers, logger,
                                   remote, dask_address).run()
            what = ui.summary(states)
            ok = all(st in (*DONE, "Skipped") for st in states.values())
            if ok and exp:
                experiment.save(exp, work)
                logger.info("saved as DVC experiment %s: `dvc exp show` lists it", exp.name)
            # A report left up to date is the one an earlier run published.
            if states.get("report") in DONE - {STATE_NAMES[UP_TO_DATE]}:
                ui.publish_results(work, what, exp.name if exp else None)
    except BaseException as exc:
        # Said at the top of the UI, not only in the log; best effort, the
        # server may be what failed.
        stopped = not isinstance(exc, Exception)
        full = runner.no_space(exc)
        with contextlib.suppress(Exception):
            ui.label_run(commit, edited, "stopped" if stopped else "failed: no space left"
                         if full else f"failed: {type(exc).__name__}", ["failed"], label)
        if full:  # one line, not a traceback: what is full and what to do
            logger.error("%s", full)
            return Failed(message=full)
        raise
    finally:
        watching.set()
    logger.info("%s", ui.label_run(commit, edited, what, ui.outcome_tags(states), label))
    # Skipped (a stage waiting on an unselected, stale task) is not a failure.
    if not ok:
        return Failed(message=what, data=states)
    return states


# Threads for task runs; how many stages do real work at once is `workers`.
@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=16))
def pipeline(tasks: list[str] | None = None, workers: int = DEFAULT_WORKERS,
             overrides: dict[str, Any] | None = None, project: str = ".",
             remote: str | None = None, dask_address: str | None = None) -> dict[str, str]:
    """Run the study's DVC stages: DVC decides what each needs; returns each
    stage's final state (Completed: ran, Cached: restored, UpToDate).

    Args:
        tasks: only these tasks' train/evaluate stages (plus download,
            preprocess and report); default all.
        workers: stage commands that run at the same time, at most.
        overrides: params to change for this run, as `dvc exp run -S` takes
            them, e.g. {"tasks.task1.optimizer.learning_rate": 0.05}. The run
            then happens in a temporary clone and is saved as a DVC
            experiment named after the flow run; your workspace is untouched.
        project: the project folder (holding dvc.yaml).
        remote: a DVC remote of the project: stages then run in scratch
            folders, fetching their inputs from it and pushing their outputs
            to it, and what it holds is restored, not rerun.
        dask_address: with ``remote``, a Dask scheduler whose workers run the
            stages (they need the remote, not the Prefect API).
    """
    return run_study(Path(project).resolve(), tasks, workers, overrides, remote=remote,
                     dask_address=dask_address)


class Scheduler:
    """Submit each stage once its upstream stages are done. DVC is asked then
    (not before) whether it is stale, so it sees what upstream just wrote.

    An up-to-date stage, or one restored from the run-cache, takes no worker;
    at most ``workers`` stage commands run at once. With a DVC ``remote``,
    stages run from requests (flows/executor.py): the run-cache is looked up
    there too before a stage is sent, and a worker's result is recorded from
    there."""

    def __init__(self, dvc: DvcProject, wanted: list[str], workers: int, logger,
                 remote: str | None = None, dask_address: str | None = None):
        self.dvc, self.wanted, self.workers, self.logger = dvc, wanted, workers, logger
        self.remote, self.dask_address = remote, dask_address
        self.requests: dict[str, StageRequest] = {}
        self.states: dict[str, str] = {}
        self.futures: dict[str, PrefectFuture] = {}
        self.running: dict[PrefectFuture, tuple[str, bool]] = {}  # (stage, its command runs)
        self.to_run: list[tuple[str, str]] = []  # (stage, why): prepared, waiting for a worker

    def submit(self, stage: str, action: str, why: str) -> PrefectFuture:
        ups = [self.futures[u] for u in self.dvc.graph[stage] if u in self.futures]
        future = run_stage.with_options(
            name=run_name(stage), task_run_name=run_name(stage) + NAME_SUFFIX[action],
            retries=DOWNLOAD_RETRIES if stage == "download" and action == RUN else 0,
        ).submit(stage, action, why, self.dvc.command(stage),
                 None if stage in self.requests else self.dvc.root, self.requests.get(stage),
                 self.dask_address, wait_for=ups)
        self.futures[stage] = future
        return future

    def _blockers(self, stage: str) -> list[str]:
        ups = self.dvc.graph[stage]
        return ([u for u in ups if u in self.states and self.states[u] not in DONE]
                or [u for u in ups if u not in self.wanted and self.dvc.is_stale(u)])

    def start(self, stage: str) -> None:
        """Decide what a ready stage needs and start it."""
        if blockers := self._blockers(stage):
            self.logger.warning("skipping %s: %s not up to date", stage, ", ".join(blockers))
            self.states[stage] = "Skipped"
        elif not self.dvc.is_stale(stage):
            self.running[self.submit(stage, UP_TO_DATE, "")] = (stage, False)
        else:
            why = "; ".join(self.dvc.why_stale(stage))
            if self.dvc.prepare(stage) or (  # restored from the run-cache, here or remote
                    self.remote and self.dvc.restore_from_remote(stage, self.remote)):
                self.dvc.commit(stage)
                self.running[self.submit(stage, CACHED, why)] = (stage, False)
            else:  # in dvc.yaml's order: a task's evaluate before the next task's train
                if self.remote:
                    self.requests[stage] = self.dvc.request(stage, self.remote)
                self.to_run.append((stage, why))
                self.to_run.sort(key=lambda item: self.wanted.index(item[0]))

    def finish(self, future: PrefectFuture) -> None:
        future.wait()  # records the final state on the future
        stage, ran = self.running.pop(future)
        state = future.state
        self.states[stage] = state.name
        if state.name not in DONE:
            self.logger.error("%s ended %s: %s", stage, state.name, state.message)
        elif ran and stage in self.requests:  # from the remote, checked, into dvc.lock
            try:
                self.dvc.record_remote(stage, self.requests[stage], state.result())
            except StageRefused as exc:
                self.logger.error("%s", exc)
                self.states[stage] = "Failed"
        elif ran:  # into dvc.lock before anything downstream starts
            self.dvc.commit(stage)

    def _unfinished(self) -> set[str]:
        """Stages whose outputs are not final yet: their command runs or waits."""
        return {s for s, ran in self.running.values() if ran} | {s for s, _ in self.to_run}

    def run(self) -> dict[str, str]:
        waiting = list(self.wanted)  # dependencies first
        try:
            while waiting or self.running or self.to_run:
                for stage in list(waiting):
                    if not set(self.dvc.graph[stage]) & (set(waiting) | self._unfinished()):
                        waiting.remove(stage)
                        self.start(stage)
                working = sum(ran for _, ran in self.running.values())
                while self.to_run and working < self.workers:
                    stage, why = self.to_run.pop(0)
                    self.running[self.submit(stage, RUN, why)] = (stage, True)
                    working += 1
                if self.running:
                    self.finish(next(as_completed(list(self.running))))
        except (KeyboardInterrupt, TerminationSignal):
            # Ctrl-C, or `kill PID` (Prefect raises TerminationSignal here). The
            # stages run in sessions of their own: stopped now, or this process
            # would wait for them (minutes) in the task runner's shut-down.
            stop_stages()
            raise
        return self.states


def dask_runner(address: str):
    """A task runner sending stages to the Dask scheduler at ``address``."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def _task_list(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError("give at least one task name, e.g. --tasks task1,task3")
    return tasks


def _override(text: str) -> tuple[str, Any]:
    """``tasks.task1.optimizer.learning_rate=0.05`` -> (key, 0.05), the value
    read as YAML, as DVC reads params."""
    from flows.dvc_internals import loads_yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), loads_yaml(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description="Run the MNIST CNN study (the DVC pipeline in dvc.yaml) as one Prefect "
                    "flow run. DVC decides what is stale; a stage whose inputs were seen "
                    "before is restored from DVC's cache (Cached).")
    parser.add_argument("--tasks", type=_task_list, metavar="T1,T2",
                        help="only these tasks' train and evaluate stages (plus download, "
                        "preprocess and report); default: every task")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                        help="stage commands run at once, at most (default %(default)s)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[],
                        type=_override, metavar="KEY=VALUE",
                        help="change a param for this run only, as `dvc exp run -S` does; the "
                        "run is saved as a DVC experiment, your workspace is untouched")
    parser.add_argument("--project", default=".", metavar="DIR",
                        help="project folder holding dvc.yaml (default: current folder)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                        help="run the stages on this Dask cluster (prefect-dask); without "
                        "--remote its workers must see the project folder at the same path")
    parser.add_argument("--remote", metavar="NAME",
                        help="a DVC remote of the project: each stale stage runs in a "
                        "scratch folder of its worker, its inputs fetched from the remote by "
                        "hash, its outputs pushed there; workers share nothing but the remote")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    overrides = dict(args.overrides) or None
    try:  # before a Prefect server is even started
        params = checked_params(Path(args.project).resolve(), overrides)
    except ParamsError as exc:
        parser.exit(1, f"error: {exc}\n")
    try:
        check_tasks(args.tasks, list(params.tasks))
    except ValueError as exc:
        parser.error(str(exc))
    # Before Prefect may start a temporary server: it is then ours to stop.
    lifecycle.guardian()
    # With --remote, stages go to Dask as plain tasks (flows/executor.py); without,
    # the flow's task runs themselves do, and workers share the project folder.
    flow_ = pipeline.with_options(task_runner=dask_runner(args.dask_address)) \
        if args.dask_address and not args.remote else pipeline
    state = flow_(tasks=args.tasks, workers=args.workers, overrides=overrides,
                  project=args.project, remote=args.remote,
                  dask_address=args.dask_address if args.remote else None, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
