"""Stage ``evaluate@<task>``: test loss, accuracy and confusion matrix of one
task's models (mean over seeds, and their spread when there are several)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_cnn.cli import quiet, runner
from mnist_cnn.cli.checks import check_task_name

quiet.import_tensorflow()  # before the import below pulls it in with its start-up lines
from mnist_cnn.evaluation import evaluate  # noqa: E402

PARAMS = ["seed", "seeds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help="a key of `tasks` in params.yaml (default: the "
                        "task of the DVC stage running this, from DVC_STAGE)")
    parser.add_argument("--models", type=Path, required=True,
                        help="folder of the trained models (train's <models>)")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the evaluations; this task's go to <out>/<task>")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    task = runner.task_name(args.task)
    with runner.stage(f"evaluate@{task}", args.params, PARAMS,
                      inputs=[args.models / task, args.data]) as params:
        check_task_name(task, params, args.params)
        evaluate(task, params.seed_list, args.models / task, args.data, args.out / task)


if __name__ == "__main__":
    sys.exit(runner.run(main))
