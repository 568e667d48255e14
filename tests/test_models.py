"""One builder for every task: parameter counts equal the notebook's summaries;
every registered layer type and optimizer builds its Keras class."""

from __future__ import annotations

import keras
import pytest

from mnist_cnn.cli.checks import load_params
from mnist_cnn.layers import LAYERS
from mnist_cnn.models import build_model, compile_model
from mnist_cnn.optimizers import OPTIMIZERS
from mnist_cnn.params import Task
from mnist_cnn.report.notebook import NOTEBOOK
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")
CONV = {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"}
HEAD = [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]
# One params entry per registered layer type, beyond the keys it requires.
EXAMPLES = {"conv2d": CONV, "max_pooling2d": {}, "average_pooling2d": {"pool_size": 2},
            "flatten": {}, "dense": {"units": 8, "activation": "relu"},
            "dropout": {"rate": 0.25}, "batch_normalization": {"momentum": 0.9}}


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


def test_every_layer_type_builds_its_keras_layer():
    assert set(EXAMPLES) == set(LAYERS), "give each registered layer type an example"
    for name, cls in LAYERS.items():
        spec = {"type": name, **EXAMPLES[name]}
        task = Task.model_validate({"layers": [CONV, spec, *HEAD], "optimizer": {"name": "sgd"},
                                    "epochs": 1})
        model = build_model(task)
        built = [type(layer).__name__ for layer in model.layers]
        assert built.count(cls.__name__) == 1 + (name in ("conv2d", "flatten", "dense")), built
        assert model.output_shape == (None, 10)
        assert task.layers[1].describe()


def test_notebook_optimizers():
    task3 = PARAMS.tasks["task3"].optimizer.build()
    assert isinstance(task3, keras.optimizers.SGD)
    schedule = task3.get_config()["learning_rate"]
    assert schedule["class_name"] == "ExponentialDecay"
    config = schedule["config"]
    assert (config["initial_learning_rate"], config["decay_steps"], config["decay_rate"]) == (
        0.5, 10000, 0.9)
    assert float(PARAMS.tasks["task1"].optimizer.build().learning_rate) == pytest.approx(0.01)
    adam = PARAMS.tasks["task4_adam"].optimizer.build()
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(0.001)  # Keras' default


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_its_keras_class_with_its_options(name):
    """Each registered optimizer builds the class it names; every option it
    declares reaches the Keras object, and one left out keeps Keras' default."""
    cls = OPTIMIZERS[name]
    options = {"sgd": {"momentum": 0.9, "nesterov": True},
               "adam": {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "amsgrad": True},
               "rmsprop": {"rho": 0.8, "momentum": 0.5, "epsilon": 1e-6, "centered": True}}[name]
    spec = cls.model_validate({"name": name, "learning_rate": 0.1, "weight_decay": 1e-4,
                               **options})
    optimizer = spec.build()
    assert type(optimizer) is getattr(keras.optimizers, cls.keras_class)
    config = optimizer.get_config()
    assert config["weight_decay"] == pytest.approx(1e-4)
    for key, value in options.items():
        assert config[key] == pytest.approx(value), key
    assert "weight_decay 0.0001" in spec.describe()
    default = cls.model_validate({"name": name}).build().get_config()
    plain = getattr(keras.optimizers, cls.keras_class)().get_config()
    assert {k: v for k, v in default.items() if k != "name"} == \
        {k: v for k, v in plain.items() if k != "name"}


def test_compiled_as_in_the_notebook():
    model = compile_model(PARAMS.tasks["task1"])
    assert model.loss == "categorical_crossentropy"
    assert model.output_shape == (None, 10)
