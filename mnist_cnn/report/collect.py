"""Gather what the report shows from the train and evaluate outputs: one row
per task, and each task's training curves."""

from __future__ import annotations

import json
import statistics
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_cnn.dataset import DataError, load_split
from mnist_cnn.layout import CONFIG, PER_SEED, PREDICTIONS, epoch_log
from mnist_cnn.layout import METRICS as METRICS_FILE
from mnist_cnn.metrics import METRICS, PRIMARY
from mnist_cnn.params import Task
from mnist_cnn.report.notebook import NOTEBOOK

CURVES = ("loss", "accuracy", "epoch_seconds")


def hidden_activation(task: Task) -> str:
    """The activation of every hidden layer (all but the output layer) if
    they share one (``sigmoid``), else ``mixed``; what a finding means by a
    sigmoid or a ReLU model."""
    found = {a for layer in task.layers[:-1] if (a := getattr(layer, "activation", None))}
    return found.pop() if len(found) == 1 else "mixed"


def describe_layers(task: Task) -> str:
    """``conv32 5x5 sigmoid ×2 → flatten → dense10 softmax``."""
    runs = [(text, len(list(group)))
            for text, group in groupby(layer.describe() for layer in task.layers)]
    return " → ".join(text if n == 1 else f"{text} ×{n}" for text, n in runs)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; run the stage that writes it first") from None


def training_log(task_models: Path, seeds: list[int]) -> pd.DataFrame:
    """Every seed's per-epoch training log of a task, as dvclive wrote it:
    columns seed, epoch (1-based), loss, accuracy, epoch_seconds."""
    runs = []
    for seed in seeds:
        frames = [pd.read_csv(epoch_log(task_models, seed, m), sep="\t").set_index("step")
                  for m in CURVES]
        run = pd.concat(frames, axis=1).reset_index(names="step")
        runs.append(run.assign(seed=seed, epoch=run["step"] + 1))
    return pd.concat(runs, ignore_index=True)[["seed", "epoch", *CURVES]]


def collect(tasks: dict[str, Task], seeds: list[int], models: Path,
            evals: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per task with everything the report shows, and the training
    curves (per task and epoch, mean over seeds)."""
    rows, curves = [], []
    for name, task in tasks.items():
        config = _read_json(models / name / CONFIG)
        summary = _read_json(evals / name / METRICS_FILE)
        per_seed = list(_read_json(evals / name / PER_SEED).values())
        log = training_log(models / name, seeds)
        mean = log.drop(columns="seed").groupby("epoch", as_index=False).mean()
        curves.append(mean.assign(task=name))
        ref = NOTEBOOK.get(name)
        rows.append({
            "task": name,
            "layers": describe_layers(task),
            "params": config["param_count"],
            "nb_params": ref.param_count if ref else None,
            "epochs": task.epochs,
            "optimizer": task.optimizer.describe(),
            "optimizer_name": task.optimizer.name,
            "activation": hidden_activation(task),
            "seeds": len(per_seed),
            **{column: value for m in METRICS.values() for column, value in (
                (m.key, summary[m.file_key]),
                (f"{m.key}_std", summary.get(f"{m.file_key}_std", 0.0)),
                (f"{m.key}_runs", [run[m.file_key] for run in per_seed]),
                (f"nb_{m.key}", getattr(ref, m.file_key, None) if ref else None))},
            "nb_epochs": ref.epochs if ref else None,
            "s_per_epoch": statistics.median(log["epoch_seconds"]),
            "train_images": config["train_images"],
            "environment": config.get("environment", {}),
        })
    curve = pd.concat(curves, ignore_index=True)[["task", "epoch", *CURVES]]
    return pd.DataFrame(rows).set_index("task"), curve


def best_task(df: pd.DataFrame) -> str:
    column = df[PRIMARY.key]
    return column.idxmax() if PRIMARY.higher_is_better else column.idxmin()


def best_task_predictions(df: pd.DataFrame, evals: Path,
                          data: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """The best task (by the primary metric), the test images, their labels and
    its predictions."""
    best = best_task(df)
    x, y = load_split(data, "test")
    return best, x, y.argmax(axis=1), np.load(evals / best / PREDICTIONS)


# --- cells of the results table ------------------------------------------------
# Here, not in render.py, so that the flow's results artifact (flows/ui.py)
# formats them alike without importing the figures' matplotlib.


def number(value, digits=4) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def with_spread(mean, std, spread: bool) -> str:
    return f"{mean:.4f} ± {std:.4f}" if spread else f"{mean:.4f}"


def difference(ours, notebook) -> str:
    return "–" if pd.isna(notebook) else f"{ours - notebook:+.4f}"
