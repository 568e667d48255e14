"""One engine, one cache: every variant computed once comes back from DVC's
cache, by `dvc repro`, by the flow, and on a teammate's clone. Real DVC,
Prefect and Keras on a small subset."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.utils.serialize import load_yaml
from prefect.settings import PREFECT_API_URL

from flows.pipeline import pipeline
from tests.conftest import TASKS, finish, ran, start, wait_for
from tests.sandbox import Project, project_env

pytestmark = pytest.mark.slow

CACHED = re.compile(r"Stage '([^']+)' is cached - skipping run")


def lr(value):
    def edit(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = value
    return edit


def stale(project) -> set[str]:
    return set(json.loads(project.dvc("status", "--json").stdout))


def copy_of(project: Project, dest: Path) -> Project:
    shutil.copytree(project.path, dest, symlinks=True)
    return Project(dest, project_env(Path(project.env["MNIST_NPZ"]), dest.parent))


def flow_states(project: Project) -> dict[str, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MNIST_NPZ", raising=False)
        if "MNIST_NPZ" in project.env:  # the stages run in child processes
            mp.setenv("MNIST_NPZ", project.env["MNIST_NPZ"])
        state = pipeline(project=str(project.path), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


# --- going back restores, never retrains ---------------------------------------------


def test_switching_a_value_back_restores_from_the_cache(built):
    model = built.path / "data/models/task1/seed_42/model.keras"
    first = model.read_bytes()
    built.edit_params(lr(0.05))
    assert ran(built.dvc("repro").stdout) == {"train@task1", "evaluate@task1", "report"}
    built.edit_params(lr(0.01))
    out = built.dvc("repro").stdout
    assert ran(out) == set(), out
    assert set(CACHED.findall(out)) == {"train@task1", "evaluate@task1", "report"}
    assert model.read_bytes() == first
    assert not stale(built)


def test_an_experiment_seen_before_is_restored(built):
    def exp(value):
        return built.dvc("exp", "run", "-S",
                         f"tasks.task1.optimizer.learning_rate={value}").stdout

    assert ran(exp(0.02)) == {"train@task1", "evaluate@task1", "report"}
    for value in (0.01, 0.02):  # the committed value, then the experiment's again
        out = exp(value)
        assert ran(out) == set(), out
        assert set(CACHED.findall(out)) == {"train@task1", "evaluate@task1", "report"}


# --- the flow leaves the repository as dvc repro does ---------------------------------


def _lock_without_output_hashes(project: Project) -> dict:
    """dvc.lock with the hashes of training's outputs masked: model files and
    per-epoch timings differ from run to run, everything else must not."""
    lock = load_yaml(str(project.path / "dvc.lock"))
    for stage in lock["stages"].values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            if entry["path"].startswith(("data/models", "data/eval", "data/report")):
                for key in ("md5", "size", "nfiles", "hash"):
                    entry.pop(key, None)
    return lock


def _cache_shape(project: Project) -> tuple[int, int]:
    cache = project.path / ".dvc" / "cache"
    files = [p for p in (cache / "files").rglob("*") if p.is_file()]
    runs = [p for p in (cache / "runs").rglob("*") if p.is_file()]
    return len(files), len(runs)


def test_after_a_flow_run_the_repository_is_what_dvc_repro_leaves(built, tmp_path, harness):
    other = copy_of(built, tmp_path / "other")
    for project in (built, other):
        project.edit_params(lr(0.04))
    ran_by_repro = ran(built.dvc("repro").stdout)
    states = flow_states(other)
    assert {s for s, st in states.items() if st == "Completed"} == ran_by_repro
    status = [p.run("git", "status", "--porcelain").stdout for p in (built, other)]
    assert status[0] == status[1]
    assert not [line for line in status[1].splitlines()  # nothing deleted or untracked
                if line.startswith(("??", " D"))], status[1]
    assert _lock_without_output_hashes(built) == _lock_without_output_hashes(other)
    assert _cache_shape(built) == _cache_shape(other)


# --- nothing mis-recorded ---------------------------------------------------------------


@pytest.mark.parametrize("runner", ["dvc repro", "flow"])
def test_params_edited_while_a_stage_trains_leave_it_stale(built, harness, runner):
    built.edit_params(lambda d: d["tasks"]["task2"].update(epochs=4))
    built.run("git", "commit", "-qam", "four epochs")
    lock_before = (built.path / "dvc.lock").read_text()
    built.env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    cmd = (["dvc", "repro", "train@task2"] if runner == "dvc repro"
           else ["flows.pipeline", "--tasks", "task2"])
    proc = start(built, sys.executable, "-m", *cmd)
    wait_for(lambda: (built.path / ".work/train@task2/seed_42").exists(), timeout=300)
    built.edit_params(lambda d: d["tasks"]["task2"]["optimizer"].update(learning_rate=0.02))
    out = finish(proc)
    assert proc.returncode != 0
    assert "its inputs changed while it ran (params.yaml: tasks.task2)" in out, out
    assert "train@task2" in stale(built)
    assert (built.path / "dvc.lock").read_text() == lock_before


# --- what a stage depends on ----------------------------------------------------------------


def edit_code(project: Project, file: str, old: str, new: str) -> None:
    path = project.path / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))


def test_cosmetic_edits_retrain_nothing(built):
    edit_code(built, "mnist_cnn/cli/checks.py", "unknown key", "not a known key")
    edit_code(built, "stages/train.py", 'help="prepared data folder"', 'help="prepared data"')
    edit_code(built, "mnist_cnn/report/figures.py", 'OURS, THEIRS = "#1f77b4"',
              'OURS, THEIRS = "#2f77b4"')
    assert stale(built) == {"report"}


def test_an_edit_to_the_model_builder_makes_every_train_stage_stale(built):
    edit_code(built, "mnist_cnn/models.py", "def build_model(", "# edited\ndef build_model(")
    assert stale(built) == {f"train@{t}" for t in TASKS}


# --- a teammate pulls instead of training ------------------------------------------------------


def test_a_fresh_clone_that_pulls_trains_nothing(built, tmp_path, harness):
    remote = tmp_path / "remote"
    built.dvc("remote", "add", "-d", "team", str(remote))
    built.edit_params(lr(0.05))  # a variant, computed once here
    built.dvc("repro")
    built.run("git", "checkout", "params.yaml")
    assert set(CACHED.findall(built.dvc("repro").stdout)) >= {"train@task1"}
    built.commit("remote")
    built.run(sys.executable, "-m", "tools.share", "push")  # make push

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(built.path), str(clone)], check=True)
    teammate = Project(clone, project_env(None, tmp_path))  # no MNIST: it must not download
    teammate.run(sys.executable, "-m", "tools.share", "pull")  # make pull
    out = teammate.dvc("repro").stdout
    assert ran(out) == set() and "Data and pipelines are up to date" in out, out
    assert set(flow_states(teammate).values()) == {"UpToDate"}
    for file in ["data/report/report.md", "data/report/report.html",
                 *(f"data/eval/{t}/metrics.json" for t in TASKS)]:
        assert (clone / file).read_bytes() == (built.path / file).read_bytes(), file
    # The variant the first clone computed comes back here too.
    teammate.edit_params(lr(0.05))
    out = teammate.dvc("repro").stdout
    assert ran(out) == set() and "train@task1" in CACHED.findall(out), out


def test_a_damaged_file_on_the_remote_is_refused_not_used(built, tmp_path):
    remote = tmp_path / "remote"
    built.dvc("remote", "add", "-d", "team", str(remote))
    built.commit("remote")
    built.run(sys.executable, "-m", "tools.share", "push")
    model = built.path / "data/models/task1/seed_42/model.keras"
    digest = hashlib.md5(model.read_bytes()).hexdigest()
    damaged = remote / "files" / "md5" / digest[:2] / digest[2:]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped, the size unchanged
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(data))

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(built.path), str(clone)], check=True)
    teammate = Project(clone, project_env(None, tmp_path))
    pull = teammate.run(sys.executable, "-m", "tools.share", "pull", check=False)
    assert pull.returncode == 1
    assert "error: data/models/task1: not fetched whole" in pull.stderr, pull.stderr
    cached = clone / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    assert not cached.exists()  # refused: never in the cache, never checked out
    assert "train@task1" in stale(teammate)
    out = teammate.dvc("repro").stdout
    assert "train@task1" in ran(out), out  # computed again, not restored from damage
    metrics = "data/eval/task1/metrics.json"  # the same model again (a .keras file has a date)
    assert (clone / metrics).read_bytes() == (built.path / metrics).read_bytes()
