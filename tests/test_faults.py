"""Bad input and faults, through the real pipeline (DVC and Keras, small subset):
clear errors, nothing lost, identical results on rerun."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import finish, kill, ran, snapshot, start, wait_for

pytestmark = pytest.mark.slow


def stale(project) -> set[str]:
    return set(json.loads(project.dvc("status", "--json").stdout))


# --- bad parameters --------------------------------------------------------


def test_bad_params_stop_dvc_repro_before_any_output_changes(built):
    before = snapshot(built)

    def edit(data):
        data["tasks"]["task3"]["optimizer"]["learning_rate"]["initial_learning_rate"] = -0.5
        data["tasks"]["task1"]["optimizer"]["learnig_rate"] = 0.1
        data["tasks"]["task2"]["layers"][0]["activation"] = "sigmiod"
        data["tasks"]["task4_sgd"]["epochs"] = 0

    built.edit_params(edit)
    proc = built.dvc("repro", check=False)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    # The first stage that runs reports every problem, with its key path.
    for problem in (
            "tasks.task3.optimizer.learning_rate.initial_learning_rate: must be > 0, got -0.5",
            "tasks.task1.optimizer.learnig_rate: unknown key (did you mean 'learning_rate'?)",
            "tasks.task2.layers.0.activation: must be 'sigmoid', 'relu'",
            "tasks.task4_sgd.epochs: must be > 0, got 0"):
        assert problem in err, err
    assert len(ran(proc.stdout)) == 1  # it stopped at the first stage
    assert snapshot(built) == before
    assert "Traceback" not in err


def test_check_params_lists_every_problem_without_running_anything(built):
    def edit(data):
        data["train"]["batch_size"] = 0
        data["data"]["train_size"] = 70000

    built.edit_params(edit)
    proc = built.run(sys.executable, "-m", "stages.config", check=False)
    assert proc.returncode == 1
    assert "train.batch_size: must be > 0, got 0" in proc.stderr
    assert "data.train_size: must be <= 60000, got 70000" in proc.stderr


def test_yaml_that_does_not_parse_stops_dvc(built):
    before = snapshot(built)
    params = built.path / "params.yaml"
    params.write_text(params.read_text().replace("seeds: 1", "seeds: [1"))
    proc = built.dvc("repro", check=False)
    assert proc.returncode != 0
    assert "params.yaml" in proc.stderr
    assert snapshot(built) == before


# --- bad data ---------------------------------------------------------------


def test_bad_download_source_keeps_the_previous_data(built, tmp_path):
    before = snapshot(built)
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(Path(built.env["MNIST_NPZ"]).read_bytes()[:100_000])
    built.env["MNIST_NPZ"] = str(bad)

    def edit(data):
        data["data"]["url"] = "https://example.invalid/mnist.npz"

    built.edit_params(edit)
    proc = built.dvc("repro", check=False)
    assert proc.returncode != 0
    assert f"{bad}: not a readable .npz file" in proc.stderr
    assert snapshot(built) == before
    assert "download" in stale(built)


# --- faults -------------------------------------------------------------------


def _loadable(folder: Path) -> bool:
    """A complete train output: config and a model Keras can load."""
    json.loads((folder / "config.json").read_text())
    keras.models.load_model(folder / "seed_42" / "model.keras")
    return True


def test_sigkill_at_any_moment_leaves_previous_or_complete_outputs(built):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.02

    built.edit_params(edit)
    old = {p: h for p, h in snapshot(built).items()}
    old_task1 = {p: h for p, h in old.items() if p.startswith("models/task1/")}
    # A full run of the three stages takes several seconds; kill it at points
    # spread over that time, each in a fresh attempt.
    kill_points = [0.2, 0.8, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.0, 10.0]
    outcomes = []
    for delay in kill_points:
        proc = start(built, sys.executable, "-m", "dvc", "repro")
        time.sleep(delay)
        finished = proc.poll() is not None
        kill(proc)
        now = snapshot(built)
        task1 = {p: h for p, h in now.items() if p.startswith("models/task1/")}
        # Never a partial output: the previous one, or a complete new one.
        assert task1 == old_task1 or _loadable(built.path / "data/models/task1"), delay
        outcomes.append("finished" if finished else "killed")
        if task1 != old_task1:
            break
        assert "train@task1" in stale(built)
    assert "killed" in outcomes
    out = built.dvc("repro").stdout
    assert "train@task1" not in stale(built) and not stale(built), out


def test_leftovers_of_a_killed_write_are_invisible_to_dvc(built):
    litter = built.path / "data/models/.task1.k1ll3d.tmp"
    litter.mkdir()
    (litter / "model.keras").write_bytes(b"half a model")
    (built.path / "data/report/.report.x.tmp.md").write_text("half a report")
    assert not stale(built)
    # The next write of that output clears them.
    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=2))
    built.dvc("repro", "train@task1")
    assert not litter.exists()


def test_resume_after_kill_equals_an_uninterrupted_run(built, tmp_path):
    def three_epochs(data):
        data["tasks"]["task2"]["epochs"] = 3

    built.edit_params(three_epochs)
    reference = tmp_path / "reference"
    built.run(sys.executable, "-m", "stages.train", "task2", "--data", "data/prepared",
              "--out", str(reference), "--state", str(tmp_path / "state"))

    backup = built.path / ".train_state/task2/seed_42/backup"

    def epochs_done() -> int:
        """The latest complete checkpoint (stages.train.Backup)."""
        return max((int(p.name[6:10]) for p in backup.glob("epoch-*.weights.h5")), default=0)

    # Stop it after epoch 1 (SIGTERM), resume, stop it again after epoch 2
    # (SIGKILL, possibly while it writes a checkpoint), then let it finish.
    for sig, epoch in ((signal.SIGTERM, 1), (signal.SIGKILL, 2)):
        proc = start(built, sys.executable, "-m", "dvc", "repro", "train@task2")
        wait_for(lambda epoch=epoch: epochs_done() >= epoch)
        kill(proc, sig)
        assert epochs_done() in (epoch, epoch + 1)
        assert "train@task2" in stale(built)
    done = epochs_done()
    proc = built.dvc("repro", "train@task2")
    if done < 3:
        assert f"resuming after epoch {done} of 3" in proc.stderr

    resumed = built.path / "data/models/task2/seed_42"
    a = keras.models.load_model(reference / "seed_42/model.keras").get_weights()
    b = keras.models.load_model(resumed / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for metric in ("loss", "accuracy"):
        log = f"live/plots/metrics/train/{metric}.tsv"
        assert (reference / "seed_42" / log).read_text() == (resumed / log).read_text()
    assert not (built.path / ".train_state/task2").exists()


def test_same_seed_same_metrics(built, tmp_path):
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        built.run(sys.executable, "-m", "stages.train", "task4_sgd", "--data", "data/prepared",
                  "--out", str(out), "--state", str(tmp_path / f"state-{run}"))
        outs.append(out / "seed_42")
    a, b = (keras.models.load_model(o / "model.keras").get_weights() for o in outs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    log = "live/plots/metrics/train/loss.tsv"
    assert (outs[0] / log).read_text() == (outs[1] / log).read_text()


def test_two_dvc_repro_at_once(built):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.03

    built.edit_params(edit)
    first = start(built, sys.executable, "-m", "dvc", "repro")
    wait_for(lambda: (built.path / ".train_state/task1").exists())
    second = built.dvc("repro", check=False)
    assert second.returncode != 0
    # DVC frees its repository lock while a stage's command runs and guards
    # that stage's files instead; either way the second one stops, saying why.
    assert ("Unable to acquire lock" in second.stderr
            or "is busy, it is being blocked by" in second.stderr), second.stderr
    out = finish(first)
    assert first.returncode == 0, out
    assert not stale(built)
