"""Where a run is, and how long it has left: what the stages print.

A stage says where it is in one line per epoch (train) or one at its start
(the others)::

    [3/7] train@task2 · seed 2/3 · epoch 4/5 · loss 0.4120 · accuracy 0.8760
          · 15.2 s/epoch · stage 1m20s left · run 6m10s left   (on one line)

``[k/n]`` and the run's time left come from the entry point that started it
(``make run``, the flow), which knows what else will run: it hands each
stage its place in the run and the estimates of the stages after it, in
``MNIST_CNN_PLAN``. A stage started otherwise (plain ``dvc repro``) prints
the rest. Estimates come from what the same stage took before on this
machine with the same data sizes (``.work/timings/<stage>.json``, written by
each stage that succeeds); a stage never timed here is a guess until its
first epoch. :func:`parse` reads a line back (the flow shows it in the UI).

Not a dependency of any stage: how progress is shown retrains nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

PLAN_ENV = "MNIST_CNN_PLAN"
STARTED_ENV = "MNIST_CNN_STARTED"  # the stage's start (time.time()), if not its process's
TIMINGS = Path(".work") / "timings"  # beside the stage locks (mnist_cnn.cli.runner.WORK)


def duration(seconds: float) -> str:
    """``1h02m``, ``4m10s``, ``12s``."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


# --- what took how long, here -------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """A stage's last successful run on this machine."""

    sizes: list[int]            # data.train_size, data.test_size it ran with
    seconds: float              # its whole run
    epoch_seconds: float = 0.0  # train: the median epoch
    epochs: int = 0             # train: epochs trained in that run (all seeds)

    def estimate(self, sizes: list[int], epochs: int = 0) -> float | None:
        """Seconds for a run with ``sizes`` and ``epochs`` to train; None if
        it ran on other data sizes (its figure says nothing then)."""
        if list(sizes) != list(self.sizes):
            return None
        overhead = self.seconds - self.epochs * self.epoch_seconds
        return max(0.0, overhead) + epochs * self.epoch_seconds


def record(stage: str, timing: Timing, folder: Path = TIMINGS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(asdict(timing)))
    os.replace(tmp, folder / f"{stage}.json")


def recorded(stage: str, folder: Path = TIMINGS) -> Timing | None:
    try:
        return Timing(**json.loads((folder / f"{stage}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def estimate(stage: str, sizes: list[int], epochs: int = 0, folder: Path = TIMINGS,
             alike: tuple[str, ...] = ()) -> float | None:
    """Seconds ``stage`` should take with these data sizes and ``epochs`` to
    train (all seeds), from its last run here, else from the first of
    ``alike`` (stages that do the same work per epoch: a task with the same
    layers) that ran here; None if none was timed so."""
    for name in (stage, *alike):
        timing = recorded(name, folder)
        if timing and (found := timing.estimate(sizes, epochs)) is not None:
            return found
    return None


def alike(stage: str, params) -> tuple[str, ...]:
    """The stages of the same kind whose task has the same layers and batch
    size: an epoch of theirs takes as long."""
    kind, _, task = stage.partition("@")
    if task not in params.tasks:
        return ()
    mine = params.train_config(task)
    return tuple(f"{kind}@{other}" for other in params.tasks if other != task
                 and params.tasks[other].layers == mine.spec.layers
                 and params.train_config(other).batch_size == mine.batch_size)


# --- a stage's place in its run ------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """What the entry point tells a stage: its place among the stages this
    run will run, and the estimates of those after it."""

    index: int = 0                      # 1-based; 0: unknown (not started by an entry point)
    total: int = 0
    later: list[float | None] = field(default_factory=list)  # seconds, None: never timed

    @classmethod
    def from_env(cls) -> Place:
        try:
            return cls(**json.loads(os.environ.get(PLAN_ENV) or "{}"))
        except (ValueError, TypeError):
            return cls()

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @property
    def prefix(self) -> str:
        return f"[{self.index}/{self.total}] " if self.index else ""

    def run_left(self, stage_left: float | None) -> str:
        """`` · run 6m10s left`` (``≥`` when some stage was never timed); empty
        outside a planned run."""
        if not self.index or stage_left is None:
            return ""
        known = sum(s for s in self.later if s is not None)
        unknown = sum(s is None for s in self.later)
        never = f"{unknown} stage{'s' if unknown > 1 else ''} never timed here"
        if unknown and not known:
            return f" · run: {never}"
        return (f" · run {'≥' if unknown else ''}{duration(stage_left + known)} left"
                + (f" ({never})" if unknown else ""))


def say(line: str) -> None:
    print(line, flush=True)


def stage_started(stage: str, estimate_s: float | None, place: Place | None = None) -> None:
    place = place or Place.from_env()
    about = f"about {duration(estimate_s)}" if estimate_s is not None else "never timed here"
    say(f"{place.prefix}{stage} · {about}{place.run_left(estimate_s)}")


class Epochs:
    """Per-epoch lines of a train stage over all its seeds: seed s of S, epoch
    e of E, the epoch's loss and accuracy, seconds per epoch, and the time
    left for the stage (measured from its own epochs) and for the run."""

    def __init__(self, stage: str, seeds: int, epochs: int, place: Place | None = None):
        self.stage, self.seeds, self.epochs = stage, seeds, epochs
        self.place = place or Place.from_env()
        self.times: list[float] = []

    def line(self, seed_index: int, epoch: int, logs: dict) -> str:
        """``seed_index`` 1-based, ``epoch`` 1-based, ``logs`` Keras' epoch logs."""
        if "epoch_seconds" in logs:
            self.times.append(float(logs["epoch_seconds"]))
        per_epoch = sorted(self.times)[len(self.times) // 2] if self.times else math.nan
        left_epochs = (self.epochs - epoch) + (self.seeds - seed_index) * self.epochs
        left = left_epochs * per_epoch if self.times else None
        parts = [f"{self.place.prefix}{self.stage}", f"seed {seed_index}/{self.seeds}",
                 f"epoch {epoch}/{self.epochs}",
                 *(f"{name} {float(logs[name]):.4f}" for name in ("loss", "accuracy")
                   if name in logs),
                 *([f"{per_epoch:.1f} s/epoch", f"stage {duration(left)} left"]
                   if left is not None else [])]
        return " · ".join(parts) + self.place.run_left(left)


_NUMBER = r"[-+\d.eainf]+"
_LINE = re.compile(r"^(?:\[(?P<index>\d+)/(?P<total>\d+)\] )?(?P<stage>\S+@\S+) · "
                   r"seed (?P<seed>\d+)/(?P<seeds>\d+) · epoch (?P<epoch>\d+)/(?P<epochs>\d+)"
                   rf"(?: · loss (?P<loss>{_NUMBER}))?(?: · accuracy (?P<accuracy>{_NUMBER}))?")


def parse(line: str) -> dict | None:
    """A train stage's epoch line read back: stage, seed, seeds, epoch,
    epochs (ints), loss, accuracy (floats, if given), and ``done``, the
    fraction of the stage's epochs finished; None for any other line."""
    found = _LINE.match(line.strip())
    if not found:
        return None
    out: dict = {"stage": found["stage"]}
    for key in ("seed", "seeds", "epoch", "epochs"):
        out[key] = int(found[key])
    for key in ("loss", "accuracy"):
        if found[key] is not None:
            out[key] = float(found[key])
    out["done"] = ((out["seed"] - 1) * out["epochs"] + out["epoch"]) / (
        out["seeds"] * out["epochs"])
    return out


def epochs_to_train(stage: str, params) -> tuple[int, int]:
    """(seeds, epochs per seed) a ``train@<task>`` stage trains; (0, 0) for others."""
    kind, _, task = stage.partition("@")
    if kind != "train" or task not in params.tasks:
        return 0, 0
    return params.seeds, params.tasks[task].epochs


_CURRENT: list[Epochs] = []  # the stage of this process (one per process), for its callbacks


def epochs() -> Epochs | None:
    """The per-epoch lines of the train stage this process runs (see timed)."""
    return _CURRENT[-1] if _CURRENT else None


@contextlib.contextmanager
def timed(stage: str, params) -> Iterator[None]:
    """Around a stage's core: say where it is and what it should take; once
    it succeeded, record what it took (with these data sizes)."""
    sizes = [params.data.train_size, params.data.test_size]
    seeds, per_seed = epochs_to_train(stage, params)
    stage_started(stage, estimate(stage, sizes, seeds * per_seed, alike=alike(stage, params)))
    lines = Epochs(stage, seeds, per_seed) if per_seed else None
    _CURRENT[:] = [lines] if lines else []
    yield
    times = sorted(lines.times) if lines else []
    record(stage, Timing(sizes, time.time() - started(),
                         times[len(times) // 2] if times else 0.0, len(times)))


def started() -> float:
    """When this stage's process started, imports included (``STARTED_ENV``
    when its launcher gave it a process started beforehand)."""
    import psutil

    try:
        return float(os.environ[STARTED_ENV])
    except (KeyError, ValueError):
        return psutil.Process().create_time()


if __name__ == "__main__":  # python -m mnist_cnn.cli.progress LINE: what the flow reads
    print(parse(" ".join(sys.argv[1:])))
