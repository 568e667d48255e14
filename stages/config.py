"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` before doing any work, so a bad value is
reported (all problems at once, each with its key path) before a model is
built or a file is written.  ``python -m stages.config`` checks a params file
on its own (``make check-params``).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    model_validator,
)

log = logging.getLogger(__name__)

PARAMS_FILE = Path("params.yaml")
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
SPLIT_SIZES = {"train": 60000, "test": 10000}  # MNIST's own split sizes

Activation = Literal["sigmoid", "relu", "tanh", "softmax", "linear"]


class ParamsError(ValueError):
    """One or more problems in a params file; ``problems`` lists them all."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


class _Strict(BaseModel):
    # A typo such as `learnig_rate` must be an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- layers ---------------------------------------------------------------


class Conv2D(_Strict):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel_size: PositiveInt
    activation: Activation


class MaxPooling2D(_Strict):
    type: Literal["max_pooling2d"]
    pool_size: PositiveInt = 2


class Flatten(_Strict):
    type: Literal["flatten"]


class Dense(_Strict):
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
    Discriminator(
        _layer_tag,
        custom_error_type="layer_type",
        custom_error_message=f"unknown layer type; expected one of {sorted(LAYER_TYPES)}",
    ),
]


# --- optimizers -----------------------------------------------------------


class ExponentialDecay(_Strict):
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


class Optimizer(_Strict):
    name: Literal["sgd", "adam", "rmsprop"]
    # None means the optimizer's Keras default (the notebook's `optimizer="adam"`).
    learning_rate: LearningRate | None = None


# --- tasks and the whole file ---------------------------------------------


class Task(_Strict):
    layers: list[Layer] = Field(min_length=1)
    optimizer: Optimizer
    epochs: PositiveInt
    # None: use train.batch_size.
    batch_size: PositiveInt | None = None

    @model_validator(mode="after")
    def _check_architecture(self) -> Task:
        flat = False
        for i, layer in enumerate(self.layers):
            if layer.type == "flatten":
                flat = True
            elif layer.type in ("conv2d", "max_pooling2d") and flat:
                raise ValueError(f"layers.{i}: {layer.type} cannot follow a flatten layer")
            elif layer.type == "dense" and not flat:
                raise ValueError(f"layers.{i}: dense needs a flatten layer before it")
        last = self.layers[-1]
        if not (last.type == "dense" and last.units == NUM_CLASSES
                and last.activation == "softmax"):
            raise ValueError(
                f"layers.{len(self.layers) - 1}: the last layer must be "
                f"{{type: dense, units: {NUM_CLASSES}, activation: softmax}} "
                f"to produce {NUM_CLASSES} class probabilities"
            )
        return self


class Data(_Strict):
    url: str = Field(min_length=1)
    # None: the whole split.  A number takes the first N images (deterministic).
    train_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["train"])] | None = None
    test_size: Annotated[int, Field(gt=0, le=SPLIT_SIZES["test"])] | None = None


class TrainDefaults(_Strict):
    batch_size: PositiveInt = 128
    # mixed_bfloat16 computes in bfloat16 (variables stay float32): faster on
    # CPUs with AVX512_BF16 or AMX, but it changes the numbers (see README).
    precision: Literal["float32", "mixed_bfloat16"] = "float32"


class Params(_Strict):
    seed: int = Field(ge=0)
    # How many seeds each task is trained with: seed, seed+1, ...
    seeds: PositiveInt = 1
    data: Data
    train: TrainDefaults
    tasks: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")], Task] = Field(min_length=1)

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ParamsError(str(PARAMS_FILE), [
                f"tasks.{name}: no such task; defined: {', '.join(self.tasks)}"])
        return self.tasks[name]

    def batch_size(self, name: str) -> int:
        return self.task(name).batch_size or self.train.batch_size

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]


# --- error formatting -------------------------------------------------------

_FIELDS = sorted({f for m in (Conv2D, MaxPooling2D, Flatten, Dense, ExponentialDecay,
                              Optimizer, Task, Data, TrainDefaults, Params)
                  for f in m.model_fields})


_PHRASES = [
    ("input should be greater than or equal to", "must be >="),
    ("input should be greater than", "must be >"),
    ("input should be less than or equal to", "must be <="),
    ("input should be", "must be"),
    (" after validation, not 0", ""),
    ("list should have", "must have"),
    ("dictionary should have", "must have"),
]


def _format_error(err: dict, prefix: tuple = ()) -> str:
    loc = [str(p) for p in (*prefix, *err["loc"]) if ":" not in str(p) and p != "[key]"]
    key = ".".join(loc) or "<top level>"
    kind = err["type"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(loc[-1], _FIELDS, n=1)
        return f"{key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if kind == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    for long, short in _PHRASES:
        msg = msg.replace(long, short)
    if kind == "value_error" and msg.startswith("layers."):
        # Raised by Task._check_architecture: put the layer index into the key.
        where, _, msg = msg.partition(": ")
        return f"{key}.{where}: {msg}"
    got = err.get("input")
    if kind == "layer_type" and isinstance(got, dict):
        key, got = f"{key}.type", got.get("type")
    if kind in ("layer_type", "literal_error") or not isinstance(got, (dict, list)):
        return f"{key}: {msg}, got {got!r}"
    return f"{key}: {msg}"


def validate(data: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Validate already-parsed params; raise ParamsError listing every problem."""
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(source, [_format_error(e) for e in exc.errors()]) from None


def validate_task(name: str, data: Any, source: str = str(PARAMS_FILE)) -> Task:
    """Validate one task's section; errors carry the key path ``tasks.<name>...``."""
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(source, [_format_error(e, ("tasks", name))
                                   for e in exc.errors()]) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParamsError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(str(path), [f"not valid YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise ParamsError(str(path), ["expected a mapping of sections at the top level"])
    return validate(data, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a params file and list every problem.")
    parser.add_argument("params", nargs="?", default=str(PARAMS_FILE))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.params}: OK ({len(params.tasks)} tasks: {', '.join(params.tasks)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
