"""params.yaml validation: every problem reported at once, each with its key,
read exactly as DVC reads the file, and nothing the libraries would reject
later let through."""

from __future__ import annotations

import copy

import pytest
from dvc.utils.serialize import dump_yaml

from mnist_cnn.cli.checks import MAX_SEED, ParamsError, load_params, main, validate
from mnist_cnn.layers import LAYERS
from mnist_cnn.optimizers import OPTIMIZERS
from mnist_cnn.params import read
from tests.conftest import ROOT, TASKS

GOOD = read(ROOT / "params.yaml")


def broken(edit) -> dict:
    data = copy.deepcopy(GOOD)
    edit(data)
    return data


def _set(path: str, value):
    def edit(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return edit


DELETE = object()
LR = "tasks.task3.optimizer.learning_rate"

CASES = {
    "typo in a key": (_set("tasks.task1.optimizer.learnig_rate", 0.1),
                      "tasks.task1.optimizer.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
    "unknown top-level key": (_set("sed", 1), "sed: unknown key"),
    "wrong type": (_set("train.batch_size", "big"), "train.batch_size: must be an integer, got 'big'"),
    # Strict types: nothing is coerced into what it is not.
    "boolean as an integer": (_set("train.batch_size", True),
                              "train.batch_size: must be an integer, got True"),
    "boolean as a number": (_set("tasks.task1.optimizer.learning_rate", True),
                            "tasks.task1.optimizer.learning_rate: must be a number, got True"),
    "string as a number": (_set("tasks.task1.optimizer.learning_rate", "0.01"),
                           "tasks.task1.optimizer.learning_rate: must be a number, got '0.01'"),
    "float as an integer": (_set("tasks.task1.epochs", 5.0),
                            "tasks.task1.epochs: must be an integer, got 5.0"),
    "infinite learning rate": (_set("tasks.task1.optimizer.learning_rate", float("inf")),
                               "tasks.task1.optimizer.learning_rate: must be a finite number"),
    # What Keras or NumPy would reject only once training starts.
    "kernel larger than the image": (_set("tasks.task1.layers.0.kernel_size", 29),
                                     "tasks.task1.layers.0.kernel_size: 29 does not fit this "
                                     "layer's 28x28 input"),
    "layers that shrink the image to nothing": (
        _set("tasks.task2_maxpool.layers.2.kernel_size", 12),
        "tasks.task2_maxpool.layers.3.pool_size: 2 does not fit this layer's 1x1 input"),
    "a model too large to build": (_set("tasks.task2.layers.3.units", 10**6),
                                   "tasks.task2.layers: the model would have"),
    "seed beyond NumPy's range": (lambda data: data.update(seed=MAX_SEED, seeds=2),
                                  f"seeds: the last run's seed, seed + seeds - 1 = {MAX_SEED + 1}"),
    "negative seed": (_set("seed", -1), "seed: must be >= 0, got -1"),
    "epochs zero": (_set("tasks.task2.epochs", 0), "tasks.task2.epochs: must be > 0, got 0"),
    "batch size negative": (_set("train.batch_size", -1), "train.batch_size: must be > 0, got -1"),
    "task batch size zero": (_set("tasks.task1.batch_size", 0),
                             "tasks.task1.batch_size: must be > 0, got 0"),
    "learning rate negative": (_set("tasks.task1.optimizer.learning_rate", -0.5),
                               "tasks.task1.optimizer.learning_rate: must be > 0, got -0.5"),
    "schedule rate negative": (_set(f"{LR}.initial_learning_rate", -0.5),
                               f"{LR}.initial_learning_rate: must be > 0, got -0.5"),
    "schedule missing fields": (_set(LR, {"schedule": "exponential_decay",
                                          "initial_learning_rate": 0.5}),
                                f"{LR}.decay_steps: required key is missing"),
    "unknown schedule": (_set(LR, {"schedule": "cosine", "initial_learning_rate": 0.5,
                                   "decay_steps": 10, "decay_rate": 0.9}),
                         f"{LR}.schedule: must be 'exponential_decay', got 'cosine'"),
    "unknown layer type": (_set("tasks.task1.layers.0.type", "conv3d"),
                           "tasks.task1.layers.0.type: unknown layer type; expected one of "
                           f"{sorted(LAYERS)}, got 'conv3d'"),
    "unknown activation": (_set("tasks.task1.layers.0.activation", "sigmiod"),
                           "tasks.task1.layers.0.activation: must be 'sigmoid', 'relu', "
                           "'tanh', 'softmax' or 'linear', got 'sigmiod'"),
    "unknown optimizer": (_set("tasks.task4_adam.optimizer.name", "adamw"),
                          "tasks.task4_adam.optimizer.name: unknown optimizer; expected one of "
                          f"{sorted(OPTIMIZERS)}, got 'adamw'"),
    "an option another optimizer has": (_set("tasks.task4_adam.optimizer.nesterov", True),
                                        "tasks.task4_adam.optimizer.nesterov: unknown key"),
    "momentum out of range": (_set("tasks.task1.optimizer.momentum", 1.5),
                              "tasks.task1.optimizer.momentum: must be < 1, got 1.5"),
    "nesterov not a boolean": (_set("tasks.task1.optimizer.nesterov", "yes"),
                               "tasks.task1.optimizer.nesterov: must be true or false, got 'yes'"),
    "beta out of range": (_set("tasks.task4_adam.optimizer.beta_1", 0),
                          "tasks.task4_adam.optimizer.beta_1: must be > 0, got 0"),
    "dropout rate of one": (_set("tasks.task1.layers.1", {"type": "dropout", "rate": 1}),
                            "tasks.task1.layers.1.rate: must be < 1, got 1"),
    "no layers": (_set("tasks.task1.layers", []), "tasks.task1.layers: must have at least 1 item"),
    "last layer not 10 classes": (_set("tasks.task1.layers.2.units", 5),
                                  "tasks.task1.layers.2: the model's output is 5 from dense; it "
                                  "must be 10 class probabilities: a last layer {type: dense, "
                                  "units: 10, activation: softmax}"),
    "last layer not softmax": (_set("tasks.task1.layers.2.activation", "relu"),
                               "tasks.task1.layers.2: the model's output is 10 from dense; it "
                               "must be 10 class probabilities"),
    "dense before flatten": (_set("tasks.task1.layers", [
                                 {"type": "dense", "units": 10, "activation": "softmax"}]),
                             "tasks.task1.layers.0: the model's output is 28x28x10 from dense; "
                             "it must be 10 class probabilities: a last layer {type: dense, "
                             "units: 10, activation: softmax} after a flatten layer"),
    "conv after flatten": (_set("tasks.task1.layers", [
                               {"type": "flatten"},
                               {"type": "conv2d", "filters": 8, "kernel_size": 3,
                                "activation": "relu"},
                               {"type": "dense", "units": 10, "activation": "softmax"}]),
                           "tasks.task1.layers.1: conv2d cannot take the previous layer's "
                           "output of shape 784"),
    "missing tasks": (_set("tasks", DELETE), "tasks: required key is missing"),
    "empty tasks": (_set("tasks", {}), "tasks: must have at least 1 item"),
    "bad task name": (_set("tasks", {"task 1": GOOD["tasks"]["task1"]}),
                      "tasks.task 1: not a valid task name"),
    "shell syntax in a task name": (_set("tasks", {"t;touch x;": GOOD["tasks"]["task1"]}),
                                    "tasks.t;touch x;: not a valid task name"),
    "train_size too large": (_set("data.train_size", 60001),
                             "data.train_size: must be <= 60000, got 60001"),
    "test_size too large": (_set("data.test_size", 10001),
                            "data.test_size: must be <= 10000, got 10001"),
    "seeds zero": (_set("seeds", 0), "seeds: must be > 0, got 0"),
    "missing url": (_set("data.url", DELETE), "data.url: required key is missing"),
}


def test_the_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert list(params.tasks) == TASKS
    assert params.train_config("task1").batch_size == 128


@pytest.mark.parametrize("case", CASES)
def test_bad_params_name_the_key(case):
    edit, expected = CASES[case]
    with pytest.raises(ParamsError) as info:
        validate(broken(edit), shapes=True)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_a_train_stage_builds_the_layers_of_its_own_task_only():
    # Another task's layers are that task's train stage's business: each
    # Keras build costs a train stage time before it starts.
    data = broken(_set("tasks.task1.layers.0.kernel_size", 29))
    validate(data, shapes=["task2"])
    with pytest.raises(ParamsError) as info:
        validate(data, shapes=["task1"])
    assert info.value.problems == ["tasks.task1.layers.0.kernel_size: 29 does not fit this "
                                   "layer's 28x28 input (the layers before it shrink 28x28)"]


def test_every_problem_is_reported_at_once():
    data = broken(_set("tasks.task1.epochs", 0))
    for case in ("learning rate negative", "unknown activation", "typo in a key"):
        CASES[case][0](data)
    CASES["wrong type"][0](data)
    with pytest.raises(ParamsError) as info:
        validate(data)
    assert len(info.value.problems) == 5, info.value.problems
    assert "5 problem(s)" in str(info.value)


def test_yaml_that_does_not_parse(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ntasks: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params.yaml: 1 problem.*\n.*not valid YAML at line 3"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot read the file"):
        load_params(tmp_path / "nope.yaml")


def test_check_params_command(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    dump_yaml(path, broken(_set("tasks.task2.epochs", -3)))
    assert main([str(path)]) == 1
    assert "tasks.task2.epochs: must be > 0, got -3" in capsys.readouterr().err
    assert main([str(ROOT / "params.yaml")]) == 0


# --- one reading of params.yaml: DVC's --------------------------------------------

TRICKY = """\
seed: 0o17
seeds: 1
data: {url: x, train_size: 1_000}
train: {batch_size: 64}
tasks:
  task1:
    layers:
    - {type: conv2d, filters: 8, kernel_size: 5, activation: relu}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
    optimizer: {name: sgd, learning_rate: 1e-2}
    epochs: 1
"""


def test_yaml_1_2_as_dvc_reads_it(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-2`` as a string and ``0o17`` as a string;
    DVC (ruamel, YAML 1.2) reads numbers: the stages read what DVC records."""
    path = tmp_path / "params.yaml"
    path.write_text(TRICKY)
    params = load_params(path)
    assert params.tasks["task1"].optimizer.learning_rate == 0.01
    assert params.seed == 15


def test_yaml_1_1_booleans_are_strings_for_dvc(tmp_path):
    """``on``/``yes``/``no`` are booleans in YAML 1.1 but strings in DVC's 1.2:
    an activation ``no`` is an unknown activation, not False."""
    path = tmp_path / "params.yaml"
    path.write_text(TRICKY.replace("activation: relu", "activation: no"))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.problems == [
        "tasks.task1.layers.0.activation: must be 'sigmoid', 'relu', 'tanh', 'softmax' or "
        "'linear', got 'no'"]


def test_a_key_given_twice_is_refused_as_dvc_refuses_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(TRICKY.replace("seeds: 1\n", "seeds: 1\nseeds: 2\n"))
    with pytest.raises(ParamsError, match=r"not valid YAML at line 3.*duplicate key"):
        load_params(path)


def test_params_yaml_is_laid_out_as_dvc_writes_it(tmp_path):
    """`dvc exp run -S key=value` rewrites the whole file in DVC's layout (its
    lists in block style: Hydra's merge replaces them): in that layout
    already, only the value's line changes, comments kept."""
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls

    text = (ROOT / "params.yaml").read_text()
    copy = tmp_path / "params.yaml"
    for key, line in (("tasks.task1.optimizer.learning_rate=0.05",
                       "    optimizer: {name: sgd, learning_rate: 0.05}"),
                      ("tasks.task3.optimizer.learning_rate.initial_learning_rate=0.4",
                       "        initial_learning_rate: 0.4")):
        copy.write_text(text)
        apply_overrides(copy, [key])
        changed = [b for a, b in zip(text.splitlines(), copy.read_text().splitlines(),
                                     strict=True) if a != b]
        assert changed == [line], key
