"""What the train and evaluate stages put inside their output folders.

The folders themselves come from dvc.yaml (on the stage's command line); this
module names what is inside, for the stages that read them back.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"           # train: the effective config of a task
MODEL = "model.keras"            # train: one per seed
LIVE = "live"                    # train: dvclive's per-epoch log, one per seed
METRICS = "metrics.json"         # evaluate: mean (and spread over seeds) of a task
PER_SEED = "seeds.json"          # evaluate: each seed's figures
PREDICTIONS = "predictions.npy"  # evaluate: first seed's predicted classes


def seed_dir(task_out: str | Path, seed: int) -> Path:
    return Path(task_out) / f"seed_{seed}"


def epoch_log(task_out: str | Path, seed: int, metric: str) -> Path:
    """dvclive's per-epoch file of ``metric`` (loss, accuracy, epoch_seconds)."""
    return seed_dir(task_out, seed) / LIVE / "plots" / "metrics" / "train" / f"{metric}.tsv"
