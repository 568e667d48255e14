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
from mnist_cnn.layout import CONFIG, METRICS, PER_SEED, PREDICTIONS, epoch_log
from mnist_cnn.params import ExponentialDecay, Optimizer, Task
from mnist_cnn.report.notebook import NOTEBOOK

CURVES = ("loss", "accuracy", "epoch_seconds")


def describe_layers(task: Task) -> str:
    """``conv32 5x5 sigmoid ×2 → flatten → dense10 softmax``."""
    def one(layer) -> str:
        if layer.type == "conv2d":
            k = layer.kernel_size
            return f"conv{layer.filters} {k}x{k} {layer.activation}"
        if layer.type == "max_pooling2d":
            return f"maxpool{layer.pool_size}"
        if layer.type == "dense":
            return f"dense{layer.units} {layer.activation}"
        return layer.type

    runs = [(text, len(list(group))) for text, group in groupby(map(one, task.layers))]
    return " → ".join(text if n == 1 else f"{text} ×{n}" for text, n in runs)


def describe_optimizer(opt: Optimizer) -> str:
    name = opt.keras_class
    lr = opt.learning_rate
    if lr is None:
        return f"{name} (default lr)"
    if isinstance(lr, ExponentialDecay):
        return (f"{name}, ExponentialDecay({lr.initial_learning_rate:g}, "
                f"{lr.decay_steps}, {lr.decay_rate:g})")
    return f"{name}, lr {lr:g}"


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
        metrics = _read_json(evals / name / METRICS)
        runs = [m["test_accuracy"] for m in _read_json(evals / name / PER_SEED).values()]
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
            "optimizer": describe_optimizer(task.optimizer),
            "seeds": len(runs),
            "accuracy": metrics["test_accuracy"],
            "accuracy_std": metrics.get("test_accuracy_std", 0.0),
            "accuracy_runs": runs,
            "nb_accuracy": ref.test_accuracy if ref else None,
            "loss": metrics["test_loss"],
            "loss_std": metrics.get("test_loss_std", 0.0),
            "nb_loss": ref.test_loss if ref else None,
            "nb_epochs": ref.epochs if ref else None,
            "s_per_epoch": statistics.median(log["epoch_seconds"]),
            "train_images": config["train_images"],
            "environment": config.get("environment", {}),
        })
    curve = pd.concat(curves, ignore_index=True)[["task", "epoch", *CURVES]]
    return pd.DataFrame(rows).set_index("task"), curve


def best_task_predictions(df: pd.DataFrame, evals: Path,
                          data: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """The most accurate task, the test images, their labels and its predictions."""
    best = df["accuracy"].idxmax()
    x, y = load_split(data, "test")
    return best, x, y.argmax(axis=1), np.load(evals / best / PREDICTIONS)
