"""Sweeps (flows/sweep.py): a grid of overrides, each point a DVC experiment,
every distinct stage computed once. Real DVC, Prefect and Keras on the small
subset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flows import sweep
from flows.dvc_internals import loads_yaml
from tests.conftest import finish, start, wait_for

pytestmark = pytest.mark.slow

LR = "tasks.task1.optimizer.learning_rate"
EPOCHS = "tasks.task1.epochs"


def experiments(project) -> dict[str, dict]:
    """{name: {"lr": ..., "epochs": ..., "acc": task1's accuracy}} of `dvc exp show`."""
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    found = {}
    for row in show:
        for exp in row.get("experiments") or []:
            data = exp["revs"][0]["data"]
            task1 = data["params"]["params.yaml"]["data"]["tasks"]["task1"]
            metrics = data["metrics"]["data/metrics.json"]["data"]["task1"]
            found[exp["name"]] = {"lr": task1["optimizer"]["learning_rate"],
                                  "epochs": task1["epochs"], "acc": metrics["acc"]}
    return found


def flow(project, *args):
    """`python -m flows.pipeline ARGS` in ``project``, on the session's Prefect server."""
    env = dict(project.env)
    if url := PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = url
    return subprocess.run([sys.executable, "-m", "flows.pipeline", *args], cwd=project.path,
                          env=env, capture_output=True, text=True, timeout=1200)


def test_the_grid_is_parsed_as_dvc_parses_it():
    single, axes = sweep.parse([f"{LR}=0.01,0.05", f"{EPOCHS}=range(1,3)", "seed=7"],
                               loads_yaml)
    assert single == {"seed": 7} and axes == {LR: [0.01, 0.05], EPOCHS: [1, 2]}
    points = sweep.grid(single, axes)
    assert len(points) == 4 and points[0] == {"seed": 7, LR: 0.01, EPOCHS: 1}
    assert sweep.point_name(points[3], axes) == "learning_rate-0.05_epochs-2"
    assert sweep.parse(["seed=choice(1,2)"], loads_yaml)[1] == {"seed": [1, 2]}


def test_a_bad_grid_is_refused_before_anything_runs(built):
    for args, says in (([f"-S={LR}=0.01,0.05", "-S=tasks.task1.learnig_rate=0.1,0.2"],
                        "tasks.task1.learnig_rate: unknown key"),
                       ([f"-S={LR}=range(1,20)", f"-S={EPOCHS}=1,2", "--max-points", "16"],
                        "the sweep has 38 points, more than --max-points 16"),
                       ([f"-S={LR}=0.01,oops"], "must be a number")):
        started = time.monotonic()
        proc = flow(built, *args)
        assert proc.returncode == 1 and time.monotonic() - started < 60, proc.stderr
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not experiments(built)


def test_a_two_by_two_grid_is_four_experiments_computed_once(built, harness):
    # An earlier single experiment at one of the points: the sweep reuses it.
    first = flow(built, "-S", f"{LR}=0.05", "--tasks", "task1")
    assert first.returncode == 0, first.stdout + first.stderr
    (single,) = experiments(built)
    proc = flow(built, "-S", f"{LR}=0.01,0.05", "-S", f"{EPOCHS}=1,2", "--workers", "2",
                "--tasks", "task1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    found = experiments(built)
    assert {(e["lr"], e["epochs"]) for e in found.values()} == {
        (0.01, 1), (0.05, 1), (0.01, 2), (0.05, 2)}
    assert len(found) == 4 and single in found  # not a second experiment of lr 0.05, epochs 1
    assert f"experiment {single} has these params at this commit already; reused" in out
    # lr 0.01 with 1 epoch is the commit itself: restored, not trained. Two points train.
    trained = re.findall(r"Task run 'train\[task1\] · ([^' ]+)' - Finished in state Completed",
                         out)
    assert sorted(trained) == ["learning_rate-0.01_epochs-2", "learning_rate-0.05_epochs-2"]
    metrics = {(e["lr"], e["epochs"]): e["acc"] for e in found.values()}
    assert len(set(metrics.values())) >= 3  # each point its own result
    summary = next((built.path / "data/sweeps").glob("*/summary.md")).read_text()
    assert "| learning_rate | epochs |" in summary and "Best: " in summary
    assert list((built.path / "data/sweeps").glob("*/sweep.png"))
    # Each trained point's curves are an artifact of their own, not one key both overwrite.
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_latest_artifacts()}
    assert {"curves-task1-learning-rate-0-01-epochs-2",
            "curves-task1-learning-rate-0-05-epochs-2"} <= keys, keys

    # The same sweep again: every point reused, nothing trained, no new experiment.
    again = flow(built, "-S", f"{LR}=0.01,0.05", "-S", f"{EPOCHS}=1,2", "--tasks", "task1")
    assert again.returncode == 0 and "4 reused" in again.stdout + again.stderr
    assert "Finished in state Completed('ran" not in again.stdout + again.stderr
    assert experiments(built) == found


def test_a_killed_sweep_reruns_only_the_points_not_finished(built, harness):
    built.env = {**built.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    args = (sys.executable, "-m", "flows.pipeline", "-S", f"{LR}=0.02,0.03,0.04",
            "--workers", "1", "--tasks", "task1")
    proc = start(built, *args)
    wait_for(lambda: "saved as DVC experiment" in proc.log.read_text() or proc.poll() is not None,
             timeout=600, interval=0.2)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc, timeout=60)
    done = experiments(built)
    assert 1 <= len(done) < 3, done
    rerun = built.run(*args)
    out = rerun.stdout + rerun.stderr
    assert f"{len(done)} reused" in out, out
    trained = re.findall(r"Task run 'train\[task1\] · [^']+' - Finished in state Completed", out)
    assert len(trained) <= 3 - len(done), out
    assert {e["lr"] for e in experiments(built).values()} == {0.02, 0.03, 0.04}
