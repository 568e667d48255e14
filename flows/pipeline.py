"""The whole study as one Prefect flow run over the DVC pipeline.

One task run per DVC stage (``download``, ``preprocess``, ``train[task1]``,
``evaluate[task1]``, ..., ``report``) in the dependency order of dvc.yaml.
A task's cache key is the stage's DVC fingerprint (definition, content of its
inputs and code, its params section), so an unchanged stage ends ``Cached``
and one changed hyperparameter reruns only the stages it reaches. The
results table is published as a Prefect artifact.

    python -m flows.pipeline [--tasks task1,task3] [--workers N] [--project DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dvc_project import DvcProject, prefect_dir, run_command

REPORT = "data/report/report.md"
ARTIFACT_KEY = "mnist-cnn-results"
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
DOWNLOAD_RETRIES = 2
DONE = ("Completed", "Cached")


class StageFingerprint(CachePolicy):
    """Cache key = the stage's DVC fingerprint, computed by the flow when it
    submits the stage (see DvcProject.fingerprint) and passed in.

    Prefect's INPUTS policy over a stage *name* or TASK_SOURCE (this module's
    text) would see neither the data, nor the params, nor the stage's code."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict, flow_parameters: dict,
                    **kwargs) -> str:
        return inputs["fingerprint"]


def run_name(stage: str) -> str:
    """``train@task1`` -> ``train[task1]``."""
    base, _, item = stage.partition("@")
    return f"{base}[{item}]" if item else base


@task(persist_result=True, cache_result_in_memory=False, retry_delay_seconds=5,
      cache_policy=StageFingerprint())
def run_stage(stage: str, cmd: str, root: str, fingerprint: str, stale: bool) -> dict:
    """Run one DVC stage's command unless dvc.lock already has it; returns
    whether it ran. Needs no DVC access: it can run on any worker that sees
    the project folder. The flow records the result in dvc.lock."""
    logger = get_run_logger()
    # A cache miss is not proof of work to do: `dvc repro` may have built the
    # stage since the last flow run.
    if not stale:
        logger.info("%s is up to date in dvc.lock; nothing to run", stage)
        return {"stage": stage, "ran": False}
    run_command(cmd, root, stage, logger.info)
    return {"stage": stage, "ran": True}


def select(graph: dict[str, list[str]], tasks: list[str] | None) -> list[str]:
    """Stages to run: all of them, or the shared ones plus the named tasks'."""
    if not tasks:
        return list(graph)
    known = {s.partition("@")[2] for s in graph if "@" in s}
    unknown = sorted(set(tasks) - known)
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return [s for s in graph if "@" not in s or s.partition("@")[2] in tasks]


# Threads for task runs; how many stages do real work at once is `workers`.
@flow(name="mnist-cnn-study", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=16))
def pipeline(tasks: list[str] | None = None, workers: int = DEFAULT_WORKERS,
             project: str = ".") -> dict[str, str]:
    """Run the study's DVC stages as Prefect tasks; returns each stage's final state.

    Args:
        tasks: only these tasks' train/evaluate stages (plus download,
            preprocess and report); default all.
        workers: stages run concurrently when independent.
        project: the project folder (holding dvc.yaml).
    """
    logger = get_run_logger()
    with DvcProject(project) as dvc:
        graph = dvc.graph
        wanted = select(graph, tasks)
        store = prefect_dir(dvc.root)
        # Paths, not strings: Prefect reads "a/b" as a block's name.
        stage_task = run_stage.with_options(
            cache_policy=StageFingerprint().configure(key_storage=store / "cache"),
            result_storage=store / "results",
        )
        states = _schedule(dvc, graph, wanted, stage_task, workers, logger)

        report = dvc.published(REPORT)
        if report is not None and states.get("report") in DONE:
            # The figures are files beside the report; the artifact keeps the text.
            text = report.split("\n## Figures", 1)[0]
            create_markdown_artifact(
                key=ARTIFACT_KEY, description="MNIST CNN study: final results",
                markdown=f"{text}\n\nFigures: `data/report/report.html` in the project.\n")
    # Skipped (a stage waiting on an unselected, stale task) is not a failure.
    failed = {s: st for s, st in states.items() if st not in (*DONE, "Skipped")}
    if failed:
        raise RuntimeError(f"stages not completed: {failed}")
    return states


def _schedule(dvc, graph, wanted, stage_task, workers, logger) -> dict[str, str]:
    """Submit each stage once its upstream stages are done, and return each
    stage's final state name. At most ``workers`` stages that have work to do
    run at once; up-to-date ones (cached, or done by `dvc repro`) take no
    worker and are checked off in parallel.

    Submitting only then lets the freshness check see the upstream's new
    outputs: a stage whose outputs were deleted or altered, or whose dvc.lock
    entry is stale, refreshes its cache record instead of reporting Cached.
    """
    states: dict[str, str] = {}
    futures: dict[str, PrefectFuture] = {}
    running: dict[PrefectFuture, tuple[str, bool]] = {}  # future: (stage, has work)
    waiting = list(wanted)  # dependencies first
    while waiting or running:
        busy = {stage for stage, _ in running.values()}
        working = sum(work for _, work in running.values())
        for stage in list(waiting):
            ups = graph[stage]
            if any(u in waiting or u in busy for u in ups):
                continue
            stale = dvc.is_stale(stage)
            if stale and working >= workers:
                continue
            waiting.remove(stage)
            not_done = [u for u in ups if states.get(u, "Completed") not in DONE]
            outdated = [u for u in ups if u not in wanted and dvc.is_stale(u)]
            if not_done or outdated:
                logger.warning("skipping %s: %s not up to date", stage,
                               ", ".join(not_done or outdated))
                states[stage] = "Skipped"
                continue
            futures[stage] = stage_task.with_options(
                name=run_name(stage), task_run_name=run_name(stage), refresh_cache=stale,
                retries=DOWNLOAD_RETRIES if stage == "download" else 0,
            ).submit(stage, dvc.command(stage), dvc.root, dvc.fingerprint(stage), stale,
                     wait_for=[futures[u] for u in ups if u in futures])
            running[futures[stage]] = (stage, stale)
            busy.add(stage)
            working += stale
        if running:
            done = next(as_completed(list(running)))
            done.wait()  # records the final state on the future
            stage, _ = running.pop(done)
            states[stage] = done.state.name
            if done.state.name not in DONE:
                logger.error("%s ended %s: %s", stage, done.state.name, done.state.message)
            elif done.state.name == "Completed" and done.result()["ran"]:
                dvc.commit(stage)  # into dvc.lock before anything downstream starts
    return states


def dask_runner(address: str):
    """A task runner sending stages to the Dask scheduler at ``address``."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description="Run the MNIST CNN study (the DVC pipeline in dvc.yaml) as one Prefect "
                    "flow run. Unchanged stages end Cached; results go to the Prefect UI "
                    "when PREFECT_API_URL points at a server, else to a temporary one.")
    parser.add_argument("--tasks", type=lambda text: [t for t in text.split(",") if t],
                        metavar="T1,T2", help="only these tasks' train and evaluate stages "
                        "(plus download, preprocess and report); default: every task")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                        help="independent stages run at once (default %(default)s)")
    parser.add_argument("--project", default=".", metavar="DIR",
                        help="project folder holding dvc.yaml (default: current folder)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                        help="run the stages on this Dask cluster (prefect-dask); its "
                        "workers must see the project folder at the same path")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    flow_ = pipeline.with_options(task_runner=dask_runner(args.dask_address)) \
        if args.dask_address else pipeline
    state = flow_(tasks=args.tasks, workers=args.workers, project=args.project,
                  return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
