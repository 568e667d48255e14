"""Build a Keras model and its optimizer from a task's spec in params.yaml.

Architectures are data: one function turns a task's layer list into a model,
so every task of the study (and any new one) goes through the same code; each
layer type and optimizer builds its own Keras object (mnist_cnn.layers,
mnist_cnn.optimizers).
"""

from __future__ import annotations

import keras

from mnist_cnn.dataset import IMAGE_SHAPE
from mnist_cnn.params import Task


def build_model(task: Task, precision: str = "float32", name: str = "model") -> keras.Model:
    """The task's layers on a 28x28x1 input. With a mixed ``precision`` every
    layer but the last computes in it; the softmax stays float32."""
    dtypes = [precision] * (len(task.layers) - 1) + ["float32"]
    return keras.Sequential(
        [keras.Input(shape=IMAGE_SHAPE),
         *(spec.build(dtype) for spec, dtype in zip(task.layers, dtypes, strict=True))],
        name=name)


def compile_model(task: Task, precision: str = "float32", name: str = "model",
                  steps_per_execution: int = 1) -> keras.Model:
    """The task's model, compiled as in the notebook.

    ``steps_per_execution`` runs that many batches per call into TensorFlow:
    less Python overhead per step, the same arithmetic."""
    model = build_model(task, precision, name)
    model.compile(optimizer=task.optimizer.build(), loss="categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model
