"""One builder for every task: parameter counts equal the notebook's summaries."""

from __future__ import annotations

import copy

import keras
import pytest

from stages.config import ParamsError, load_params
from stages.models import build_model, build_optimizer, compile_model
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")

# From the notebook's model.summary() tables ("Total params").
NOTEBOOK_PARAM_COUNTS = {
    "task1": 185_162,
    "task2": 1_666_282,
    "task2_15_epochs": 1_666_282,
    "task2_one_conv": 2_361_546,
    "task2_three_conv": 1_102_090,
    "task3": 1_666_282,
    "task4_sgd": 154_474,
    "task4_adam": 154_474,
}


@pytest.mark.parametrize("name", NOTEBOOK_PARAM_COUNTS)
def test_parameter_count_equals_the_notebook(name):
    assert build_model(name, PARAMS.tasks[name]).count_params() == NOTEBOOK_PARAM_COUNTS[name]


def test_maxpool_variant_pools_after_each_conv():
    model = build_model("task2_maxpool", PARAMS.tasks["task2_maxpool"])
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                     "Dense", "Dense"]
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: 4*4*32 = 512 features.
    assert model.layers[4].output.shape[1:] == (512,)
    assert model.count_params() < NOTEBOOK_PARAM_COUNTS["task2"]


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


def test_compiled_as_in_the_notebook():
    model = compile_model("task1", PARAMS.tasks["task1"])
    assert model.loss == "categorical_crossentropy"
    assert model.output_shape == (None, 10)


def _raw(name):
    return copy.deepcopy(PARAMS.tasks[name].model_dump())


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("layers.0.type", "conv3d", "tasks.task2.layers.0.type: unknown layer type"),
    ("layers.1.activation", "swish", "tasks.task2.layers.1.activation: must be"),
    ("optimizer.name", "adagrad", "tasks.task2.optimizer.name: must be"),
])
def test_bad_spec_raises_value_error_naming_task_and_key(key, value, expected):
    spec = _raw("task2")
    *path, last = key.split(".")
    node = spec
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    with pytest.raises(ValueError, match="tasks.task2") as info:
        build_model("task2", spec)
    assert isinstance(info.value, ParamsError)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
