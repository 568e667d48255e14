"""What the Prefect UI shows of a study run: its name and tags (the commit it
ran, whether params or code were edited, what happened), and its artifacts
(the results table, a link to the report)."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_client
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from mnist_cnn.metrics import METRICS, PRIMARY

if TYPE_CHECKING:
    import pandas as pd

RESULTS_KEY = "mnist-cnn-results"
REPORT_KEY = "mnist-cnn-report"
RESULTS = Path("data/report/results.csv")
REPORT = Path("data/report/report.html")
CODE = ("dvc.yaml", "mnist_cnn", "stages")  # what the stages run


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def git_state(root: Path) -> tuple[str, list[str]]:
    """The short commit and what differs from it: ``params``, ``code``."""
    commit = _git(root, "rev-parse", "--short", "HEAD") or "no-commit"
    edited = [what for what, paths in (("params", ("params.yaml",)), ("code", CODE))
              if _git(root, "status", "--porcelain", "--untracked-files=no", "--", *paths)]
    return commit, edited


def summary(states: dict[str, str]) -> str:
    """``task1 retrained, 2 more ran, 3 restored from cache, 15 up to date``."""
    count = Counter(states.values())
    if set(count) == {"UpToDate"}:
        return "nothing to do"
    retrained = [s.partition("@")[2] for s, st in states.items()
                 if st == "Completed" and s.startswith("train@")]
    failed = [s for s, st in states.items() if st not in ("Completed", "Cached", "UpToDate",
                                                           "Skipped")]
    parts = [f"failed: {', '.join(failed)}"] if failed else []
    if retrained:
        parts.append(f"{', '.join(retrained)} retrained")
    if more := count["Completed"] - len(retrained):
        parts.append(f"{more} {'more ' if retrained else ''}ran")
    if count["Cached"]:
        parts.append(f"{count['Cached']} restored from cache")
    if count["UpToDate"]:
        parts.append(f"{count['UpToDate']} up to date")
    if count["Skipped"]:
        parts.append(f"{count['Skipped']} skipped")
    return ", ".join(parts)


def outcome_tags(states: dict[str, str]) -> list[str]:
    values = set(states.values())
    tags = [f"retrained:{s.partition('@')[2]}" for s, st in states.items()
            if st == "Completed" and s.startswith("train@")]
    tags += [tag for tag, state in (("ran", "Completed"), ("restored", "Cached"))
             if state in values]
    if values == {"UpToDate"}:
        tags.append("nothing-to-do")
    if values - {"Completed", "Cached", "UpToDate", "Skipped"}:
        tags.append("failed")
    return tags


def label_run(commit: str, edited: list[str], what: str, tags: list[str],
              experiment: tuple[str, int] | None = None) -> str:
    """Name and tag the current flow run; returns the name. ``experiment`` is
    (name, number of overrides) for a run saved as a DVC experiment."""
    where = f"{commit}{''.join(f'+{e}' for e in edited)}"
    labels = [f"commit:{commit}", *(f"{e}-edited" for e in edited)]
    if experiment:
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
