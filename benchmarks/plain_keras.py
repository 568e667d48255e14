"""The baseline: train one task the way the notebook does.

``model.fit(x, y, batch_size=128)`` on NumPy arrays, default compile, no
input pipeline. Same model (built by mnist_cnn.models), same data (a prepared
split), same epochs as the pipeline's train stage. Prints one JSON line:
per-epoch seconds, test loss and accuracy.

    python -m benchmarks.plain_keras task1 --data data/prepared --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time

import keras

from mnist_cnn.cli.checks import check_task_name, load_params
from mnist_cnn.dataset import load_split
from mnist_cnn.models import compile_model
from mnist_cnn.params import Task


class Timer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train_plain(name: str, task: Task, x, y, epochs: int,
                seed: int) -> tuple[keras.Model, Timer]:
    """The notebook's way: seed, build, compile, ``fit`` on the arrays."""
    keras.utils.set_random_seed(seed)
    model = compile_model(task, name=name)  # the notebook's compile: one step per call
    timer = Timer()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[timer])
    return model, timer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    task = params.tasks[check_task_name(args.task, params, args.params)]
    x, y = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    model, timer = train_plain(args.task, task, x, y, args.epochs, args.seed)
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    print(json.dumps({"task": args.task, "images": len(x), "epoch_seconds": timer.seconds,
                      "test_loss": loss, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
