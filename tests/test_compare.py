"""`make compare`: one compact row per experiment from `dvc exp show --json`."""

from __future__ import annotations

from tools.compare import rows, table

TASKS = ["task1", "task2", "task2_15_epochs", "task2_one_conv", "task2_three_conv", "task3",
         "task4_sgd", "task4_adam", "task2_maxpool"]


def entry(rev, name, lr, acc):
    metrics = {f"data/eval/{t}/metrics.json": {"data": {"test_accuracy": acc,
                                                        "test_loss": 0.0397}}
               for t in TASKS}
    params = {"params.yaml": {"data": {"seed": 42, "tasks": {"task1": {
        "optimizer": {"name": "sgd", "learning_rate": lr}, "layers": [{"type": "flatten"}]}}}}}
    return {"rev": rev, "name": name, "data": {"params": params, "metrics": metrics}}


SHOW = [
    entry("workspace", None, 0.01, 0.9863),
    {**entry("f00dcafe1234", "main", 0.01, 0.9863), "experiments": [
        {"name": "fast-lr", "revs": [entry("aaaa111", "fast-lr", 0.05, 0.5)]},
        {"name": "slow-lr", "revs": [entry("bbbb222", "slow-lr", 0.002, 1.0)]},
    ]},
]


def test_one_row_per_experiment_with_the_params_that_differ():
    out = table(rows(SHOW)).splitlines()
    assert [line.split()[0] for line in out[1:-1]] == ["workspace", "main", "fast-lr",
                                                       "slow-lr"]
    assert "task1.lr=0.05" in out[3] and "task1.lr=0.002" in out[4]
    assert "seed" not in out[0] + out[3]  # unchanged params are left out
    assert out[3].count("50.0/.040") == 9 and out[4].count("100/.040") == 9


def test_fits_a_120_column_terminal():
    assert max(map(len, table(rows(SHOW)).splitlines()[:-1])) <= 120
