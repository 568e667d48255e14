"""MNIST as files: the raw Keras ``mnist.npz`` and the prepared splits.

The one place that knows the arrays' names, shapes, dtypes and content hashes,
and the notebook's preprocessing (28x28x1, /255, one-hot).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from stages.config import IMAGE_SHAPE, NUM_CLASSES
from stages.io import atomic_path

# Layout of keras.datasets.mnist's cache file.
RAW_LAYOUT = {
    "x_train": ((60000, 28, 28), np.uint8),
    "y_train": ((60000,), np.uint8),
    "x_test": ((10000, 28, 28), np.uint8),
    "y_test": ((10000,), np.uint8),
}

# sha256 of each array's raw bytes (C order). Verifying arrays rather than the
# file accepts any faithful copy (the zip container of copies differs byte-wise).
RAW_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

SPLITS = ("train", "test")


class DataError(ValueError):
    """A data file is missing, unreadable, or not what it should be."""


def read_raw(path: str | Path, source: str | None = None) -> dict[str, np.ndarray]:
    """Read a Keras-layout ``mnist.npz`` and check its structure.

    ``source`` names where the file came from (a URL, say) in error messages.
    """
    where = source or str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = sorted(set(RAW_LAYOUT) - names)
            if missing:
                raise DataError(f"{where}: missing arrays {missing}; found {sorted(names)}")
            arrays = {name: npz[name] for name in RAW_LAYOUT}
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: not a readable .npz file "
                        f"(truncated or not a zip?): {exc}") from None
    for name, (shape, dtype) in RAW_LAYOUT.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise DataError(f"{where}: array {name} is {a.dtype}{list(a.shape)}, "
                            f"expected {np.dtype(dtype)}{list(shape)}")
    for name in ("y_train", "y_test"):
        if arrays[name].max() >= NUM_CLASSES:
            raise DataError(f"{where}: {name} has labels outside 0-{NUM_CLASSES - 1} "
                            f"(max {int(arrays[name].max())})")
    return arrays


def verify_raw(arrays: dict[str, np.ndarray], source: str) -> None:
    """Check each array's content against the known MNIST hashes."""
    for name, expected in RAW_SHA256.items():
        got = hashlib.sha256(np.ascontiguousarray(arrays[name]).tobytes()).hexdigest()
        if got != expected:
            raise DataError(f"{source}: content of {name} fails the sha256 check "
                            f"(got {got[:12]}..., expected {expected[:12]}...): "
                            "not the MNIST data set")


def prepare(images: np.ndarray, labels: np.ndarray, size: int | None = None):
    """The notebook's preprocessing: the first ``size`` images, as float32
    28x28x1 scaled to [0, 1], labels one-hot."""
    if size is not None:
        if size > len(images):
            raise DataError(f"requested {size} images but the split has only {len(images)}")
        images, labels = images[:size], labels[:size]
    x = (images.reshape((-1, *IMAGE_SHAPE)).astype("float32") / 255.0).astype("float32")
    y = np.eye(NUM_CLASSES, dtype="float32")[labels]
    return x, y


def save_split(folder: str | Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(Path(folder) / f"{split}.npz") as tmp:
        np.savez(tmp, x=x, y=y)


def load_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load a prepared split (x float32 [N,28,28,1], y one-hot float32 [N,10])."""
    path = Path(folder) / f"{split}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["x"], npz["y"]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; run the preprocess stage first") from None
