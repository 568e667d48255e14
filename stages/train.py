"""Stage ``train@<task>``: train one task of the study, once per seed.

Writes ``<out>/seed_<s>/model.keras`` and its per-epoch log (dvclive: loss,
accuracy, seconds per epoch) for each seed, and ``<out>/config.json``, the
effective config the models were trained with. The folder appears atomically
when every seed is done.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages.cli import run
from stages.config import Params, load_params
from stages.io import atomic_dir, write_json
from stages.layout import CONFIG, LIVE, MODEL, seed_dir
from stages.mnist import load_split
from stages.models import compile_model

log = logging.getLogger(__name__)


def set_determinism(seed: int) -> None:
    """Same seed, same weights and metrics on the same machine."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch's logs. Keras hands the same dict to
    every callback, so dvclive (placed after this one) records it with loss and
    accuracy."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def train_one(name: str, params: Params, seed: int, x, y, out: Path):
    """Train task ``name`` with ``seed`` on (x, y); write model and log under ``out``."""
    task = params.task(name)
    set_determinism(seed)
    model = compile_model(name, task)
    live = Live(dir=str(out / LIVE), dvcyaml=None, save_dvc_exp=False, report=None)
    model.fit(x, y, batch_size=params.batch_size(name), epochs=task.epochs, verbose=2,
              callbacks=[EpochTimer(), DVCLiveCallback(live=live)])
    model.save(out / MODEL)
    return model


def effective_config(name: str, params: Params, model, n_images: int) -> dict:
    return {
        "task": name,
        "spec": params.task(name).model_dump(mode="json"),
        "batch_size": params.batch_size(name),
        "seeds": params.seed_list,
        "train_images": n_images,
        "param_count": model.count_params(),
        "layers": [{"name": layer.name, "class": type(layer).__name__,
                    "output_shape": list(layer.output.shape[1:]),
                    "params": layer.count_params()} for layer in model.layers],
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
    }


def train(name: str, params: Params, data: Path, out: Path) -> None:
    x, y = load_split(data, "train")
    with atomic_dir(out) as staging:
        for seed in params.seed_list:
            log.info("training %s, seed %d, on %d images", name, seed, len(x))
            model = train_one(name, params, seed, x, y, seed_dir(staging, seed))
        write_json(staging / CONFIG, effective_config(name, params, model, len(x)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", help="task name, a key of `tasks` in params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for this task")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    params.task(args.task)  # an unknown task name fails here, before any work
    train(args.task, params, args.data, args.out)


if __name__ == "__main__":
    sys.exit(run(main))
