"""The study's hyperparameters (``params.yaml``) as typed, frozen values.

The file is parsed by DVC's own reader, so a stage trains with exactly the
values ``dvc.lock``, ``dvc params diff`` and ``dvc exp show`` record (YAML 1.2:
``1e-3`` is a number and ``no`` a string; a key given twice is an error). Types
are strict (mnist_cnn.schema). Layer types and optimizers are registries of
their own (mnist_cnn.layers, mnist_cnn.optimizers).

This module decides what the values *are* (types, defaults), so it is a
dependency of every stage. Explaining what is wrong with a bad file (key paths,
"did you mean", shape checks) is mnist_cnn.cli.checks' job: rewording those
messages retrains nothing.

It also holds the one reading of a key path (``tasks.task1.layers.0.units``)
that every part of the project uses: :func:`flatten`, :func:`get_key`,
:func:`set_key`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from mnist_cnn.dataset import SPLIT_SIZES
from mnist_cnn.layers import Layer
from mnist_cnn.optimizers import Optimizer
from mnist_cnn.schema import Frozen

PARAMS_FILE = Path("params.yaml")
TASK_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # also a folder name and part of a DVC stage name


def read(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The file's content exactly as DVC reads it for ``dvc.lock``."""
    from dvc.utils.serialize import load_yaml  # DVC's reader of params files (ruamel)

    return load_yaml(str(path))


# --- key paths ------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"tasks": {"task1": {"epochs": 5}}}`` -> ``{"tasks.task1.epochs": 5}``;
    lists stay values (a list of layers is one value)."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items()
                for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): value} if prefix else {}


def get_key(data: Any, key: str) -> Any:
    """The value at ``key`` (list items by index); None where there is none."""
    node = data
    for part in key.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(
                part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def set_key(data: dict, key: str, value: Any, create: bool = True) -> None:
    """Set ``key`` (list items by index) to ``value``: the way ``dvc exp run
    -S`` does. With ``create`` false, KeyError unless the key exists.
    IndexError, ValueError or TypeError for a path the data cannot hold."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
        elif create:
            node = node.setdefault(part, {})
        else:
            node = node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif not isinstance(node, dict):
        raise TypeError(f"{key}: {type(node).__name__} has no keys")
    elif create or last in node:
        node[last] = value
    else:
        raise KeyError(key)


# --- tasks and the whole file ---------------------------------------------


class Task(Frozen):
    """One model of the study: its layers on a 28x28x1 input, optimizer, epochs."""

    layers: list[Layer] = Field(min_length=1)
    optimizer: Optimizer
    epochs: PositiveInt
    batch_size: PositiveInt | None = None  # absent: train.batch_size


class Data(Frozen):
    url: str = Field(min_length=1)
    # The first N images of each split (deterministic); the whole split by default.
    train_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["train"])] = SPLIT_SIZES["train"]
    test_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["test"])] = SPLIT_SIZES["test"]


class TrainDefaults(Frozen):
    batch_size: PositiveInt = 128
    # mixed_bfloat16 computes in bfloat16 (variables stay float32): faster on
    # CPUs with AVX512_BF16 or AMX, but it changes the numbers (see README).
    precision: Literal["float32", "mixed_bfloat16"] = "float32"


class Params(Frozen):
    seed: NonNegativeInt
    seeds: PositiveInt = 1  # runs per task, with seeds seed, seed+1, ...
    data: Data
    train: TrainDefaults
    tasks: dict[Annotated[str, Field(pattern=TASK_NAME)], Task] = Field(min_length=1)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def train_config(self, task: str) -> TrainConfig:
        """What ``train@<task>`` reads: ``seed``, ``seeds``, ``train`` and ``tasks.<task>``."""
        spec = self.tasks[task]
        return TrainConfig(task=task, spec=spec, seeds=self.seed_list,
                           batch_size=spec.batch_size or self.train.batch_size,
                           precision=self.train.precision)


class TrainConfig(Frozen):
    """Everything that determines one task's trained models, besides the data
    and the code; saved beside them and in each checkpoint."""

    task: str
    spec: Task
    seeds: list[NonNegativeInt]
    batch_size: PositiveInt
    precision: str
