"""Compare experiments in one compact view (``make compare``).

The workspace, the commit and every ``dvc exp run`` on it, from
``dvc exp show --json``: first each experiment's params that differ from the
others, then one row per task with each experiment's test metrics
(mnist_cnn.metrics: accuracy in %, loss, ...), the best of each task by the
primary metric marked ``*``. Fits a 120-column terminal: experiments beyond
what fits go to further blocks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from mnist_cnn.metrics import METRICS, PRIMARY
from mnist_cnn.params import flatten

WIDTH = 120
SUMMARY = "data/metrics.json"  # the report's summary: {task: {acc, loss, ...}}
CELL = len(METRICS) * 6 + 1  # "98.6/.040*" plus spacing: each part at most 5 characters


def cell(values: tuple) -> str:
    """``98.6/.040``: each metric's compact figure, in the registry's order."""
    if any(v is None for v in values):
        return "-"
    return "/".join(m.compact(v) for m, v in zip(METRICS.values(), values, strict=True))


def _row(entry: dict, name: str) -> dict:
    data = entry.get("data") or {}
    params = {key: json.dumps(value) if isinstance(value, list) else value for key, value in
              flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {})).items()}
    summary = ((data.get("metrics") or {}).get(SUMMARY) or {}).get("data") or {}
    scores = {task: tuple(m.get(metric.short) for metric in METRICS.values())
              for task, m in summary.items()}
    return {"name": name, "params": params, "scores": scores}


def rows(show: list[dict]) -> list[dict]:
    """Workspace, commits and their experiments, from `dvc exp show --json`."""
    out = []
    for entry in show:
        name = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace"
                                     else entry["rev"][:7])
        out.append(_row(entry, name))
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", [])[:1]:
                out.append(_row(rev, exp.get("name") or rev.get("name") or rev["rev"][:7]))
    return out


def changed_params(rows: list[dict]) -> dict[str, str]:
    """Each experiment's params that differ between experiments, as ``key=value``."""
    keys = sorted({k for r in rows for k in r["params"]})
    changed = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    return {r["name"]: ", ".join(f"{k.removeprefix('tasks.')}={r['params'].get(k)}"
                                 for k in changed) for r in rows}


def table(rows: list[dict], width: int = WIDTH) -> str:
    tasks = list(dict.fromkeys(t for r in rows for t in r["scores"]))
    names = [r["name"] for r in rows]
    name_w = max([len("experiment"), *map(len, names)])
    lines = ["experiment".ljust(name_w) + "  changed params"]
    for name, diff in changed_params(rows).items():
        text = f"{name.ljust(name_w)}  {diff or '-'}"
        lines.append(text if len(text) <= width else text[: width - 1] + "…")
    task_w = max([len("task"), *map(len, tasks)])
    first = list(METRICS.values()).index(PRIMARY)
    sign = 1 if PRIMARY.higher_is_better else -1
    primary = {t: [v for r in rows if (v := r["scores"].get(t, (None,) * len(METRICS))[first])
                   is not None] for t in tasks}
    best = {t: max(vs, key=lambda v: sign * v) if vs else None for t, vs in primary.items()}
    # Each column as wide as its experiment's whole name; as many columns a block as fit.
    widths = [max(CELL, len(r["name"]) + 2) for r in rows]
    blocks, start = [], 0
    while start < len(rows):
        end, used = start + 1, task_w + widths[start]
        while end < len(rows) and used + widths[end] <= width:
            used, end = used + widths[end], end + 1
        blocks.append(range(start, end))
        start = end
    for block in blocks:
        lines += ["", "task".ljust(task_w) + "".join(  # aligned with the numbers, not the *
            rows[i]["name"].rjust(widths[i] - 1) + " " for i in block).rstrip()]
        for t in tasks:
            cells = []
            for i in block:
                values = rows[i]["scores"].get(t, (None,) * len(METRICS))
                mark = "*" if values[first] is not None and values[first] == best[t] \
                    and len(rows) > 1 else " "
                cells.append((cell(values) + mark).rjust(widths[i]))
            lines.append((t.ljust(task_w) + "".join(cells)).rstrip())
    shown = " / ".join(f"test {m.label} {m.compact_unit}".rstrip() for m in METRICS.values())
    lines += ["", f"cells: {shown} (mean over seeds); * the best {PRIMARY.label} of the task"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=WIDTH)
    args = parser.parse_args(argv)
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    print(table(rows(json.loads(proc.stdout)), args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
