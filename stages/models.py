"""Build a Keras model and its optimizer from a task's spec in params.yaml.

Architectures are data: one function turns a task's layer list into a model,
so every task of the study (and any new one) goes through the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from stages.config import IMAGE_SHAPE, ExponentialDecay, Optimizer, Task, validate_task


def _layer(spec) -> keras.layers.Layer:
    if spec.type == "conv2d":
        return layers.Conv2D(spec.filters, (spec.kernel_size, spec.kernel_size),
                             activation=spec.activation)
    if spec.type == "max_pooling2d":
        return layers.MaxPooling2D(pool_size=spec.pool_size)
    if spec.type == "flatten":
        return layers.Flatten()
    if spec.type == "dense":
        return layers.Dense(spec.units, activation=spec.activation)
    raise ValueError(f"unknown layer type {spec.type!r}")  # unreachable after validation


def as_task(name: str, spec: Task | Mapping[str, Any]) -> Task:
    """Accept a validated Task or a raw mapping (validated here, errors name the key)."""
    return spec if isinstance(spec, Task) else validate_task(name, spec)


def build_model(name: str, spec: Task | Mapping[str, Any]) -> keras.Model:
    task = as_task(name, spec)
    return keras.Sequential([keras.Input(shape=IMAGE_SHAPE), *map(_layer, task.layers)],
                            name=name)


def build_optimizer(spec: Optimizer) -> keras.optimizers.Optimizer:
    lr = spec.learning_rate
    if isinstance(lr, ExponentialDecay):
        lr = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=lr.initial_learning_rate, decay_steps=lr.decay_steps,
            decay_rate=lr.decay_rate, staircase=lr.staircase)
    kwargs = {} if lr is None else {"learning_rate": lr}
    return {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
            "rmsprop": keras.optimizers.RMSprop}[spec.name](**kwargs)


def compile_model(name: str, spec: Task | Mapping[str, Any]) -> keras.Model:
    """The model of task ``name``, compiled as in the notebook."""
    task = as_task(name, spec)
    model = build_model(name, task)
    model.compile(optimizer=build_optimizer(task.optimizer),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model
