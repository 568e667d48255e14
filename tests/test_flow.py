"""The Prefect flow: one task run per DVC stage, DVC deciding what runs, its
cache restoring what ran before. Real Prefect (a temporary server), real DVC
and Keras, small subset.

One project copy is built once for the module; the tests run on its state in
order. Task-run states are read back from the Prefect API.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time

import pytest
from dvc.utils.serialize import modify_yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL
from ruamel.yaml.representer import RepresenterError

from flows.dvc_project import DvcProject
from flows.pipeline import pipeline
from flows.ui import RESULTS_KEY
from flows.ui import run_label as run_name
from tests.conftest import (
    TASKS,
    finish,
    make_project,
    snapshot,
    stage_of,
    stage_processes,
    start,
    wait_for,
)

pytestmark = pytest.mark.slow

ALL = {"download", "preprocess", "report",
       *(f"{k}[{t}]" for k in ("train", "evaluate") for t in TASKS)}


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_npz, harness):
    project = make_project(tmp_path_factory.mktemp("flow") / "project", mnist_npz)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_NPZ", str(mnist_npz))  # the stages run in child processes
        mp.setenv("DVC_NO_ANALYTICS", "1")
        project.flow = lambda **kw: run_flow(project, **kw)
        yield project


def run_flow(project, **params) -> dict[str, str]:
    """Run the flow; return {task run name: outcome} of every stage, and check
    that the API has a task run for each stage that did work (ran, restored)
    and none for those up to date, besides the one `check`."""
    state = pipeline(project=str(project.path), return_state=True, **params)
    assert state.is_completed(), state.message
    outcomes = {run_name(s): st for s, st in state.result().items() if st != "Skipped"}
    worked = {name for name, st in outcomes.items() if st != "UpToDate"}
    # Task-run states reach the server as events, recorded asynchronously:
    # wait until every task run the flow started has its final state there.
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        states = {stage_of(run.name): run.state.name for run in runs
                  if run.state and run.state.is_final()}
        if set(states) >= worked | {"check"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(states) == worked | {"check"}, states
    assert all(states[name] == outcomes[name] for name in worked), (states, outcomes)
    return outcomes


def did(states: dict[str, str], state: str = "Completed") -> set[str]:
    """The stages that ended ``state`` (Completed: the command ran)."""
    assert set(states.values()) <= {"Completed", "Cached", "UpToDate"}, states
    return {name for name, s in states.items() if s == state}


def not_cached(states: dict[str, str]) -> set[str]:
    """The task runs whose command ran."""
    return did(states)


def dvc_is_clean(project) -> bool:
    return "Data and pipelines are up to date." in project.dvc("status").stdout


def test_first_run_completes_every_step(project):
    states = project.flow()
    assert set(states) == ALL
    assert not_cached(states) == ALL
    assert dvc_is_clean(project)
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    table = next(a for a in artifact if a.key == RESULTS_KEY).data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["task"] for r in rows] == TASKS


def test_second_run_finds_everything_up_to_date(project):
    before = snapshot(project)
    states = project.flow()
    assert set(states) == ALL
    assert did(states, "UpToDate") == ALL
    assert snapshot(project) == before


def test_one_changed_learning_rate_reruns_only_its_task(project):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.05

    model = project.path / "data/models/task1/seed_42/model.keras"
    first = model.read_bytes()
    project.edit_params(edit)
    assert not_cached(project.flow()) == {"train[task1]", "evaluate[task1]", "report"}
    assert dvc_is_clean(project)
    assert did(project.flow(), "UpToDate") == ALL
    # Going back: restored from DVC's cache, nothing trains, the same model.
    project.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=0.01))
    states = project.flow()
    assert did(states, "Cached") == {"train[task1]", "evaluate[task1]", "report"}
    assert did(states) == set()
    assert model.read_bytes() == first
    assert dvc_is_clean(project)


def test_a_deleted_output_comes_back_from_the_cache(project):
    model = project.path / "data/models/task2/seed_42/model.keras"
    model.unlink()
    states = project.flow()
    assert did(states, "Cached") == {"train[task2]"}
    assert did(states) == set()
    assert model.is_file()
    assert dvc_is_clean(project)


def test_an_altered_output_comes_back_from_the_cache(project):
    metrics = project.path / "data/eval/task3/metrics.json"
    original = metrics.read_text()
    metrics.write_text('{"test_accuracy": 1.0}')
    assert did(project.flow(), "Cached") == {"evaluate[task3]"}
    assert metrics.read_text() == original
    assert dvc_is_clean(project)


def test_after_dvc_repro_the_flow_finds_nothing_to_do(project):
    def edit(data):
        data["tasks"]["task4_adam"]["optimizer"]["learning_rate"] = 0.002

    project.edit_params(edit)
    out = project.dvc("repro").stdout
    assert "Running stage 'train@task4_adam'" in out
    before = snapshot(project)
    assert did(project.flow(), "UpToDate") == ALL
    assert snapshot(project) == before


def test_a_subset_of_tasks(project):
    def edit(data):
        for task in ("task1", "task3"):
            data["tasks"][task]["optimizer"]["name"] = "adam"

    project.edit_params(edit)
    states = project.flow(tasks=["task3"])
    # task1 is stale and not selected: the report waits for it.
    assert set(states) == {"download", "preprocess", "train[task3]", "evaluate[task3]"}
    assert not_cached(states) == {"train[task3]", "evaluate[task3]"}
    status = project.dvc("status").stdout
    assert "train@task1" in status and "train@task3" not in status
    states = project.flow(tasks=["task1"], workers=1)
    assert not_cached(states) == {"train[task1]", "evaluate[task1]", "report"}
    assert dvc_is_clean(project)


def test_unknown_task_is_a_clear_error(project):
    state = pipeline(project=str(project.path), tasks=["task9"], return_state=True)
    assert state.is_failed()
    assert state.message.startswith("--tasks: unknown task(s) task9; known: task1, ")


def test_flow_beside_a_running_dvc_repro_stops_with_a_clear_message(project):
    project.edit_params(lambda d: d["tasks"]["task1"].update(epochs=2))
    repro = start(project, sys.executable, "-m", "dvc", "repro")
    wait_for(lambda: (project.path / ".work/train@task1").exists())
    # DVC's repository lock is free while a stage's command runs; even a flow
    # that would not touch task1 must not take the project then.
    state = pipeline(project=str(project.path), tasks=["task2"], return_state=True)
    assert state.is_failed()
    assert "another DVC process" in state.message
    assert re.search(r"process \d+: .*repro", state.message), state.message
    out = finish(repro)
    assert repro.returncode == 0, out
    # dvc repro built task1 meanwhile: nothing left to do.
    assert did(project.flow(), "UpToDate") == ALL
    assert dvc_is_clean(project)


def test_a_dvc_lock_write_stopped_midway_leaves_the_previous_file(project):
    # DVC itself truncates dvc.lock, then writes: an exception in between (a
    # SIGTERM in the flow raises one) left it empty or cut short.
    lock = project.path / "dvc.lock"
    before = lock.read_text()
    with (DvcProject(str(project.path)), pytest.raises(RepresenterError),
          modify_yaml(lock) as data):
        data["stages"]["unwritable"] = object()  # fails partway through the dump
    assert lock.read_text() == before
    assert not list(project.path.glob(".dvc.*"))  # no leftover temporary


def test_sigterm_crashes_the_flow_and_the_next_run_reuses_finished_steps(project):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.04
        data["tasks"]["task2"]["epochs"] = 8  # still training when SIGTERM comes

    project.edit_params(edit)
    config = project.path / "data/models/task1/config.json"
    project.env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    flow = start(project, sys.executable, "-m", "flows.pipeline", "--workers", "1")
    wait_for(lambda: config.is_file() and '"learning_rate": 0.04' in config.read_text(),
             timeout=300)
    wait_for(lambda: (project.path / ".work/train@task2/seed_42/checkpoint").exists(),
             timeout=300)
    # While the flow runs, DVC refuses a second writer.
    second = project.dvc("repro", check=False)
    assert second.returncode != 0 and "Unable to acquire lock" in second.stderr
    flow.send_signal(signal.SIGTERM)
    finish(flow, timeout=120)
    with get_client(sync_client=True) as client:
        (last,) = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
    assert last.state.name == "Crashed"
    # No stage process of this project outlives the flow.
    assert not stage_processes(project.path)
    # Stages run task by task: task1's were done, task2's training was not.
    assert not_cached(project.flow()) == {"train[task2]", "evaluate[task2]", "report"}
    assert dvc_is_clean(project)


def test_on_a_dask_cluster_results_equal_a_local_run(tmp_path, mnist_npz, harness):
    from distributed import LocalCluster

    from flows.pipeline import dask_runner

    def small(data):
        data["data"].update(train_size=1000, test_size=300)
        data["tasks"] = {k: {**data["tasks"][k], "epochs": 1} for k in ("task1", "task4_sgd")}

    local = make_project(tmp_path / "local", mnist_npz, small)
    remote = make_project(tmp_path / "remote", mnist_npz, small)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_NPZ", str(mnist_npz))
        assert pipeline(project=str(local.path), return_state=True).is_completed()
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
            on_dask = pipeline.with_options(task_runner=dask_runner(cluster.scheduler_address))
            state = on_dask(project=str(remote.path), return_state=True)
            assert state.is_completed(), state.message
    for task in ("task1", "task4_sgd"):
        a, b = ((p.path / f"data/eval/{task}/metrics.json").read_text() for p in (local, remote))
        assert a == b
    assert dvc_is_clean(remote)
