"""Stage ``preprocess``: raw mnist.npz -> prepared train/test splits.

The notebook's preprocessing lives in :func:`stages.mnist.prepare`; this stage
applies ``data.train_size``/``data.test_size`` (the first N images) so quick
runs use the same code path as full ones.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stages.cli import run
from stages.config import load_params
from stages.io import atomic_dir
from stages.mnist import prepare, read_raw, save_split

log = logging.getLogger(__name__)


def preprocess(raw: Path, out: Path, train_size: int | None, test_size: int | None) -> None:
    arrays = read_raw(raw)
    with atomic_dir(out) as tmp:
        for split, size in (("train", train_size), ("test", test_size)):
            x, y = prepare(arrays[f"x_{split}"], arrays[f"y_{split}"], size)
            save_split(tmp, split, x, y)
            log.info("%s: %d images %s", split, len(x), list(x.shape[1:]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="mnist.npz from the download stage")
    parser.add_argument("out", type=Path, help="folder for train.npz and test.npz")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    data = load_params(args.params).data
    preprocess(args.raw, args.out, data.train_size, data.test_size)


if __name__ == "__main__":
    sys.exit(run(main))
