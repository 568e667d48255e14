"""What the stages say of where a run is (mnist_cnn/cli/progress.py): the
lines, the estimates they are built from, and the flow reading them back."""

from __future__ import annotations

from pathlib import Path

from mnist_cnn.cli import progress
from mnist_cnn.cli.checks import load_params
from tests.conftest import ROOT


def test_an_epoch_line_says_where_the_stage_is_and_reads_back():
    place = progress.Place(3, 7, [20.0, 40.0])
    lines = progress.Epochs("train@task2", seeds=3, epochs=5, place=place)
    line = lines.line(2, 4, {"loss": 0.412, "accuracy": 0.876, "epoch_seconds": 15.2})
    assert line == ("[3/7] train@task2 · seed 2/3 · epoch 4/5 · loss 0.4120 · accuracy "
                    "0.8760 · 15.2 s/epoch · stage 1m31s left · run 2m31s left")
    found = progress.parse(line)
    assert found["stage"] == "train@task2" and (found["seed"], found["epoch"]) == (2, 4)
    assert found["done"] == 9 / 15 and found["loss"] == 0.412
    assert progress.parse("07:14:05 mnist_cnn.training: training task1") is None


def test_a_stage_never_timed_says_so_and_the_run_counts_it():
    place = progress.Place(1, 3, [None, 12.0])
    assert place.run_left(30.0) == " · run ≥42s left (1 stage never timed here)"
    assert progress.Place(1, 2, [None]).run_left(5.0) == " · run: 1 stage never timed here"
    assert progress.Place().run_left(5.0) == ""  # plain dvc repro: no plan


def test_an_estimate_scales_with_epochs_and_needs_the_same_data_sizes(tmp_path):
    progress.record("train@task2", progress.Timing([2000, 500], 40.0, 6.0, 5), tmp_path)
    # 10 s of start-up and 5 epochs of 6 s; 15 epochs then take 10 + 90.
    assert progress.estimate("train@task2", [2000, 500], 15, tmp_path) == 100.0
    assert progress.estimate("train@task2", [60000, 10000], 15, tmp_path) is None
    # A task with the same layers takes as long an epoch.
    assert progress.estimate("train@task2_15_epochs", [2000, 500], 45, tmp_path,
                             alike=("train@task2",)) == 280.0


def test_tasks_with_the_same_layers_are_alike():
    params = load_params(ROOT / "params.yaml")
    assert set(progress.alike("train@task2_15_epochs", params)) == {"train@task2",
                                                                    "train@task3"}
    assert progress.alike("train@task1", params) == ()
    assert progress.alike("report", params) == ()


def test_durations_read_as_people_write_them():
    assert [progress.duration(s) for s in (0, 59.4, 61, 3720)] == ["0s", "59s", "1m01s",
                                                                   "1h02m"]
    assert isinstance(progress.TIMINGS, Path)
