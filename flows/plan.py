"""What a run will do, for the progress lines and the UI's progress bar: the
stages it runs and what each should take (mnist_cnn/cli/progress.py).

The stages a run will run are those DVC finds changed now and every stage
downstream of one (it will be changed once its input is rewritten): an upper
bound, as a stage whose input comes out the same is then up to date. The
estimates are each stage's last run here with the same data sizes.
"""

from __future__ import annotations

from pathlib import Path

from mnist_cnn.cli import progress
from mnist_cnn.cli.checks import ParamsError, load_params
from mnist_cnn.params import PARAMS_FILE


def estimates(stages: list[str], root: Path) -> dict[str, float | None]:
    """Seconds each stage should take with the project's params; None where
    it was never timed here (or params.yaml does not load: the stage says why)."""
    try:
        params = load_params(root / PARAMS_FILE)
    except ParamsError:
        return dict.fromkeys(stages)
    sizes = [params.data.train_size, params.data.test_size]
    folder = root / progress.TIMINGS
    out = {}
    for name in stages:  # a stage's name, or "<point>:<stage>" in a sweep
        stage = name.rpartition(":")[2]
        seeds, per_seed = progress.epochs_to_train(stage, params)
        out[name] = progress.estimate(stage, sizes, seeds * per_seed, folder,
                                      progress.alike(stage, params))
    return out


def to_run(order: list[str], upstream: dict[str, list[str]], changed) -> list[str]:
    """The stages of ``order`` (dependencies first) that ``changed(stage)``
    or that depend on one that will run."""
    planned: list[str] = []
    for stage in order:
        if any(u in planned for u in upstream.get(stage, ())) or changed(stage):
            planned.append(stage)
    return planned


class Plan:
    """The stages of a run with their estimates; each stage started gets its
    place (``[k/n]``) and the estimates of those not started yet."""

    def __init__(self, stages: list[str], root: Path, workers: int = 1):
        self.stages, self.workers, self.root = list(stages), max(1, workers), root
        self.seconds = estimates(self.stages, root)
        self.started: list[str] = []

    def start(self, stage: str) -> progress.Place:
        if stage not in self.stages:  # not foreseen: it runs all the same
            self.stages.append(stage)
            self.seconds[stage] = None
        self.started.append(stage)
        # What finished meanwhile is timed now: a task with the same layers, say.
        self.seconds.update(estimates([s for s in self.stages if s not in self.started],
                                      self.root))
        # Run `workers` at a time, the stages left take about 1/workers of their sum.
        later = [s / self.workers if s is not None else None for st, s in self.seconds.items()
                 if st not in self.started]
        return progress.Place(len(self.started), len(self.stages), later)

    @property
    def total(self) -> float:
        """Seconds of the whole plan, a stage never timed counted as the
        median of the others (at least a second)."""
        known = sorted(s for s in self.seconds.values() if s is not None)
        guess = known[len(known) // 2] if known else 1.0
        return sum(s if s is not None else guess for s in self.seconds.values()) or 1.0
