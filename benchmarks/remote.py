"""What running stages on workers that share only the DVC remote costs
(``python -m flows.pipeline --dask-address ... --remote NAME``), beside the
same study by ``dvc repro`` and by the flow on workers that share the project
folder. Each variant runs the whole study from scratch on a copy of the
project, in this one run, one after the other; two Dask worker processes on
this machine, each (in remote mode) with a folder and a copy of the code of
its own, and a local-folder DVC remote.

Also what each stage moves, from the run's dvc.lock: the bytes of the
upstream outputs it reads (fetched from the remote by a worker that does not
hold them yet) and of its outputs (pushed by the worker, fetched by the flow).

    python -m benchmarks.remote [--train-size 2000] [--test-size 500] [--epochs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask
from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

from benchmarks.run import prefect_server
from flows.dvc_internals import load_yaml
from flows.executor import CODE, CODE_ENV, PROVENANCE, WORK_ENV
from tests.sandbox import ROOT, Project, default_mnist, make_project

WORKERS = 2


def sized(train_size: int, test_size: int, epochs: int | None):
    def edit(data):
        data["seeds"] = 1
        data["data"].update(train_size=train_size, test_size=test_size)
        if epochs:
            for task in data["tasks"].values():
                task["epochs"] = epochs
    return edit


def remote_cluster(folder: Path) -> SpecCluster:
    workers = {}
    for i in range(WORKERS):
        home = folder / f"worker{i}"
        for package in CODE:
            shutil.copytree(ROOT / package, home / "code" / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for name in PROVENANCE:
            shutil.copy2(ROOT / name, home / "code" / name)
        workers[f"w{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "local_directory": str(home / "dask"),
            "env": {CODE_ENV: str(home / "code"), WORK_ENV: str(home / "work"),
                    "MNIST_NPZ": str(default_mnist())}}}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return SpecCluster(scheduler={"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard_address": None}}, workers=workers)


def timed(project: Project, *cmd: str) -> float:
    start = time.perf_counter()
    project.run(*cmd)
    return time.perf_counter() - start


def moved(project: Project) -> list[tuple[str, int, int]]:
    """(stage, bytes read from upstream outputs, bytes of its outputs) per stage."""
    stages = load_yaml(str(project.path / "dvc.lock"))["stages"]
    outs = {o["path"]: int(o.get("size") or 0) for s in stages.values() for o in s.get("outs", [])}
    rows = []
    for name, stage in stages.items():
        reads = [d["path"] for d in stage.get("deps", [])]
        fetched = sum(size for path, size in outs.items()
                      if any(path == r or path.startswith(f"{r}/") for r in reads))
        rows.append((name, fetched, sum(int(o.get("size") or 0) for o in stage.get("outs", []))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1,
                        help="every task's epochs (0: the study's own)")
    args = parser.parse_args(argv)
    edit = sized(args.train_size, args.test_size, args.epochs)
    flow = (sys.executable, "-m", "flows.pipeline", "--workers", str(WORKERS))
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp, \
            prefect_server(Path(tmp) / "prefect") as url:
        work = Path(tmp)
        wall = {}
        repro = make_project(work / "repro", default_mnist(), edit)
        wall["dvc repro"] = timed(repro, sys.executable, "-m", "dvc", "repro")

        shared = make_project(work / "shared", default_mnist(), edit)
        shared.env.update(PREFECT_API_URL=url)
        with LocalCluster(n_workers=WORKERS, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            wall["flow, workers share the project folder"] = timed(
                shared, *flow, "--dask-address", cluster.scheduler_address)

        remote = make_project(work / "remote", None, edit)
        remote.dvc("remote", "add", "-d", "team", str(work / "dvc-remote"))
        remote.commit("remote")
        remote.env.update(PREFECT_API_URL=url)
        with remote_cluster(work / "cluster") as cluster:
            wall["flow, workers share only the DVC remote"] = timed(
                remote, *flow, "--dask-address", cluster.scheduler_address, "--remote", "team")
        for variant in ("shared", "remote"):
            project = shared if variant == "shared" else remote
            for metrics in (project.path / "data/eval").rglob("metrics.json"):
                theirs = repro.path / metrics.relative_to(project.path)
                assert metrics.read_bytes() == theirs.read_bytes(), (variant, metrics)
        rows = moved(remote)
    print(f"\n{args.train_size:,} training and {args.test_size:,} test images, "
          f"{args.epochs or 'the study s'} epoch(s) per task, one seed, {WORKERS} Dask worker "
          f"processes on {os.cpu_count()} cores (metrics byte-equal in all three)\n")
    print("| how | wall s | × dvc repro |\n|---|---|---|")
    for how, seconds in wall.items():
        print(f"| {how} | {seconds:.0f} | {seconds / wall['dvc repro']:.2f} |")
    print("\n| stage | MB read from upstream outputs | MB of its outputs |\n|---|---|---|")
    for name, fetched, pushed in rows:
        print(f"| {name} | {fetched / 1e6:.1f} | {pushed / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
