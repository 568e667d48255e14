"""Build a Keras model and its optimizer from a task's spec in params.yaml.

Architectures are data: one function turns a task's layer list into a model,
so every task of the study (and any new one) goes through the same code.
"""

from __future__ import annotations

import keras
from keras import layers

from mnist_cnn.dataset import IMAGE_SHAPE
from mnist_cnn.params import ExponentialDecay, Optimizer, Task


def _layer(spec, dtype: str) -> keras.layers.Layer:
    if spec.type == "conv2d":
        return layers.Conv2D(spec.filters, (spec.kernel_size, spec.kernel_size),
                             activation=spec.activation, dtype=dtype)
    if spec.type == "max_pooling2d":
        return layers.MaxPooling2D(pool_size=spec.pool_size, dtype=dtype)
    if spec.type == "flatten":
        return layers.Flatten(dtype=dtype)
    if spec.type == "dense":
        return layers.Dense(spec.units, activation=spec.activation, dtype=dtype)
    raise ValueError(f"unknown layer type {spec.type!r}")


def build_model(task: Task, precision: str = "float32", name: str = "model") -> keras.Model:
    """The task's layers on a 28x28x1 input. With a mixed ``precision`` every
    layer but the last computes in it; the softmax stays float32."""
    dtypes = [precision] * (len(task.layers) - 1) + ["float32"]
    return keras.Sequential(
        [keras.Input(shape=IMAGE_SHAPE), *map(_layer, task.layers, dtypes)], name=name)


def build_optimizer(spec: Optimizer) -> keras.optimizers.Optimizer:
    lr = spec.learning_rate
    if isinstance(lr, ExponentialDecay):
        lr = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=lr.initial_learning_rate, decay_steps=lr.decay_steps,
            decay_rate=lr.decay_rate, staircase=lr.staircase)
    kwargs = {} if lr is None else {"learning_rate": lr}
    return getattr(keras.optimizers, spec.keras_class)(**kwargs)


def compile_model(task: Task, precision: str = "float32", name: str = "model",
                  steps_per_execution: int = 1) -> keras.Model:
    """The task's model, compiled as in the notebook.

    ``steps_per_execution`` runs that many batches per call into TensorFlow:
    less Python overhead per step, the same arithmetic."""
    model = build_model(task, precision, name)
    model.compile(optimizer=build_optimizer(task.optimizer),
                  loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model
