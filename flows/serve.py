"""Serve the study as a Prefect deployment (``make serve``): the UI's Run
button starts it, with its parameters (tasks, workers, params overrides) in a
form. Runs with overrides become DVC experiments (flows/experiment.py).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
"""

from __future__ import annotations

import sys

from flows.pipeline import pipeline

DEPLOYMENT = "study"


def main() -> int:
    pipeline.serve(
        name=DEPLOYMENT,
        description="The MNIST CNN study over its DVC pipeline. Leave `overrides` empty to "
                    "run the project as it is; give e.g. "
                    '{"tasks.task1.optimizer.learning_rate": 0.05} to run a DVC experiment '
                    "in a temporary workspace (`dvc exp show` lists it).",
        limit=1,  # the stages already use every core
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
