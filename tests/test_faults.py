"""Bad input and faults, through the real pipeline (DVC and Keras, small subset):
clear errors, nothing lost, identical results on rerun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest
from dvc.utils.serialize import load_yaml

from tests.conftest import (
    PrefectServer,
    finish,
    kill,
    ran,
    snapshot,
    stage_processes,
    start,
    wait_for,
)

pytestmark = pytest.mark.slow


def stale(project) -> set[str]:
    return set(json.loads(project.dvc("status", "--json").stdout))


def only_removed(before: dict, after: dict, stage_outs: tuple[str, ...]) -> bool:
    """Nothing changed but the failed stage's outputs, which DVC removed before
    running it (they stay in its cache): none of them half-written."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return all(p.startswith(stage_outs) and p not in after for p in changed)


def restore_params(project) -> None:
    project.run("git", "checkout", "params.yaml")


# --- bad parameters --------------------------------------------------------


def test_bad_params_stop_dvc_repro_at_the_first_stage(built):
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
    (first,) = ran(proc.stdout)  # it stopped at the first stage
    assert first == "train@task1"
    assert only_removed(before, snapshot(built), ("models/task1/",))
    assert "Traceback" not in err
    # Fixed, the removed output comes back from DVC's cache: nothing trains.
    restore_params(built)
    out = built.dvc("repro").stdout
    assert ran(out) == set() and "Stage 'train@task1' is cached" in out, out
    assert snapshot(built) == before


def test_check_params_lists_every_problem_without_running_anything(built):
    def edit(data):
        data["train"]["batch_size"] = 0
        data["data"]["train_size"] = 70000

    built.edit_params(edit)
    proc = built.run(sys.executable, "-m", "mnist_cnn.cli.checks", check=False)
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


def test_bad_download_source_never_leaves_bad_data(built, tmp_path):
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
    assert only_removed(before, snapshot(built), ("raw/",))
    assert "download" in stale(built)
    restore_params(built)
    assert "Stage 'download' is cached" in built.dvc("repro").stdout
    assert snapshot(built) == before


# --- faults -------------------------------------------------------------------


def _loadable(folder: Path) -> bool:
    """A complete train output: config and a model Keras can load."""
    json.loads((folder / "config.json").read_text())
    keras.models.load_model(folder / "seed_42" / "model.keras")
    return True


def test_sigkill_at_any_moment_leaves_no_output_or_a_complete_one(built):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.02

    old_task1 = {p: h for p, h in snapshot(built).items() if p.startswith("models/task1/")}
    built.edit_params(edit)
    # A full run of the three stages takes several seconds; kill it at points
    # spread over that time, each in a fresh attempt.
    kill_points = [0.2, 0.8, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.0, 10.0]
    outcomes = []
    for delay in kill_points:
        # As `make run` runs it. Plain `dvc repro` killed while it rewrites
        # .dvc/tmp/rwlock leaves that file cut short, and DVC refuses to work
        # until it is deleted (flows/dvc_internals.py, atomic_rwlock).
        proc = start(built, sys.executable, "-m", "tools.dvc", "repro")
        time.sleep(delay)
        finished = proc.poll() is not None
        kill(proc)
        task1 = {p: h for p, h in snapshot(built).items() if p.startswith("models/task1/")}
        # DVC removed the old output first (it keeps it in its cache): never
        # a partial output, only none or a complete new one.
        assert task1 in ({}, old_task1) or _loadable(built.path / "data/models/task1"), delay
        outcomes.append("finished" if finished else "killed")
        if task1 and task1 != old_task1:
            break
        assert "train@task1" in stale(built)
    assert "killed" in outcomes
    out = built.dvc("repro").stdout
    assert not stale(built), out
    # The old output was never lost: going back restores it from DVC's cache.
    built.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=0.01))
    out = built.dvc("repro").stdout
    assert "Stage 'train@task1' is cached - skipping run, checking out outputs" in out
    assert {p: h for p, h in snapshot(built).items()
            if p.startswith("models/task1/")} == old_task1


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
    built.run(sys.executable, "-m", "stages.train", "--task", "task2", "--data",
              "data/prepared", "--models", str(tmp_path))
    reference = tmp_path / "task2"

    meta = built.path / ".work/train@task2/seed_42/checkpoint/meta.json"

    def epochs_done() -> int:
        """Epochs of the latest complete checkpoint (mnist_cnn.training.Checkpoint)."""
        return json.loads(meta.read_text())["epochs_done"] if meta.is_file() else 0

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
    assert not (built.path / ".work/train@task2").exists()


def test_same_seed_same_metrics(built, tmp_path):
    outs = []
    for run in ("a", "b"):
        built.run(sys.executable, "-m", "stages.train", "--task", "task4_sgd", "--data",
                  "data/prepared", "--models", str(tmp_path / run))
        outs.append(tmp_path / run / "task4_sgd" / "seed_42")
    a, b = (keras.models.load_model(o / "model.keras").get_weights() for o in outs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    log = "live/plots/metrics/train/loss.tsv"
    assert (outs[0] / log).read_text() == (outs[1] / log).read_text()


def test_two_dvc_repro_at_once(built):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.03

    built.edit_params(edit)
    first = start(built, sys.executable, "-m", "dvc", "repro")
    wait_for(lambda: (built.path / ".work/train@task1").exists())
    second = built.dvc("repro", check=False)
    assert second.returncode != 0
    # DVC frees its repository lock while a stage's command runs and guards
    # that stage's files instead; either way the second one stops, saying why.
    assert ("Unable to acquire lock" in second.stderr
            or "is busy, it is being blocked by" in second.stderr), second.stderr
    out = finish(first)
    assert first.returncode == 0, out
    assert not stale(built)


# --- kills of one process, concurrency --------------------------------------------


def trained_weights(folder: Path) -> list[np.ndarray]:
    return keras.models.load_model(folder / "seed_42" / "model.keras").get_weights()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["kill", "kill-9"])
def test_killing_dvc_by_its_pid_leaves_no_trainer_behind(built, tmp_path, sig):
    """`kill PID` of `dvc repro` alone (not its group): DVC leaves its stage's
    process running; the stage notices its parent is gone and stops, and the
    next `dvc repro` ends as an uninterrupted run would."""
    built.edit_params(lambda d: d["tasks"]["task2"].update(epochs=3))
    built.run(sys.executable, "-m", "stages.train", "--task", "task2", "--data",
              "data/prepared", "--models", str(tmp_path))
    meta = built.path / ".work/train@task2/seed_42/checkpoint/meta.json"
    proc = start(built, sys.executable, "-m", "dvc", "repro", "train@task2")
    wait_for(meta.is_file, timeout=300)  # one epoch done, the next one training
    os.kill(proc.pid, sig)
    finish(proc)
    wait_for(lambda: not stage_processes(built.path), timeout=15)
    out = built.dvc("repro").stderr
    assert "resuming after epoch" in out, out
    resumed = trained_weights(built.path / "data/models/task2")
    assert all(np.array_equal(a, b) for a, b in zip(trained_weights(tmp_path / "task2"),
                                                     resumed, strict=True))
    assert not stale(built)


def test_a_stage_launched_twice_refuses_naming_the_holder(built, tmp_path):
    built.edit_params(lambda d: d["tasks"]["task2"].update(epochs=20))  # still training
    args = [sys.executable, "-m", "stages.train", "--task", "task2", "--data",
            "data/prepared", "--models", str(tmp_path)]
    first = start(built, *args)
    wait_for(lambda: (built.path / ".work/train@task2/seed_42").exists(), timeout=300)
    second = built.run(*args, check=False)
    assert second.returncode == 1
    assert re.search(r"error: train@task2 is already running \(process \d+, started "
                     r"\d\d:\d\d:\d\d\); wait for it to finish", second.stderr), second.stderr
    kill(first)


# --- injection --------------------------------------------------------------------------


def test_a_task_name_never_reaches_a_shell(built):
    """A task key holding shell syntax: before, DVC pasted it into the stage's
    command and ran it when the upstream stages were up to date."""
    params = built.path / "params.yaml"
    task1 = params.read_text().split("  task1:\n", 1)[1].split("\n\n", 1)[0]
    params.write_text(params.read_text() + "\n  'x;touch INJECTED;':\n" + task1 + "\n")
    proc = built.dvc("repro", check=False)
    assert proc.returncode != 0
    assert not (built.path / "INJECTED").exists()
    assert "tasks.x;touch INJECTED;: not a valid task name" in proc.stderr, proc.stderr


def test_a_task_name_given_to_a_stage_is_checked_before_it_names_files(built):
    proc = built.run(sys.executable, "-m", "stages.evaluate", "--task", "../x", "--models",
                     "data/models", "--data", "data/prepared", "--out", "o", check=False)
    assert proc.returncode == 1
    assert "error: --task: '../x' is not a task name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_flow_task_list_is_checked(built):
    empty = built.run(sys.executable, "-m", "flows.pipeline", "--tasks", "", check=False)
    assert empty.returncode == 2
    assert "--tasks: give at least one task name" in empty.stderr
    evil = built.run(sys.executable, "-m", "flows.pipeline", "--tasks", "x;touch y",
                     check=False)
    assert evil.returncode == 2 and "--tasks: unknown task(s) x;touch y" in evil.stdout + \
        evil.stderr
    assert not (built.path / "y").exists()


# --- one reading of params.yaml ---------------------------------------------------------


def test_what_trains_is_what_dvc_lock_records(built):
    """YAML 1.1 would read 1e-2 as a string and 0o7 as a string; DVC (1.2)
    reads numbers, and so do the stages."""
    params = built.path / "params.yaml"
    text = params.read_text().replace("learning_rate: 0.01}", "learning_rate: 1e-2}", 1)
    params.write_text(text.replace("seed: 42", "seed: 0o52", 1))
    built.dvc("repro")
    config = json.loads((built.path / "data/models/task1/config.json").read_text())
    lock = built.path / "dvc.lock"
    recorded = load_yaml(str(lock))["stages"]["train@task1"]["params"]["params.yaml"]
    assert config["spec"]["optimizer"]["learning_rate"] == 0.01
    assert recorded["tasks.task1"]["optimizer"]["learning_rate"] == 0.01
    assert config["seeds"] == [42] and recorded["seed"] == 42


# --- data ---------------------------------------------------------------------------------


def test_a_damaged_model_is_named_in_one_line(built):
    model = built.path / "data/models/task1/seed_42/model.keras"
    model.write_bytes(model.read_bytes()[:1000])
    proc = built.dvc("repro", "--single-item", "evaluate@task1", check=False)
    assert proc.returncode != 0
    assert "error: data/models/task1/seed_42/model.keras: not a readable Keras model" \
        in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# --- a busy machine -------------------------------------------------------------------------


def test_the_flow_without_a_server_survives_a_busy_machine(built):
    """No PREFECT_API_URL: Prefect starts a temporary server, which on two
    busy cores needs longer than its default 20 s (prefect.toml)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(2 * (os.cpu_count() or 1))]
    try:
        env = {k: v for k, v in built.env.items() if not k.startswith("PREFECT_")}
        proc = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=built.path,
                              env=env, capture_output=True, text=True, timeout=900)
    finally:
        for burner in burners:
            burner.kill()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# --- the flow's lifecycle: concurrent experiments, kills, a lost server --------------------


def flow_env(project, **extra) -> dict[str, str]:
    """The project's environment for a flow process: Prefect's settings and
    database in the test's folder, never the user's."""
    env = {k: v for k, v in project.env.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(project.path.parent / "prefect-home")
    return {**env, **extra}


def exp_names(project) -> set[str]:
    show = json.loads(project.dvc("exp", "show", "--json").stdout)
    return {e["name"] for row in show for e in row.get("experiments") or []}


def test_two_experiments_at_once_are_both_saved(built, harness):
    """Two flow runs with overrides, started 2 s apart: each is saved and
    listed; no work ref or temporary clone of either is left behind."""
    from prefect.settings import PREFECT_API_URL

    built.env = flow_env(built, PREFECT_API_URL=PREFECT_API_URL.value())
    lr = "tasks.task1.optimizer.learning_rate"
    first = start(built, sys.executable, "-m", "flows.pipeline", "-S", f"{lr}=0.06")
    time.sleep(2)
    second = start(built, sys.executable, "-m", "flows.pipeline", "-S",
                   "tasks.task2.optimizer.learning_rate=0.03")
    outs = [finish(p, timeout=600) for p in (first, second)]
    names = [re.search(r"saved as DVC experiment (\S+):", out) for out in outs]
    assert all(names) and first.returncode == second.returncode == 0, outs
    assert exp_names(built) == {m[1] for m in names}
    refs = built.run("git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout
    assert "refs/exps/exec/" not in refs, refs
    assert built.run("git", "worktree", "list").stdout.count("\n") == 1
    assert not list((built.path / ".work" / "experiments").glob("*"))


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


# Enough epochs that a fast machine cannot finish them during the test's few
# seconds; the training is suspended (SIGSTOP) as well, so that what is left to
# resume does not depend on the machine's speed (CI once finished all three).
EPOCHS = 5


def _suspend_training(flow_pid: int) -> psutil.Process:
    """SIGSTOP the flow's task2 training (as Ctrl-Z would): whatever stops the
    flow must still stop it, and its checkpoint stays part-way."""
    stage = next(p for p in _descendants(flow_pid) if "stages.train" in " ".join(p.cmdline()))
    stage.suspend()
    return stage


def _epochs_done(root: Path) -> int:
    meta = root / ".work/train@task2/seed_42/checkpoint/meta.json"
    return json.loads(meta.read_text())["epochs_done"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_a_killed_flow_leaves_nothing_behind_and_its_rerun_resumes(built, sig):
    """No PREFECT_API_URL: the flow starts a temporary Prefect server. Killed
    mid-training (`kill -9 PID` or `kill PID` of the flow's process alone),
    nothing it started outlives it by more than a few seconds: not the
    server, not the stage, not the experiment's temporary clone."""
    built.env = flow_env(built)
    args = [sys.executable, "-m", "flows.pipeline", "-S", f"tasks.task2.epochs={EPOCHS}"]
    flow = start(built, *args)
    checkpoints = built.path / ".work" / "experiments"
    wait_for(lambda: list(checkpoints.glob("*/train@task2/seed_42/checkpoint/meta.json")),
             timeout=600)
    stage = _suspend_training(flow.pid)
    started = _descendants(flow.pid)
    cmds = [" ".join(p.cmdline()) for p in started]
    assert any("uvicorn" in c for c in cmds), cmds
    clone = Path(stage.cwd())
    assert clone.is_dir() and clone != built.path
    assert _epochs_done(clone) < EPOCHS  # so that the rerun has something to resume
    os.kill(flow.pid, sig)  # the flow's process alone, not its group
    finish(flow, timeout=120)
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                             for p in started), timeout=15)
    assert not clone.exists()
    assert "refs/exps/exec/" not in built.run("git", "for-each-ref", "refs/exps").stdout
    # The same experiment again: its training resumes from the checkpoint.
    rerun = built.run(*args)
    assert "resuming after epoch" in rerun.stdout + rerun.stderr
    assert len(exp_names(built)) == 1


def test_a_lost_server_ends_the_flow_and_its_run_is_marked_on_return(built, tmp_path):
    server = PrefectServer(tmp_path / "server-home").start()
    try:
        built.env = flow_env(built, PREFECT_API_URL=server.url)
        built.edit_params(lambda d: d["tasks"]["task2"].update(epochs=EPOCHS))
        flow = start(built, sys.executable, "-m", "flows.pipeline")
        meta = built.path / ".work/train@task2/seed_42/checkpoint/meta.json"
        wait_for(meta.is_file, timeout=600)
        _suspend_training(flow.pid)
        assert _epochs_done(built.path) < EPOCHS
        server.kill()
        lost = time.monotonic()
        out = finish(flow, timeout=120)
        assert time.monotonic() - lost < 30, out  # within seconds, not Prefect's minutes
        assert flow.returncode == 1
        last = out.strip().splitlines()[-1]
        assert last.startswith(f"error: the Prefect server at {server.url}") and \
            "stopped answering" in last, out[-2000:]
        assert "Traceback" not in out
        wait_for(lambda: not stage_processes(built.path), timeout=15)
        server.start()  # back, with the same database: the next run fixes the state
        rerun = built.run(sys.executable, "-m", "flows.pipeline")
        assert "resuming after epoch" in rerun.stdout + rerun.stderr
        first, second = server.flow_runs()[-2:]
        assert first["state_type"] == "CRASHED" and first["name"].endswith(": crashed")
        assert second["state_type"] == "COMPLETED"
    finally:
        server.kill()


# --- a full disk, the wrong interpreter, an odd folder name --------------------------------


def test_a_full_disk_is_one_line_and_the_rerun_goes_on(built):
    """The stage's work folder on a 2 MB file system of its own (a mount
    namespace: nothing outside this command sees it). ``-r`` (a user namespace)
    lets a user who is not root mount it too."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs user and mount namespaces (unshare -rm) to fill a disk")
    (built.path / ".work").mkdir(exist_ok=True)
    built.edit_params(lambda d: d["tasks"]["task2"].update(epochs=2))
    proc = built.run("unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=2m tmpfs .work && '
                     f'"{sys.executable}" -m dvc repro train@task2', check=False)
    assert proc.returncode != 0
    assert "error: no space left on the file system of " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr
    assert "train@task2" in stale(built)
    assert built.dvc("repro").returncode == 0 and not stale(built)


def test_a_stage_started_by_the_wrong_python_says_so(built, tmp_path):
    """`.venv/bin/dvc repro` from a shell without the environment: the stages'
    `python` is the system's, which lacks the libraries."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    built.env["PATH"] = f"{bare}{os.pathsep}/usr/bin{os.pathsep}/bin"
    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=2))
    proc = built.dvc("repro", check=False)
    assert proc.returncode != 0
    assert f"error: {bare / 'python'} lacks this project's libraries" in proc.stderr \
        or "lacks this project's libraries (dvc, pydantic, keras)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_folder_named_with_a_space_and_an_accent(tmp_path, mnist_npz, harness):
    """make install there (paths quoted), then an experiment through the flow
    (which once failed writing DVC's config in ASCII)."""
    from prefect.settings import PREFECT_API_URL

    from tests.sandbox import make_project

    def tiny(data):
        data.update(seeds=1, tasks={"task1": {**data["tasks"]["task1"], "epochs": 1}})
        data["data"].update(train_size=500, test_size=200)

    project = make_project(tmp_path / "mes études" / "projet mnist", mnist_npz, tiny)
    # make finds python3.11 on PATH: the system's, not this environment's.
    outside = [d for d in project.env["PATH"].split(os.pathsep)
               if not d.startswith(sys.prefix)]
    install = subprocess.run(["make", "install"], cwd=project.path, capture_output=True,
                             text=True, env={**project.env, "PATH": os.pathsep.join(outside)})
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    venv_python = project.path / ".venv" / "bin" / "python"
    project.env = flow_env(project, PREFECT_API_URL=PREFECT_API_URL.value(), LC_ALL="C")
    project.run(str(venv_python), "-m", "dvc", "repro")
    out = project.run(str(venv_python), "-m", "flows.pipeline", "-S", "tasks.task1.epochs=2")
    assert "saved as DVC experiment" in out.stdout + out.stderr
