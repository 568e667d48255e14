"""The ``evaluate`` stage's core: test loss, accuracy and confusion matrix of a task.

Each seed's model is scored on the prepared test split. ``metrics.json`` holds
the mean over seeds (and, with several seeds, their spread), ``seeds.json`` each
seed's figures; the confusion matrix (a DVC plot) and ``predictions.npy`` are
those of the first seed. The report gathers every task's ``metrics.json`` into
the study's one DVC metric.
"""

from __future__ import annotations

import logging
import statistics
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
from dvclive import Live

from mnist_cnn.dataset import DataError, load_split
from mnist_cnn.io import atomic_files, write_json
from mnist_cnn.layout import MODEL, PER_SEED, PREDICTIONS, seed_dir
from mnist_cnn.metrics import METRICS, Scores

log = logging.getLogger(__name__)


def load_model(path: Path) -> keras.Model:
    """A trained model; a missing or damaged file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such model; run the train stage first")
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable Keras model ({type(exc).__name__}: "
                        f"{exc}); train it again") from None


def score(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Every test metric of ``model`` (mnist_cnn.metrics), how long that took
    (``seconds``), and its predicted classes."""
    start = time.perf_counter()
    loss, accuracy = model.evaluate(x, y, batch_size=1024, verbose=0)
    predicted = model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)
    scores = Scores(float(loss), float(accuracy), y.argmax(axis=1), predicted)
    return {**{m.file_key: float(m.compute(scores)) for m in METRICS.values()},
            "seconds": time.perf_counter() - start}, predicted


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean over seeds; with several seeds also their spread (sample std)."""
    out: dict = {}
    for key in (m.file_key for m in METRICS.values()):
        values = [m[key] for m in per_seed.values()]
        out[key] = statistics.fmean(values)
        if len(values) > 1:
            out[f"{key}_std"] = statistics.stdev(values)
    return out


def evaluate(task: str, seeds: list[int], models: Path, data: Path, out: Path) -> dict:
    """Score ``task``'s model of each seed; write metrics, per-seed figures,
    the first seed's confusion matrix and predictions into ``out``."""
    x, y = load_split(data, "test")
    labels = y.argmax(axis=1)
    per_seed, predictions = {}, []
    for seed in seeds:
        per_seed[seed], predicted = score(load_model(seed_dir(models, seed) / MODEL), x, y)
        log.info("%s seed %d: %s", task, seed, per_seed[seed])
        predictions.append(predicted)
    summary = summarize(per_seed)
    with atomic_files(out) as staging:
        live = Live(dir=str(staging), dvcyaml=None, save_dvc_exp=False, report=None)
        live.summary.update(summary)
        live.log_sklearn_plot("confusion_matrix", labels, predictions[0],
                              name="confusion_matrix.json", title=f"{task}: confusion matrix")
        live.make_summary()
        np.save(staging / PREDICTIONS, predictions[0].astype(np.uint8))
        write_json(staging / PER_SEED, {str(s): m for s, m in per_seed.items()})
    return summary
