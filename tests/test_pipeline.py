"""End to end: real `dvc repro` of the whole study on a small subset."""

from __future__ import annotations

import json

import pytest

from mnist_cnn.cli.quiet import NOISE
from tests.conftest import TASKS, ran, snapshot

pytestmark = pytest.mark.slow

def test_repro_builds_every_task_and_the_report(built_template):
    built = built_template
    assert ran(built.first_repro) == {"download", "preprocess", "report",
                                       *(f"{k}@{t}" for k in ("train", "evaluate") for t in TASKS)}
    for task in TASKS:
        metrics = json.loads((built.path / f"data/eval/{task}/metrics.json").read_text())
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["test_loss"] > 0
        config = json.loads((built.path / f"data/models/{task}/config.json").read_text())
        assert config["train_images"] == 2000
        assert (built.path / f"data/models/{task}/seed_42/model.keras").is_file()
    report = (built.path / "data/report/report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| task")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows[1:]] == TASKS
    assert "| task1 | conv32 5x5 sigmoid → flatten → dense10 softmax | 185,162 | 1 |" in report
    # What `dvc repro` prints is for people: a line per epoch saying where the
    # stage is, none of TensorFlow's C++ start-up lines (tensorflow#100442;
    # mnist_cnn/cli/quiet.py).
    printed = (built.first_repro + built.first_repro_stderr).splitlines()
    assert sum(" · seed 1/1 · epoch 1/1 · loss " in line for line in printed) == len(TASKS), \
        printed
    noise = [line for line in printed if NOISE.match(line.encode())]
    assert not noise, noise
    # DVC sees the metrics: one file, every task's accuracy and loss.
    shown = json.loads(built.dvc("metrics", "show", "--json").stdout)
    (summary,) = next(iter(shown.values()))["data"].values()
    assert list(summary["data"]) == TASKS
    assert set(summary["data"]["task1"]) == {"acc", "loss"}  # one seed: no spread


def test_second_repro_runs_nothing(built):
    before = snapshot(built)
    out = built.dvc("repro").stdout
    assert ran(out) == set(), out
    assert "Data and pipelines are up to date." in built.dvc("status").stdout
    assert snapshot(built) == before


def test_changing_one_learning_rate_reruns_only_that_task(built):
    before = snapshot(built)

    def faster(data):
        data["tasks"]["task1"]["optimizer"]["learning_rate"] = 0.05

    built.edit_params(faster)
    # DVC's status is per stage: evaluate@task1 turns stale only once
    # train@task1 has produced a new model, so it is not listed yet.
    status = json.loads(built.dvc("status", "--json").stdout)
    assert set(status) == {"train@task1", "report"}, status

    out = built.dvc("repro").stdout
    assert ran(out) == {"train@task1", "evaluate@task1", "report"}, out
    after = snapshot(built)
    changed = {"/".join(path.split("/")[:1 if path.startswith(("report/", "metrics")) else 2])
               for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed == {"models/task1", "eval/task1", "report", "metrics.json"}
    config = json.loads((built.path / "data/models/task1/config.json").read_text())
    assert config["spec"]["optimizer"]["learning_rate"] == 0.05
    assert "Data and pipelines are up to date." in built.dvc("status").stdout


def test_a_task_with_a_new_layer_and_optimizer_options_is_one_params_edit(built):
    """README, "Extend the study": task4_adam_dropout in params.yaml alone (a
    Dropout layer, Adam's betas and weight decay): `dvc repro` trains and
    evaluates it, the report and the study's metric list it, and no other
    task retrains."""
    def add_task(data):
        task = json.loads(json.dumps(data["tasks"]["task4_adam"]))
        task["layers"].insert(-1, {"type": "dropout", "rate": 0.25})
        task["optimizer"].update(beta_1=0.85, weight_decay=0.0001)
        data["tasks"]["task4_adam_dropout"] = task

    built.edit_params(add_task)
    out = built.dvc("repro").stdout
    assert ran(out) == {"train@task4_adam_dropout", "evaluate@task4_adam_dropout", "report"}
    config = json.loads((built.path / "data/models/task4_adam_dropout/config.json").read_text())
    assert [layer["class"] for layer in config["layers"]][-2:] == ["Dropout", "Dense"]
    metrics = json.loads((built.path / "data/metrics.json").read_text())
    assert list(metrics) == [*TASKS, "task4_adam_dropout"]
    report = (built.path / "data/report/report.md").read_text()
    assert ("| task4_adam_dropout | conv32 5x5 relu ×2 → flatten → dropout0.25 → dense10 "
            "softmax | 154,474 | 1 | Adam (default lr), beta_1 0.85, weight_decay 0.0001 |"
            in report), report


def test_make_run_says_where_the_run_is_and_what_is_left(built):
    """`make run` (python -m tools.dvc repro): stage k of n, seed, epoch, the
    time per epoch, what is left of the stage and of the run, estimated from
    what the same stages took here before (the template's first run)."""
    import re
    import sys

    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=2))
    out = built.run(sys.executable, "-m", "tools.dvc", "repro").stdout
    assert re.search(r"^\[1/3\] train@task1 · about \d+s · run \d+s left$", out, re.M), out
    epochs = re.findall(r"^\[1/3\] train@task1 · seed 1/1 · epoch (\d)/2 · loss [\d.]+ · "
                        r"accuracy [\d.]+ · [\d.]+ s/epoch · stage \d+s left · run \d+s left$",
                        out, re.M)
    assert epochs == ["1", "2"], out
    assert re.search(r"^\[2/3\] evaluate@task1 · about \d+s", out, re.M), out
    assert re.search(r"^\[3/3\] report · about \d+s · run \d+s left$", out, re.M), out
    assert out.count("Updating lock file 'dvc.lock'") == 3  # once a stage


def test_live_curves_while_a_task_trains(built):
    """`dvc plots show` shows a training task's per-epoch loss and accuracy
    from dvclive's own files, while it trains; they are gone once it is done
    (its outputs and the report have them then)."""
    import sys

    from tests.conftest import finish, start, wait_for

    built.edit_params(lambda d: d["tasks"]["task1"].update(epochs=40))
    proc = start(built, sys.executable, "-m", "dvc", "repro", "train@task1")
    seen = {}

    def curves() -> bool:
        assert proc.poll() is None, proc.log.read_text()
        shown = built.dvc("plots", "show", "--json", check=False)
        if shown.returncode != 0 or not shown.stdout.strip():
            return False
        for name, plots in json.loads(shown.stdout).get("data", {}).items():
            if name.startswith(".work/live/task1/seed_42/") and name.endswith("loss.tsv"):
                values = plots[0]["content"]["data"]["values"]
                seen[name] = len(values)
        return bool(seen) and max(seen.values()) >= 2

    try:
        wait_for(curves, timeout=300, interval=1)
    finally:
        proc.terminate()
        finish(proc, timeout=60)
    assert max(seen.values()) >= 2, seen
