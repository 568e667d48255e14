"""The study's hyperparameters (``params.yaml``) as typed, frozen values.

The file is parsed by DVC's own reader, so a stage trains with exactly the
values ``dvc.lock``, ``dvc params diff`` and ``dvc exp show`` record (YAML 1.2:
``1e-3`` is a number and ``no`` a string; a key given twice is an error). Types
are strict: a boolean or a string where a number belongs is refused, never
coerced.

This module decides what the values *are* (types, defaults), so it is a
dependency of every stage. Explaining what is wrong with a bad file (key paths,
"did you mean", shape checks) is mnist_cnn.cli.checks' job: rewording those
messages retrains nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
)

from mnist_cnn.dataset import SPLIT_SIZES

PARAMS_FILE = Path("params.yaml")
TASK_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"  # also a folder name and part of a DVC stage name

Activation = Literal["sigmoid", "relu", "tanh", "softmax", "linear"]


def read(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The file's content exactly as DVC reads it for ``dvc.lock``."""
    from dvc.utils.serialize import load_yaml  # DVC's reader of params files (ruamel)

    return load_yaml(str(path))


class _Frozen(BaseModel):
    # Unknown keys are errors (a typo must never be ignored); values are never
    # coerced; .inf and .nan are not numbers a model can train with.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# --- layers ---------------------------------------------------------------


class Conv2D(_Frozen):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel_size: PositiveInt
    activation: Activation


class MaxPooling2D(_Frozen):
    type: Literal["max_pooling2d"]
    pool_size: PositiveInt = 2


class Flatten(_Frozen):
    type: Literal["flatten"]


class Dense(_Frozen):
    type: Literal["dense"]
    units: PositiveInt
    activation: Activation


LAYER_TYPES = {"conv2d": Conv2D, "max_pooling2d": MaxPooling2D, "flatten": Flatten,
               "dense": Dense}


# Union tags contain ":" (never part of a key) so error paths can drop them.
def _layer_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"layer:{kind}" if kind in LAYER_TYPES else None


Layer = Annotated[
    Annotated[Conv2D, Tag("layer:conv2d")]
    | Annotated[MaxPooling2D, Tag("layer:max_pooling2d")]
    | Annotated[Flatten, Tag("layer:flatten")]
    | Annotated[Dense, Tag("layer:dense")],
    Discriminator(_layer_tag, custom_error_type="layer_type",
                  custom_error_message="unknown layer type"),
]


# --- optimizers -----------------------------------------------------------


class ExponentialDecay(_Frozen):
    """keras.optimizers.schedules.ExponentialDecay, as in the notebook's task 3/4."""

    schedule: Literal["exponential_decay"]
    initial_learning_rate: PositiveFloat
    decay_steps: PositiveInt
    decay_rate: PositiveFloat
    staircase: bool = False


def _lr_tag(value: Any) -> str:
    return "lr:schedule" if isinstance(value, (dict, ExponentialDecay)) else "lr:constant"


LearningRate = Annotated[
    Annotated[PositiveFloat, Tag("lr:constant")] | Annotated[ExponentialDecay, Tag("lr:schedule")],
    Discriminator(_lr_tag),
]

# The one table of optimizers: the names params.yaml accepts and the class in
# keras.optimizers each one builds (models.py builds it, the report names it).
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}


class Optimizer(_Frozen):
    name: Literal[tuple(OPTIMIZERS)]
    # Absent: the optimizer's Keras default (the notebook's `optimizer="adam"`).
    learning_rate: LearningRate | None = None

    @property
    def keras_class(self) -> str:
        return OPTIMIZERS[self.name]


# --- tasks and the whole file ---------------------------------------------


class Task(_Frozen):
    """One model of the study: its layers on a 28x28x1 input, optimizer, epochs."""

    layers: list[Layer] = Field(min_length=1)
    optimizer: Optimizer
    epochs: PositiveInt
    batch_size: PositiveInt | None = None  # absent: train.batch_size


class Data(_Frozen):
    url: str = Field(min_length=1)
    # The first N images of each split (deterministic); the whole split by default.
    train_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["train"])] = SPLIT_SIZES["train"]
    test_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["test"])] = SPLIT_SIZES["test"]


class TrainDefaults(_Frozen):
    batch_size: PositiveInt = 128
    # mixed_bfloat16 computes in bfloat16 (variables stay float32): faster on
    # CPUs with AVX512_BF16 or AMX, but it changes the numbers (see README).
    precision: Literal["float32", "mixed_bfloat16"] = "float32"


class Params(_Frozen):
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


class TrainConfig(_Frozen):
    """Everything that determines one task's trained models, besides the data
    and the code; saved beside them and in each checkpoint."""

    task: str
    spec: Task
    seeds: list[NonNegativeInt]
    batch_size: PositiveInt
    precision: str
