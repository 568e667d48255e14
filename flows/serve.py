"""Serve the study as a Prefect deployment (``make serve``): the UI's Run
button starts it, with its parameters in a form. Runs with overrides become
DVC experiments (flows/experiment.py).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve [--max-epochs N ...]

Whoever reaches the Prefect API can fill in that form (a local server has no
authentication; see the README), so the served flow takes less than the
command line does:

- no project folder: a run works on the project this code belongs to;
- overrides only of existing keys, with single values (a number, a string,
  true/false), and only under ``seed``, ``seeds``, ``train``, ``data.train_size``,
  ``data.test_size`` and ``tasks.<task>``: never ``data.url`` (no download
  from a host the form names) and never a new key or a new list of layers;
- bounds on what a run may cost: epochs and seeds per task, stage commands
  at once, and the run's wall time (``--max-epochs``, ``--max-seeds``,
  ``--max-workers``, ``--timeout-hours``; whoever serves sets them).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import experiment
from flows.pipeline import DEFAULT_WORKERS, FLOW_NAME, MAX_POINTS, MAX_WORKERS, run_study
from mnist_cnn.cli.checks import ParamsError
from mnist_cnn.params import Params, set_key

DEPLOYMENT = "study"
PROJECT = Path(__file__).resolve().parents[1]  # the project this code belongs to
LIMITS_ENV = "MNIST_CNN_SERVE_LIMITS"  # main() hands the limits to the runs it starts
OVERRIDABLE = re.compile(r"(seed|seeds|train\.\w+|data\.(train_size|test_size)"
                         r"|tasks\.[A-Za-z]\w*\.[\w.]+)")
SCALAR = (bool, int, float, str)


@dataclass(frozen=True)
class Limits:
    """What one served run may cost at most."""

    max_epochs: int = 50
    max_seeds: int = 5
    max_workers: int = os.cpu_count() or 1
    timeout_hours: float = 6.0
    max_points: int = MAX_POINTS

    @classmethod
    def from_env(cls) -> Limits:
        return cls(**json.loads(os.environ.get(LIMITS_ENV) or "{}"))

    def params(self, root: Path, commit: str, overrides: dict[str, Any] | None,
               workers: int) -> Params:
        """The params of a served run: ``commit``'s with ``overrides``; a
        ParamsError names each override or value the form may not set."""
        overrides = overrides or {}
        committed = experiment.committed_params(root, commit) if overrides else {}
        problems = []
        for key, value in overrides.items():
            if not OVERRIDABLE.fullmatch(key):
                problems.append(f"{key}: not settable from a served run (allowed: seed, seeds, "
                                "train.*, data.train_size, data.test_size, tasks.<task>.*)")
            elif not isinstance(value, SCALAR):
                problems.append(f"{key}: a served run sets single values (a number, a string, "
                                f"true or false), got {type(value).__name__}")
            else:
                try:
                    set_key(copy.deepcopy(committed), key, value, create=False)
                except (IndexError, ValueError, TypeError, AttributeError, KeyError):
                    problems.append(f"{key}: no such key to override")
        if workers > self.max_workers:
            problems.append(f"workers: at most {self.max_workers} in a served run, "
                            f"got {workers}")
        source = "the served run's input"
        if problems:
            raise ParamsError(source, problems)
        params = experiment.checked_params(root, overrides, commit, create=False)
        problems = [f"tasks.{name}.epochs: at most {self.max_epochs} in a served run, got "
                    f"{task.epochs}" for name, task in params.tasks.items()
                    if task.epochs > self.max_epochs]
        if params.seeds > self.max_seeds:
            problems.append(f"seeds: at most {self.max_seeds} in a served run, "
                            f"got {params.seeds}")
        if problems:
            raise ParamsError(source, problems)
        return params


@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS),
      timeout_seconds=Limits.from_env().timeout_hours * 3600)
def study(tasks: list[str] | None = None, workers: int = DEFAULT_WORKERS,
          overrides: dict[str, Any] | None = None,
          sweep: dict[str, list] | None = None) -> dict[str, str]:
    """Run the study's DVC stages in this project: DVC decides what each
    needs (Completed: ran, Cached: restored from DVC's cache, UpToDate).

    Args:
        tasks: only these tasks' train/evaluate stages (plus download,
            preprocess and report); default all.
        workers: stage commands that run at the same time, at most.
        overrides: params to change for this run, as `dvc exp run -S` takes
            them, e.g. {"tasks.task1.optimizer.learning_rate": 0.05}; the run
            is then saved as a DVC experiment named after the flow run.
        sweep: params to sweep, each with its list of values, e.g.
            {"tasks.task1.optimizer.learning_rate": [0.01, 0.05, 0.1]}: each
            combination (with the overrides) is a DVC experiment of its own.
    """
    if sweep is not None and not all(isinstance(v, list) and v for v in sweep.values()):
        return Failed(message="sweep: give each key a list of values, e.g. "
                      '{"tasks.task1.optimizer.learning_rate": [0.01, 0.05]}')
    limits = Limits.from_env()
    return run_study(PROJECT, tasks, workers, overrides, limits.params, sweep_axes=sweep,
                     max_points=limits.max_points)


def main(argv: list[str] | None = None) -> int:
    default = Limits()
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=default.max_epochs,
                        help="epochs a served run may give a task")
    parser.add_argument("--max-seeds", type=int, default=default.max_seeds,
                        help="seeds a served run may ask for")
    parser.add_argument("--max-workers", type=int, default=default.max_workers,
                        help="stage commands a served run may run at once")
    parser.add_argument("--timeout-hours", type=float, default=default.timeout_hours,
                        help="a served run is stopped after this long")
    parser.add_argument("--max-points", type=int, default=default.max_points,
                        help="points a served sweep may have")
    args = parser.parse_args(argv)
    limits = Limits(args.max_epochs, args.max_seeds, args.max_workers, args.timeout_hours,
                    args.max_points)
    os.environ[LIMITS_ENV] = json.dumps(asdict(limits))  # the runs are child processes
    study.with_options(timeout_seconds=limits.timeout_hours * 3600).serve(
        name=DEPLOYMENT,
        description="The MNIST CNN study over its DVC pipeline. Leave `overrides` empty to "
                    "run the project as it is; give e.g. "
                    '{"tasks.task1.optimizer.learning_rate": 0.05} to run a DVC experiment '
                    "(`dvc exp show` lists it); give `sweep` a list of values per key, e.g. "
                    '{"tasks.task1.optimizer.learning_rate": [0.01, 0.05]}, to run every '
                    "combination, each an experiment. Limits: "
                    + ", ".join(f"{k} {v}" for k, v in asdict(limits).items()),
        limit=1,  # the stages already use every core
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
