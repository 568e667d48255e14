"""The findings are computed from the numbers: change the numbers, the verdict follows."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from mnist_cnn.report.findings import (
    FINDINGS,
    caveats,
    check_all,
    deep_sigmoid_stops_learning,
    notebook_noise,
    pooling_was_never_applied,
    relu_beats_sigmoid,
    schedule_rescues_task2,
)

BASE = {  # task: (accuracy, params, s_per_epoch, epochs)
    "task1": (0.88, 185_162, 4.0, 5),
    "task2": (0.64, 1_666_282, 35.0, 5),
    "task2_15_epochs": (0.91, 1_666_282, 35.0, 15),
    "task2_one_conv": (0.86, 2_361_546, 10.0, 5),
    "task2_three_conv": (0.10, 1_102_090, 60.0, 5),
    "task3": (0.978, 1_666_282, 35.0, 5),
    "task4_sgd": (0.986, 154_474, 30.0, 5),
    "task4_adam": (0.987, 154_474, 30.0, 5),
    "task2_maxpool": (0.10, 93_418, 12.0, 5),
}


def table(seeds: int = 1, **changes) -> pd.DataFrame:
    rows = []
    for task, (acc, params, secs, epochs) in BASE.items():
        acc = changes.get(task, acc)
        runs = [acc] * seeds if not isinstance(acc, list) else acc
        mean = sum(runs) / len(runs)
        std = pd.Series(runs).std() if len(runs) > 1 else 0.0
        rows.append({"task": task, "accuracy": mean, "accuracy_std": std, "accuracy_runs": runs,
                     "seeds": len(runs), "params": params, "s_per_epoch": secs,
                     "epochs": changes.get(f"{task}_epochs", epochs), "optimizer": "SGD",
                     "nb_accuracy": 0.9, "nb_epochs": epochs,
                     "train_images": changes.get("train_images", 60_000)})
    return pd.DataFrame(rows).set_index("task")


def test_deep_sigmoid():
    assert deep_sigmoid_stops_learning(table()).verdict == "holds"
    found = deep_sigmoid_stops_learning(table(task2_three_conv=0.9))
    assert found.verdict == "does not hold"
    assert "3 convs 0.900" in found.text


def test_schedule():
    found = schedule_rescues_task2(table())
    assert (found.verdict, "+0.338" in found.text) == ("holds", True)
    found = schedule_rescues_task2(table(task3=0.10))
    assert found.verdict == "does not hold"
    assert "In 1 of 1 run(s) task3 did not learn at all" in found.text
    assert schedule_rescues_task2(table(task3=0.645)).verdict == "within noise"


def test_schedule_with_seeds_counts_the_runs_that_did_not_learn():
    found = schedule_rescues_task2(table(seeds=3, task3=[0.97, 0.10, 0.98]))
    assert "In 1 of 3 run(s) task3 did not learn" in found.text
    assert "± " in found.text


def test_relu():
    assert relu_beats_sigmoid(table()).verdict == "within noise"  # +0.008 < 0.01
    assert relu_beats_sigmoid(table(task4_sgd=0.995)).verdict == "holds"
    assert relu_beats_sigmoid(table(task4_sgd=0.5)).verdict == "does not hold"
    curves = pd.DataFrame({"task": ["task4_sgd", "task3"], "epoch": [1, 1],
                           "accuracy": [0.93, 0.2]})
    assert "0.930 against 0.200" in relu_beats_sigmoid(table(), curves).text


def test_pooling():
    found = pooling_was_never_applied(table())
    assert found.verdict == "does not hold"
    assert "exactly task2's" in found.text and "-94%" in found.text
    assert "2.9x as fast" in found.text and "does not learn in that time" in found.text


def test_noise_needs_seeds():
    assert notebook_noise(table()).verdict == "not tested"
    found = notebook_noise(table(seeds=2, task1=[0.85, 0.95], task2=[0.5, 0.6]))
    assert "inside the range of our runs for 1 task(s) (task1)" in found.text
    assert "outside it for" in found.text and "task2" in found.text


def test_missing_tasks_are_not_guessed():
    df = table().drop(index=["task3", "task2_three_conv"])
    verdicts = {f.claim: f.verdict for f in check_all(df)}
    assert list(verdicts.values()).count("not tested") == 4
    assert "needs task(s) task3" in schedule_rescues_task2(df).text


@pytest.mark.parametrize("check", FINDINGS, ids=lambda check: check.__name__)
def test_every_sentence_cites_our_numbers(check):
    """Every registered finding states figures of ours (0.880, not a task
    name's digits), and its sentence moves when they move: built from the
    numbers, not canned."""
    moved = {task: [acc - 0.011, acc + 0.013] for task, (acc, *_) in BASE.items()}
    before, after = check(table(seeds=2)).text, check(table(**moved)).text
    assert re.search(r"\b\d\.\d{3}\b", before), before
    assert before != after


def test_the_pooling_cell_with_equal_epochs_does_not_credit_training_longer():
    """With as many epochs as task2 (a quick run), the cell's extra training is
    not there to credit: the finding says so instead of contradicting itself."""
    found = pooling_was_never_applied(table(task2_15_epochs_epochs=5))
    assert "not tested here: task2_15_epochs has 5 epochs and task2 5" in found.text
    assert "came from training longer" not in found.text
    assert found.verdict == "does not hold"  # still: no pooling layer was ever added


def test_training_longer_within_noise_is_said_so():
    found = pooling_was_never_applied(table(task2_15_epochs=0.645))
    assert "Training longer gained nothing beyond noise" in found.text


def test_comparisons_need_equal_training():
    found = deep_sigmoid_stops_learning(table(task2_three_conv_epochs=1))
    assert found.verdict == "not tested"
    assert "needs the same epochs for task2_one_conv, task2, task2_three_conv" in found.text
    assert schedule_rescues_task2(table(task3_epochs=15)).verdict == "not tested"
    assert relu_beats_sigmoid(table(task4_sgd_epochs=1)).verdict == "not tested"


def test_caveats_of_a_quick_run():
    notes = caveats(table(train_images=2000, task1_epochs=1))
    assert notes[0].startswith("Trained on 2,000 of the notebook's 60,000 images")
    assert notes[1].startswith("Fewer epochs than the notebook for task1:")
    assert notes[2].startswith("One seed per task")
    assert caveats(table(seeds=3)) == []
