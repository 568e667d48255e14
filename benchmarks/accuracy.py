"""Is the train stage's accuracy within noise of the notebook's plain fit?

One seed says little: SGD at learning rate 0.1 on ReLU convs (task4_sgd)
sometimes settles lower after a few epochs, whatever feeds it the data. This
trains a task both ways over several seeds, in one process, on the same data:
*plain*, the notebook's ``model.fit(x, y, batch_size=128)`` (benchmarks.plain_keras),
and *pipeline*, the train stage's own ``train_one`` (its input pipeline, its
shuffle, steps per execution, determinism). It prints and writes a Markdown
table of test accuracy per seed.

    python -m benchmarks.accuracy task4_sgd --seeds 42-51 --train-size 15000 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import keras

from benchmarks.plain_keras import train_plain
from mnist_cnn.cli.checks import check_task_name, load_params
from mnist_cnn.dataset import prepare
from mnist_cnn.download import ENV_VAR, choose_source, download, keras_cache
from mnist_cnn.layout import MODEL
from mnist_cnn.mnist import read_raw
from mnist_cnn.training import train_one

ROOT = Path(__file__).resolve().parent.parent


def seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--seeds", type=seed_range, default=seed_range("42-51"))
    parser.add_argument("--train-size", type=int, default=15000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--npz", help="MNIST file; default: the download stage's source")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/accuracy.md"))
    args = parser.parse_args(argv)

    params = load_params(ROOT / "params.yaml")
    cfg = params.train_config(check_task_name(args.task, params))
    task = cfg.spec.model_copy(update={"epochs": args.epochs})
    cfg = cfg.model_copy(update={"spec": task})
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "mnist.npz"  # verified on the way, as by the download stage
        download(args.npz or choose_source(os.environ.get(ENV_VAR), keras_cache(),
                                           params.data.url), npz)
        raw = read_raw(npz)
    x, y = prepare(raw["x_train"], raw["y_train"], args.train_size)
    x_test, y_test = prepare(raw["x_test"], raw["y_test"])

    rows = []
    for seed in args.seeds:
        plain, _ = train_plain(args.task, task, x, y, args.epochs, seed)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "work"
            train_one(cfg, seed, x, y, work, Path(tmp) / "live",
                      {"config": cfg.model_dump(mode="json")})
            ours = keras.models.load_model(work / MODEL)
        accs = [m.evaluate(x_test, y_test, batch_size=1000, verbose=0)[1] for m in (plain, ours)]
        rows.append((seed, *accs))
        print(f"seed {seed}: plain {accs[0]:.4f}  pipeline {accs[1]:.4f}", flush=True)

    def summary(column: int) -> str:
        values = [row[column] for row in rows]
        return (f"{statistics.median(values):.4f} (min {min(values):.4f}, "
                f"max {max(values):.4f})")

    lines = [
        f"# Test accuracy over seeds: {args.task}",
        "",
        f"`python -m benchmarks.accuracy {args.task} --seeds {args.seeds[0]}-{args.seeds[-1]} "
        f"--train-size {args.train_size} --epochs {args.epochs}`: {args.train_size:,} "
        f"training images, {args.epochs} epochs, the full test set. *plain*: the notebook's "
        "`model.fit(x, y, batch_size=128)`; *pipeline*: the train stage's `train_one`. "
        "Both start from `keras.utils.set_random_seed(seed)`; their data orders differ.",
        "",
        "| seed | plain | pipeline |",
        "|---|---|---|",
        *(f"| {s} | {a:.4f} | {b:.4f} |" for s, a, b in rows),
        f"| median | {summary(1)} | {summary(2)} |",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
