"""Compare experiments in one compact view (``make compare``).

The workspace, the commit and every ``dvc exp run`` on it, from
``dvc exp show --json``: first each experiment's params that differ from the
others, then one row per task with each experiment's test accuracy (%) and
loss, the best accuracy of each task marked ``*``. Fits a 120-column
terminal: experiments beyond what fits go to further blocks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WIDTH = 120
METRICS = "data/metrics.json"  # the report's summary: {task: {acc, loss, ...}}
CELL = 12  # "98.6/.040*" plus spacing


def _flat(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def cell(acc: float | None, loss: float | None) -> str:
    """``98.6/.040``: accuracy in % and loss, 9 characters at most."""
    if acc is None or loss is None:
        return "-"
    pct = "100" if acc >= 0.9995 else f"{100 * acc:.1f}"
    digits = 3 if loss < 1 else 2 if loss < 10 else 1 if loss < 100 else 0
    return f"{pct}/{f'{loss:.{digits}f}'.removeprefix('0')}"


def _row(entry: dict, name: str) -> dict:
    data = entry.get("data") or {}
    params = _flat((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    summary = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
    scores = {task: (m.get("acc"), m.get("loss")) for task, m in summary.items()}
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
    per_block = max(1, (width - task_w) // CELL)
    best = {t: max((r["scores"].get(t, (None,))[0] or -1) for r in rows) for t in tasks}
    for start in range(0, len(rows), per_block):
        block = rows[start:start + per_block]
        lines += ["", "task".ljust(task_w) + "".join(  # aligned with the numbers, not the *
            (r["name"] if len(r["name"]) < CELL - 1 else r["name"][:CELL - 3] + "…"
             ).rjust(CELL - 1) + " " for r in block).rstrip()]
        for t in tasks:
            cells = []
            for r in block:
                acc, loss = r["scores"].get(t, (None, None))
                mark = "*" if acc is not None and acc == best[t] and len(rows) > 1 else " "
                cells.append((cell(acc, loss) + mark).rjust(CELL))
            lines.append((t.ljust(task_w) + "".join(cells)).rstrip())
    lines += ["", "cells: test accuracy % / test loss (mean over seeds); * the best accuracy "
              "of the task"]
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
