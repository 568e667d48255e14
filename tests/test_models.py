"""One builder for every task: parameter counts equal the notebook's summaries."""

from __future__ import annotations

import keras
import pytest

from mnist_cnn.cli.checks import load_params
from mnist_cnn.models import build_model, build_optimizer, compile_model
from mnist_cnn.params import OPTIMIZERS, Optimizer
from mnist_cnn.report.notebook import NOTEBOOK
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("name", NOTEBOOK)
def test_parameter_count_equals_the_notebook(name):
    """The notebook's model.summary() tables ("Total params")."""
    assert build_model(PARAMS.tasks[name]).count_params() == NOTEBOOK[name].param_count


def test_maxpool_variant_pools_after_each_conv():
    model = build_model(PARAMS.tasks["task2_maxpool"])
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                     "Dense", "Dense"]
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: 4*4*32 = 512 features.
    assert model.layers[4].output.shape[1:] == (512,)
    assert model.count_params() < NOTEBOOK["task2"].param_count


def test_notebook_optimizers():
    task3 = build_optimizer(PARAMS.tasks["task3"].optimizer)
    assert isinstance(task3, keras.optimizers.SGD)
    schedule = task3.get_config()["learning_rate"]
    assert schedule["class_name"] == "ExponentialDecay"
    config = schedule["config"]
    assert (config["initial_learning_rate"], config["decay_steps"], config["decay_rate"]) == (
        0.5, 10000, 0.9)
    assert float(build_optimizer(PARAMS.tasks["task1"].optimizer).learning_rate) == \
        pytest.approx(0.01)
    adam = build_optimizer(PARAMS.tasks["task4_adam"].optimizer)
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(0.001)  # Keras' default


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_accepted_optimizer_builds_its_keras_class(name):
    """OPTIMIZERS is the one table: each name builds the class it names."""
    optimizer = build_optimizer(Optimizer(name=name, learning_rate=0.1))
    assert type(optimizer) is getattr(keras.optimizers, OPTIMIZERS[name])
    assert type(optimizer).__name__ == OPTIMIZERS[name]


def test_compiled_as_in_the_notebook():
    model = compile_model(PARAMS.tasks["task1"])
    assert model.loss == "categorical_crossentropy"
    assert model.output_shape == (None, 10)
