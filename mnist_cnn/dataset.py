"""MNIST's shape and the prepared splits every model trains and is scored on.

The one place that knows the image shape, the classes, the split sizes, the
notebook's preprocessing (28x28x1, /255, one-hot) and how a prepared split is
stored: one ``.npy`` file per array, so the same data always gives the same
bytes (and the same DVC hash) on any machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 60_000, "test": 10_000}


class DataError(ValueError):
    """A data file is missing, unreadable, or not what it should be."""


def prepare(images: np.ndarray, labels: np.ndarray,
            size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's preprocessing: the first ``size`` images, as float32
    28x28x1 scaled to [0, 1], labels one-hot."""
    if size is not None:
        images, labels = images[:size], labels[:size]
    x = (images.reshape((-1, *IMAGE_SHAPE)).astype("float32") / 255.0).astype("float32")
    y = np.eye(NUM_CLASSES, dtype="float32")[labels]
    return x, y


def save_split(folder: str | Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Write a prepared split into ``folder`` (the caller makes the folder appear
    atomically)."""
    for name, array in (("x", x), ("y", y)):
        np.save(Path(folder) / f"{split}_{name}.npy", array, allow_pickle=False)


def load_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split: x float32 [N, 28, 28, 1], y one-hot float32 [N, 10]."""
    try:
        return tuple(np.load(Path(folder) / f"{split}_{name}.npy", allow_pickle=False)
                     for name in ("x", "y"))
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: no such file; run the preprocess stage first") from None
