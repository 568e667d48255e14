"""The report's matplotlib figures, each returned as PNG bytes.

Built with matplotlib's object API (``Figure``), not pyplot: no GUI backend,
no global state, safe in a headless stage.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mnist_cnn.dataset import NUM_CLASSES

OURS, THEIRS = "#1f77b4", "#bbbbbb"


def _subplots(nrows=1, ncols=1, **kwargs):
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def accuracy(df: pd.DataFrame) -> bytes:
    """Test accuracy per task, ours (mean, each seed as a dot) beside the notebook's."""
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


def training_curves(curves: pd.DataFrame) -> bytes:
    """Training loss and accuracy per epoch, one line per task."""
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    for task, part in curves.groupby("task", sort=False):
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(part["epoch"], part[metric], marker="o", ms=3, label=task)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"training {metric}")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Training curves (mean over seeds)")
    return _png(fig)


def epoch_time(df: pd.DataFrame) -> bytes:
    fig, ax = _subplots(figsize=(8, 0.4 * len(df) + 1.2))
    y = np.arange(len(df))[::-1]
    ax.barh(y, df["s_per_epoch"], color=OURS)
    for yi, s in zip(y, df["s_per_epoch"], strict=True):
        ax.text(s, yi, f" {s:.1f} s", va="center", fontsize=8)
    ax.set_yticks(y, df.index)
    ax.set_xlabel("seconds per epoch (median)")
    ax.set_title("Training time per epoch")
    return _png(fig)


def confusion(labels: np.ndarray, predicted: np.ndarray, title: str) -> bytes:
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


def misclassified(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                  title: str, limit: int = 40) -> bytes:
    wrong = np.flatnonzero(labels != predicted)[:limit]
    cols = 10
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = _subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i].squeeze(), cmap="gray_r")
        ax.set_title(f"{labels[i]}→{predicted[i]}", fontsize=8, color="firebrick")
    fig.suptitle(f"{title}: {len(wrong)} of {int((labels != predicted).sum())} misclassified "
                 "test digits (true→predicted)", fontsize=9)
    return _png(fig)
