"""Stage ``report``: the notebook's "Final Results" table, with our figures.

Per task: its layers, parameter count, epochs, optimizer, our test accuracy
and loss beside the notebook's, and seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from itertools import groupby
from pathlib import Path

import pandas as pd

from stages.cli import run
from stages.config import ExponentialDecay, Optimizer, Params, Task, load_params
from stages.io import atomic_dir, write_text
from stages.layout import CONFIG, METRICS, epoch_log
from stages.mnist import DataError
from stages.notebook import NOTEBOOK

log = logging.getLogger(__name__)


# --- describing a task ------------------------------------------------------


def describe_layers(task: Task) -> str:
    """``conv32 5x5 sigmoid x2 -> flatten -> dense10 softmax``."""
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
    name = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}[opt.name]
    lr = opt.learning_rate
    if lr is None:
        return f"{name} (default lr)"
    if isinstance(lr, ExponentialDecay):
        return (f"{name}, ExponentialDecay({lr.initial_learning_rate:g}, "
                f"{lr.decay_steps}, {lr.decay_rate:g})")
    return f"{name}, lr {lr:g}"


# --- gathering results ------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; run the stage that writes it first") from None


def epoch_seconds(task_models: Path, seeds: list[int]) -> list[float]:
    """Every epoch's duration, over all seeds, from the train stage's dvclive log."""
    values: list[float] = []
    for seed in seeds:
        tsv = epoch_log(task_models, seed, "epoch_seconds")
        values += pd.read_csv(tsv, sep="\t")["epoch_seconds"].tolist()
    return values


def collect(params: Params, models: Path, evals: Path) -> pd.DataFrame:
    """One row per task with everything the report shows."""
    rows = []
    for name, task in params.tasks.items():
        config = _read_json(models / name / CONFIG)
        metrics = _read_json(evals / name / METRICS)
        ref = NOTEBOOK.get(name)
        rows.append({
            "task": name,
            "layers": describe_layers(task),
            "params": config["param_count"],
            "nb_params": ref.param_count if ref else None,
            "epochs": task.epochs,
            "optimizer": describe_optimizer(task.optimizer),
            "seeds": len(params.seed_list),
            "accuracy": metrics["test_accuracy"],
            "accuracy_std": metrics["test_accuracy_std"],
            "nb_accuracy": ref.test_accuracy if ref else None,
            "loss": metrics["test_loss"],
            "loss_std": metrics["test_loss_std"],
            "nb_loss": ref.test_loss if ref else None,
            "s_per_epoch": statistics.median(epoch_seconds(models / name, params.seed_list)),
            "train_images": config["train_images"],
        })
    return pd.DataFrame(rows).set_index("task")


# --- rendering --------------------------------------------------------------


def _fmt(value, std=None, digits=4, spread=False) -> str:
    if value is None or pd.isna(value):
        return "–"
    text = f"{value:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if spread else text


def results_table(df: pd.DataFrame) -> str:
    """The "Final Results" table as Markdown."""
    spread = bool((df["seeds"] > 1).any())
    head = ("| task | layers | params | epochs | optimizer | test acc | notebook acc | Δ acc "
            "| test loss | notebook loss | s/epoch |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for task, r in df.iterrows():
        same = r.nb_params is None or pd.isna(r.nb_params) or r.params == r.nb_params
        params = f"{r.params:,}" + ("" if same else f" (notebook {int(r.nb_params):,})")
        delta = "–" if pd.isna(r.nb_accuracy) else f"{r.accuracy - r.nb_accuracy:+.4f}"
        lines.append(
            f"| {task} | {r.layers} | {params} | {r.epochs} | {r.optimizer} "
            f"| {_fmt(r.accuracy, r.accuracy_std, spread=spread)} | {_fmt(r.nb_accuracy)} "
            f"| {delta} | {_fmt(r.loss, r.loss_std, spread=spread)} | {_fmt(r.nb_loss)} "
            f"| {r.s_per_epoch:.1f} |")
    return "\n".join(lines)


def render_markdown(df: pd.DataFrame) -> str:
    n_seeds = int(df["seeds"].max())
    images = int(df["train_images"].max())
    runs = ("one run per task (seed `seed`)" if n_seeds == 1
            else f"mean ± standard deviation over {n_seeds} seeds per task")
    return "\n".join([
        "# MNIST CNN study: results",
        "",
        f"Trained on {images:,} images; {runs}. The notebook's figures are single "
        "runs; the difference Δ is ours minus theirs. s/epoch is the median "
        "epoch time on the machine that ran the pipeline.",
        "",
        "## Final results",
        "",
        results_table(df),
        "",
    ])


def report(params: Params, models: Path, evals: Path, out: Path) -> pd.DataFrame:
    df = collect(params, models, evals)
    with atomic_dir(out) as staging:
        write_text(staging / "report.md", render_markdown(df))
        df.to_csv(staging / "results.csv")
    log.info("wrote %s", out / "report.md")
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True,
                        help="train outputs, one folder per task")
    parser.add_argument("--evals", type=Path, required=True,
                        help="evaluate outputs, one folder per task")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    report(load_params(args.params), args.models, args.evals, args.out)


if __name__ == "__main__":
    sys.exit(run(main))
