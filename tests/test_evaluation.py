"""The evaluate stage's core: scores per seed, their summary, its files."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from mnist_cnn.dataset import NUM_CLASSES, DataError, save_split
from mnist_cnn.evaluation import evaluate, load_model, summarize
from mnist_cnn.layout import MODEL, seed_dir
from mnist_cnn.models import compile_model
from mnist_cnn.params import Task

TINY = Task.model_validate({
    "layers": [{"type": "conv2d", "filters": 2, "kernel_size": 3, "activation": "relu"},
               {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}],
    "optimizer": {"name": "adam"}, "epochs": 1})


def test_one_seed_has_no_spread():
    assert summarize({42: {"test_accuracy": 0.5, "test_loss": 1.0}}) == {
        "test_accuracy": 0.5, "test_loss": 1.0}


def test_several_seeds_give_mean_and_sample_std():
    out = summarize({1: {"test_accuracy": 0.4, "test_loss": 1.0},
                     2: {"test_accuracy": 0.6, "test_loss": 3.0}})
    assert out["test_accuracy"] == pytest.approx(0.5)
    assert out["test_accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert out["test_loss_std"] == pytest.approx(1.4142, abs=1e-4)


@pytest.fixture
def project(tmp_path):
    """Prepared test data (20 images) and an untrained model per seed."""
    rng = np.random.default_rng(0)
    labels = np.arange(20) % NUM_CLASSES
    save_split(tmp_path, "test", rng.random((20, 28, 28, 1), np.float32),
               np.eye(NUM_CLASSES, dtype=np.float32)[labels])
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        path = seed_dir(tmp_path / "models", seed) / MODEL
        path.parent.mkdir(parents=True)
        compile_model(TINY).save(path)
    return tmp_path


def test_evaluate_writes_metrics_per_seed_and_the_confusion_matrix(project):
    out = project / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not the stage's: kept
    summary = evaluate("tiny", [1, 2], project / "models", project, out)
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(summary)
    assert set(summary) == {"test_accuracy", "test_loss", "test_accuracy_std", "test_loss_std"}
    assert set(json.loads((out / "seeds.json").read_text())) == {"1", "2"}
    assert np.load(out / "predictions.npy").shape == (20,)
    matrix = json.loads((out / "plots/sklearn/confusion_matrix.json").read_text())
    assert len(matrix) == 20 and {"actual", "predicted"} <= set(matrix[0])
    assert (out / "notes.txt").read_text() == "mine"


def test_a_damaged_model_is_named(project):
    model = seed_dir(project / "models", 1) / MODEL
    model.write_bytes(model.read_bytes()[:500])
    with pytest.raises(DataError, match=r"seed_1/model.keras: not a readable Keras model"):
        load_model(model)
    with pytest.raises(DataError, match=r"seed_3/model.keras: no such model"):
        evaluate("tiny", [3], project / "models", project, project / "eval")
