"""The notebook's conclusions, checked against our numbers.

Each check reads the results table (one row per task, see report.collect) and
the training curves, and returns a Finding whose sentence is built from the
data: the verdict follows the numbers, not the other way round. A verdict is
one of three, and never one its own sentence contradicts:

- ``holds`` / ``does not hold``: our numbers answer the claim;
- ``not tested here``: they cannot, and the sentence names the premise that
  failed: a task missing or trained differently, a model that did not learn
  (nothing to compare), or a difference one seed cannot tell from noise.

A difference counts as noise only within the margin the sentence states:
twice the two tasks' combined spread over seeds (at least MIN_MARGIN), or,
with one seed, SINGLE_RUN_NOISE, the notebook's own run-to-run difference
rounded up. A comparison of "sigmoid models" takes every such model of the
study, not a chosen few. A new finding is one function here, registered
with ``@finding``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd

from mnist_cnn.dataset import NUM_CLASSES
from mnist_cnn.metrics import PRIMARY, Metric
from mnist_cnn.report.notebook import NOTEBOOK, NOTEBOOK_TRAIN_IMAGES, TASK2_RERUN

CHANCE = 1 / NUM_CLASSES
NOT_LEARNING = 2 * CHANCE  # below this a classifier has learned (almost) nothing
MIN_MARGIN = 0.01  # with seeds, differences smaller than this are noise anyway
# One run each: the notebook's own task2 gave 0.785 and 0.801 (0.016 apart).
SINGLE_RUN_NOISE = 0.02
HOLDS, FAILS, UNTESTED = "holds", "does not hold", "not tested here"


class Finding(NamedTuple):
    claim: str    # the notebook's conclusion, in short
    verdict: str  # HOLDS, FAILS or UNTESTED
    text: str     # the evidence, from our numbers


Check = Callable[[pd.DataFrame, "pd.DataFrame | None"], Finding]
FINDINGS: list[Check] = []  # every check the report makes, in order


def finding(check: Check) -> Check:
    """Register ``check(df, curves) -> Finding``: the report states it."""
    FINDINGS.append(check)
    return check


# --- the numbers, and what they can tell apart ------------------------------------------


def _acc(df: pd.DataFrame, task: str) -> str:
    row = df.loc[task]
    spread = f" ± {row.accuracy_std:.3f}" if row.seeds > 1 else ""
    return f"{row.accuracy:.3f}{spread}"


def _seeded(df: pd.DataFrame, *tasks: str) -> bool:
    return all(df.loc[t, "seeds"] > 1 for t in tasks)


def margin(df: pd.DataFrame, a: str, b: str) -> float:
    """How far apart two tasks' mean accuracies must be to call them different:
    twice the combined spread over seeds (at least MIN_MARGIN); with a single
    run of either, SINGLE_RUN_NOISE."""
    if not _seeded(df, a, b):
        return SINGLE_RUN_NOISE
    sa, sb = df.loc[a, "accuracy_std"], df.loc[b, "accuracy_std"]
    return max(MIN_MARGIN, 2 * math.hypot(sa, sb))


def learns(df: pd.DataFrame, task: str) -> bool:
    return df.loc[task, "accuracy"] >= NOT_LEARNING


def _missing(df: pd.DataFrame, claim: str, *tasks: str) -> Finding | None:
    absent = [t for t in tasks if t not in df.index]
    if absent:
        return Finding(claim, UNTESTED, f"it needs task(s) {', '.join(absent)}.")
    return None


def _unequal(df: pd.DataFrame, claim: str, column: str, *tasks: str) -> Finding | None:
    """A comparison of tasks is only fair if they share ``column`` (epochs, say)."""
    values = {t: df.loc[t, column] for t in tasks}
    if len(set(values.values())) > 1:
        shown = ", ".join(f"{t} {v}" for t, v in values.items())
        return Finding(claim, UNTESTED, f"it needs the same {column} for "
                       f"{', '.join(tasks)}; this run has {shown}.")
    return None


def _beats(df: pd.DataFrame, claim: str, text: str, a: str, b: str) -> Finding:
    """Verdict on "``a`` beats ``b``" from their accuracies and the noise margin."""
    gain = df.loc[a, "accuracy"] - df.loc[b, "accuracy"]
    need = margin(df, a, b)
    if gain > need:
        return Finding(claim, HOLDS, text)
    if gain < -need:
        return Finding(claim, FAILS, text)
    if not _seeded(df, a, b):
        return Finding(claim, UNTESTED, text + f" One run each cannot tell a difference of "
                       f"{gain:+.3f} from noise (±{need:.3f}); set `seeds` to 3 or more.")
    return Finding(claim, FAILS, text + f" The difference is within the spread over seeds "
                   f"(±{need:.3f}): no gain.")


def _kind(df: pd.DataFrame, activation: str, optimizer: str, epochs: int) -> list[str]:
    """Every task whose hidden layers all use ``activation``, trained with
    ``optimizer`` for ``epochs``."""
    same = ((df["activation"] == activation) & (df["optimizer_name"] == optimizer)
            & (df["epochs"] == epochs))
    return list(df.index[same])


# --- the notebook's conclusions ----------------------------------------------------------


@finding
def deep_sigmoid_stops_learning(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    claim = "Sigmoid conv stacks deeper than two layers stop learning"
    tasks = ("task2_one_conv", "task2", "task2_three_conv")
    if missing := _missing(df, claim, *tasks) or _unequal(df, claim, "epochs", *tasks):
        return missing
    steps = ", ".join(f"{n} conv{'s' if n > 1 else ''} {_acc(df, t)}"
                      for n, t in enumerate(tasks, start=1))
    text = f"With SGD and the same dense head: {steps} (chance is {CHANCE:.3f})."
    shallow = [t for t in tasks[:2] if not learns(df, t)]
    if shallow:
        return Finding(claim, UNTESTED, text + f" The shallower stack(s) did not learn either "
                       f"({', '.join(shallow)}), so depth cannot be what stops learning here.")
    if learns(df, "task2_three_conv"):
        return Finding(claim, FAILS, text + " The three-conv stack learns too.")
    return Finding(claim, HOLDS, text + " The three-conv stack stays at chance while the "
                   "shallower ones learn.")


@finding
def schedule_rescues_task2(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    claim = "The learning-rate schedule rescues task2's architecture (task3)"
    if missing := (_missing(df, claim, "task2", "task3")
                   or _unequal(df, claim, "epochs", "task2", "task3")
                   or _unequal(df, claim, "params", "task2", "task3")):
        return missing
    gain = df.loc["task3", "accuracy"] - df.loc["task2", "accuracy"]
    runs = df.loc["task3", "accuracy_runs"]
    stuck = sum(a < NOT_LEARNING for a in runs)
    text = (f"task3 ({df.loc['task3', 'optimizer']}) reaches {_acc(df, 'task3')} against "
            f"{_acc(df, 'task2')} for task2 ({df.loc['task2', 'optimizer']}), {gain:+.3f}.")
    if stuck:
        text += (f" In {stuck} of {len(runs)} run(s) task3 did not learn at all "
                 f"(accuracy below {NOT_LEARNING:.2f}): the large initial rate is fragile.")
    if not learns(df, "task3"):  # whatever task2 did, nothing was rescued
        return Finding(claim, FAILS, text)
    return _beats(df, claim, text, "task3", "task2")


@finding
def relu_beats_sigmoid(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    claim = "ReLU beats sigmoid (task4)"
    if missing := _missing(df, claim, "task4_sgd"):
        return missing
    epochs = df.loc["task4_sgd", "epochs"]
    sigmoid = _kind(df, "sigmoid", "sgd", epochs)
    if not sigmoid:
        return Finding(claim, UNTESTED, f"it needs a sigmoid model trained with SGD for "
                       f"{epochs} epochs, as task4_sgd; this run has none.")
    best = max(sigmoid, key=lambda t: df.loc[t, "accuracy"])
    gain = df.loc["task4_sgd", "accuracy"] - df.loc[best, "accuracy"]
    text = (f"task4_sgd (ReLU convs, {df.loc['task4_sgd', 'optimizer']}) reaches "
            f"{_acc(df, 'task4_sgd')}; the best of the {len(sigmoid)} sigmoid model(s) "
            f"trained with SGD for {epochs} epochs, {best}, {_acc(df, best)} ({gain:+.3f}).")
    if curves is not None and not curves.empty:
        first = curves[curves.epoch == 1].set_index("task")["accuracy"]
        if {"task4_sgd", best} <= set(first.index):
            text += (f" After one epoch the training accuracy is {first['task4_sgd']:.3f} "
                     f"against {first[best]:.3f}.")
    if not learns(df, "task4_sgd") and not learns(df, best):
        return Finding(claim, UNTESTED, text + " Neither learned: nothing to compare.")
    return _beats(df, claim, text, "task4_sgd", best)


def _training_longer(df: pd.DataFrame, short: str, long: str) -> str:
    """What the extra epochs of ``long`` over ``short`` bought, if it has more."""
    epochs = (df.loc[short, "epochs"], df.loc[long, "epochs"])
    if epochs[1] <= epochs[0]:
        return (f"What training longer brings is not tested here: {long} has {epochs[1]} "
                f"epochs and {short} {epochs[0]}.")
    gain = df.loc[long, "accuracy"] - df.loc[short, "accuracy"]
    where = (f"{short} after {epochs[0]} epochs {_acc(df, short)}, after {epochs[1]} epochs "
             f"{_acc(df, long)} ({gain:+.3f})")
    need = margin(df, short, long)
    if not learns(df, short) and not learns(df, long):
        return (f"What training longer brings is not tested here: neither run learned "
                f"({where}).")
    if gain > need:
        return f"The gain came from training longer: {where}."
    if gain < -need:
        return f"Training longer lost accuracy here, beyond noise (±{need:.3f}): {where}."
    return f"Training longer gained nothing beyond noise (±{need:.3f}) here: {where}."


@finding
def pooling_was_never_applied(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    claim = ("The \"max pooling\" cell's gain came from pooling (the notebook: \"significant "
             "improvement in accuracy\")")
    if missing := _missing(df, claim, "task2", "task2_15_epochs"):
        return missing
    same = df.loc["task2_15_epochs", "params"] == df.loc["task2", "params"]
    ref = NOTEBOOK["task2_15_epochs"]
    text = (f"The cell's model has {df.loc['task2_15_epochs', 'params']:,} parameters, "
            + ("exactly task2's: its MaxPooling2D layers were created but never added. "
               if same else f"not task2's {df.loc['task2', 'params']:,}. ")
            + _training_longer(df, "task2", "task2_15_epochs")
            + f" The notebook's cell reached {ref.test_accuracy:.3f}.")
    if "task2_maxpool" in df.index:
        pool, base = df.loc["task2_maxpool"], df.loc["task2"]
        speed = base.s_per_epoch / pool.s_per_epoch if pool.s_per_epoch else float("nan")
        text += (f" Pooling as intended (task2_maxpool) has {pool.params:,} parameters "
                 f"({pool.params / base.params - 1:+.0%}), runs an epoch {speed:.1f}x as "
                 f"fast as task2 and reaches {_acc(df, 'task2_maxpool')} in "
                 f"{pool.epochs} epochs"
                 + (" (it does not learn in that time)." if not learns(df, "task2_maxpool")
                    else "."))
    # No pooling layer in the cell's model: its gain cannot have come from pooling.
    if same:
        return Finding(claim, FAILS, text)
    return Finding(claim, UNTESTED, text + " (The cell's model here is not task2's, so what "
                   "its pooling did is not isolated.)")


def caveats(df: pd.DataFrame) -> list[str]:
    """What makes this run's comparison with the notebook weaker, one note each."""
    notes = []
    images = int(df["train_images"].max())
    if images < NOTEBOOK_TRAIN_IMAGES:
        notes.append(f"Trained on {images:,} of the notebook's {NOTEBOOK_TRAIN_IMAGES:,} "
                     "images: accuracies are lower than a full run's, so the differences to "
                     "the notebook say little about the models.")
    fewer = [t for t, r in df.iterrows() if not pd.isna(r.nb_epochs) and r.epochs < r.nb_epochs]
    if fewer:
        notes.append(f"Fewer epochs than the notebook for {', '.join(fewer)}: their "
                     "accuracies are not comparable with the notebook's.")
    if int(df["seeds"].max()) == 1:
        notes.append("One seed per task: a single run's accuracy can move by several points "
                     "with the seed (the notebook's own task2 gave 0.785 and 0.801), so "
                     f"differences within ±{SINGLE_RUN_NOISE:.2f} are not evidence either way. "
                     "Set `seeds` to 3 or more to measure the spread.")
    return notes


def notebook_inside_runs(row, metric: Metric = PRIMARY) -> bool | None:
    """Whether the notebook's figure lies within the range of our seeds' runs
    (None: the notebook has no such task)."""
    theirs, ours = row[f"nb_{metric.key}"], row[f"{metric.key}_runs"]
    if pd.isna(theirs):
        return None
    return min(ours) <= theirs <= max(ours)


@finding
def notebook_noise(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> Finding:
    claim = "The notebook's figures are single runs"
    text = (f"The notebook trained task2's model twice for 5 epochs and got "
            f"{NOTEBOOK['task2'].test_accuracy:.3f} and {TASK2_RERUN.test_accuracy:.3f}.")
    multi = df[df.seeds > 1]
    if multi.empty:
        return Finding(claim, UNTESTED, text + " Ours are single runs too: set `seeds` "
                       "in params.yaml to 3 or more to measure the spread.")
    verdicts = {t: notebook_inside_runs(r) for t, r in multi.iterrows()}
    inside = [t for t, v in verdicts.items() if v is True]
    outside = [t for t, v in verdicts.items() if v is False]
    text += (f" Over our {int(multi.seeds.max())} seeds the notebook's figure lies inside "
             f"the range of our runs for {len(inside)} task(s)"
             + (f" ({', '.join(inside)})" if inside else "")
             + (f" and outside it for {', '.join(outside)}." if outside else "."))
    return Finding(claim, HOLDS, text)


def check_all(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> list[Finding]:
    """Every registered finding, in order."""
    return [check(df, curves) for check in FINDINGS]
