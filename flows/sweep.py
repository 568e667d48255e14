"""Sweeps: a grid over any params, every point a DVC experiment, computed
once, compared in one view.

``-S`` takes what ``dvc exp run --queue -S`` takes (DVC's own parser:
``key=a,b,c``, ``key=range(start, stop[, step])``, ``key=choice(a, b)``);
several ``-S`` make the grid of every combination. Each point runs the
commit with its overrides, as one experiment (flows/experiment.py), named
from its swept values; all points' stale stages go to one scheduler, and a
stage that two points share (download, preprocess, an unchanged task) runs
once, the others restored from DVC's run-cache. A point whose overrides an
experiment of the same commit already has is that experiment, not run
again. At the end, one summary: a row per point (the swept values, the
metrics of the tasks the sweep changes, mean ± std over seeds, seconds of
training), the best point and whether its lead exceeds the spread over
seeds, and a figure; as Prefect artifacts and as files in
``data/sweeps/<name>/``.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

from mnist_cnn.metrics import METRICS, PRIMARY

MAX_POINTS = 16
SUMMARY_KEY = "mnist-cnn-sweep"
FOLDER = Path("data/sweeps")


def parse(raw: list[str], value_of) -> tuple[dict[str, Any], dict[str, list]]:
    """``-S`` arguments -> (single overrides, swept keys with their values),
    expanded by DVC's own sweep parser; ``value_of(text)`` reads a value as
    DVC reads params. ValueError naming what does not parse."""
    from flows.dvc_internals import sweep_overrides

    single, axes = {}, {}
    for text in raw:
        try:
            points = sweep_overrides(text)
        except Exception as exc:  # DVC's and Hydra's parse errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"-S {text}: {first}") from None
        values = []
        for point in points:
            key, _, value = point.partition("=")
            values.append(value_of(value))
        key = points[0].partition("=")[0]
        if len(values) > 1:
            axes[key] = values
        else:
            single[key] = values[0]
    return single, axes


def grid(overrides: dict[str, Any], axes: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the swept values, each with the single overrides."""
    keys = list(axes)
    return [{**overrides, **dict(zip(keys, combo, strict=True))}
            for combo in itertools.product(*(axes[k] for k in keys))]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key by its last part, or as many last parts as tell it apart."""
    out = {}
    for key in keys:
        parts = key.split(".")
        n = 1
        while n < len(parts) and sum(k.split(".")[-n:] == parts[-n:] for k in keys) > 1:
            n += 1
        out[key] = ".".join(parts[-n:])
    return out


def point_name(point: dict[str, Any], axes: dict[str, list]) -> str:
    """``initial_learning_rate-0.03_epochs-3``: the point's swept values, as
    a DVC experiment name may hold them."""
    names = short_keys(list(axes))
    text = "_".join(f"{names[k]}-{point[k] if isinstance(point[k], str) else json.dumps(point[k])}"
                    for k in axes)
    return re.sub(r"[^A-Za-z0-9_.-]", "", text)[:100].lstrip("._-") or "point"


def touched_tasks(keys: list[str], tasks: list[str]) -> list[str]:
    """The tasks whose results the keys change: those named, else all."""
    named = [t for t in tasks if any(k.startswith(f"tasks.{t}.") for k in keys)]
    return named or list(tasks)


# --- the summary -----------------------------------------------------------------------


def results(work: Path) -> list[dict]:
    """A point's report's results table (data/report/results.csv), as records."""
    import pandas as pd

    found = work / "data" / "report" / "results.csv"
    return pd.read_csv(found).to_dict("records") if found.is_file() else []


def rows(points: list[dict], axes: dict[str, list], tasks: list[str]) -> list[dict]:
    """A row per point: its name, swept values, each metric of each task as
    mean ± std, and the seconds its tasks trained. ``points``: dicts with
    name, values (the point's overrides), results (report's results.csv
    as records) and outcome."""
    names = short_keys(list(axes))
    out = []
    for point in points:
        row = {"point": point["name"], **{names[k]: point["values"][k] for k in axes}}
        results = {r["task"]: r for r in point.get("results") or []}
        seconds = 0.0
        for task in tasks:
            r = results.get(task)
            for m in METRICS.values():
                cell = "–"
                if r is not None:
                    mean, std = float(r[m.key]), float(r.get(f"{m.key}_std") or 0)
                    cell = f"{mean:.4f}" + (f" ± {std:.4f}" if int(r["seeds"]) > 1 else "")
                row[f"{task} {m.label}" if len(tasks) > 1 else m.label] = cell
            if r is not None:
                seconds += float(r["s_per_epoch"]) * int(r["epochs"]) * int(r["seeds"])
        out.append({**row, "s training": "–" if point["outcome"] == "reused" else
                    f"{seconds:.0f}", "how": point["outcome"]})
    return out


def best(points: list[dict], task: str) -> tuple[str, str] | None:
    """(the best point's name, a sentence on whether its lead over the next
    exceeds the spread over seeds), by the study's main metric on ``task``."""
    scored = []
    for point in points:
        r = {x["task"]: x for x in point.get("results") or []}.get(task)
        if r is not None:
            scored.append((float(r[PRIMARY.key]), float(r.get(f"{PRIMARY.key}_std") or 0),
                           int(r["seeds"]), point["name"]))
    if not scored:
        return None
    scored.sort(reverse=PRIMARY.higher_is_better)
    first = scored[0]
    if len(scored) == 1:
        return first[3], f"{first[3]}: {PRIMARY.label} {first[0]:.4f} (the only point)."
    second = scored[1]
    lead = abs(first[0] - second[0])
    text = (f"Best: {first[3]}, {task} {PRIMARY.label} {first[0]:.4f}, ahead of {second[3]} "
            f"({second[0]:.4f}) by {lead:.4f}")
    if min(first[2], second[2]) < 2:
        return first[3], text + "; one seed each cannot tell that from noise (set `seeds`)."
    need = 2 * math.hypot(first[1], second[1])
    return first[3], text + (f", more than the spread over seeds (±{need:.4f})." if lead > need
                             else f", within the spread over seeds (±{need:.4f}): not a "
                             "clear winner.")


def figure(points: list[dict], axes: dict[str, list], task: str) -> bytes | None:
    """The main metric of ``task`` against each swept key, one line per value
    of the other keys; a heatmap where two keys are swept."""
    from matplotlib.figure import Figure

    keys = list(axes)
    names = short_keys(keys)
    value = {}
    for point in points:
        r = {x["task"]: x for x in point.get("results") or []}.get(task)
        if r is not None:
            value[tuple(json.dumps(point["values"][k]) for k in keys)] = float(r[PRIMARY.key])
    if not value or not keys:
        return None
    fig = Figure(figsize=(5.5 * (len(keys) + (len(keys) == 2)), 4))
    axs = fig.subplots(1, len(keys) + (len(keys) == 2), squeeze=False)[0]
    for i, key in enumerate(keys):
        ax, others = axs[i], [k for k in keys if k != key]
        for combo in itertools.product(*(axes[o] for o in others)):
            xs, ys = [], []
            for x in axes[key]:
                at = dict(zip(others, combo, strict=True)) | {key: x}
                found = value.get(tuple(json.dumps(at[k]) for k in keys))
                if found is not None:
                    xs.append(x)
                    ys.append(found)
            label = ", ".join(f"{names[o]}={v}" for o, v in zip(others, combo, strict=True))
            ax.plot([str(x) for x in xs], ys, marker="o", label=label or None)
        ax.set_xlabel(names[key])
        ax.set_ylabel(f"{task} test {PRIMARY.label}")
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    if len(keys) == 2:
        ax, (a, b) = axs[-1], keys
        grid_ = [[value.get((json.dumps(x), json.dumps(y)), math.nan) for x in axes[a]]
                 for y in axes[b]]
        image = ax.imshow(grid_, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(axes[a])), [str(x) for x in axes[a]])
        ax.set_yticks(range(len(axes[b])), [str(y) for y in axes[b]])
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
        for j, row in enumerate(grid_):
            for i, v in enumerate(row):
                if not math.isnan(v):  # dark text on the bright end of viridis
                    light = v >= (image.norm.vmin + image.norm.vmax) / 2
                    ax.text(i, j, f"{v:.3f}", ha="center", va="center", fontsize=8,
                            color="black" if light else "white")
        fig.colorbar(image, ax=ax, label=f"{task} test {PRIMARY.label}")
    fig.suptitle(f"Sweep: {task} test {PRIMARY.label} per point")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def markdown(table: list[dict], verdict: str | None, title: str) -> str:
    head = list(table[0]) if table else ["point"]
    lines = [f"# {title}", "", verdict or "", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r.get(h, "")) for h in head) + " |" for r in table]
    return "\n".join(lines) + "\n"


def write(folder: Path, table: list[dict], verdict: str | None, png: bytes | None,
          title: str) -> Path:
    """The summary as files the user can open: summary.md, summary.csv, sweep.png."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(table, verdict, title)
    if png:
        (folder / "sweep.png").write_bytes(png)
        text += "\n![The sweep](sweep.png)\n"
    (folder / "summary.md").write_text(text)
    with (folder / "summary.csv").open("w", newline="") as f:
        if table:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return folder / "summary.md"


# --- what the flow publishes ----------------------------------------------------------------


def summary(points: list) -> str:
    """``3 points computed (2 stages trained, 7 restored from cache), 1 reused``."""
    from flows.ui import Outcome

    ran = [p for p in points if not p.reused]
    failed = [p.name for p in ran if not p.ok]
    trained = sum(st == Outcome.RAN and s.startswith("train@") for p in ran
                  for s, st in p.states.items())
    restored = sum(st == Outcome.CACHED for p in ran for st in p.states.values())
    return ", ".join([*([f"failed: {', '.join(failed)}"] if failed else []),
                      f"{len(ran)} point{'s' if len(ran) != 1 else ''} computed ({trained} "
                      f"stage{'s' if trained != 1 else ''} trained, {restored} restored from "
                      "cache)", *([f"{len(points) - len(ran)} reused"]
                                  if len(ran) < len(points) else [])])


def publish(root: Path, points: list, axes: dict[str, list], what: str) -> None:
    """The sweep's summary: a table artifact (a row per point), a markdown
    artifact (the best point, the figure's file), and the same as files in
    data/sweeps/<flow run>/."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.runtime import flow_run

    from flows import experiment, ui
    from flows.ui import Outcome
    from mnist_cnn.params import read

    keys = [k.removeprefix(experiment.FORCE) for k in axes]
    touched = touched_tasks(keys, list(read(root / "params.yaml").get("tasks") or {}))
    found = []
    for point in points:
        if point.reused:
            results = experiment.git(root, "show",
                                     f"{experiment.ref_of(root, point.name)}:data/metrics.json")
            records = [{"task": t, **{m.key: v.get(m.short) for m in ui.METRICS.values()},
                        **{f"{m.key}_std": v.get(f"{m.short}_std") for m in ui.METRICS.values()},
                        "seeds": 2 if any(k.endswith("_std") for k in v) else 1,
                        "s_per_epoch": 0, "epochs": 0}
                       for t, v in json.loads(results).items()]
            outcome = "reused"
        else:
            records = point.results
            states = point.states.items()
            outcome = ("failed" if not point.ok else
                       "trained" if any(st == Outcome.RAN and s.startswith("train@")
                                        for s, st in states) else
                       "restored" if any(st == Outcome.CACHED for _, st in states) else
                       "up to date")  # the commit's own results: nothing to compute
        found.append({"name": point.name, "values": {k.removeprefix(experiment.FORCE): v
                                                     for k, v in point.overrides.items()},
                      "results": records, "outcome": outcome})
    axes = {k.removeprefix(experiment.FORCE): v for k, v in axes.items()}
    table = rows(found, axes, touched)
    winner = best(found, touched[0])
    verdict = winner[1] if winner else "No point has results."
    name = flow_run.get_name() or "sweep"
    png = figure(found, axes, touched[0])
    where = write(root / FOLDER / name, table, verdict, png, f"Sweep {name}: {what}")
    create_table_artifact(table, key=SUMMARY_KEY, description=f"{verdict} {what}")
    create_markdown_artifact(
        f"{verdict}\n\nThe table and the figure: `{where}` (and `{where.parent / 'sweep.png'}`)."
        "\n`dvc exp show` and `make compare` list every point.",
        key=f"{SUMMARY_KEY}-best", description=verdict)
