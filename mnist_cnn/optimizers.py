"""The optimizers a task's ``optimizer`` may name, one class each: its keys
in params.yaml (pydantic fields), the keras.optimizers class it builds, and
how the report names it. A new optimizer is one class here, registered with
``@optimizer``; a new option of one is one field of its class.

An option left out of params.yaml is left out of the Keras call too, so its
value is Keras' default (the notebook's ``optimizer="adam"``).

Keras is imported by ``build`` only: reading params must not load TensorFlow.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import Discriminator, Field, PositiveFloat, PositiveInt, Tag

from mnist_cnn.schema import Frozen, tagged_union

OPTIMIZERS: dict[str, type[OptimizerSpec]] = {}

Fraction = Annotated[float, Field(gt=0, lt=1)]  # a decay factor, betas, rho


def optimizer(cls: type[OptimizerSpec]) -> type[OptimizerSpec]:
    """Register an optimizer class under its ``name`` (``name: Literal["sgd"]``)."""
    (name,) = get_args(cls.model_fields["name"].annotation)
    OPTIMIZERS[name] = cls
    return cls


class ExponentialDecay(Frozen):
    """keras.optimizers.schedules.ExponentialDecay, as in the notebook's task 3/4."""

    schedule: Literal["exponential_decay"]
    initial_learning_rate: PositiveFloat
    decay_steps: PositiveInt
    decay_rate: PositiveFloat
    staircase: bool = False

    def build(self):
        import keras

        return keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
            decay_rate=self.decay_rate, staircase=self.staircase)

    def describe(self) -> str:
        return (f"ExponentialDecay({self.initial_learning_rate:g}, {self.decay_steps}, "
                f"{self.decay_rate:g})")


def _lr_tag(value) -> str:
    return "lr:schedule" if isinstance(value, (dict, ExponentialDecay)) else "lr:constant"


LearningRate = Annotated[
    Annotated[PositiveFloat, Tag("lr:constant")] | Annotated[ExponentialDecay, Tag("lr:schedule")],
    Discriminator(_lr_tag),
]


class OptimizerSpec(Frozen):
    name: str
    # Absent: the optimizer's Keras default.
    learning_rate: LearningRate | None = None
    weight_decay: PositiveFloat | None = None
    keras_class: ClassVar[str]  # the class in keras.optimizers

    def build(self):
        import keras

        options = {key: value for key in sorted(self.model_fields_set - {"name"})
                   if (value := getattr(self, key)) is not None}
        if isinstance(self.learning_rate, ExponentialDecay):
            options["learning_rate"] = self.learning_rate.build()
        return getattr(keras.optimizers, self.keras_class)(**options)

    def describe(self) -> str:
        """``SGD, lr 0.01``, ``SGD, ExponentialDecay(0.5, 10000, 0.9)``,
        ``Adam (default lr), beta_1 0.8``."""
        lr = self.learning_rate
        parts = [f"{self.keras_class} (default lr)" if lr is None else self.keras_class]
        if lr is not None:
            parts.append(lr.describe() if isinstance(lr, ExponentialDecay) else f"lr {lr:g}")
        parts += [f"{key} {value}" for key in sorted(self.model_fields_set)
                  if key not in ("name", "learning_rate")
                  and (value := getattr(self, key)) is not None]
        return ", ".join(parts)


@optimizer
class SGD(OptimizerSpec):
    name: Literal["sgd"]
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    nesterov: bool | None = None
    keras_class: ClassVar[str] = "SGD"


@optimizer
class Adam(OptimizerSpec):
    name: Literal["adam"]
    beta_1: Fraction | None = None
    beta_2: Fraction | None = None
    epsilon: PositiveFloat | None = None
    amsgrad: bool | None = None
    keras_class: ClassVar[str] = "Adam"


@optimizer
class RMSprop(OptimizerSpec):
    name: Literal["rmsprop"]
    rho: Fraction | None = None
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    epsilon: PositiveFloat | None = None
    centered: bool | None = None
    keras_class: ClassVar[str] = "RMSprop"


Optimizer = tagged_union(OPTIMIZERS, "name", "optimizer")
