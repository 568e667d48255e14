"""The report stage's core on a tiny folder tree: collect reads what train and
evaluate wrote, render turns it into the notebook's table with ours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_cnn.cli.checks import load_params
from mnist_cnn.dataset import DataError, save_split
from mnist_cnn.layout import epoch_log
from mnist_cnn.report.collect import collect, describe_layers
from mnist_cnn.report.figures import FIGURES
from mnist_cnn.report.findings import check_all
from mnist_cnn.report.render import markdown_table, render_markdown, results_table, write_report
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")
TASKS = {name: PARAMS.tasks[name] for name in ("task1", "task4_adam")}


def tree(root, seeds=(42,), accuracy=None):
    """Train and evaluate outputs as the stages write them, for TASKS."""
    accuracy = accuracy or {"task1": [0.90], "task4_adam": [0.99]}
    for task, runs in accuracy.items():
        models, evals = root / "models" / task, root / "eval" / task
        (models).mkdir(parents=True)
        (models / "config.json").write_text(json.dumps(
            {"param_count": 185_162 if task == "task1" else 154_474, "train_images": 2000,
             "environment": {"tensorflow": "2.21.0"}}))
        for seed, acc in zip(seeds, runs, strict=True):
            for metric, values in (("loss", [2.0, 1.0]), ("accuracy", [acc - 0.1, acc]),
                                   ("epoch_seconds", [3.0, 5.0])):
                path = epoch_log(models, seed, metric)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"step\t{metric}\n" + "".join(
                    f"{i}\t{v}\n" for i, v in enumerate(values)))
        evals.mkdir(parents=True)
        mean = sum(runs) / len(runs)
        (evals / "metrics.json").write_text(json.dumps({"test_accuracy": mean,
                                                        "test_loss": 0.3}))
        (evals / "seeds.json").write_text(json.dumps(
            {str(s): {"test_accuracy": a, "test_loss": 0.3} for s, a in zip(seeds, runs,
                                                                          strict=True)}))
        np.save(evals / "predictions.npy", np.arange(10, dtype=np.uint8))
    return root


def test_describe_a_task():
    assert describe_layers(PARAMS.tasks["task2"]) == (
        "conv32 5x5 sigmoid ×2 → flatten → dense128 sigmoid → dense10 softmax")
    assert PARAMS.tasks["task3"].optimizer.describe() == (
        "SGD, ExponentialDecay(0.5, 10000, 0.9)")
    assert PARAMS.tasks["task4_adam"].optimizer.describe() == "Adam (default lr)"


def test_collect_one_row_per_task_and_the_mean_curves(tmp_path):
    root = tree(tmp_path, seeds=(42, 43), accuracy={"task1": [0.88, 0.92],
                                                     "task4_adam": [0.99, 0.99]})
    df, curves = collect(TASKS, [42, 43], root / "models", root / "eval")
    assert list(df.index) == ["task1", "task4_adam"]
    assert df.loc["task1", "accuracy_runs"] == [0.88, 0.92]
    assert df.loc["task1", "nb_accuracy"] == pytest.approx(0.9117, abs=1e-4)
    assert df.loc["task1", "s_per_epoch"] == 4.0
    task1 = curves[curves.task == "task1"]
    assert task1["epoch"].tolist() == [1, 2]
    assert task1["accuracy"].tolist() == pytest.approx([0.8, 0.9])


def test_render_the_notebook_table_with_ours(tmp_path):
    root = tree(tmp_path)
    df, curves = collect(TASKS, [42], root / "models", root / "eval")
    table = markdown_table(*results_table(df))
    assert ("| task1 | conv32 5x5 sigmoid → flatten → dense10 softmax | 185,162 | 5 | "
            "SGD, lr 0.01 | 0.9000 | 0.9117 | -0.0117 |") in table
    md = render_markdown(df, check_all(df, curves), 42)
    assert md.startswith("# MNIST CNN study: results")
    assert "one run per task (seed 42)" in md


def test_a_missing_evaluation_says_what_to_run(tmp_path):
    root = tree(tmp_path)
    (root / "eval" / "task1" / "metrics.json").unlink()
    with pytest.raises(DataError, match="task1/metrics.json: no such file; run the stage"):
        collect(TASKS, [42], root / "models", root / "eval")


def test_write_report_writes_every_file_or_none(tmp_path):
    root = tree(tmp_path)
    rng = np.random.default_rng(0)
    (root / "prepared").mkdir()
    save_split(root / "prepared", "test", rng.random((10, 28, 28, 1), np.float32),
               np.eye(10, dtype=np.float32)[np.arange(10)])
    write_report(TASKS, [42], root / "models", root / "eval", root / "prepared", root / "report",
                 root / "metrics.json")
    names = sorted(p.relative_to(root / "report").as_posix()
                   for p in (root / "report").rglob("*") if p.is_file())
    assert names == sorted(["curves.csv", "report.html", "report.md", "results.csv",
                            *(f"figures/{name}" for name in FIGURES)])
    assert json.loads((root / "metrics.json").read_text()) == {
        "task1": {"acc": 0.9, "loss": 0.3}, "task4_adam": {"acc": 0.99, "loss": 0.3}}


def test_write_report_failing_midway_leaves_no_report(tmp_path, monkeypatch):
    from mnist_cnn.report import render

    root = tree(tmp_path)
    (root / "prepared").mkdir()
    save_split(root / "prepared", "test", np.zeros((10, 28, 28, 1), np.float32),
               np.eye(10, dtype=np.float32))

    def fail(*args):
        raise RuntimeError("killed while rendering")

    monkeypatch.setattr(render, "render_html", fail)  # after report.md is written
    with pytest.raises(RuntimeError):
        write_report(TASKS, [42], root / "models", root / "eval", root / "prepared",
                     root / "report", root / "metrics.json")
    assert not (root / "report").exists() and not (root / "metrics.json").exists()
    assert sorted(p.name for p in root.iterdir()) == ["eval", "models", "prepared"]
