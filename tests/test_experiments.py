"""Comparing variants: `dvc exp run -S`, `dvc exp show`, plots, metrics diff, the
report's HTML and the spread over seeds. Real DVC and Keras, small subset."""

from __future__ import annotations

import base64
import json
import re
import sys
import time

import pytest

from mnist_cnn.report.figures import FIGURES
from mnist_cnn.report.findings import FINDINGS
from tests.conftest import TASKS, make_project, ran

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"
# The README's short `dvc exp show`: test accuracy of what changed, and the params.
EXP_SHOW_DROP = "Created|data/|mnist_cnn/|.*loss"
LR = "tasks.task1.optimizer.learning_rate"


def exp_run(project, name: str, *sets: str):
    args = [a for s in sets for a in ("-S", s)]
    return project.dvc("exp", "run", "-n", name, *args)


def test_two_experiments_side_by_side(built):
    out = exp_run(built, "lr-005", "tasks.task1.optimizer.learning_rate=0.05").stdout
    assert ran(out) == {"train@task1", "evaluate@task1", "report"}
    # DVC rewrote params.yaml in its own layout, which is the file's: one line changed.
    numstat = built.run("git", "diff", "--numstat", "params.yaml").stdout.split()
    assert numstat == ["1", "1", "params.yaml"]
    exp_run(built, "lr-002", "tasks.task1.optimizer.learning_rate=0.02")

    show = json.loads(built.dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: e["revs"][0]["data"] for e in show[1]["experiments"]}
    assert set(exps) == {"lr-005", "lr-002"}
    lrs = {n: d["params"]["params.yaml"]["data"]["tasks"]["task1"]["optimizer"]["learning_rate"]
           for n, d in exps.items()}
    assert lrs == {"lr-005": 0.05, "lr-002": 0.02}
    for data in exps.values():
        assert set(data["metrics"]["data/metrics.json"]["data"]) == set(TASKS)
    task1 = [d["metrics"]["data/metrics.json"]["data"]["task1"]["loss"] for d in exps.values()]
    assert task1[0] != task1[1]

    # The compact comparison: changed params, then each task's scores side by
    # side, within 120 columns.
    compare = built.run(sys.executable, "-m", "tools.compare").stdout.splitlines()
    params = {line.split()[0]: line for line in compare[1:compare.index("")]}
    assert {"lr-005", "lr-002"} <= set(params)
    assert "task1.optimizer.learning_rate=0.05" in params["lr-005"]
    assert "task1.optimizer.learning_rate=0.02" in params["lr-002"]
    assert max(len(line) for line in compare) <= 120

    # Deltas between the two, and both sets of curves in one chart.
    diff = built.dvc("metrics", "diff", "lr-005", "lr-002", "--json").stdout
    changed = json.loads(diff)["data/metrics.json"]
    assert "task1.loss" in changed
    assert "task2.loss" not in changed  # task2 did not change

    # `dvc exp show` in its short form fits a 120-column terminal.
    built.env["COLUMNS"] = "120"
    short = built.dvc("exp", "show", "--no-pager", "--only-changed", "--drop",
                      EXP_SHOW_DROP).stdout.splitlines()
    assert max(map(len, short)) <= 120
    assert any("task1.acc" in line for line in short) and "…" not in "".join(short)
    plots = json.loads(built.dvc("plots", "diff", "lr-005", "lr-002", "--json").stdout)["data"]
    loss = plots["Training loss per epoch"][0]["content"]["data"]["values"]
    assert {v["rev"] for v in loss} == {"lr-005", "lr-002"}
    assert {v["task"] for v in loss} == set(TASKS)


def test_dvc_queue_completes_every_point_with_its_own_lock(built):
    """DVC's own sweep (README, "Sweep"): `dvc exp run --queue -S` then `dvc
    queue start -j 2` runs both points at once in temporary workspaces; the
    stage lock and guards must not make either fail, and each experiment's
    dvc.lock must be the one its params and code give (nothing left stale)."""
    built.dvc("exp", "run", "--queue", "-S", f"{LR}=0.05,0.02")
    built.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while re.search(r"\b(Running|Queued)\b", status := built.dvc("queue", "status").stdout):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    failed = [line.split()[0] for line in status.splitlines() if "Failed" in line]
    assert not failed, status + "".join(
        built.dvc("queue", "logs", task, check=False).stdout for task in failed)

    show = json.loads(built.dvc("exp", "show", "--json").stdout)
    base = show[1]["data"]["metrics"]["data/metrics.json"]["data"]
    exps = {e["revs"][0]["data"]["params"]["params.yaml"]["data"]["tasks"]["task1"]
            ["optimizer"]["learning_rate"]: e for e in show[1]["experiments"]}
    assert set(exps) == {0.05, 0.02}, status
    metrics = {lr: e["revs"][0]["data"]["metrics"]["data/metrics.json"]["data"]
               for lr, e in exps.items()}
    assert metrics[0.05]["task1"] != metrics[0.02]["task1"]
    for task in set(TASKS) - {"task1"}:  # shared stages: the baseline's, untouched
        assert metrics[0.05][task] == metrics[0.02][task] == base[task]
    for e in exps.values():
        built.dvc("exp", "apply", e["name"])
        assert "up to date" in built.dvc("status").stdout.lower()
        assert ran(built.dvc("repro").stdout) == set()


def test_overrides_are_checked_against_the_commit_the_experiment_runs(built):
    from flows.experiment import checked_params
    from mnist_cnn.cli.checks import ParamsError

    committed = checked_params(built.path, None).seeds
    built.edit_params(lambda d: d.update(seeds=0))  # uncommitted: not what an experiment runs
    params = checked_params(built.path, {LR: 0.05})
    assert params.seeds == committed
    assert params.tasks["task1"].optimizer.learning_rate == 0.05
    with pytest.raises(ParamsError, match="seeds: must be"):
        checked_params(built.path, None)  # a plain run uses the workspace's file
    with pytest.raises(ParamsError, match="tasks.task1.layers.99.units: no such key to override"):
        checked_params(built.path, {"tasks.task1.layers.99.units": 8})


def test_plots_show_curves_per_task_and_confusion_matrices(built):
    plots = json.loads(built.dvc("plots", "show", "--json").stdout)["data"]
    for title in ("Training loss per epoch", "Training accuracy per epoch"):
        values = plots[title][0]["content"]["data"]["values"]
        assert {v["task"] for v in values} == set(TASKS)
    for task in TASKS:
        (matrix,) = plots[f"data/eval/{task}/plots/sklearn/confusion_matrix.json"]
        assert len(matrix["content"]["data"]["values"]) == 500  # one per test image


def test_report_html_embeds_its_figures(built_template):
    page = (built_template.path / "data/report/report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    for image in images:
        png = base64.b64decode(image)
        assert png.startswith(PNG) and len(png) > 2000
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert [re.match(r"<tr><td>([^<]+)", r)[1] for r in body.split("</tr>") if r] == TASKS
    assert page.count("<li><b>") == len(FINDINGS)  # the notebook's conclusions, each checked
    md = (built_template.path / "data/report/report.md").read_text()
    assert all(f"![{c}](figures/" in md for c in ("Training curves", "Seconds per epoch"))


def test_two_seeds_give_a_spread_for_every_task(tmp_path, mnist_npz):
    def two_tasks_two_seeds(data):
        data["seeds"] = 2
        data["data"].update(train_size=1000, test_size=300)
        data["tasks"] = {k: {**data["tasks"][k], "epochs": 1}
                         for k in ("task1", "task4_adam")}

    project = make_project(tmp_path / "project", mnist_npz, two_tasks_two_seeds)
    project.dvc("repro")
    metrics = json.loads((project.path / "data/eval/task1/metrics.json").read_text())
    assert metrics["test_accuracy_std"] > 0
    runs = json.loads((project.path / "data/eval/task1/seeds.json").read_text())
    assert set(runs) == {"42", "43"}
    md = (project.path / "data/report/report.md").read_text()
    assert "mean ± standard deviation over 2 seeds" in md
    rows = [line for line in md.splitlines() if line.startswith("| task")][1:]
    assert len(rows) == 2
    for row in rows:
        cells = row.split(" | ")
        assert re.fullmatch(r"\d\.\d{4} ± \d\.\d{4}", cells[5]), row
        assert cells[8] in ("yes", "no")  # the notebook's figure: inside our range?
    assert "Over our 2 seeds the notebook's figure lies inside" in md


def test_a_kind_changing_override_is_refused_unless_forced():
    """`-S KEY=VALUE` that would replace task4_sgd's schedule by a number is
    most likely a key one level short: refused, naming the key meant;
    `-S ++KEY=VALUE` replaces it on purpose (a constant learning rate)."""
    from flows.experiment import with_overrides
    from mnist_cnn.cli.checks import ParamsError, read_params
    from tests.conftest import ROOT

    data = read_params(ROOT / "params.yaml")
    key = "tasks.task4_sgd.optimizer.learning_rate"
    with pytest.raises(ParamsError, match=re.escape(f"Did you mean {key}.initial_learning_rate?")):
        with_overrides(read_params(ROOT / "params.yaml"), {key: 0.05}, "p")
    params = with_overrides(data, {f"++{key}": 0.05}, "p")
    assert params.tasks["task4_sgd"].optimizer.learning_rate == 0.05
