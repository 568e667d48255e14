"""What the Prefect UI shows of a study run: its name and tags (the commit it
ran, whether params or code were edited, what happened), its progress (a
progress artifact, the running stages' epoch in their task run's name, their
training curves as they come), and its artifacts (the results table, the
report)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_client
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.experiment import git
from mnist_cnn.cli.progress import duration
from mnist_cnn.cli.progress import parse as parse_progress
from mnist_cnn.metrics import METRICS, PRIMARY

if TYPE_CHECKING:
    import pandas as pd

RESULTS_KEY = "mnist-cnn-results"
REPORT_KEY = "mnist-cnn-report"
RESULTS = Path("data/report/results.csv")
REPORT = Path("data/report/report.html")
CODE = ("dvc.yaml", "mnist_cnn", "stages")  # what the stages run


class Outcome(StrEnum):
    """How a stage ended in a flow run: its state's name in the UI."""

    RAN = "Completed"       # stale, and its command ran
    CACHED = "Cached"       # stale, its outputs restored from DVC's run-cache; nothing ran
    UP_TO_DATE = "UpToDate"  # dvc.lock records it with its current inputs: no task run
    SKIPPED = "Skipped"     # waits on a stage not run (a task left out with --tasks)
    FAILED = "Failed"


DONE = {Outcome.RAN, Outcome.CACHED, Outcome.UP_TO_DATE}  # its outputs are final


def git_state(root: Path) -> tuple[str, list[str]]:
    """The short commit and what differs from it: ``params``, ``code``."""
    def out(*args: str) -> str:
        try:
            return git(root, *args).strip()
        except RuntimeError:
            return ""

    commit = out("rev-parse", "--short", "HEAD") or "no-commit"
    edited = [what for what, paths in (("params", ("params.yaml",)), ("code", CODE))
              if out("status", "--porcelain", "--untracked-files=no", "--", *paths)]
    return commit, edited


def summary(states: dict[str, str]) -> str:
    """``task1 retrained, 2 more ran, 3 restored from cache, 15 up to date``."""
    count = Counter(states.values())
    if set(count) == {Outcome.UP_TO_DATE}:
        return "nothing to do"
    retrained = [s.partition("@")[2] for s, st in states.items()
                 if st == Outcome.RAN and s.startswith("train@")]
    failed = [s for s, st in states.items() if st not in (*DONE, Outcome.SKIPPED)]
    parts = [f"failed: {', '.join(failed)}"] if failed else []
    if retrained:
        parts.append(f"{', '.join(retrained)} retrained")
    if more := count[Outcome.RAN] - len(retrained):
        parts.append(f"{more} {'more ' if retrained else ''}ran")
    for outcome, words in ((Outcome.CACHED, "restored from cache"),
                           (Outcome.UP_TO_DATE, "up to date"), (Outcome.SKIPPED, "skipped")):
        if count[outcome]:
            parts.append(f"{count[outcome]} {words}")
    return ", ".join(parts)


def outcome_tags(states: dict[str, str]) -> list[str]:
    values = set(states.values())
    tags = [f"retrained:{s.partition('@')[2]}" for s, st in states.items()
            if st == Outcome.RAN and s.startswith("train@")]
    tags += [tag for tag, state in (("ran", Outcome.RAN), ("restored", Outcome.CACHED))
             if state in values]
    if values == {Outcome.UP_TO_DATE}:
        tags.append("nothing-to-do")
    if values - {*DONE, Outcome.SKIPPED}:
        tags.append("failed")
    return tags


def label_run(commit: str, edited: list[str], what: str, tags: list[str],
              experiment: tuple[str, int] | None = None) -> str:
    """Name and tag the current flow run; returns the name. ``experiment`` is
    (name, number of overrides) for a run saved as a DVC experiment."""
    where = f"{commit}{''.join(f'+{e}' for e in edited)}"
    labels = [f"commit:{commit}", *(f"{e}-edited" for e in edited)]
    if experiment and experiment[0].startswith("sweep "):  # (f"sweep of N points", keys)
        where += f" {experiment[0]}"
        labels += ["sweep"]
    elif experiment:
        exp, n = experiment
        where += f" exp {exp} ({n} override{'s' if n > 1 else ''})"
        labels += [f"exp:{exp}", "overrides"]
    name = f"{where}: {what}"
    if run_id := flow_run.get_id():
        with get_client(sync_client=True) as client:
            # Outcome first: the UI's run header shows only the first three tags.
            client.update_flow_run(run_id, name=name, tags=[*tags, *labels])
    return name


def api_url() -> str:
    """The Prefect API this process talks to (a temporary server's too)."""
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def api_is_set() -> bool:
    """False if Prefect runs a temporary server for this process."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def results_rows(results: pd.DataFrame) -> list[dict[str, str]]:
    """The results table as the UI shows it: narrow, the primary metric first
    with the notebook's figure and the difference, then the other metrics."""
    from mnist_cnn.report.collect import difference, number, with_spread

    rows = []
    for task, r in results.iterrows():
        row = {"task": task}
        for m in METRICS.values():
            row[f"test {m.label}"] = with_spread(r[m.key], r[f"{m.key}_std"], r.seeds > 1)
            if m is PRIMARY:
                row["notebook"] = number(r[f"nb_{m.key}"])
                row["Δ"] = difference(r[m.key], r[f"nb_{m.key}"])
        rows.append({**row, "epochs": str(r.epochs), "s/epoch": f"{r.s_per_epoch:.1f}"})
    return rows


def publish_results(workspace: Path, what: str, experiment: str | None = None) -> str | None:
    """The results table, and the report's text with where to find it whole."""
    # Imported here: pandas costs a no-op flow run, which publishes nothing,
    # half a second.
    import pandas as pd

    from mnist_cnn.report.collect import best_task

    results = workspace / RESULTS
    if not results.is_file():
        return None
    df = pd.read_csv(results, index_col="task")
    best = best_task(df)
    nb = df.loc[best, f"nb_{PRIMARY.key}"]
    # Best first: artifact cards show only the description's first words.
    description = (f"Best: {best} {df.loc[best, PRIMARY.key]:.4f}"
                   + ("" if pd.isna(nb) else f" (notebook {nb:.4f})") + f"; {what}"
                   + (f"; experiment {experiment}" if experiment else ""))
    create_table_artifact(results_rows(df), key=RESULTS_KEY, description=description)
    report = (workspace / REPORT).resolve()
    where = (f"This run is DVC experiment `{experiment}`: `dvc exp apply {experiment}` puts "
             "its report in `data/report/`." if experiment else
             f"The full report with its figures: `{report}` (paste it into the address bar; "
             "browsers do not follow file links from a web page).")
    text = report.with_suffix(".md").read_text().split("\n## Figures", 1)[0]
    create_markdown_artifact(f"{where}\n\n{text}", key=REPORT_KEY,
                             description="The report: findings and where the full one is")
    return description


# --- a run's progress, as it goes ---------------------------------------------------------

PROGRESS_KEY = "mnist-cnn-progress"
PROGRESS: list[Progress] = []  # the flow run's, while its stages run (one flow run a process)


class Progress:
    """The run's progress bar (a Prefect progress artifact: the percent of
    the expected compute done, from each stage's estimate, flows/plan.py), the
    running stages' epoch in their task run's name, and each task's training
    curves (a table artifact per task, a new version per epoch). Fed the
    stages' own progress lines (mnist_cnn/cli/progress.py), from any thread."""

    UPDATE_S = 1.0  # at most one progress update a second

    def __init__(self, plan):
        from prefect.artifacts import create_progress_artifact

        self.plan, self.done, self.curves = plan, {}, {}
        self._lock, self._sent = threading.Lock(), 0.0
        self.id = create_progress_artifact(0.0, key=PROGRESS_KEY, description=(
            f"{len(plan.stages)} stage(s) to run, about {duration(plan.total)} of compute"))

    def _update(self, force: bool = False) -> None:
        from prefect.artifacts import update_progress_artifact

        total, known = self.plan.total, self.plan.seconds
        guess = total / max(1, len(known))
        done = sum(frac * (known.get(s) or guess) for s, frac in self.done.items())
        if force or time.monotonic() - self._sent >= self.UPDATE_S:
            self._sent = time.monotonic()
            with contextlib.suppress(Exception):  # a progress bar never fails a run
                update_progress_artifact(self.id, min(100.0, 100 * done / total))

    def finished(self, stage: str) -> None:
        with self._lock:
            self.done[stage] = 1.0
            self._update(force=True)

    def line(self, line: str, unit: str, name: str) -> None:
        """A line of the stage ``unit`` (its name in the plan) in the task run
        ``name``; an epoch line moves the bar, puts the epoch in the task run's
        name and adds to the task's curves (one artifact per task and point)."""
        found = parse_progress(line)
        if found is None:
            return
        task = found["stage"].partition("@")[2]
        with self._lock:
            self.done[unit] = found["done"]
            self._update()
            rows = self.curves.setdefault(unit, [])
            rows.append({k: found.get(k) for k in ("seed", "epoch", "loss", "accuracy")})
            rows = list(rows)
        with contextlib.suppress(Exception):
            from prefect.artifacts import create_table_artifact
            from prefect.runtime import task_run

            point = name.partition(" · ")[2]  # a sweep's point, if any
            key = re.sub(r"[^a-z0-9-]+", "-", f"curves-{task}-{point}".lower()).strip("-")
            create_table_artifact(rows, key=key, description=(
                f"{task}{f' ({point})' if point else ''}: training loss and accuracy per epoch"))
            if run_id := task_run.get_id():
                with get_client(sync_client=True) as client:
                    client.set_task_run_name(run_id, f"{name} · seed "
                                             f"{found['seed']}/{found['seeds']} · epoch "
                                             f"{found['epoch']}/{found['epochs']}")


def run_label(stage: str) -> str:
    """``train@task1`` -> ``train[task1]``: a task run's name."""
    base, _, item = stage.partition("@")
    return f"{base}[{item}]" if item else base
