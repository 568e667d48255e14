"""Stage ``download``: fetch MNIST and verify every array's sha256.

Sources, first that exists wins: the ``MNIST_NPZ`` environment variable (a
path or URL), the Keras cache (``$KERAS_HOME/datasets/mnist.npz``, default
``~/.keras``), then ``data.url`` from params.yaml.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_cnn.cli import runner
from mnist_cnn.download import ENV_VAR, choose_source, download, keras_cache

PARAMS = ["data.url"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write mnist.npz")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    with runner.stage("download", args.params, PARAMS) as params:
        download(choose_source(os.environ.get(ENV_VAR), keras_cache(), params.data.url),
                 args.out)


if __name__ == "__main__":
    sys.exit(runner.run(main))
