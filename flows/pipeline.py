"""The whole study as one Prefect flow run over the DVC pipeline.

DVC decides what each stage needs (flows/dvc_project.py), and the flow makes
a task run for each stage that needs work, in the dependency order of
dvc.yaml; its state says what happened (flows/ui.py ``Outcome``), also in
its name (``train[task1] · cached``):

- ``Completed``: the stage was stale and its command ran;
- ``Cached``: the stage was stale, but DVC's run-cache had its outputs for
  exactly these inputs; they were restored, nothing ran;
- ``Failed``: its command failed, with the reason as the state's message.

A stage that is up to date (dvc.lock records it with its current inputs and
outputs) gets no task run: one task run, ``check``, lists every stage's
verdict, and the flow run's name and message say how many were up to date.
So a no-op costs what DVC's checks cost, however many stages there are.

Where a stale stage runs is a stage runner's business: here in the project
folder (flows/local.py) or on workers through the DVC remote
(flows/remote.py); each restores, runs and records. Prefect caches nothing
itself: DVC's cache is the one store. Task runs carry no tags: Prefect checks
each tag of a task run against the server's concurrency limits, a call to
the API per task run and tag.

    python -m flows.pipeline [--tasks T1,T2] [--workers N] [-S KEY=VALUE ...]
                             [--project DIR] [--remote NAME [--dask-address ADDRESS]]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import dvc_internals, experiment, lifecycle, private, sweep, ui
from flows.experiment import checked_params
from flows.local import LocalRunner
from flows.remote import DaskDispatcher, DaskUnreachable, RemoteRunner
from flows.scheduler import Point, Scheduler, stop_stages
from flows.ui import DONE, Outcome
from mnist_cnn.cli import runner
from mnist_cnn.cli.checks import ParamsError
from mnist_cnn.params import Params

FLOW_NAME = "mnist-cnn-study"
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
MAX_WORKERS = 16  # threads for task runs: more workers than this are refused
MAX_POINTS = sweep.MAX_POINTS


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


def _params(root: Path, commit: str, overrides: dict[str, Any] | None,
            workers: int) -> Params:
    """The params a command-line run uses: any override of a key that exists."""
    return checked_params(root, overrides, commit)


def check_input(root: Path, tasks: list[str] | None, workers: int,
                points: list[dict[str, Any]],
                params_for: Callable[[Path, str, dict | None, int], Params] = _params,
                remote: str | None = None, dask_address: str | None = None,
                max_points: int = sweep.MAX_POINTS) -> str | None:
    """Every problem with a run's input named before anything runs (RunRefused
    or ParamsError): params.yaml with each point's overrides, the tasks, the
    workers, the number of points, the DVC remote and the Dask scheduler
    (both must answer). Returns the commit experiments run (None for the
    project as it is: one point, no overrides).
    ``params_for(root, commit, overrides, workers)`` gives the params a run
    uses, or ParamsError naming what this entry point does not allow."""
    if not 1 <= workers <= MAX_WORKERS:  # the UI's Run form does not check it
        raise RunRefused("invalid workers", f"workers must be 1 to {MAX_WORKERS}, got {workers}")
    if len(points) > max_points:
        raise RunRefused("too many points", f"the sweep has {len(points)} points, more than "
                         f"--max-points {max_points}: sweep fewer values, or raise the bound")
    try:  # where the flow keeps its ledgers and clones
        private.root()
    except private.UnsafeFolder as exc:
        raise RunRefused("unsafe folder", str(exc)) from None
    commit = None
    if any(points):  # HEAD with the overrides, run in a clone
        try:
            commit = experiment.git(root, "rev-parse", "--verify", "HEAD^{commit}").strip()
        except RuntimeError:
            raise RunRefused("no commit", f"{root}: no commit yet; a run with overrides "
                             "runs the last commit with them: commit the project first") from None
    for overrides in points:
        params = params_for(root, commit or "HEAD", overrides or None, workers)
        try:
            check_tasks(tasks, list(params.tasks))
        except ValueError as exc:
            raise RunRefused("unknown task", str(exc)) from None
    if remote:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            if remote not in (known := sorted(repo.config["remote"])):
                raise RunRefused("unknown remote", f"--remote {remote}: no such DVC remote in "
                                 f"{root}; known: {', '.join(known) or 'none'} (dvc remote add)")
            try:
                dvc_internals.check_remote(repo, remote)
            except DvcException as exc:
                raise RunRefused("unreachable remote", str(exc)) from None
    if dask_address:
        try:
            DaskDispatcher(dask_address)
        except DaskUnreachable as exc:
            raise RunRefused("no dask scheduler", str(exc)) from None
    return commit


def _points(root: Path, commit: str | None, overrides: dict, axes: dict, logger) -> list[Point]:
    """The run's points, named; those an experiment of ``commit`` has done already, reused."""
    if not (overrides or axes):
        return [Point("", {})]
    points = []
    for values in sweep.grid(overrides, axes):
        name = sweep.point_name(values, axes) if axes else flow_run.get_name()
        done = experiment.same_params(root, commit, values)
        if done:
            logger.info("%s: experiment %s has these params at this commit already; "
                        "reused, not run again", name, done)
            points.append(Point(done, values, reused=True))
            continue
        free = experiment.free_name(root, name)
        if free != name:
            logger.warning("an experiment named %s exists already: this one is %s", name, free)
        if free in {p.name for p in points}:  # two points one name (values that read alike)
            free = experiment.free_name(root, f"{free}-{len(points)}")
        points.append(Point(free, values, experiment.Experiment(root, commit, values, free)))
    return points


def run_study(root: Path, tasks: list[str] | None, workers: int,
              overrides: dict[str, Any] | None,
              params_for: Callable[[Path, str, dict | None, int], Params] = _params,
              remote: str | None = None, dask_address: str | None = None,
              on_dask: bool = False, sweep_axes: dict[str, list] | None = None,
              max_points: int = sweep.MAX_POINTS):
    """The body of the flows in this package (``pipeline``, and the served
    ``study`` of flows/serve.py): check the input, then run the stages of
    every point (the project itself; one experiment with ``overrides``; the
    grid of ``sweep_axes``, each point an experiment). ``remote``: run stale
    stages through that DVC remote (flows/remote.py), on the workers of the
    Dask scheduler at ``dask_address`` if given. ``on_dask``: the flow's task
    runner sends the stages to Dask workers that see the project folder (no
    ready interpreters here, then)."""
    logger = get_run_logger()
    # DVC's own stdout handlers would print each of its lines again beside
    # Prefect's, and its notes (a stage cached, dvc.lock updated) repeat ours.
    logging.getLogger("dvc").handlers.clear()
    logging.getLogger("dvc").setLevel(logging.WARNING)
    commit, edited = ui.git_state(root)
    overrides, axes = dict(overrides or {}), dict(sweep_axes or {})
    specs = sweep.grid(overrides, axes) if (overrides or axes) else [{}]
    label = None
    if overrides or axes:
        edited = []  # a clone of the commit runs, not the workspace
        label = ((f"sweep of {len(specs)} points", len(axes)) if axes else
                 (flow_run.get_name(), len(overrides)))
    try:  # every problem in params.yaml, the overrides and tasks, named, before any stage
        if overrides and not axes:
            try:
                experiment.check_name(flow_run.get_name())
            except ValueError as exc:
                raise RunRefused("invalid run name", str(exc)) from None
        head = check_input(root, tasks, workers, specs, params_for, remote, dask_address,
                           max_points)
        points = _points(root, head, overrides, axes, logger)
        if label and not axes:
            label = (points[0].name, len(overrides))
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

    def done(point: Point) -> None:  # each experiment saved once its stages are, not at the end
        if axes:
            point.results = sweep.results(point.work)
        # A report left up to date is the one an earlier run published.
        elif point.states.get("report") in DONE - {Outcome.UP_TO_DATE}:
            ui.publish_results(point.work, ui.summary(point.states), point.name or None)
        point.close()
        if point.exp and point.ok:
            logger.info("saved as DVC experiment %s: `dvc exp show` lists it", point.name)

    try:
        with contextlib.ExitStack() as opened:
            for point in (p for p in points if not p.reused):
                opened.callback(point.close)
                point.work = root
                # Every file fetched from the remote is hashed before it is used.
                point.open(guardian, {"remote": {remote: {"verify": True}}} if remote else {},
                           logger.warning)
                point.stages = RemoteRunner(point.dvc, remote, dask_address) if remote else \
                    LocalRunner(point.dvc, workers, here=not on_dask)
                point.wanted = select(point.dvc.graph, tasks)
            Scheduler([p for p in points if not p.reused], workers, logger, done).run()
            states = {f"{p.name}:{s}" if axes else s: st
                      for p in points for s, st in p.states.items()}
            what = ui.summary(states) if not axes else sweep.summary(points)
            ok = all(p.ok for p in points)
            if axes:
                sweep.publish(root, points, axes, what)
            elif points[0].reused:
                logger.info("%s: `dvc exp apply %s` puts its results in your workspace",
                            points[0].name, points[0].name)
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
    # A failure's message says why, whole: each failed stage's own reason.
    message = "; ".join([what, *(r for p in points for r in p.reasons.values())])
    return (Completed if ok else Failed)(message=message,
                                         data={s: str(o) for s, o in states.items()})


# Threads for task runs; how many stages do real work at once is `workers`.
@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def pipeline(tasks: list[str] | None = None, workers: int = DEFAULT_WORKERS,
             overrides: dict[str, Any] | None = None, project: str = ".",
             remote: str | None = None, dask_address: str | None = None,
             sweep: dict[str, list] | None = None,
             max_points: int = MAX_POINTS) -> dict[str, str]:
    """Run the study's DVC stages: DVC decides what each needs; returns each
    stage's outcome (Completed: ran, Cached: restored, UpToDate, Skipped).

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
        dask_address: a Dask scheduler whose workers run the stages: with
            ``remote`` they need the remote, not the Prefect API; without, they
            see the project folder at the same path (the flow is then run with
            a Dask task runner, as ``main`` does).
        sweep: params to sweep, each with its values, e.g.
            {"tasks.task1.optimizer.learning_rate": [0.01, 0.05]}: every
            combination (with ``overrides``) is a DVC experiment of its own.
        max_points: a sweep of more points than this is refused.
    """
    return run_study(Path(project).resolve(), tasks, workers, overrides, remote=remote,
                     dask_address=dask_address, on_dask=bool(dask_address and not remote),
                     sweep_axes=sweep, max_points=max_points)


def dask_runner(address: str):
    """A task runner sending stages to the Dask scheduler at ``address``."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def _task_list(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError("give at least one task name, e.g. --tasks task1,task3")
    return tasks


def _value(text: str) -> Any:
    """A value as DVC reads params (YAML)."""
    from flows.dvc_internals import loads_yaml

    return loads_yaml(text)


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
                        metavar="KEY=VALUE",
                        help="change a param for this run only, as `dvc exp run -S` does; the "
                        "run is saved as a DVC experiment, your workspace is untouched. "
                        "Several values (KEY=a,b,c, KEY=range(1,5), KEY=choice(a,b)) make a "
                        "sweep: every combination is an experiment of its own. "
                        "++KEY=VALUE replaces a value by one of another kind")
    parser.add_argument("--max-points", type=int, default=MAX_POINTS, metavar="N",
                        help="refuse a sweep of more points (default %(default)s)")
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
    try:
        overrides, axes = sweep.parse(args.overrides, _value)
    except ValueError as exc:
        parser.error(str(exc))
    try:  # before a Prefect server is even started
        check_input(Path(args.project).resolve(), args.tasks, args.workers,
                    sweep.grid(overrides, axes) if (overrides or axes) else [{}],
                    remote=args.remote, dask_address=args.dask_address,
                    max_points=args.max_points)
    except RunRefused as exc:
        if exc.what in ("unknown task", "invalid workers"):  # the command line's own
            parser.error(str(exc))
        parser.exit(1, f"error: {exc}\n")
    except ParamsError as exc:
        parser.exit(1, f"error: {exc}\n")
    # Before Prefect may start a temporary server: it is then ours to stop.
    lifecycle.guardian()
    # With --remote, stages go to Dask as plain tasks (flows/remote.py); without,
    # the flow's task runs themselves do, and workers share the project folder.
    flow_ = pipeline.with_options(task_runner=dask_runner(args.dask_address)) \
        if args.dask_address and not args.remote else pipeline
    state = flow_(tasks=args.tasks, workers=args.workers, overrides=overrides or None,
                  project=args.project, remote=args.remote, dask_address=args.dask_address,
                  sweep=axes or None, max_points=args.max_points, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
