"""The raw MNIST file (Keras' ``mnist.npz``: layout, content hashes) and the
``preprocess`` stage's core, which turns it into the prepared splits."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np

from mnist_cnn.dataset import IMAGE_SHAPE, NUM_CLASSES, SPLIT_SIZES, DataError, prepare, save_split
from mnist_cnn.io import atomic_dir

log = logging.getLogger(__name__)

# Layout of keras.datasets.mnist's cache file.
RAW_LAYOUT = {f"{kind}_{split}": ((n, *IMAGE_SHAPE[:2]) if kind == "x" else (n,), np.uint8)
              for split, n in SPLIT_SIZES.items() for kind in ("x", "y")}

# sha256 of each array's raw bytes (C order). Verifying arrays rather than the
# file accepts any faithful copy (the zip container of copies differs byte-wise).
RAW_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


def read_raw(path: str | Path, source: str | None = None) -> dict[str, np.ndarray]:
    """Read a Keras-layout ``mnist.npz`` and check its structure.

    ``source`` names where the file came from (a URL, say) in error messages.
    """
    where = source or str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(RAW_LAYOUT) - set(npz.files))
            if missing:
                raise DataError(f"{where}: missing arrays {missing}; found {sorted(npz.files)}")
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


def preprocess(raw: Path, out: Path, train_size: int | None, test_size: int | None) -> None:
    """The prepared splits from the raw file: the first ``train_size`` /
    ``test_size`` images (None: all), as the notebook prepares them."""
    arrays = read_raw(raw)
    with atomic_dir(out) as tmp:
        for split, size in (("train", train_size), ("test", test_size)):
            x, y = prepare(arrays[f"x_{split}"], arrays[f"y_{split}"], size)
            save_split(tmp, split, x, y)
            log.info("%s: %d images %s", split, len(x), list(x.shape[1:]))
