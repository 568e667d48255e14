"""`make compare`: the experiments' changed params, then each task's scores
side by side, the best marked, within 120 columns."""

from __future__ import annotations

from tests.conftest import TASKS
from tools.compare import rows, table


def entry(rev, name, lr, acc):
    metrics = {"data/metrics.json": {"data": {t: {"acc": acc, "loss": 0.0397}
                                              for t in TASKS}}}
    params = {"params.yaml": {"data": {"seed": 42, "tasks": {"task1": {
        "optimizer": {"name": "sgd", "learning_rate": lr}, "layers": [{"type": "flatten"}]}}}}}
    return {"rev": rev, "name": name, "data": {"params": params, "metrics": metrics}}


def show(n_experiments: int = 2) -> list[dict]:
    exps = [{"name": f"lr-{i}", "revs": [entry(f"{i:07d}", f"lr-{i}", 0.01 * (i + 2),
                                               0.5 + i / 100)]}
            for i in range(n_experiments)]
    return [entry("workspace", None, 0.01, 0.9863),
            {**entry("f00dcafe1234", "main", 0.01, 0.9863), "experiments": exps}]


def test_changed_params_then_one_row_per_task():
    out = table(rows(show())).splitlines()
    assert out[:5] == ["experiment  changed params",
                       "workspace   task1.optimizer.learning_rate=0.01",
                       "main        task1.optimizer.learning_rate=0.01",
                       "lr-0        task1.optimizer.learning_rate=0.02",
                       "lr-1        task1.optimizer.learning_rate=0.03"]
    header = out[6].split()
    assert header == ["task", "workspace", "main", "lr-0", "lr-1"]
    task_rows = {line.split()[0]: line.split()[1:] for line in out[7:7 + len(TASKS)]}
    assert list(task_rows) == TASKS  # full task names, in params.yaml's order
    assert task_rows["task1"] == ["98.6/.040*", "98.6/.040*", "50.0/.040", "51.0/.040"]


def test_fits_a_120_column_terminal_however_many_experiments():
    out = table(rows(show(12)))
    assert max(map(len, out.splitlines())) <= 120
    assert out.count("\ntask ") == 2  # 14 columns: two blocks
    assert "lr-11" in out


def test_before_any_metrics_each_experiment_is_still_listed():
    bare = [{"rev": "workspace", "name": None, "data": {"params": {}, "metrics": {}}}]
    out = table(rows(bare)).splitlines()
    assert out[:2] == ["experiment  changed params", "workspace   -"]
    assert out[3].split() == ["task", "workspace"] and out[4] == ""  # no scores yet


def test_long_experiment_names_are_shown_whole():
    data = show(3)
    for i, exp in enumerate(data[1]["experiments"]):
        exp["name"] = f"merciful-gecko-{i}-of-a-sweep"
    out = table(rows(data))
    headers = " ".join(line for line in out.splitlines() if line.startswith("task ")).split()
    assert {f"merciful-gecko-{i}-of-a-sweep" for i in range(3)} <= set(headers), out
    assert "…" not in out and max(map(len, out.splitlines())) <= 120
