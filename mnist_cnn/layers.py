"""The layer types a task's ``layers`` list may hold, one class each: its
keys in params.yaml (pydantic fields), the Keras layer it builds, and how
the report names it. A new type is one class here, registered with
``@layer``; validation, the model builder and the report take it
from :data:`LAYERS`. Shapes and parameter counts come from Keras itself
(mnist_cnn.cli.checks builds the layers symbolically).

Keras is imported by ``build`` only: reading params must not load TensorFlow.
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import Field, PositiveInt

from mnist_cnn.schema import Activation, Frozen, tagged_union

LAYERS: dict[str, type[LayerSpec]] = {}


def layer(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Register a layer class under its ``type`` (``type: Literal["conv2d"]``)."""
    (name,) = get_args(cls.model_fields["type"].annotation)
    LAYERS[name] = cls
    return cls


class LayerSpec(Frozen):
    type: str
    # The key that sizes the layer's window, named when it does not fit its input.
    window: ClassVar[str | None] = None

    def build(self, dtype: str):
        """The Keras layer, computing in ``dtype``."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short name for the report: ``conv32 5x5 sigmoid``."""
        return self.type


@layer
class Conv2D(LayerSpec):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel_size: PositiveInt
    activation: Activation
    window: ClassVar[str] = "kernel_size"

    def build(self, dtype):
        from keras import layers

        return layers.Conv2D(self.filters, (self.kernel_size, self.kernel_size),
                             activation=self.activation, dtype=dtype)

    def describe(self) -> str:
        return f"conv{self.filters} {self.kernel_size}x{self.kernel_size} {self.activation}"


@layer
class MaxPooling2D(LayerSpec):
    type: Literal["max_pooling2d"]
    pool_size: PositiveInt = 2
    window: ClassVar[str] = "pool_size"

    def build(self, dtype):
        from keras import layers

        return layers.MaxPooling2D(pool_size=self.pool_size, dtype=dtype)

    def describe(self) -> str:
        return f"maxpool{self.pool_size}"


@layer
class AveragePooling2D(LayerSpec):
    type: Literal["average_pooling2d"]
    pool_size: PositiveInt = 2
    window: ClassVar[str] = "pool_size"

    def build(self, dtype):
        from keras import layers

        return layers.AveragePooling2D(pool_size=self.pool_size, dtype=dtype)

    def describe(self) -> str:
        return f"avgpool{self.pool_size}"


@layer
class Flatten(LayerSpec):
    type: Literal["flatten"]

    def build(self, dtype):
        from keras import layers

        return layers.Flatten(dtype=dtype)


@layer
class Dense(LayerSpec):
    type: Literal["dense"]
    units: PositiveInt
    activation: Activation

    def build(self, dtype):
        from keras import layers

        return layers.Dense(self.units, activation=self.activation, dtype=dtype)

    def describe(self) -> str:
        return f"dense{self.units} {self.activation}"


@layer
class Dropout(LayerSpec):
    type: Literal["dropout"]
    rate: float = Field(ge=0, lt=1)

    def build(self, dtype):
        from keras import layers

        return layers.Dropout(self.rate, dtype=dtype)

    def describe(self) -> str:
        return f"dropout{self.rate:g}"


@layer
class BatchNormalization(LayerSpec):
    type: Literal["batch_normalization"]
    momentum: float = Field(0.99, gt=0, lt=1)
    epsilon: float = Field(0.001, gt=0)

    def build(self, dtype):
        from keras import layers

        return layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon,
                                         dtype=dtype)

    def describe(self) -> str:
        return "batchnorm"


Layer = tagged_union(LAYERS, "type", "layer")
