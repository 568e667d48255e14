"""Stages on workers that share nothing with the flow but the DVC remote
(flows/executor.py): real DVC, Prefect and Dask (worker processes, each with
a folder and a copy of the project's code of its own), a local-folder DVC
remote, small subset."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import psutil
import pytest
from distributed import Nanny, Scheduler, SpecCluster
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.settings import PREFECT_API_URL

from flows.dvc_project import DvcProject
from flows.executor import CODE, CODE_ENV, PROVENANCE, WORK_ENV
from flows.pipeline import pipeline
from flows.remote import RemoteRunner
from tests.conftest import ROOT, gone, make_project, ran, wait_for
from tests.sandbox import Project, project_env

pytestmark = pytest.mark.slow

TASKS = ("task1", "task4_sgd")
FETCHING = "fetching"  # the executor's first line for each stage it runs
DEAD = "http://127.0.0.1:9"  # nothing listens there


def small(data):
    data.update(seeds=1)
    data["data"].update(train_size=1000, test_size=300)
    data["tasks"] = {k: {**data["tasks"][k], "epochs": 1} for k in TASKS}


def code_copy(dest: Path, edit=None) -> Path:
    """A worker's own copy of the project's code (as an image would hold it)."""
    for package in CODE:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in PROVENANCE:
        shutil.copy2(ROOT / name, dest / name)
    if edit:
        edit(dest)
    return dest


def make_cluster(folder: Path, mnist: Path, n: int = 2, edit=None) -> SpecCluster:
    """``n`` worker processes, each with its own folder, code and cache, and
    MNIST offline for the download stage; the second cannot reach the Prefect
    API. A worker lost mid-task is retried once elsewhere, never more."""
    workers = {}
    for i in range(n):
        home = folder / f"worker{i}"
        code = code_copy(home / "code", edit)
        env = {CODE_ENV: str(code), WORK_ENV: str(home / "work"), "MNIST_NPZ": str(mnist)}
        if i == 1:  # a worker that cannot reach the Prefect API (nor any HTTP server)
            env.update(PREFECT_API_URL="http://127.0.0.1:9/api", HTTP_PROXY=DEAD,
                       HTTPS_PROXY=DEAD, ALL_PROXY=DEAD, NO_PROXY="")
        workers[f"w{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "local_directory": str(home / "dask"), "env": env}}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return SpecCluster(scheduler={"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard_address": None}}, workers=workers)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mnist_npz, harness):
    """The flow's project (a DVC remote configured), the same study run by a
    plain `dvc repro` elsewhere for reference, and a cluster."""
    root = tmp_path_factory.mktemp("remote")
    reference = make_project(root / "reference", mnist_npz, small)
    reference.dvc("repro")
    project = make_project(root / "project", mnist_npz, small)
    (root / "remote").mkdir()
    project.dvc("remote", "add", "-d", "team", str(root / "remote"))
    project.commit("remote")
    with make_cluster(root / "cluster", mnist_npz) as cluster:
        yield project, reference, cluster, root, mnist_npz


def flow(project: Project, cluster: SpecCluster, **params):
    return pipeline(project=str(project.path), remote="team",
                    dask_address=cluster.scheduler_address, return_state=True, **params)


def logs_of(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
        return [log.message for log in client.read_logs(log_filter=LogFilter(
            task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])))]


def dispatched(state) -> int:
    """Stages the workers ran in this flow run (each starts by fetching)."""
    deadline = time.monotonic() + 30  # logs reach the server asynchronously
    while True:
        found = sum(m.startswith(tuple(f"{s}: {FETCHING}" for s in state.result()))
                    for m in logs_of(state.state_details.flow_run_id))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_study_runs_on_workers_that_share_only_the_remote(setup):
    project, reference, cluster, root, _ = setup
    state = flow(project, cluster, workers=2)
    assert state.is_completed(), state.message
    assert {st for st in state.result().values()} == {"Completed"}
    # Both workers took stages, the one without the Prefect API too.
    for i in range(2):
        assert list((root / "cluster" / f"worker{i}" / "work" / "cache").rglob("runs/*/*/*"))
    # The same numbers as a plain `dvc repro` on this machine.
    for metrics in [*(f"data/eval/{t}/metrics.json" for t in TASKS), "data/metrics.json"]:
        assert (project.path / metrics).read_bytes() == \
            (reference.path / metrics).read_bytes(), metrics
    assert dispatched(state) == 2 * len(TASKS) + 3
    # Recorded as a local run would be: dvc.lock, outputs in the workspace.
    assert "Data and pipelines are up to date." in project.dvc("status").stdout
    assert (project.path / "data/report/report.md").is_file()
    # What a worker is sent names no path of the flow's machine.
    with DvcProject(project.path) as dvc:
        request = RemoteRunner(dvc, "team").job("report").request
    sent = json.dumps(request.__dict__)
    assert str(project.path) not in sent and str(ROOT) not in sent
    assert {out["path"] for out in request.inputs} >= {"data/prepared", "data/models/task1"}


def test_a_second_run_dispatches_nothing_and_a_clone_pulls_everything(setup):
    project, _, cluster, root, _ = setup
    state = flow(project, cluster)
    assert state.is_completed() and set(state.result().values()) == {"UpToDate"}
    assert dispatched(state) == 0
    # A teammate's clone of the result that pulls from the remote trains nothing.
    project.commit("the study, run on the workers")
    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(project.path), str(clone)], check=True)
    teammate = Project(clone, project_env(None, root))
    teammate.run(sys.executable, "-m", "tools.share", "pull")
    out = teammate.dvc("repro").stdout
    assert ran(out) == set() and "Data and pipelines are up to date" in out, out


def test_what_the_remote_holds_is_restored_without_a_worker(setup):
    """Another copy of the project that computed nothing: every stage comes
    from the remote's run-cache (Cached), none is sent to a worker."""
    project, _, cluster, root, _ = setup
    other = root / "other"
    subprocess.run(["git", "clone", "-q", str(project.path), str(other)], check=True)
    state = flow(Project(other, project_env(None, root)), cluster)
    assert state.is_completed(), state.message
    assert set(state.result().values()) == {"Cached"}
    assert dispatched(state) == 0
    assert (other / "data/metrics.json").read_bytes() == \
        (project.path / "data/metrics.json").read_bytes()


# Enough epochs that a fast machine is still training when the test looks
# (CI once finished four before the test's first look).
EPOCHS = 30


def test_a_worker_killed_mid_stage_records_nothing_half_done(setup):
    project, _, cluster, root, _ = setup
    project.edit_params(lambda d: d["tasks"]["task1"].update(epochs=EPOCHS))
    project.commit("more epochs")
    lock_before = (project.path / "dvc.lock").read_text()
    env = {**project.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("MNIST_NPZ", None)
    flow_proc = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", "--dask-address", cluster.scheduler_address,
         "--remote", "team", "--workers", "1"], cwd=project.path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def training() -> psutil.Process | None:
        """The stage process training task1 in a worker's scratch folder, once
        it has finished an epoch."""
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "stages.train" not in " ".join(proc.info["cmdline"] or []):
                    continue
                cwd = Path(proc.cwd())
            except psutil.Error:
                continue
            if str(root / "cluster") in str(cwd) and list(cwd.glob(
                    ".work/train@task1/seed_42/checkpoint/meta.json")):
                return proc
        return None

    found: list[psutil.Process] = []

    def caught() -> bool:
        assert flow_proc.poll() is None, flow_proc.communicate()[0]
        if (stage := training()) is not None:
            stage.suspend()  # so that the kill lands mid-stage however fast the machine
            found.append(stage)
        return bool(found)

    try:
        wait_for(caught, timeout=600, interval=0.1)
        (stage,) = found
        worker = stage.parent()  # a Dask worker process (the nanny's child)
        # (Dask names its worker processes `dask worker [...]` when setproctitle is there.)
        assert worker.pid != flow_proc.pid and any(
            word in " ".join(worker.cmdline()) for word in ("spawn_main", "dask worker"))
        os.kill(worker.pid, signal.SIGKILL)  # the worker process, by its PID
        stage.resume()  # as an orphan, it stops itself
        wait_for(lambda: gone(stage.pid), timeout=30)
        out = flow_proc.communicate(timeout=900)[0]
        if flow_proc.returncode == 0:  # retried on another worker process
            assert "train@task1" not in project.dvc("status").stdout
        else:  # or reported, naming the stage, with nothing recorded for it
            assert "train@task1" in out
            assert (project.path / "dvc.lock").read_text() == lock_before
            state = flow(project, cluster)
            assert state.is_completed(), state.message
    finally:  # a failed assertion must not leave the flow holding the project for the next test
        for proc in [*found, flow_proc]:
            with contextlib.suppress(psutil.Error, OSError):
                proc.kill()
        flow_proc.wait(timeout=60)
    assert "Data and pipelines are up to date." in project.dvc("status").stdout


def test_a_worker_on_other_code_refuses_naming_the_file(tmp_path, setup):
    project, _, _, _, mnist = setup

    def stale_image(code: Path):
        models = code / "mnist_cnn" / "models.py"
        models.write_text(models.read_text() + "\n# an older build\n")

    project.edit_params(lambda d: d["tasks"]["task4_sgd"].update(epochs=2))
    with make_cluster(tmp_path / "cluster", mnist, n=1, edit=stale_image) as stale:
        state = flow(project, stale)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    (refused,) = [r for r in runs if r.name.startswith("train[task4_sgd]")]
    assert refused.state.name == "Failed"
    assert "this worker's code differs from the flow's commit: mnist_cnn/models.py" in \
        refused.state.message
    assert "train@task4_sgd" in project.dvc("status").stdout  # nothing recorded
    project.run("git", "checkout", "params.yaml")
