"""The report's figures, one ``@figure`` each: its file name, caption and
drawing (PNG bytes from what the report gathered). A new figure is one
function here; the report's Markdown and HTML show every registered one, in
order.

Built with matplotlib's object API (``Figure``), not pyplot: no GUI backend,
no global state, safe in a headless stage.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mnist_cnn.dataset import NUM_CLASSES
from mnist_cnn.report.collect import best_task_predictions

OURS, THEIRS = "#1f77b4", "#bbbbbb"


@dataclass
class ReportData:
    """What the figures draw from: the results table (one row per task), the
    training curves, and where the evaluations and test data are."""

    df: pd.DataFrame
    curves: pd.DataFrame
    evals: Path
    data: Path

    @cached_property
    def best(self) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """The best task, the test images, their labels and its predictions."""
        return best_task_predictions(self.df, self.evals, self.data)


class Registered(NamedTuple):
    caption: str
    draw: Callable[[ReportData], bytes]


FIGURES: dict[str, Registered] = {}  # file name: caption and drawing, in report order


def figure(name: str, caption: str):
    """Register the decorated ``draw(data) -> PNG bytes`` as figure ``name``."""
    def register(draw: Callable[[ReportData], bytes]) -> Callable[[ReportData], bytes]:
        FIGURES[name] = Registered(caption, draw)
        return draw
    return register


def _subplots(nrows=1, ncols=1, **kwargs):
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


@figure("accuracy.png", "Test accuracy per task, ours beside the notebook's")
def accuracy(data: ReportData) -> bytes:
    """Test accuracy per task, ours (mean, each seed as a dot) beside the notebook's."""
    df = data.df
    fig, ax = _subplots(figsize=(8, 0.45 * len(df) + 1.2))
    y = np.arange(len(df))[::-1]
    ax.barh(y + 0.2, df["accuracy"], height=0.4, color=OURS, label="ours",
            xerr=df["accuracy_std"].where(df["seeds"] > 1), capsize=3)
    for yi, runs in zip(y, df["accuracy_runs"], strict=True):
        if len(runs) > 1:
            ax.scatter(runs, [yi + 0.2] * len(runs), s=10, color="black", zorder=3)
    ax.barh(y - 0.2, df["nb_accuracy"].fillna(0), height=0.4, color=THEIRS,
            label="notebook (one run)")
    ax.axvline(1 / NUM_CLASSES, color="red", lw=0.8, ls=":", label="chance")
    ax.set_yticks(y, df.index)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Test accuracy per task")
    return _png(fig)


@figure("curves.png", "Training curves")
def training_curves(data: ReportData) -> bytes:
    """Training loss and accuracy per epoch, one line per task."""
    curves = data.curves
    fig, axes = _subplots(1, 2, figsize=(12, 4))
    for task, part in curves.groupby("task", sort=False):
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(part["epoch"], part[metric], marker="o", ms=3, label=task)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"training {metric}")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    # Beside the plots, never over a line.
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    seeds = int(data.df["seeds"].max())
    fig.suptitle("Training curves" + (f" (mean over {seeds} seeds)" if seeds > 1 else
                                      " (one seed)"))
    return _png(fig)


@figure("epoch_time.png", "Seconds per epoch")
def epoch_time(data: ReportData) -> bytes:
    df = data.df
    fig, ax = _subplots(figsize=(8, 0.4 * len(df) + 1.2))
    y = np.arange(len(df))[::-1]
    ax.barh(y, df["s_per_epoch"], color=OURS)
    for yi, s in zip(y, df["s_per_epoch"], strict=True):
        ax.text(s, yi, f" {s:.1f} s", va="center", fontsize=8)
    ax.set_yticks(y, df.index)
    ax.set_xlabel("seconds per epoch (median)")
    ax.set_title("Training time per epoch")
    return _png(fig)


@figure("confusion.png", "Confusion matrix of the best task")
def confusion(data: ReportData) -> bytes:
    best, _, labels, predicted = data.best
    title = f"{best}: confusion matrix"
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    fig, ax = _subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, n, ha="center", va="center", fontsize=7,
                    color="white" if n > matrix.max() / 2 else "black")
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


@figure("misclassified.png", "Misclassified test digits of the best task")
def misclassified(data: ReportData, limit: int = 40) -> bytes:
    title, images, labels, predicted = data.best
    wrong = np.flatnonzero(labels != predicted)[:limit]
    cols = 10
    rows = max(1, -(-len(wrong) // cols))
    # One sheet of tiles on one axes: forty small axes took seconds to lay out.
    h, w = images.shape[1:3]
    tile_h, tile_w = h + 9, w + 3  # room above each digit for its label
    sheet = np.zeros((rows * tile_h, cols * tile_w))
    fig, ax = _subplots(figsize=(cols * 0.9, rows * 1.05))
    ax.axis("off")
    for k, i in enumerate(wrong):
        top, left = divmod(k, cols)
        top, left = top * tile_h + tile_h - h, left * tile_w
        sheet[top:top + h, left:left + w] = images[i].squeeze()
        ax.text(left + w / 2, top - 1, f"{labels[i]}→{predicted[i]}", ha="center",
                va="bottom", fontsize=8, color="firebrick")
    ax.imshow(sheet, cmap="gray_r", vmin=0, vmax=max(1.0, float(images.max())))
    fig.suptitle(f"{title}: {len(wrong)} of {int((labels != predicted).sum())} misclassified "
                 "test digits (true→predicted)", fontsize=9)
    return _png(fig)
