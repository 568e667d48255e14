"""Stage ``preprocess``: raw mnist.npz -> the prepared train and test splits
(28x28x1, /255, one-hot; the first ``data.train_size`` / ``data.test_size``
images, so quick runs use the same code path as full ones)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_cnn.cli import runner
from mnist_cnn.mnist import preprocess

PARAMS = ["data.train_size", "data.test_size"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="mnist.npz from the download stage")
    parser.add_argument("out", type=Path, help="folder for the prepared splits")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    with runner.stage("preprocess", args.params, PARAMS, inputs=[args.raw]) as params:
        preprocess(args.raw, args.out, params.data.train_size, params.data.test_size)


if __name__ == "__main__":
    sys.exit(runner.run(main))
