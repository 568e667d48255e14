"""Stages run here (flows/local.py), from ready interpreters: spawned Pythons
that imported the stages' third-party libraries and wait. Real processes,
real Keras on the small subset."""

from __future__ import annotations

import ast
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows import local
from tests.conftest import ROOT, start, wait_for

TRAIN = "python -m stages.train --data data/prepared --models data/models"
pytestmark = pytest.mark.slow

EVALUATE = "python -m stages.evaluate --models data/models --data data/prepared --out data/eval"


def test_the_preload_is_what_the_stages_import_from_outside():
    """Every third-party package a stage imports is preloaded (a new one
    would make its stages pay the import again), and nothing of this project."""
    found = set()
    for folder in ("stages", "mnist_cnn"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module
                         and node.level == 0 else [])
                found |= {n.split(".")[0] for n in names}
    third_party = {n for n in found - set(sys.stdlib_module_names)
                   if n not in local.PROJECT and n != "__future__"}
    preloaded = {n.split(".")[0] for n in local.PRELOAD}
    assert third_party <= preloaded, third_party - preloaded
    assert not preloaded & set(local.PROJECT)


def ready_interpreters() -> list[psutil.Process]:
    """The waiting interpreters of any process (their title says so)."""
    return [proc for proc in psutil.process_iter(["cmdline"])
            if "a ready interpreter, waiting" in " ".join(proc.info["cmdline"] or [])]


def outputs(root: Path, task: str) -> dict:
    """What a train and an evaluate stage computed: weights array by array,
    the per-epoch loss and accuracy, the metrics files (not the timings)."""
    import keras

    out = {}
    for path in sorted((root / "data/models" / task).rglob("*")):
        if path.suffix == ".keras":
            out[str(path.relative_to(root))] = [
                w.tobytes() for w in keras.models.load_model(path).get_weights()]
        elif path.suffix == ".tsv" and path.stem in ("loss", "accuracy"):
            with path.open() as f:
                out[str(path.relative_to(root))] = [(r["step"], r[path.stem]) for r in
                                                    csv.DictReader(f, delimiter="\t")]
    for name in ("metrics.json", "predictions.npy"):
        out[name] = (root / "data/eval" / task / name).read_bytes()
    seeds = json.loads((root / "data/eval" / task / "seeds.json").read_text())
    out["seeds"] = {s: {k: v for k, v in m.items() if k != "seconds"} for s, m in seeds.items()}
    return out


def test_a_ready_interpreter_a_plain_process_and_dvc_repro_compute_the_same(built,
                                                                           monkeypatch):
    expected = outputs(built.path, "task1")  # dvc repro's
    monkeypatch.setenv("MNIST_NPZ", built.env["MNIST_NPZ"])
    lines = []
    for way in ("plain", "ready"):
        monkeypatch.setenv(local.READY_ENV, "0" if way == "plain" else "1")
        if way == "ready":
            assert local.ready(1).wait_ready(120)
        started = time.monotonic()
        for stage, cmd in (("train@task1", TRAIN), ("evaluate@task1", EVALUATE)):
            local.run_command(cmd, str(built.path), stage, lines.append)
        assert outputs(built.path, "task1") == expected, way
        print(way, time.monotonic() - started)
    assert not any("could not be used" in line for line in lines), lines
    local.stop_processes()


def test_an_edit_made_while_it_waited_takes_effect(built, monkeypatch):
    """It imported none of this project's modules: the stage runs the code on
    disk when it starts, as under `dvc repro`."""
    monkeypatch.setenv("MNIST_NPZ", built.env["MNIST_NPZ"])
    monkeypatch.delenv(local.READY_ENV, raising=False)
    pool = local.ready(1)
    assert pool.wait_ready(120)
    waiting = pool._idle[0].proc.pid
    stage = built.path / "stages" / "evaluate.py"
    stage.write_text(stage.read_text().replace(
        "def main(argv: list[str] | None = None) -> None:\n",
        "def main(argv: list[str] | None = None) -> None:\n    print('edited meanwhile')\n"))
    lines = []
    local.run_command(EVALUATE, str(built.path), "evaluate@task1", lines.append)
    assert "edited meanwhile" in lines, lines
    assert not psutil.pid_exists(waiting) or psutil.Process(waiting).status() == "zombie"
    local.stop_processes()


def test_one_that_died_is_not_used_and_the_stage_runs_all_the_same(built, monkeypatch):
    monkeypatch.setenv("MNIST_NPZ", built.env["MNIST_NPZ"])
    monkeypatch.delenv(local.READY_ENV, raising=False)
    pool = local.ready(1)
    pool._idle[0].proc.kill()
    lines = []
    local.run_command(EVALUATE, str(built.path), "evaluate@task1", lines.append)
    assert any("a ready interpreter could not be used" in line
               and "running a plain process" in line for line in lines), lines
    assert (built.path / "data/eval/task1/metrics.json").is_file()
    local.stop_processes()


def test_killing_the_flow_leaves_no_ready_interpreter(built, harness):
    """kill -9 of the flow's process while its ready interpreters wait (a
    stage of its own trains meanwhile): none is left behind."""
    from prefect.settings import PREFECT_API_URL

    before = {p.pid for p in ready_interpreters()}
    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=30))
    built.env = {**built.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    flow = start(built, sys.executable, "-m", "flows.pipeline", "--workers", "2")

    def waiting() -> bool:
        assert flow.poll() is None, flow.log.read_text()
        ours = [p for p in ready_interpreters() if p.pid not in before]
        return len(ours) >= 2 and "epoch 1/30" in flow.log.read_text()

    wait_for(waiting, timeout=300, interval=0.2)
    os.kill(flow.pid, signal.SIGKILL)
    flow.wait(timeout=30)
    wait_for(lambda: not [p for p in ready_interpreters() if p.pid not in before
                          and p.status() != psutil.STATUS_ZOMBIE], timeout=60)
    subprocess.run(["git", "checkout", "params.yaml"], cwd=built.path, check=True)


def test_a_run_with_nothing_to_do_starts_no_ready_interpreter(built, harness):
    """They start when the check finds a stage to run: on two cores, their
    TensorFlow imports would slow a no-op flow run by seconds."""
    from prefect.settings import PREFECT_API_URL

    built.env = {**built.env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    flow = start(built, sys.executable, "-m", "flows.pipeline", "--workers", "2")
    seen = set()
    while flow.poll() is None:
        for proc in ready_interpreters():
            try:
                if flow.pid in {parent.pid for parent in proc.parents()}:
                    seen.add(proc.pid)
            except psutil.Error:  # gone meanwhile
                pass
        time.sleep(0.05)
    out = flow.log.read_text()
    assert flow.returncode == 0 and "nothing to do" in out, out
    assert not seen
