"""The findings are computed from the numbers: change the numbers, the verdict follows."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from mnist_cnn.report.findings import (
    FAILS,
    FINDINGS,
    HOLDS,
    UNTESTED,
    caveats,
    check_all,
    deep_sigmoid_stops_learning,
    notebook_noise,
    pooling_was_never_applied,
    relu_beats_sigmoid,
    schedule_rescues_task2,
)

BASE = {  # task: (accuracy, params, s_per_epoch, epochs, hidden activation, optimizer)
    "task1": (0.88, 185_162, 4.0, 5, "sigmoid", "sgd"),
    "task2": (0.64, 1_666_282, 35.0, 5, "sigmoid", "sgd"),
    "task2_15_epochs": (0.91, 1_666_282, 35.0, 15, "sigmoid", "sgd"),
    "task2_one_conv": (0.86, 2_361_546, 10.0, 5, "sigmoid", "sgd"),
    "task2_three_conv": (0.10, 1_102_090, 60.0, 5, "sigmoid", "sgd"),
    "task3": (0.978, 1_666_282, 35.0, 5, "sigmoid", "sgd"),
    "task4_sgd": (0.986, 154_474, 30.0, 5, "relu", "sgd"),
    "task4_adam": (0.987, 154_474, 30.0, 5, "relu", "adam"),
    "task2_maxpool": (0.10, 93_418, 12.0, 5, "sigmoid", "sgd"),
}
# A reduced run (6,000 images, one seed) where most sigmoid models stay at
# chance: what a new user's first quick run gives.
SMALL_RUN = {"task1": 0.420, "task2": 0.126, "task2_15_epochs": 0.085,
             "task2_one_conv": 0.152, "task2_three_conv": 0.098, "task3": 0.196,
             "task4_sgd": 0.902, "task4_adam": 0.951, "task2_maxpool": 0.101,
             "train_images": 6000}


def table(seeds: int = 1, **changes) -> pd.DataFrame:
    rows = []
    for task, (acc, params, secs, epochs, activation, optimizer) in BASE.items():
        acc = changes.get(task, acc)
        runs = [acc] * seeds if not isinstance(acc, list) else acc
        mean = sum(runs) / len(runs)
        std = pd.Series(runs).std() if len(runs) > 1 else 0.0
        rows.append({"task": task, "accuracy": mean, "accuracy_std": std, "accuracy_runs": runs,
                     "seeds": len(runs), "params": params, "s_per_epoch": secs,
                     "epochs": changes.get(f"{task}_epochs", epochs), "optimizer": optimizer,
                     "optimizer_name": optimizer, "activation": activation,
                     "nb_accuracy": 0.9, "nb_epochs": epochs,
                     "train_images": changes.get("train_images", 60_000)})
    return pd.DataFrame(rows).set_index("task")


def test_deep_sigmoid():
    assert deep_sigmoid_stops_learning(table()).verdict == HOLDS
    found = deep_sigmoid_stops_learning(table(task2_three_conv=0.9))
    assert found.verdict == FAILS
    assert "3 convs 0.900" in found.text
    # Nothing learned, so depth was not what stopped it: not tested.
    found = deep_sigmoid_stops_learning(table(task2=0.12))
    assert found.verdict == UNTESTED
    assert "did not learn either (task2)" in found.text


def test_schedule():
    found = schedule_rescues_task2(table())
    assert (found.verdict, "+0.338" in found.text) == (HOLDS, True)
    found = schedule_rescues_task2(table(task3=0.10))
    assert found.verdict == FAILS
    assert "In 1 of 1 run(s) task3 did not learn at all" in found.text
    # One run each cannot tell +0.005 from noise; with seeds, it is no gain.
    assert schedule_rescues_task2(table(task3=0.645)).verdict == UNTESTED
    found = schedule_rescues_task2(table(seeds=3, task2=[0.64, 0.65, 0.63],
                                         task3=[0.645, 0.655, 0.64]))
    assert found.verdict == FAILS and "within the spread over seeds" in found.text
    # A learned task2 beats a task3 that did not learn: never "holds".
    assert schedule_rescues_task2(table(task2=0.10, task3=0.196)).verdict == FAILS


def test_schedule_with_seeds_counts_the_runs_that_did_not_learn():
    found = schedule_rescues_task2(table(seeds=3, task3=[0.97, 0.10, 0.98]))
    assert "In 1 of 3 run(s) task3 did not learn" in found.text
    assert "± " in found.text


def test_relu_takes_every_sigmoid_model_trained_alike():
    # The best sigmoid model with SGD for 5 epochs is task3 (0.978): +0.008
    # is noise for one run each.
    found = relu_beats_sigmoid(table())
    assert found.verdict == UNTESTED and "task3" in found.text
    assert relu_beats_sigmoid(table(task4_sgd=0.999)).verdict == HOLDS
    assert relu_beats_sigmoid(table(task4_sgd=0.5)).verdict == FAILS
    # task1 is a sigmoid model trained with SGD too: it is compared when best.
    found = relu_beats_sigmoid(table(task1=0.99, task3=0.2))
    assert "task1, 0.990" in found.text and found.verdict == UNTESTED
    # task4_adam is ReLU, and task2_15_epochs trained longer: neither counts.
    found = relu_beats_sigmoid(table(task4_adam=0.999, task2_15_epochs=0.999))
    assert "the best of the 6 sigmoid model(s) trained with SGD for 5 epochs, task3" in \
        found.text
    curves = pd.DataFrame({"task": ["task4_sgd", "task3"], "epoch": [1, 1],
                           "accuracy": [0.93, 0.2]})
    assert "0.930 against 0.200" in relu_beats_sigmoid(table(), curves).text


def test_a_small_run_where_sigmoid_models_stay_at_chance():
    """The issue's quick run: nothing learned but task1 and the ReLU models.
    No verdict may be contradicted by its own sentence."""
    df = table(**SMALL_RUN)
    found = {f.claim: f for f in check_all(df)}
    deep = deep_sigmoid_stops_learning(df)
    assert deep.verdict == UNTESTED and "did not learn either" in deep.text
    schedule = schedule_rescues_task2(df)
    assert schedule.verdict == FAILS and "task3 did not learn at all" in schedule.text
    relu = relu_beats_sigmoid(df)
    assert relu.verdict == HOLDS and "task1, 0.420" in relu.text  # not task3's 0.196
    pooling = pooling_was_never_applied(df)
    assert "not tested here: neither run learned" in pooling.text
    assert "gained nothing beyond noise" not in pooling.text
    assert found[notebook_noise(df).claim].verdict == UNTESTED


def test_training_longer_that_loses_accuracy_says_so():
    found = pooling_was_never_applied(table(task2=0.40, task2_15_epochs=0.30))
    assert "Training longer lost accuracy here, beyond noise (±0.020)" in found.text


def test_pooling():
    found = pooling_was_never_applied(table())
    assert found.verdict == FAILS
    assert "exactly task2's" in found.text and "-94%" in found.text
    assert "2.9x as fast" in found.text and "does not learn in that time" in found.text


def test_noise_needs_seeds():
    assert notebook_noise(table()).verdict == UNTESTED
    found = notebook_noise(table(seeds=2, task1=[0.85, 0.95], task2=[0.5, 0.6]))
    assert "inside the range of our runs for 1 task(s) (task1)" in found.text
    assert "outside it for" in found.text and "task2" in found.text


def test_missing_tasks_are_not_guessed():
    df = table().drop(index=["task3", "task2_three_conv"])
    verdicts = {f.claim: f.verdict for f in check_all(df)}
    assert list(verdicts.values()).count(UNTESTED) == 3
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
    assert found.verdict == FAILS  # still: no pooling layer was ever added


def test_training_longer_within_noise_is_said_so():
    found = pooling_was_never_applied(table(task2_15_epochs=0.645))
    assert "Training longer gained nothing beyond noise" in found.text


def test_comparisons_need_equal_training():
    found = deep_sigmoid_stops_learning(table(task2_three_conv_epochs=1))
    assert found.verdict == UNTESTED
    assert "needs the same epochs for task2_one_conv, task2, task2_three_conv" in found.text
    assert schedule_rescues_task2(table(task3_epochs=15)).verdict == UNTESTED
    found = relu_beats_sigmoid(table(task4_sgd_epochs=1))
    assert found.verdict == UNTESTED and "this run has none" in found.text


def test_caveats_of_a_quick_run():
    notes = caveats(table(train_images=2000, task1_epochs=1))
    assert notes[0].startswith("Trained on 2,000 of the notebook's 60,000 images")
    assert notes[1].startswith("Fewer epochs than the notebook for task1:")
    assert notes[2].startswith("One seed per task")
    assert caveats(table(seeds=3)) == []


def test_no_verdict_contradicts_its_numbers_on_random_runs():
    """Random outcome tables (one seed or three, models at chance or not):
    each verdict agrees with the numbers its sentence cites."""
    import random

    from mnist_cnn.report.findings import learns, margin

    rng = random.Random(0)
    for _ in range(400):
        seeds = rng.choice([1, 3])
        accs = {t: [round(rng.choice([rng.uniform(0.08, 0.2), rng.uniform(0.2, 1.0)]), 3)
                    for _ in range(seeds)] for t in BASE}
        df = table(seeds=seeds, **accs)
        for f in check_all(df):
            assert f.verdict in (HOLDS, FAILS, UNTESTED), f
        acc = df["accuracy"]
        schedule = schedule_rescues_task2(df)
        if schedule.verdict == HOLDS:
            assert learns(df, "task3") and acc.task3 - acc.task2 > margin(df, "task3", "task2")
        relu = relu_beats_sigmoid(df)
        best = acc[[t for t in BASE if BASE[t][4] == "sigmoid" and BASE[t][3] == 5]].idxmax()
        assert f"epochs, {best}," in relu.text
        if relu.verdict == HOLDS:
            assert acc.task4_sgd - acc[best] > margin(df, "task4_sgd", best)
        deep = deep_sigmoid_stops_learning(df)
        if deep.verdict == HOLDS:
            assert learns(df, "task2") and learns(df, "task2_one_conv")
            assert not learns(df, "task2_three_conv")
        text = pooling_was_never_applied(df).text
        gain, need = acc.task2_15_epochs - acc.task2, margin(df, "task2", "task2_15_epochs")
        if "gained nothing beyond noise" in text:
            assert abs(gain) <= need
        if "came from training longer" in text:
            assert gain > need
