"""The test metrics of the study, one entry each: how the evaluate stage
computes it from a model's scores on the test split, and how the report, the
study's DVC metric (data/metrics.json), the flow's results artifact and
``make compare`` name and show it. A new metric is one ``@metric`` here.

Loss and accuracy are Keras' own (``model.evaluate``), so the published
figures are those of the notebook's calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Scores(NamedTuple):
    """What a metric is computed from: one model on the test split."""

    loss: float         # Keras' model.evaluate
    accuracy: float     # Keras' model.evaluate
    labels: np.ndarray  # true classes
    predicted: np.ndarray  # predicted classes


@dataclass(frozen=True)
class Metric:
    key: str    # evaluate's files: test_<key>; the report's columns: <key>, <key>_std
    short: str  # data/metrics.json and `dvc exp show`: <task>.<short>
    label: str  # column headers: "test <label>"
    compute: Callable[[Scores], float]
    higher_is_better: bool
    compact: Callable[[float], str]  # make compare's cell: at most 5 characters
    compact_unit: str = ""  # of that figure: "%"
    versus_notebook: bool = False  # the notebook reported it: show ours minus theirs

    @property
    def file_key(self) -> str:
        return f"test_{self.key}"


METRICS: dict[str, Metric] = {}


def metric(**fields) -> Callable[[Callable[[Scores], float]], Callable[[Scores], float]]:
    """Register the decorated function as the metric ``fields`` describe."""
    def register(compute: Callable[[Scores], float]) -> Callable[[Scores], float]:
        METRICS[fields["key"]] = Metric(compute=compute, **fields)
        return compute
    return register


def _percent(value: float) -> str:
    return "100" if value >= 0.9995 else f"{100 * value:.1f}"


def _loss(value: float) -> str:
    digits = 3 if value < 1 else 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f}".removeprefix("0")


@metric(key="accuracy", short="acc", label="acc", higher_is_better=True, compact=_percent,
        compact_unit="%", versus_notebook=True)
def accuracy(scores: Scores) -> float:
    return scores.accuracy


@metric(key="loss", short="loss", label="loss", higher_is_better=False, compact=_loss)
def loss(scores: Scores) -> float:
    return scores.loss


PRIMARY = METRICS["accuracy"]  # what ranks tasks ("best") and what the findings compare
