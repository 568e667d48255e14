"""Stage ``train@<task>``: train one task's model, once per seed.

Writes ``<models>/<task>/``: ``seed_<s>/model.keras`` and its per-epoch log
for each seed, and ``config.json`` (the effective config and environment).
Interrupted training resumes where it stopped (``.work/train@<task>/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_cnn.cli import quiet, runner
from mnist_cnn.cli.checks import check_task_name

quiet.import_tensorflow()  # before the import below pulls it in with its start-up lines
import keras  # noqa: E402

from mnist_cnn.cli import progress  # noqa: E402
from mnist_cnn.training import train  # noqa: E402

PARAMS = ["seed", "seeds", "train", "tasks.{task}"]


class Progress(keras.callbacks.Callback):
    """Says where the k-th seed's training is after each epoch (mnist_cnn.cli.progress)."""

    def __init__(self, lines: progress.Epochs, k: int):
        super().__init__()
        self.lines, self.k = lines, k

    def on_epoch_end(self, epoch, logs=None):
        progress.say(self.lines.line(self.k, epoch + 1, logs or {}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="a key of `tasks` in params.yaml (default: the "
                        "task of the DVC stage running this, from DVC_STAGE)")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--models", type=Path, required=True,
                        help="folder of the trained models; this task's go to <models>/<task>")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    task = runner.task_name(args.task)
    name = f"train@{task}"
    with runner.stage(name, args.params, [k.format(task=task) for k in PARAMS],
                      inputs=[args.data], shapes=[task]) as params:
        check_task_name(task, params, args.params)
        lines = progress.epochs()
        train(params.train_config(task), args.data, args.models / task, runner.work_dir(name),
              runner.work_dir("live") / task, lambda k: [Progress(lines, k)] if lines else [])


if __name__ == "__main__":
    sys.exit(runner.run(main))
