"""What the Prefect UI shows, read back through a real local Prefect server's
API: run names and tags, task-run names, states and logs, the results artifact, a
failure's message, and a run started from a deployment with an override.
Real DVC and Keras on a small subset."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import psutil
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from flows.pipeline import pipeline
from flows.ui import RESULTS_KEY
from mnist_cnn.metrics import METRICS, PRIMARY
from tests.conftest import TASKS, stage_of, wait_for

pytestmark = pytest.mark.slow

STAGES = 3 + 2 * len(TASKS)  # download, preprocess, train and evaluate per task, report


def run(project, **params):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_NPZ", project.env["MNIST_NPZ"])
        state = pipeline(project=str(project.path), return_state=True, **params)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        # The server records task runs from their events, a moment after the
        # flow ends on a busy machine: read them once all are final.
        deadline = time.monotonic() + 60
        while True:
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run.id])))
            if all(t.state and t.state.is_final() for t in task_runs) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return state, flow_run, {stage_of(t.name): t for t in task_runs}


def logs_of(task_run, complete, timeout: float = 30) -> list[str]:
    """The task run's log lines, once ``complete(lines)`` (logs reach the
    server asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            lines = [log.message for log in client.read_logs(log_filter=LogFilter(
                task_run_id=LogFilterTaskRunId(any_=[task_run.id])))]
        if complete(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def timeline(*runs) -> str:
    """When each flow run was asked for, started and ended: what a run that
    ended late waited on."""
    return "\n".join(f"{r.name}: {r.state.name} {r.state.message!r}; asked "
                     f"{r.created:%H:%M:%S}, started {r.start_time and f'{r.start_time:%H:%M:%S}'}"
                     f", ended {r.end_time and f'{r.end_time:%H:%M:%S}'}" for r in runs)


def runs_of(server: subprocess.Popen) -> list[str]:
    """The served process's children other than multiprocessing's resource
    tracker, which lives as long as it does."""
    runs = []
    for child in psutil.Process(server.pid).children():
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:  # exited, not yet reaped
            command = "(exited)"
        if "multiprocessing.resource_tracker" not in command:
            runs.append(f"{child.pid} {command}")
    return runs


def deployed(name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def commit_of(project) -> str:
    return project.run("git", "rev-parse", "--short", "HEAD").stdout.strip()


def test_runs_say_what_they_are(built, harness):
    sha = commit_of(built)
    state, flow_run, task_runs = run(built)
    assert state.is_completed()
    assert flow_run.name == f"{sha}: nothing to do"
    assert {f"commit:{sha}", "nothing-to-do"} <= set(flow_run.tags)
    # Task runs for work only: a no-op is one task run, the check, whose log
    # gives every stage's verdict.
    assert set(task_runs) == {"check"} and task_runs["check"].state.name == "Completed"
    verdict = "up to date (dvc.lock records their current inputs): download, preprocess, "
    logs = logs_of(task_runs["check"], lambda lines: any(verdict in line for line in lines))
    assert any(line.startswith(verdict + "train@task1") for line in logs), logs
    assert flow_run.state.message == "nothing to do"

    built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=0.05))
    state, flow_run, task_runs = run(built)
    assert flow_run.name == f"{sha}+params: task1 retrained, 2 more ran, {STAGES - 3} up to date"
    assert flow_run.state.message == f"task1 retrained, 2 more ran, {STAGES - 3} up to date"
    assert {"params-edited", "retrained:task1", "ran"} <= set(flow_run.tags)
    ran = {n for n, t in task_runs.items() if t.state.name == "Completed"}
    assert ran == {"check", "train[task1]", "evaluate[task1]", "report"}
    assert set(task_runs) == ran  # up-to-date stages have none
    # No task-run tags: each would cost the task run a concurrency-limit call to the API.
    assert {tuple(t.tags) for t in task_runs.values()} == {()}

    # Each stage's log ends with one line saying why it ran; no TensorFlow noise.
    logs = logs_of(task_runs["train[task1]"],
                   lambda lines: any(line.startswith("Finished in state") for line in lines))
    ours = [line for line in logs if not line.startswith("Finished in state")]  # Prefect's
    assert ours[-1] == "train@task1: ran, because tasks.task1.optimizer.learning_rate 0.01 -> 0.05"
    # Where it is, each epoch: stage k of n, seed, epoch, loss, accuracy.
    assert any(re.match(r"\[1/3\] train@task1 · seed 1/1 · epoch 1/1 · loss [\d.]+ · accuracy ",
                        line) for line in logs), logs
    assert not [line for line in logs if "oneDNN" in line or "absl" in line]

    # Going back: restored, tagged and named as such.
    built.run("git", "checkout", "params.yaml")
    state, flow_run, task_runs = run(built)
    assert flow_run.name == f"{sha}: 3 restored from cache, {STAGES - 3} up to date"
    assert {n for n, t in task_runs.items() if t.state.name == "Cached"} == {
        "train[task1]", "evaluate[task1]", "report"} == set(task_runs) - {"check"}
    assert task_runs["train[task1]"].name == "train[task1] · cached"
    assert "tasks.task1.optimizer.learning_rate 0.05 -> 0.01" in \
        task_runs["train[task1]"].state.message


def test_the_results_artifact_fits_a_laptop_screen(built, harness):
    # A run publishes the report it made or restored (a no-op's is an
    # earlier run's): the report, restored from the cache.
    shutil.rmtree(built.path / "data" / "report")
    run(built)
    with get_client(sync_client=True) as client:
        (artifact,) = [a for a in client.read_latest_artifacts() if a.key == RESULTS_KEY]
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    columns = ["task", *(f"test {m.label}" for m in METRICS.values()), "notebook", "Δ",
               "epochs", "s/epoch"]
    assert [sorted(r) for r in rows] == [sorted(columns)] * len(TASKS)
    assert list(rows[0])[:2] == ["task", f"test {PRIMARY.label}"]  # the best first
    assert [r["task"] for r in rows] == TASKS
    assert "\n" not in artifact.description
    assert re.fullmatch(r"Best: \w+ \d\.\d{4}( \(notebook \d\.\d{4}\))?; "
                        rf"1 restored from cache, {STAGES - 1} up to date",
                        artifact.description), artifact.description


def test_a_params_typo_fails_at_once_naming_the_key(built, harness):
    built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learnig_rate=0.1))
    state, flow_run, task_runs = run(built)
    assert state.is_failed()
    assert "tasks.task1.optimizer.learnig_rate: unknown key (did you mean 'learning_rate'?)" \
        in state.message
    assert task_runs == {}  # no stage started
    assert "invalid-params" in flow_run.tags
    assert flow_run.name.endswith("invalid params: tasks.task1.optimizer.learnig_rate")


def test_bad_workers_or_an_unreadable_params_file_fail_at_once(built, harness):
    state, flow_run, task_runs = run(built, workers=0)  # the Run form accepts it
    assert state.is_failed() and state.message == "workers must be 1 to 16, got 0"
    assert task_runs == {} and "invalid-workers" in flow_run.tags
    with open(built.path / "params.yaml", "a") as f:
        f.write("seeds: 2\n")  # a key given twice: DVC refuses the file
    state, flow_run, task_runs = run(built)
    assert state.is_failed() and task_runs == {}
    assert 'found duplicate key "seeds"' in state.message, state.message
    assert "invalid-params" in flow_run.tags


def test_a_failing_stage_says_why_at_the_top(built, harness, tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"not a zip")
    built.env["MNIST_NPZ"] = str(bad)
    built.edit_params(lambda d: d["data"].update(url="https://example.invalid/mnist.npz"))
    state, flow_run, task_runs = run(built)
    assert state.is_failed()
    failed = task_runs["download"]
    assert failed.state.name == "Failed"
    assert failed.state.message.startswith("download exited with status 1: ")
    assert f"{bad}: not a readable .npz file" in failed.state.message
    assert "failed" in flow_run.tags
    assert flow_run.name.endswith(f"failed: download, {STAGES - 1} skipped")
    # The whole reason, at the top of the flow run too, and at ERROR in the
    # task run's log, with no stray line after it.
    assert f"{bad}: not a readable .npz file" in flow_run.state.message
    logs_of(failed, lambda lines: any(line.startswith("Finished in state") for line in lines))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(
            any_=[failed.id])))
    errors = [log.message for log in logs if log.level >= 40]
    assert any(f"{bad}: not a readable .npz file" in line for line in errors), errors
    assert not [log.message for log in logs if "NoneType: None" in log.message]


def test_an_override_that_does_not_fit_is_refused_before_any_stage(built, harness):
    """A layer that no longer fits its input, or a value of another kind than
    the key holds: refused at once, naming the -S override (not params.yaml,
    which the user never edited)."""
    state, _, task_runs = run(built, overrides={"tasks.task1.layers.0.kernel_size": 40})
    assert state.is_failed() and task_runs == {}
    assert ("tasks.task1.layers.0.kernel_size: 40 does not fit this layer's 28x28 input "
            "(the layers before it shrink 28x28) (set by -S "
            "tasks.task1.layers.0.kernel_size=40)") in state.message, state.message
    state, _, task_runs = run(built, overrides={
        "tasks.task4_sgd.optimizer.learning_rate": 0.05})
    assert state.is_failed() and task_runs == {}
    assert "did you mean tasks.task4_sgd.optimizer.learning_rate.initial_learning_rate?" in \
        state.message.lower(), state.message


def test_a_running_study_shows_its_progress(built, harness):
    """The progress artifact moves while a task trains, the task run's name
    says its epoch, the curves artifact grows; all at least once per epoch."""
    import os
    import signal

    from tests.conftest import start

    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=8))
    built.env = {**built.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    flow = start(built, sys.executable, "-m", "flows.pipeline")
    seen = {"progress": set(), "names": set(), "curves": set()}

    def look() -> bool:
        assert flow.poll() is None or flow.returncode == 0, flow.log.read_text()
        with get_client(sync_client=True) as client:
            for artifact in client.read_latest_artifacts():
                if artifact.key == "mnist-cnn-progress":
                    seen["progress"].add(round(float(artifact.data), 3))
                elif artifact.key == "curves-task1":
                    data = artifact.data
                    seen["curves"].add(len(json.loads(data) if isinstance(data, str) else data))
            seen["names"] |= {t.name for t in client.read_task_runs()
                              if t.name.startswith("train[task1] · seed")}
        return len(seen["curves"]) >= 3 or flow.poll() is not None

    try:
        wait_for(look, timeout=600, interval=0.3)
    finally:
        if flow.poll() is None:
            os.kill(flow.pid, signal.SIGINT)
        flow.wait(timeout=120)
    assert any(0 < p < 100 for p in seen["progress"]), seen
    assert any(re.fullmatch(r"train\[task1\] · seed 1/1 · epoch \d/8", n)
               for n in seen["names"]), seen
    assert len(seen["curves"]) >= 3, seen


def test_a_run_started_from_the_deployment_becomes_an_experiment(built, harness):
    params_before = (built.path / "params.yaml").read_bytes()
    env = {**built.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    server = subprocess.Popen([sys.executable, "-m", "flows.serve", "--max-epochs", "3"],
                              cwd=built.path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not deployed("mnist-cnn-study/study"):
            assert time.monotonic() < deadline and server.poll() is None, "not served"
            time.sleep(1)
        flow_run = run_deployment(
            "mnist-cnn-study/study", timeout=900,
            parameters={"overrides": {"tasks.task1.optimizer.learning_rate": 0.05}})
        # What the Run form may not do, each refused before anything runs,
        # naming the key: another host to download from, a new list of
        # layers, more epochs than whoever serves allows, a key that does not
        # exist; and a project folder of the caller's choice.
        refused = run_deployment("mnist-cnn-study/study", timeout=300, parameters={
            "overrides": {"data.url": "http://169.254.169.254/latest", "tasks.task2.layers":
                          [{"type": "flatten"}], "tasks.task3.epochs": 100_000_000,
                          "tasks.task1.optimizer.momentum": 0.9}})
        elsewhere = run_deployment("mnist-cnn-study/study", timeout=300,
                                   parameters={"project": "/"})
        # A sweep from the form: a list of values per key, each point an
        # experiment (0.05 is the run above: reused), bounded like a run.
        swept = run_deployment("mnist-cnn-study/study", timeout=900, parameters={
            "sweep": {"tasks.task1.optimizer.learning_rate": [0.05, 0.07]},
            "tasks": ["task1"]})
        too_big = run_deployment("mnist-cnn-study/study", timeout=300, parameters={
            "sweep": {"tasks.task1.epochs": [1, 2, 3, 4], "seed": [1, 2, 3, 4, 5]}})
        # Stopped once its last run's process is gone, as a user stops it when
        # nothing runs: Prefect 3.9.1's runner, stopped in the second between a
        # run's final state and the run's receipt for it, marks it Cancelled.
        try:
            wait_for(lambda: not runs_of(server), timeout=120, interval=0.2)
        except AssertionError:
            raise AssertionError(f"the served process still runs: {runs_of(server)}") from None
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert flow_run.state.is_completed(), flow_run.state.message
    exps = json.loads(built.dvc("exp", "show", "--json").stdout)
    saved = {e["name"]: e["revs"][0]["data"] for row in exps
             for e in row.get("experiments") or []}
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(flow_run.id)
        refused = client.read_flow_run(refused.id)
        elsewhere = client.read_flow_run(elsewhere.id)
        started = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[refused.id, elsewhere.id])))
    exp_name = re.search(r" exp (\S+) ", final.name).group(1)
    data = saved[exp_name]
    lr = data["params"]["params.yaml"]["data"]["tasks"]["task1"]["optimizer"]["learning_rate"]
    assert lr == 0.05
    assert set(data["metrics"]["data/metrics.json"]["data"]) == set(TASKS)
    assert (built.path / "params.yaml").read_bytes() == params_before
    assert f"exp:{exp_name}" in final.tags

    assert refused.state.is_failed() and started == []
    for problem in ("data.url: not settable from a served run",
                    "tasks.task2.layers: a served run sets single values",
                    "tasks.task1.optimizer.momentum: no such key to override"):
        assert problem in refused.state.message, refused.state.message
    assert not elsewhere.state.is_completed()  # the flow takes no project folder
    with get_client(sync_client=True) as client:
        swept = client.read_flow_run(swept.id)
        too_big = client.read_flow_run(too_big.id)
    assert swept.state.is_completed(), swept.state.message
    assert "sweep of 2 points" in swept.name and "1 reused" in swept.name, swept.name
    after = json.loads(built.dvc("exp", "show", "--json").stdout)
    lrs = {e["revs"][0]["data"]["params"]["params.yaml"]["data"]["tasks"]["task1"][
        "optimizer"]["learning_rate"] for row in after for e in row.get("experiments") or []}
    assert lrs == {0.05, 0.07}
    assert too_big.state.is_failed(), timeline(final, refused, elsewhere, swept, too_big)
    assert "the sweep has 20 points, more than --max-points 16" in too_big.state.message


def test_served_runs_are_bounded(built):
    from flows.serve import Limits
    from mnist_cnn.cli.checks import ParamsError

    limits = Limits(max_epochs=3, max_seeds=2, max_workers=2)
    commit = commit_of(built)
    with pytest.raises(ParamsError) as err:
        limits.params(built.path, commit, {"tasks.task3.epochs": 4, "seeds": 3}, 3)
    assert err.value.problems == ["workers: at most 2 in a served run, got 3"]
    with pytest.raises(ParamsError) as err:
        limits.params(built.path, commit, {"tasks.task3.epochs": 4, "seeds": 3}, 2)
    assert err.value.problems == ["tasks.task3.epochs: at most 3 in a served run, got 4",
                                  "seeds: at most 2 in a served run, got 3"]
    assert limits.params(built.path, commit, {"tasks.task3.epochs": 3}, 2).tasks[
        "task3"].epochs == 3
