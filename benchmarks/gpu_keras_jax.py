"""The study's models on a GPU, through Keras 3's JAX backend.

Not part of `make bench` (the project's stack is TensorFlow on CPU, and
tensorflow-cpu has no GPU kernels). This answers two questions the CPU cannot
afford to: how fast the same models train on a GPU, and how much each task's
test accuracy moves from seed to seed. Models and optimizers come from
params.yaml through the project's own builder; training is the notebook's
plain `model.fit(x, y, batch_size=128)`. float32 matmuls are kept at full
precision (JAX would otherwise use TF32 on the GPU). Needs the project's
runtime packages (params.yaml is read with DVC's reader) plus jax.

    KERAS_BACKEND=jax python -m benchmarks.gpu_keras_jax --npz mnist.npz --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import keras
import numpy as np

from benchmarks.plain_keras import train_plain
from mnist_cnn.cli.checks import load_params
from mnist_cnn.dataset import prepare
from mnist_cnn.mnist import read_raw

jax.config.update("jax_default_matmul_precision", "highest")


def train(name, task, seed, x, y, xt, yt):
    model, timer = train_plain(name, task, x, y, task.epochs, seed)
    loss, acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    return {"task": name, "seed": seed, "test_accuracy": float(acc), "test_loss": float(loss),
            "epoch_seconds": timer.seconds,
            "train_accuracy": model.history.history["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=5, help="seeds seed, seed+1, ...")
    ap.add_argument("--budget", type=float, default=420, help="no new seed after this many s")
    args = ap.parse_args()

    params = load_params("params.yaml")
    raw = read_raw(args.npz)
    x, y = prepare(raw["x_train"], raw["y_train"])
    xt, yt = prepare(raw["x_test"], raw["y_test"])
    start = time.monotonic()
    out = {"device": str(jax.devices()[0]), "jax": jax.__version__,
           "keras": keras.__version__, "runs": []}
    for seed in params.seed + np.arange(args.seeds):
        if time.monotonic() - start > args.budget:
            break
        for name, task in params.tasks.items():
            run = train(name, task, int(seed), x, y, xt, yt)
            out["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "train_accuracy"}),
                  flush=True)
            with open(args.out, "w") as f:  # after each run: a timeout keeps what finished
                json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
