"""What DVC's cache saves: reverting a hyperparameter, pulling instead of training.

Going back to a variant computed before, and a fresh clone that pulls
instead of training.

Works on an existing, fully built project DIR (a clone of this repository
whose ``dvc repro`` is done; dvc.lock committed or not) and measures, on
throw-away copies of it:

1. ``dvc repro`` after setting ``tasks.task2.optimizer.learning_rate`` to a
   new value (``--lr``): train@task2, evaluate@task2 and report run; then
   ``dvc repro`` after setting it back: the same three stages are restored
   from DVC's run-cache ("Stage 'train@task2' is cached - skipping run").
2. The same pair as flow runs (``python -m flows.pipeline``, a temporary
   Prefect server running; only the flow runs are timed): the three task
   runs end ``Completed``, then ``Cached``; the up-to-date stages have none
   but the check's (one task run, ``check``, listing their verdicts).
3. A fresh ``git clone``: ``make pull`` (``python -m tools.share pull`` from a
   local-folder DVC remote the copy pushed to with ``make push``) and then
   ``dvc repro``, which must run nothing, against the full ``make run``
   (``--full-run-seconds``, measured separately).

DIR is only read. Each copy is a ``git clone`` of DIR plus its working tree's
uncommitted changes (committed in the copy), with a DVC cache whose files are
hard links to DIR's (a plain copy across file systems): what a copy adds,
such as the new learning rate's models, stays in the copy, so DIR's
run-cache never learns the new value and the measurement can be rerun.
Edits to params.yaml go through DVC's own YAML writer, as ``dvc exp run -S``.

    python -m benchmarks.cache --project DIR [--full-run-seconds N] [--lr 0.02]
                               [--out benchmarks/cache.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import cpu_model, prefect_server, task_run_states, timed
from flows.ui import run_label as run_name
from mnist_cnn.params import read
from tests.sandbox import ROOT, Project, default_mnist, edit_params, project_env

OUT = ROOT / "benchmarks" / "cache.md"
RAN = re.compile(r"Running stage '([^']+)'")
CACHED = re.compile(r"Stage '([^']+)' is cached - skipping run")
UP_TO_DATE = "Data and pipelines are up to date"
PULLED = re.compile(r"pull: (\d+) file\(s\) transferred")


class BenchmarkError(RuntimeError):
    """The copy did not behave as the measurement assumes; its numbers would mislead."""


# --- throw-away copies of DIR ----------------------------------------------------------


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def git_files(project: Path, *args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=project, capture_output=True,
                         text=True, check=True).stdout
    return [f for f in out.split("\0") if f]


def dvc_cache_dir(project: Path, env: dict[str, str]) -> Path:
    """DIR's DVC cache, wherever its config puts it."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=project, env=env,
                          capture_output=True, text=True, check=True)
    return Path(proc.stdout.strip())


def workspace_copy(project: Path, cache: Path, dest: Path, mnist: Path | None) -> Project:
    """``dest``: DIR's working tree (committed there), its outputs checked out
    from a cache of hard links to DIR's; must be up to date, as DIR is."""
    subprocess.run(["git", "clone", "-q", str(project), str(dest)], check=True)
    copy = Project(dest, project_env(mnist, dest.parent / f"{dest.name}-home"))
    # Uncommitted changes (dvc.lock, params.yaml, metrics) and untracked files
    # git does not ignore; -m lists deleted files too.
    for rel in git_files(project, "-m", "-o", "--exclude-standard"):
        src, dst = project / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.is_file():
            dst.unlink()
    if copy.run("git", "status", "--porcelain").stdout.strip():
        copy.commit(f"{project}'s working tree")
    shutil.copytree(cache, dest / ".dvc" / "cache", copy_function=_link_or_copy)
    copy.dvc("checkout")
    stale = json.loads(copy.dvc("status", "--json").stdout or "{}")
    if stale:
        raise BenchmarkError(f"{project} is not fully built (or its cache lacks outputs): "
                             f"`dvc status` in a copy lists {sorted(stale)}; run `dvc repro` "
                             "there first")
    return copy


# --- one learning rate, changed and set back --------------------------------------------


def learning_rate(project: Project, task: str) -> float:
    value = read(project.path / "params.yaml")["tasks"][task]["optimizer"].get("learning_rate")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BenchmarkError(f"tasks.{task}.optimizer.learning_rate is {value!r}, not a "
                             "constant this benchmark can change")
    return value


def set_learning_rate(project: Project, task: str, value: float) -> None:
    edit_params(project.path,
                lambda data: data["tasks"][task]["optimizer"].__setitem__("learning_rate", value))


def affected(task: str) -> list[str]:
    """The stages a change to ``tasks.<task>`` makes stale, in pipeline order."""
    return [f"train@{task}", f"evaluate@{task}", "report"]


def not_seen_before(task: str, lr: float) -> str:
    return (f"train@{task} was restored from the run-cache: {task} has been trained with "
            f"learning rate {lr} in DIR before; pass a value never run with --lr")


def repro_pair(project: Project, task: str, old: float, new: float) -> dict:
    dvc = (sys.executable, "-m", "dvc", "repro")
    set_learning_rate(project, task, new)
    retrain, proc = timed(project, *dvc)
    if f"train@{task}" in CACHED.findall(proc.stdout):
        raise BenchmarkError(not_seen_before(task, new))
    if set(RAN.findall(proc.stdout)) != set(affected(task)):
        raise BenchmarkError(f"dvc repro with a new learning rate ran "
                             f"{sorted(set(RAN.findall(proc.stdout)))}, expected "
                             f"{sorted(affected(task))}:\n{proc.stdout}")
    set_learning_rate(project, task, old)
    revert, proc = timed(project, *dvc)
    ran, cached = set(RAN.findall(proc.stdout)), set(CACHED.findall(proc.stdout))
    if ran or cached != set(affected(task)):
        raise BenchmarkError(f"dvc repro after the revert ran {sorted(ran)} and restored "
                             f"{sorted(cached)}; expected to restore {sorted(affected(task))} "
                             f"and run nothing:\n{proc.stdout}")
    return {"retrain": retrain, "revert": revert}


def flow_states(proc: subprocess.CompletedProcess, expected: dict[str, str],
                what: str) -> dict[str, str]:
    """The flow run's task-run states, checked against ``expected``: the
    check, then one task run per stage that did work (none for the stages
    that were up to date)."""
    log = proc.stdout + proc.stderr
    states = task_run_states(log)
    if states != {"check": "Completed", **expected}:
        raise BenchmarkError(f"flow run {what}: task-run states {states}, expected "
                             f"{expected} beside the check:\n{log[-4000:]}")
    return states


def flow_seconds(output: str) -> float:
    """Flow time: from "Beginning flow run" to "Finished in state" in its log."""
    stamps = [line[:12] for line in output.splitlines()
              if "Beginning flow run" in line or ("Flow run" in line and "Finished in" in line)]
    t0, t1 = (sum(float(p) * f for p, f in zip(s.split(":"), (3600, 60, 1), strict=True))
              for s in (stamps[0], stamps[-1]))
    return t1 - t0


def flow_pair(project: Project, task: str, old: float, new: float, home: Path,
              workers: int) -> dict:
    flow = (sys.executable, "-m", "flows.pipeline", "--workers", str(workers))
    names = [run_name(s) for s in affected(task)]
    with prefect_server(home) as url:
        project.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(home))
        # Warm-up, not timed: the server's first flow run registers the flow.
        warm, proc = timed(project, *flow)
        flow_states(proc, {}, "before any change")
        set_learning_rate(project, task, new)
        retrain, proc = timed(project, *flow)
        states = task_run_states(proc.stdout + proc.stderr)
        if states.get(run_name(f"train@{task}")) == "Cached":
            raise BenchmarkError(not_seen_before(task, new))
        flow_states(proc, dict.fromkeys(names, "Completed"), "with a new learning rate")
        retrain_log = flow_seconds(proc.stdout + proc.stderr)
        set_learning_rate(project, task, old)
        revert, proc = timed(project, *flow)
        flow_states(proc, dict.fromkeys(names, "Cached"), "after the revert")
        revert_log = flow_seconds(proc.stdout + proc.stderr)
    return {"warm_up": warm, "retrain": retrain, "revert": revert,
            "retrain_log": retrain_log, "revert_log": revert_log}


# --- a fresh clone that pulls --------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pull_and_repro(source: Project, remote: Path, dest: Path) -> dict:
    """``dest``: a clone of ``source``, which pushed to ``remote`` before; its
    ``make pull`` and ``dvc repro``, timed."""
    subprocess.run(["git", "clone", "-q", str(source.path), str(dest)], check=True)
    # No MNIST source: a stage that had to run would fail rather than download.
    clone = Project(dest, project_env(None, dest.parent / f"{dest.name}-home"))
    clone.dvc("remote", "add", "--local", "-d", "bench", str(remote))
    pull, proc = timed(clone, sys.executable, "-m", "tools.share", "pull")
    files = PULLED.search(proc.stdout)
    repro, proc = timed(clone, sys.executable, "-m", "dvc", "repro")
    if RAN.findall(proc.stdout) or UP_TO_DATE not in proc.stdout:
        raise BenchmarkError(f"dvc repro after make pull in a fresh clone was not a no-op:\n"
                             f"{proc.stdout}")
    return {"pull": pull, "repro": repro, "files": int(files.group(1)) if files else None}


# --- cache.md ----------------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(facts: dict, repro: dict, flow: dict, fresh: dict, args) -> str:
    task, old, new = facts["task"], facts["old_lr"], args.lr
    stages = ", ".join(f"`{s}`" for s in affected(task))
    runs = ", ".join(f"`{run_name(s)}`" for s in affected(task))
    full = args.full_run_seconds
    pulled = fresh["pull"] + fresh["repro"]
    lines = [
        "# The cache: reverting a hyperparameter, pulling instead of training", "",
        f"Measured by `python -m benchmarks.cache` on {facts['date']}, on a built project "
        f"with {facts['train_size']:,} training and {facts['test_size']:,} test images, "
        f"{plural(facts['seeds'], 'seed')} per task, {facts['tasks']} tasks ({task}: "
        f"{plural(facts['epochs'], 'epoch')}). Times are wall seconds of whole commands.", "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores (load average {facts['load'][0]:.1f} "
        f"at the start, {facts['load'][1]:.1f} at the end). The machine may be shared with "
        "other work, so the ratios say more than the seconds.", "",
        f"## Reverting {task}'s learning rate", "",
        f"`tasks.{task}.optimizer.learning_rate` set from {old} to {new} (DVC's YAML writer), "
        f"which retrains: {stages} run. Then set back to {old}: the same stages are restored "
        "from DVC's run-cache (`dvc repro`: \"Stage '...' is cached - skipping run\"; the "
        f"flow: task runs {runs} end `Cached`), every other stage is up to date.", "",
        "| | `dvc repro` | flow run |",
        "|---|---|---|",
        f"| retrain ({old} → {new}) | {repro['retrain']:.1f} | {flow['retrain']:.1f} |",
        f"| revert ({new} → {old}), restored from the run-cache | {repro['revert']:.1f} | "
        f"{flow['revert']:.1f} |",
        f"| revert / retrain | **{repro['revert'] / repro['retrain']:.3f}** | "
        f"**{flow['revert'] / flow['retrain']:.3f}** |",
        "",
        f"Flow runs: `python -m flows.pipeline --workers {args.workers}` with a Prefect server "
        "already running (its start is not timed); flow time alone, from Prefect's log: "
        f"retrain {flow['retrain_log']:.1f}, revert {flow['revert_log']:.1f}. A no-op flow run "
        f"before them (one task run, the check; not in the table) took "
        f"{flow['warm_up']:.1f} s.",
        "",
        "## A fresh clone: `make pull` + `dvc repro` against `make run`", "",
        "A `git clone` of the project; `make pull` (`python -m tools.share pull`: the "
        "outputs, the run-cache and its outputs) from a local-folder DVC remote that the "
        "built project filled with `make push` "
        f"({facts['remote_mb']:,.0f} MB; the push took {facts['push']:.1f} s); then "
        "`dvc repro`, which runs nothing. Installing the environment (`make install`) is "
        "in neither column.", "",
        "| measurement | seconds |",
        "|---|---|",
        f"| `make pull` ({fresh['files'] if fresh['files'] is not None else '?'} files) | "
        f"{fresh['pull']:.1f} |",
        f"| `dvc repro` after it (nothing runs) | {fresh['repro']:.1f} |",
        f"| pull + repro | {pulled:.1f} |",
        f"| the full `make run` (measured separately, `--full-run-seconds`) | "
        f"{f'{full:.0f}' if full else 'not given'} |",
        f"| (pull + repro) / full run | **{f'{pulled / full:.3f}' if full else '–'}** |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, metavar="DIR",
                        help="a built project: a git clone of this repository after `dvc "
                        "repro` (only read)")
    parser.add_argument("--full-run-seconds", type=float, metavar="N",
                        help="wall time of the full `make run` on this machine (measured "
                        "separately), for the fresh clone's ratio")
    parser.add_argument("--task", default="task2", help="the task whose learning rate "
                        "changes (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.02,
                        help="the new learning rate, one the project never ran "
                        "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="flow workers")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="Markdown file to write (default: %(default)s)")
    parser.add_argument("--work", type=Path, help="folder for the copies (default: a "
                        "temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    if not (project / "dvc.yaml").is_file() or not (project / ".git").exists():
        parser.error(f"{project}: not a git clone of this project (no dvc.yaml or .git)")

    load = [os.getloadavg()[0]]
    with contextlib.ExitStack() as stack:
        if args.work:
            args.work.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="cache-bench-", dir=args.work))
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cache-bench-")))
        mnist = default_mnist() if default_mnist().is_file() else None
        cache = dvc_cache_dir(project, project_env(None, work / "home"))
        print(f"copies of {project} (cache {cache}) in {work}", flush=True)

        first = workspace_copy(project, cache, work / "repro", mnist)
        old = learning_rate(first, args.task)
        if old == args.lr:
            parser.error(f"--lr {args.lr} is {args.task}'s learning rate already")
        params = read(first.path / "params.yaml")
        facts = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
                 "task": args.task, "old_lr": old, "train_size": params["data"]["train_size"],
                 "test_size": params["data"]["test_size"], "seeds": params.get("seeds", 1),
                 "tasks": len(params["tasks"]), "epochs": params["tasks"][args.task]["epochs"]}

        # The remote holds what DIR has, before any variant computed here.
        remote = work / "remote"
        first.dvc("remote", "add", "--local", "-d", "bench", str(remote))
        facts["push"], _ = timed(first, sys.executable, "-m", "tools.share", "push")
        facts["remote_mb"] = folder_bytes(remote) / 1e6
        print(f"pushed {facts['remote_mb']:.0f} MB in {facts['push']:.1f} s", flush=True)

        repro = repro_pair(first, args.task, old, args.lr)
        print(f"dvc repro: retrain {repro['retrain']:.1f} s, revert {repro['revert']:.1f} s",
              flush=True)
        second = workspace_copy(project, cache, work / "flow", mnist)
        flow = flow_pair(second, args.task, old, args.lr, work / "prefect-home", args.workers)
        print(f"flow: retrain {flow['retrain']:.1f} s, revert {flow['revert']:.1f} s",
              flush=True)
        fresh = pull_and_repro(first, remote, work / "fresh")
        print(f"fresh clone: pull {fresh['pull']:.1f} s, repro {fresh['repro']:.1f} s",
              flush=True)
        load.append(os.getloadavg()[0])
        facts["load"] = load
    args.out.write_text(render(facts, repro, flow, fresh, args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
