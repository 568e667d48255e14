"""Compare experiments in one compact table (``make compare``).

One row per experiment (the workspace, the commit and every ``dvc exp run``
on it): the params that differ between rows, then each task's test accuracy
(%) and loss, from ``dvc exp show --json``. Fits a 120-column terminal;
``dvc exp show`` has every column in full.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

WIDTH = 120
METRICS = re.compile(r"data/eval/(?P<task>[^/]+)/metrics\.json$")
# Shorter names for the params that differ and for the task columns.
PARAM_WORDS = [("tasks.", ""), ("optimizer.", ""), ("initial_learning_rate", "lr0"),
               ("learning_rate", "lr")]
TASK_WORDS = [("task", ""), ("_epochs", "ep"), ("three_conv", "3c"), ("one_conv", "1c"),
              ("maxpool", "mp")]


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
    scores = {}
    for path, content in (data.get("metrics") or {}).items():
        if (m := METRICS.search(path)) and content.get("data"):
            scores[m["task"]] = (content["data"].get("test_accuracy"),
                                 content["data"].get("test_loss"))
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


def _shorten(text: str, words) -> str:
    for long, short in words:
        text = text.replace(long, short)
    return text


def table(rows: list[dict], width: int = WIDTH) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    changed = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    tasks = list(dict.fromkeys(t for r in rows for t in r["scores"]))
    heads = [_shorten(t, TASK_WORDS)[:8] for t in tasks]
    col = 10  # a cell and a space
    name_w = min(16, max(len("experiment"), *(len(r["name"]) for r in rows)))
    param_w = max(12, width - name_w - 2 - col * len(tasks))

    def diff(r):
        text = ", ".join(f"{_shorten(k, PARAM_WORDS)}={r['params'].get(k)}" for k in changed)
        return text if len(text) <= param_w else text[: param_w - 1] + "…"

    lines = ["experiment".ljust(name_w) + "  " + "changed params".ljust(param_w)
             + "".join(h.rjust(col) for h in heads)]
    for r in rows:
        lines.append(r["name"][:name_w].ljust(name_w) + "  " + diff(r).ljust(param_w)
                     + "".join(cell(*r["scores"].get(t, (None, None))).rjust(col)
                               for t in tasks))
    lines.append(f"cells: test accuracy % / test loss; columns: {', '.join(tasks)}")
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
