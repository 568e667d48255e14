"""Stage ``report``: the notebook's "Final Results" table with our figures,
its conclusions checked against them, and the plots to see why.

Writes ``report.md`` (figures beside it in ``figures/``), ``report.html``
(self-contained: images embedded), ``results.csv`` and ``curves.csv`` (per
epoch training curves, for ``dvc plots``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import statistics
import sys
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from stages import figures
from stages.cli import run
from stages.config import ExponentialDecay, Optimizer, Params, Task, load_params
from stages.findings import Finding, check_all
from stages.io import atomic_dir, write_text
from stages.layout import CONFIG, METRICS, PER_SEED, PREDICTIONS, epoch_log
from stages.mnist import DataError, load_split
from stages.notebook import NOTEBOOK

log = logging.getLogger(__name__)


# --- describing a task ------------------------------------------------------


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


def _epoch_log(task_models: Path, seed: int) -> pd.DataFrame:
    """One seed's per-epoch training log, as dvclive wrote it."""
    frames = [pd.read_csv(epoch_log(task_models, seed, m), sep="\t").set_index("step")
              for m in ("loss", "accuracy", "epoch_seconds")]
    return pd.concat(frames, axis=1)


def curves(params: Params, models: Path) -> pd.DataFrame:
    """Per task and epoch (1-based), training loss, accuracy and seconds,
    averaged over seeds."""
    parts = []
    for name in params.tasks:
        runs = pd.concat([_epoch_log(models / name, s) for s in params.seed_list])
        mean = runs.groupby(level=0).mean()
        parts.append(mean.assign(task=name, epoch=mean.index + 1))
    cols = ["task", "epoch", "loss", "accuracy", "epoch_seconds"]
    return pd.concat(parts, ignore_index=True)[cols]


def collect(params: Params, models: Path, evals: Path) -> pd.DataFrame:
    """One row per task with everything the report shows."""
    rows = []
    for name, task in params.tasks.items():
        config = _read_json(models / name / CONFIG)
        metrics = _read_json(evals / name / METRICS)
        runs = [m["test_accuracy"] for m in _read_json(evals / name / PER_SEED).values()]
        seconds = pd.concat([_epoch_log(models / name, s) for s in params.seed_list])
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
            "accuracy_std": metrics["test_accuracy_std"],
            "accuracy_runs": runs,
            "nb_accuracy": ref.test_accuracy if ref else None,
            "loss": metrics["test_loss"],
            "loss_std": metrics["test_loss_std"],
            "nb_loss": ref.test_loss if ref else None,
            "s_per_epoch": statistics.median(seconds["epoch_seconds"]),
            "train_images": config["train_images"],
        })
    return pd.DataFrame(rows).set_index("task")


# --- the results table --------------------------------------------------------


def _num(value, digits=4) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _spread(mean, std, spread: bool) -> str:
    return f"{mean:.4f} ± {std:.4f}" if spread else f"{mean:.4f}"


def _inside(r) -> str:
    if pd.isna(r.nb_accuracy):
        return "–"
    return "yes" if min(r.accuracy_runs) <= r.nb_accuracy <= max(r.accuracy_runs) else "no"


def results_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the notebook's "Final Results" table, with ours."""
    spread = bool((df["seeds"] > 1).any())
    header = ["task", "layers", "params", "epochs", "optimizer", "test acc", "notebook acc",
              "Δ acc", "test loss", "notebook loss", "s/epoch"]
    if spread:
        header.insert(8, "notebook in our range")
    rows = []
    for task, r in df.iterrows():
        same = pd.isna(r.nb_params) or r.params == r.nb_params
        row = [task, r.layers,
               f"{r.params:,}" + ("" if same else f" (notebook {int(r.nb_params):,})"),
               str(r.epochs), r.optimizer, _spread(r.accuracy, r.accuracy_std, spread),
               _num(r.nb_accuracy),
               "–" if pd.isna(r.nb_accuracy) else f"{r.accuracy - r.nb_accuracy:+.4f}",
               _spread(r.loss, r.loss_std, spread), _num(r.nb_loss), f"{r.s_per_epoch:.1f}"]
        if spread:
            row.insert(8, _inside(r))
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- the document ----------------------------------------------------------------

FIGURES = {  # file name: caption
    "accuracy.png": "Test accuracy per task, ours beside the notebook's",
    "curves.png": "Training curves",
    "epoch_time.png": "Seconds per epoch",
    "confusion.png": "Confusion matrix of the best task",
    "misclassified.png": "Misclassified test digits of the best task",
}


def intro(df: pd.DataFrame, seed: int) -> str:
    n = int(df["seeds"].max())
    runs = (f"one run per task (seed {seed})" if n == 1 else
            f"mean ± standard deviation over {n} seeds per task ({seed}, {seed + 1}, ...)")
    return (f"Trained on {int(df['train_images'].max()):,} images; {runs}. The notebook's "
            "figures are single runs; Δ is ours minus theirs. s/epoch is the median epoch "
            "time on the machine that ran the pipeline.")


def render_markdown(df: pd.DataFrame, found: list[Finding], seed: int) -> str:
    parts = ["# MNIST CNN study: results", "", intro(df, seed), "", "## Final results", "",
             markdown_table(*results_table(df)), "", "## The notebook's conclusions, checked",
             ""]
    parts += [f"- **{f.claim}**: {f.verdict}. {f.text}" for f in found]
    parts += ["", "## Figures", ""]
    parts += [f"![{caption}](figures/{name})\n" for name, caption in FIGURES.items()]
    return "\n".join(parts)


def render_html(df: pd.DataFrame, found: list[Finding], seed: int,
                images: dict[str, bytes]) -> str:
    items = "".join(f"<li><b>{html.escape(f.claim)}</b>: <i>{f.verdict}</i>. "
                    f"{html.escape(f.text)}</li>" for f in found)
    figs = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(images[name]).decode()}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>" for name, caption in FIGURES.items())
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>MNIST CNN study: results</title><style>{style}</style></head><body>"
            f"<h1>MNIST CNN study: results</h1><p>{html.escape(intro(df, seed))}</p>"
            f"<h2>Final results</h2>{html_table(*results_table(df))}"
            f"<h2>The notebook's conclusions, checked</h2><ul>{items}</ul>"
            f"<h2>Figures</h2>{figs}</body></html>")


def make_figures(df: pd.DataFrame, curve: pd.DataFrame, evals: Path,
                 data: Path) -> dict[str, bytes]:
    best = df["accuracy"].idxmax()
    x, y = load_split(data, "test")
    labels = y.argmax(axis=1)
    predicted = np.load(evals / best / PREDICTIONS)
    return {
        "accuracy.png": figures.accuracy(df),
        "curves.png": figures.training_curves(curve),
        "epoch_time.png": figures.epoch_time(df),
        "confusion.png": figures.confusion(labels, predicted, f"{best}: confusion matrix"),
        "misclassified.png": figures.misclassified(x, labels, predicted, best),
    }


def report(params: Params, models: Path, evals: Path, data: Path, out: Path) -> pd.DataFrame:
    df = collect(params, models, evals)
    curve = curves(params, models)
    found = check_all(df, curve)
    images = make_figures(df, curve, evals, data)
    with atomic_dir(out) as staging:
        (staging / "figures").mkdir()
        for name, png in images.items():
            (staging / "figures" / name).write_bytes(png)
        write_text(staging / "report.md", render_markdown(df, found, params.seed))
        write_text(staging / "report.html", render_html(df, found, params.seed, images))
        df.to_csv(staging / "results.csv")
        curve.to_csv(staging / "curves.csv", index=False)
    log.info("wrote %s and %s", out / "report.md", out / "report.html")
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True,
                        help="train outputs, one folder per task")
    parser.add_argument("--evals", type=Path, required=True,
                        help="evaluate outputs, one folder per task")
    parser.add_argument("--data", type=Path, required=True,
                        help="prepared data (test images for the misclassified digits)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    report(load_params(args.params), args.models, args.evals, args.data, args.out)


if __name__ == "__main__":
    sys.exit(run(main))
