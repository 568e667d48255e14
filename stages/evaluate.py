"""Stage ``evaluate@<task>``: test loss, accuracy and confusion matrix of a task.

Each seed's model is scored on the prepared test split. ``metrics.json`` (a DVC
metric) holds the mean over seeds and their spread, ``seeds.json`` each seed's
figures; the confusion matrix (a DVC plot) and ``predictions.npy`` are those of
the first seed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
from dvclive import Live

from stages.cli import run
from stages.config import Params, load_params
from stages.io import atomic_dir, write_json
from stages.layout import MODEL, PER_SEED, PREDICTIONS, seed_dir
from stages.mnist import DataError, load_split

log = logging.getLogger(__name__)


def score(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Test loss and accuracy of ``model``, its predicted classes, and how
    long that took (``seconds``)."""
    start = time.perf_counter()
    loss, accuracy = model.evaluate(x, y, batch_size=1024, verbose=0)
    predicted = model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)
    return {"test_loss": float(loss), "test_accuracy": float(accuracy),
            "seconds": time.perf_counter() - start}, predicted


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean over seeds and the spread (sample std; 0 for one seed)."""
    out: dict = {}
    for key in ("test_accuracy", "test_loss"):
        values = [m[key] for m in per_seed.values()]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def evaluate(name: str, params: Params, models: Path, data: Path, out: Path) -> dict:
    x, y = load_split(data, "test")
    labels = y.argmax(axis=1)
    per_seed, first_predictions = {}, None
    for seed in params.seed_list:
        path = seed_dir(models, seed) / MODEL
        if not path.is_file():
            raise DataError(f"{path}: no such model; run train@{name} first")
        per_seed[seed], predicted = score(keras.models.load_model(path), x, y)
        log.info("%s seed %d: %s", name, seed, per_seed[seed])
        if first_predictions is None:
            first_predictions = predicted
    summary = summarize(per_seed)
    with atomic_dir(out) as staging:
        live = Live(dir=str(staging), dvcyaml=None, save_dvc_exp=False, report=None)
        live.summary.update(summary)
        live.log_sklearn_plot("confusion_matrix", labels, first_predictions,
                              name="confusion_matrix.json", title=f"{name}: confusion matrix")
        live.make_summary()
        np.save(staging / PREDICTIONS, first_predictions.astype(np.uint8))
        write_json(staging / PER_SEED, {str(s): m for s, m in per_seed.items()})
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="task name, a key of `tasks` in params.yaml")
    parser.add_argument("--models", type=Path, required=True, help="the task's train output")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for this task")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    params.task(args.task)
    evaluate(args.task, params, args.models, args.data, args.out)


if __name__ == "__main__":
    sys.exit(run(main))
