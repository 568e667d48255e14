"""The floors ``make bench`` compares the no-op runs with: what the libraries
cost before this project's code does anything.

- ``prefect``: a flow in this environment that imports what flows.pipeline
  imports and ends as many no-op task runs as the study has stages.
- ``dvc-checks``: DVC's own part of a no-op flow run, without Prefect: open
  the project, build its graph and ask DVC whether each stage is stale, in
  one process (as the flow does); prints the seconds, imports excluded.
- A DVC project with as many trivial stages (``make_trivial``), for a no-op
  ``dvc repro`` without TensorFlow, params or data.

    python -m benchmarks.floors prefect N
    python -m benchmarks.floors dvc-checks PROJECT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def prefect_floor(n: int) -> None:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    import flows.pipeline  # noqa: F401  (the same imports as the flow)

    @task
    def noop(i: int) -> int:
        return i

    @flow(name="floor", task_runner=ThreadPoolTaskRunner(max_workers=16))
    def floor() -> None:
        for i in range(n):
            noop.submit(i).wait()

    floor()


def dvc_checks(project: Path) -> float:
    """Seconds DVC's checks take, imports excluded (the flow pays those in the
    Prefect floor already)."""
    from flows.dvc_project import DvcProject

    start = time.perf_counter()
    with DvcProject(project) as dvc:
        stale = [s for s in dvc.graph if dvc.is_stale(s)]
    if stale:
        sys.exit(f"not a no-op: {', '.join(stale)} stale")
    return time.perf_counter() - start


def make_trivial(dest: Path, stages: int) -> None:
    """A git+DVC project of ``stages`` stages in a chain, each copying its
    input, with one params key each (run ``dvc repro`` once to build it)."""
    dest.mkdir(parents=True)
    (dest / "params.yaml").write_text("".join(f"s{i}: {i}\n" for i in range(stages)))
    lines = ["stages:"]
    for i in range(stages):
        src = "params.yaml" if i == 0 else f"out{i - 1}.txt"
        lines += [f"  s{i}:", f"    cmd: cp {src} out{i}.txt", f"    deps: [{src}]",
                  f"    params: [s{i}]", f"    outs: [out{i}.txt]"]
    (dest / "dvc.yaml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    if what == "prefect":
        prefect_floor(int(arg))
    elif what == "dvc-checks":
        print(f"{dvc_checks(Path(arg)):.3f}")
    else:
        sys.exit(f"unknown floor {what!r}")
