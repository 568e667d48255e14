"""Stage ``report``: the notebook's "Final Results" table with our figures,
its conclusions checked against them, and figures (report.md, report.html);
every task's test accuracy and loss in one metrics file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_cnn.cli import runner
from mnist_cnn.report.render import write_report

PARAMS = ["seed", "seeds", "tasks"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True,
                        help="train outputs, one folder per task")
    parser.add_argument("--evals", type=Path, required=True,
                        help="evaluate outputs, one folder per task")
    parser.add_argument("--data", type=Path, required=True,
                        help="prepared data (test images for the misclassified digits)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--metrics", type=Path, required=True,
                        help="the study's summary metrics (a DVC metric)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    with runner.stage("report", args.params, PARAMS,
                      inputs=[args.models, args.evals, args.data]) as params:
        write_report(params.tasks, params.seed_list, args.models, args.evals, args.data,
                     args.out, args.metrics)


if __name__ == "__main__":
    sys.exit(runner.run(main))
