"""``make bench``: how fast the pipeline trains and how little it adds.

Writes benchmarks/results.md. Every comparison is measured in this one run,
alternating the variants (A B, then B A) and taking medians, so a busy
machine slows both sides alike. Three parts:

1. Training throughput of the train stage against the notebook's way of
   training (benchmarks/plain_keras.py), same model, data and epochs.
2. The edit-to-result loop: ``dvc repro`` (and ``python -m tools.dvc
   repro``, what ``make run`` runs) against the flow, alternated: no-op runs
   on the study and at 200 tasks, runs after one changed hyperparameter,
   and how long a TensorFlow stage takes to start, from a ready interpreter
   and from a plain process.
3. The whole study run by ``dvc repro``, against the flow with concurrent
   stages.
4. A sweep of four learning rates through the flow, against the same four
   points by ``dvc exp run -S`` one after another and by DVC's queue.

Every part trains one seed per task (``seeds: 1``), as when the published
figures were measured.

    python -m benchmarks.run [--images 15000] [--epochs 3] [--reps 2] [--study-images 6000]
                             [--out benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.floors import make_trivial
from flows.dvc_internals import modify_yaml
from flows.dvc_project import DvcProject
from mnist_cnn.dataset import SPLIT_SIZES
from mnist_cnn.layout import epoch_log
from mnist_cnn.params import Task
from tests.sandbox import ROOT, Project, default_mnist, make_project, shrink
from tools.prefect_server import IDLE_SERVICES

OUT = ROOT / "benchmarks" / "results.md"
THROUGHPUT_TASKS = ("task1", "task2", "task4_sgd")


# --- machine -------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def matmul_peak(dtype: str = "float32", n: int = 2048) -> float:
    """Best GFLOP/s of a large TensorFlow matmul on this CPU (all cores)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    mm = tf.function(tf.matmul)
    mm(a, b).numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            out = mm(a, b)
        out.numpy()
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * n**3 / best / 1e9


def forward_flops(task: str, spec: Task) -> int:
    """Multiply-adds x 2 of one image's forward pass through the task's model."""
    from mnist_cnn.models import build_model

    flops = 0
    for layer in build_model(spec, name=task).layers:
        kind, out = type(layer).__name__, layer.output.shape
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            flops += 2 * kh * kw * cin * cout * out[1] * out[2]
        elif kind == "Dense":
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops


# --- helpers -----------------------------------------------------------------------


def timed(project: Project, *cmd: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = project.run(*cmd)
    return time.perf_counter() - start, proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path):
    """A Prefect server on loopback, for the duration of the block."""
    port = free_port()
    # As `make ui` runs it: the services that record task runs and events on.
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               **dict.fromkeys(IDLE_SERVICES, "false"))
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if subprocess.run([sys.executable, "-m", "prefect", "server", "status"],
                                  env=dict(env, PREFECT_API_URL=url),
                                  capture_output=True).returncode == 0:
                    break
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


TASK_RUN_STATE = re.compile(r"Task run '([^']+)' - Finished in state (\w+)\(")


def task_run_states(output: str) -> dict[str, str]:
    """{task run name: final state name} from a flow run's log, e.g.
    ``{"train[task1]": "Completed", "check": "Completed"}``."""
    return {name.split(" · ")[0]: state for name, state in TASK_RUN_STATE.findall(output)}


LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| Task run '([^']+)' - (.*)$",
                      re.M)


def log_lines(output: str):
    """(seconds of the day, task run name, message) of a flow run's task-run log lines."""
    for h, m, sec, name, text in LOG_TIME.findall(output):
        yield int(h) * 3600 + int(m) * 60 + float(sec), name, text


def stage_starts(output: str) -> dict[str, float]:
    """Seconds from the flow handing each stage its command (its ``> python
    -m ...`` line) to the stage's first line of its own (``[k/n] ...``),
    from a flow run's log, by the stage kind (train, evaluate, ...)."""
    handed, starts = {}, {}
    for t, name, text in log_lines(output):
        kind = name.split("[")[0].split(" ")[0]
        if text.startswith("> "):
            handed[kind] = t
        elif kind in handed and re.match(r"\[\d+/\d+\] ", text) and kind not in starts:
            starts[kind] = t - handed[kind]
    return starts


# --- 1. throughput -------------------------------------------------------------------


def throughput(work: Path, images: int, epochs: int, reps: int) -> pd.DataFrame:
    def setup(data):
        data["seeds"] = 1
        data["data"].update(train_size=images, test_size=SPLIT_SIZES["test"])
        for name in THROUGHPUT_TASKS:
            data["tasks"][name]["epochs"] = epochs

    project = make_project(work / "throughput", default_mnist(), setup)
    project.dvc("repro", "preprocess")
    # Written by DVC's YAML writer, read back by its reader, as params.yaml is.
    shutil.copyfile(project.path / "params.yaml", project.path / "params-bf16.yaml")
    with modify_yaml(project.path / "params-bf16.yaml") as bf16:
        bf16["train"]["precision"] = "mixed_bfloat16"

    def plain(task):
        _, out = timed(project, sys.executable, "-m", "benchmarks.plain_keras", task,
                       "--data", "data/prepared", "--epochs", str(epochs))
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return result["epoch_seconds"], result["test_accuracy"]

    def stage(task, params="params.yaml"):
        out = work / "stage-out"
        project.run(sys.executable, "-m", "stages.train", "--task", task, "--data",
                    "data/prepared", "--models", str(out / "models"), "--params", params)
        project.run(sys.executable, "-m", "stages.evaluate", "--task", task, "--models",
                    str(out / "models"), "--data", "data/prepared", "--out",
                    str(out / "eval"), "--params", params)
        seconds = pd.read_csv(epoch_log(out / "models" / task, 42, "epoch_seconds"), sep="\t")
        accuracy = json.loads((out / "eval" / task / "metrics.json").read_text())
        return seconds["epoch_seconds"].tolist(), accuracy["test_accuracy"]

    variants = {"plain": plain, "pipeline": stage,
                "pipeline bf16": lambda t: stage(t, "params-bf16.yaml")}
    runs = []
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for task in THROUGHPUT_TASKS:
            for variant in order:
                seconds, accuracy = variants[variant](task)
                # Epoch 1 includes tracing and warm-up; steady state is the rest
                # (with a single epoch, that epoch: a smoke run, not a measurement).
                runs.append({"task": task, "variant": variant, "rep": rep,
                             "images_per_s": images / statistics.median(seconds[1:] or seconds),
                             "accuracy": accuracy})
                print(f"  {task:10} {variant:14} {runs[-1]['images_per_s']:8.0f} img/s "
                      f"acc {accuracy:.4f}", flush=True)
    return pd.DataFrame(runs)


# --- 2. overhead ------------------------------------------------------------------------


def small_study(data: dict, train_size: int) -> None:
    """The edit-to-result loop's study: ``train_size`` training images, task1
    at 3 epochs, every other task 1, one seed, the full test set."""
    shrink(data, train_size=train_size, test_size=SPLIT_SIZES["test"], epochs=1)
    data["tasks"]["task1"]["epochs"] = 3


def median_of(n: int, run) -> float:
    return statistics.median(run() for _ in range(n))


def many_tasks(work: Path, n: int) -> Project:
    """A project of ``n`` tasks (copies of task1) that is a no-op: every
    stage recorded in dvc.lock with outputs of any content (``dvc commit``),
    so that what a no-op costs per stage is measured, not training."""
    def many(data):
        shrink(data)
        data["tasks"] = {f"t{i}": data["tasks"]["task1"] for i in range(n)}

    project = make_project(work / f"tasks-{n}", default_mnist(), many)
    with DvcProject(project.path) as dvc:
        outs = [str(out.def_path) for stage in dvc.repo.index.stages for out in stage.outs]
    for out in outs:
        path = project.path / out
        folder = path if not path.suffix else path.parent
        folder.mkdir(parents=True, exist_ok=True)
        (path if path.suffix else path / "x").write_text("x")
    project.run(sys.executable, "-m", "tools.dvc", "commit", "-f", "-q")
    project.commit("a no-op")
    return project


def overhead(work: Path, train_size: int, pairs: int) -> dict:
    """``dvc repro`` and ``python -m tools.dvc repro`` against the flow
    (Prefect server running), alternated: no-op runs on the study and at 200
    tasks, and runs after one new learning rate of task1 (train, evaluate and
    report run); the floors of benchmarks/floors.py; a TensorFlow stage's
    start, from a ready interpreter and from a plain process."""
    project = make_project(work / "overhead", default_mnist(),
                           lambda d: small_study(d, train_size))
    project.dvc("repro")
    project.commit("built")
    repro = (sys.executable, "-m", "dvc", "repro")
    make_run = (sys.executable, "-m", "tools.dvc", "repro")
    flow = (sys.executable, "-m", "flows.pipeline")
    out: dict = {"train_size": train_size, "pairs": pairs}

    def noop(cmd, where: Project = project) -> float:
        wall, proc = timed(where, *cmd)
        states = task_run_states(proc.stdout + proc.stderr)
        if cmd == flow and states != {"check": "Completed"}:
            raise AssertionError(f"a no-op flow run should be one task run, the check: "
                                 f"{states}\n{proc.stdout}{proc.stderr}")
        return wall

    lrs = iter(0.0101 + i / 10000 for i in range(1000))  # never seen: nothing restored

    def changed(cmd, env=None) -> tuple[float, float, str]:
        project.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(
            learning_rate=next(lrs)))
        saved = dict(project.env)
        project.env.update(env or {})
        try:
            wall, proc = timed(project, *cmd)
        finally:
            project.env = saved
        if "restored" in proc.stdout + proc.stderr:
            raise AssertionError("a new learning rate was restored from the cache")
        seconds = pd.read_csv(epoch_log(project.path / "data/models/task1", 42,
                                        "epoch_seconds"), sep="\t")["epoch_seconds"].sum()
        evaluate = json.loads((project.path / "data/eval/task1/seeds.json")
                              .read_text())["42"]["seconds"]
        return wall, seconds + evaluate, proc.stdout + proc.stderr

    def alternate(variants: dict, run, n: int) -> dict[str, list]:
        results = {name: [] for name in variants}
        for i in range(n):
            for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
                results[name].append(run(variants[name]))
        return results

    with prefect_server(work / "prefect-home") as url:
        project.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-home"))
        noop(flow)  # warm-up: the server's first flow run registers the flow
        runs = alternate({"repro": repro, "make run": make_run, "flow": flow}, noop, pairs)
        out["noop"] = {k: statistics.median(v) for k, v in runs.items()}
        many = many_tasks(work, 200)
        many.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-home"))
        runs = alternate({"make run": make_run, "flow": flow},
                         lambda cmd: noop(cmd, many), max(2, pairs - 1))
        out["noop_200"] = {k: statistics.median(v) for k, v in runs.items()}
        n = len(project_stages(project))
        trivial = work / "trivial"
        make_trivial(trivial, n)
        for cmd in (("git", "init", "-q"), (sys.executable, "-m", "dvc", "init", "-q"), repro):
            subprocess.run(cmd, cwd=trivial, env=project.env, check=True, capture_output=True)

        def floor(*cmd, cwd=project.path):
            start = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, env=project.env, check=True, capture_output=True)
            return time.perf_counter() - start

        out["floors"] = {
            "prefect": median_of(3, lambda: floor(sys.executable, "-m", "benchmarks.floors",
                                                  "prefect", "1", cwd=ROOT)),
            "dvc_checks": median_of(3, lambda: float(subprocess.run(
                (sys.executable, "-m", "benchmarks.floors", "dvc-checks", str(project.path)),
                cwd=ROOT, env=project.env, check=True, capture_output=True,
                text=True).stdout.split()[-1])),
            "trivial_repro": median_of(3, lambda: floor(*repro, cwd=trivial)),
            "python_dvc": median_of(3, lambda: floor(sys.executable, "-c", "import dvc.cli")),
        }
        change = alternate({"repro": repro, "flow": flow}, lambda cmd: changed(cmd)[:2], pairs)
        out["changed"] = change
        # A TensorFlow stage's start, in the flow: from a ready interpreter, and
        # from a plain process (MNIST_CNN_READY=0), alternated.
        starts = alternate({"ready": {}, "plain": {"MNIST_CNN_READY": "0"}},
                           lambda env: stage_starts(changed(flow, env)[2]), 2)
        out["starts"] = {way: {kind: statistics.median(s[kind] for s in found if kind in s)
                               for kind in ("train", "evaluate", "report")}
                         for way, found in starts.items()}
    out["stages"] = n
    return out


def project_stages(project: Project) -> list[str]:
    with DvcProject(project.path) as dvc:
        return list(dvc.graph)


# --- 3. the whole study --------------------------------------------------------------------


def study(work: Path, images: int, workers: list[int]) -> dict:
    """The whole study, one seed, by ``dvc repro`` and by the flow at each of
    ``workers``, each in a fresh copy (nothing cached)."""
    def size(data):
        data["seeds"] = 1
        data["data"].update(train_size=images, test_size=SPLIT_SIZES["test"])

    walls = {}
    for name in ["dvc repro", *(f"flow --workers {w}" for w in workers)]:
        project = make_project(work / f"study-{name.replace(' ', '-')}", default_mnist(), size)
        home = work / f"prefect-{name.replace(' ', '-')}"
        with prefect_server(home) as url:
            project.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(home))
            cmd = ((sys.executable, "-m", "dvc", "repro") if name == "dvc repro" else
                   (sys.executable, "-m", "flows.pipeline", "--workers", name.split()[-1]))
            walls[name] = timed(project, *cmd)[0]
        print(f"  study, {name}: {walls[name]:.0f} s", flush=True)
    return {"images": images, "walls": walls}


# --- 4. a sweep ----------------------------------------------------------------------------


def sweep_bench(work: Path, train_size: int, lrs: list[float]) -> dict:
    """The same four points of task4_sgd's learning rate: by the flow's sweep
    (--workers 2), by `dvc exp run -S` one after another, and by DVC's queue
    (`dvc queue start -j 2`); each in a fresh copy of one built project."""
    base = make_project(work / "sweep-base", default_mnist(),
                        lambda d: small_study(d, train_size))
    base.dvc("repro")
    base.commit("built")
    key = "tasks.task4_sgd.optimizer.learning_rate.initial_learning_rate"
    values = ",".join(map(str, lrs))
    walls = {}

    def copy(name: str) -> Project:
        dest = work / f"sweep-{name}"
        shutil.copytree(base.path, dest, symlinks=True)
        return Project(dest, dict(base.env))

    with prefect_server(work / "prefect-sweep") as url:
        flow_env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(work / "prefect-sweep")}
        one = copy("sequential")
        start = time.perf_counter()
        for lr in lrs:
            one.dvc("exp", "run", "-S", f"{key}={lr}")
        walls["dvc exp run -S, one after another"] = time.perf_counter() - start
        queued = copy("queue")
        start = time.perf_counter()
        queued.dvc("exp", "run", "--queue", "-S", f"{key}={values}")
        queued.dvc("queue", "start", "-j", "2")
        while "Running" in (status := queued.dvc("queue", "status").stdout) or \
                "Queued" in status:
            time.sleep(2)
        walls["dvc queue start -j 2"] = time.perf_counter() - start
        swept = copy("flow")
        swept.env.update(flow_env)
        cmd = (sys.executable, "-m", "flows.pipeline", "-S", f"{key}={values}",
               "--workers", "2")
        walls["flow sweep --workers 2"], proc = timed(swept, *cmd)
        again, _ = timed(swept, *cmd)
        noop, _ = timed(swept, sys.executable, "-m", "flows.pipeline")
    seconds = stage_seconds(proc.stdout + proc.stderr)
    return {"train_size": train_size, "lrs": lrs, "walls": walls, "again": again, "noop": noop,
            "per_point": (walls["flow sweep --workers 2"] - seconds / 2) / len(lrs),
            "targets": {"flow sweep --workers 2": "≤ 0.6× (≤ 0.8× of the queue)"}}


def stage_seconds(output: str) -> float:
    """The stage commands' own seconds in a flow run's log: from each `> ...`
    line to its task run's end."""
    begun, total = {}, 0.0
    for t, name, text in log_lines(output):
        if text.startswith("> "):
            begun[name] = t
        elif text.startswith("Finished in state") and name in begun:
            total += t - begun.pop(name)
    return total


# --- results.md ------------------------------------------------------------------------------


def overhead_lines(over: dict) -> list[str]:
    noop, floors, n = over["noop"], over["floors"], over["stages"]
    many = over["noop_200"]
    rep, flo = over["changed"]["repro"], over["changed"]["flow"]
    ratios = [f[0] / r[0] for r, f in zip(rep, flo, strict=True)]
    beyond = {k: statistics.median(w - own for w, own in v) for k, v in over["changed"].items()}
    starts = over["starts"]
    return [
        "## 2. The edit-to-result loop", "",
        f"A copy of the project on {over['train_size']:,} training images (task1 3 epochs, "
        f"every other task 1, one seed); {n} stages. `dvc repro`, `python -m tools.dvc "
        "repro` (what `make run` runs) and the flow (`python -m flows.pipeline`, a Prefect "
        f"server running) alternate, {over['pairs']} rounds; each changed run sets a "
        "learning rate of task1 never used before, so train, evaluate and report run. The "
        "200-task no-op: 200 copies of task1, every stage recorded as done.", "",
        "| measurement | `dvc repro` | `make run` | flow | flow / baseline | target |",
        "|---|---|---|---|---|---|",
        f"| no-op, the study ({n} stages; median) | {noop['repro']:.2f} | "
        f"{noop['make run']:.2f} | {noop['flow']:.2f} | "
        f"**{noop['flow'] / noop['make run']:.2f}** of `make run` | ≤ 1.5 |",
        f"| no-op, 200 tasks ({3 + 2 * 200} stages; median) | | {many['make run']:.1f} | "
        f"{many['flow']:.1f} | **{many['flow'] / many['make run']:.2f}** of `make run` | "
        "≤ 1.15 |",
        "| one changed lr (wall, each round) | " + ", ".join(f"{w:.1f}" for w, _ in rep)
        + " | | " + ", ".join(f"{w:.1f}" for w, _ in flo) + " | "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f" (median **{statistics.median(ratios):.2f}**) of `dvc repro` | ≤ 0.85 |",
        f"| the same, beyond task1's own training and evaluation (median) | "
        f"{beyond['repro']:.1f} | | {beyond['flow']:.1f} | | |",
        "",
        "A stage's start in the flow, from its command handed over to its first line "
        "of its own (median of 2 changed runs each, alternated; seconds):", "",
        "| stage | ready interpreter | plain process | target (ready) |", "|---|---|---|---|",
        *(f"| {kind} | **{starts['ready'][kind]:.2f}** | {starts['plain'][kind]:.2f} | "
          f"{'< 0.5' if kind != 'report' else ''} |" for kind in ("train", "evaluate",
                                                                  "report")),
        "",
        "Floors ([floors.py](floors.py)), medians of 3:", "",
        "| floor | seconds |", "|---|---|",
        f"| `python -c 'import dvc.cli'` | {floors['python_dvc']:.2f} |",
        f"| no-op `dvc repro` of {n} trivial stages (`cp`, one param each) | "
        f"{floors['trivial_repro']:.2f} |",
        f"| DVC's checks of a no-op flow run alone (open the project, is each stage "
        f"stale), imports excluded | {floors['dvc_checks']:.2f} |",
        f"| a flow importing what the flow imports, ending one no-op task run | "
        f"{floors['prefect']:.2f} |", "",
        f"The no-op flow is {noop['flow'] / (floors['prefect'] + floors['dvc_checks']):.2f}× "
        "Prefect's floor plus DVC's own checks.", ""]


def sweep_lines(sw: dict) -> list[str]:
    walls = sw["walls"]
    base = walls["dvc exp run -S, one after another"]
    return ["## 4. A sweep", "",
            f"Four learning rates of task4_sgd ({', '.join(map(str, sw['lrs']))}) on the "
            f"study of section 2 ({sw['train_size']:,} images), each point an experiment; "
            "each way in a fresh copy of the built project (nothing cached).", "",
            "| way | seconds | against one after another | target |", "|---|---|---|---|",
            *(f"| {way} | {wall:.0f} | {wall / base:.2f}× | "
              f"{sw['targets'].get(way, '')} |" for way, wall in walls.items()),
            "",
            f"The same sweep again: {sw['again']:.1f} s, against {sw['noop']:.1f} s for a "
            f"no-op flow run ({sw['again'] / sw['noop']:.2f}×; target < 2): every point is "
            "an experiment already, nothing trains. Per point beyond its training: "
            f"{sw['per_point']:.1f} s (the sweep's wall time, less its stages' own, "
            "over its points).", ""]


def old_date(text: str) -> str:
    found = re.search(r"on (\d{4}-\d\d-\d\d)", text)
    return found.group(1) if found else "an earlier date"


def render(machine: dict, tput: pd.DataFrame | None, over: dict | None, whole: dict | None,
           args, swept: dict | None = None) -> str:
    lines = ["# Benchmarks", "",
             f"Measured by `make bench` (`python -m benchmarks.run`) on {machine['date']}.", "",
             "## Machine", "",
             f"- CPU: {machine['cpu']}, {machine['cores']} cores",
             f"- TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
             f"oneDNN {'on' if machine['onednn'] else 'off'}",
             f"- Measured matmul peak (2048², all cores): {machine['peak32']:.0f} GFLOP/s "
             f"float32, {machine['peak16']:.0f} GFLOP/s bfloat16", ""]
    if tput is None and args.out.is_file() and "## 1. " in (old := args.out.read_text()):
        # Skipped this time: the section as last measured, saying when.
        kept = "## 1. " + old.split("## 1. ", 1)[1].split("\n## 2. ", 1)[0].rstrip()
        lines += [kept.replace("\n", f"\n\n(Measured on {old_date(old)}, not rerun.)\n", 1)
                  if "(Measured on" not in kept else kept, ""]
    if tput is not None:
        med = tput.groupby(["task", "variant"]).median(numeric_only=True)
        lines += ["## 1. Training throughput", "",
                  f"{args.images:,} training images, {args.epochs} epochs, batch 128, "
                  f"{args.reps} interleaved repetitions (medians); images/s over epochs 2+. "
                  "*plain*: `model.fit(x, y, batch_size=128)` on NumPy arrays, as the "
                  "notebook; *pipeline*: the train stage (`python -m stages.train`) with the "
                  "default params; *bf16*: the same with `train.precision: mixed_bfloat16`. "
                  "Accuracy: full test set after the same epochs, one seed (42); a few "
                  "epochs of SGD differ by several points from seed to seed and order to "
                  "order, so [accuracy.md](accuracy.md) (`python -m benchmarks.accuracy`, "
                  "also run by `make bench`) compares plain and pipeline over ten seeds. "
                  "Required ratio ≥ 1.0, target ≥ 1.3.", "",
                  "| task | plain img/s | pipeline img/s | ratio | bf16 img/s | bf16 ratio "
                  "| GFLOP/s plain / pipeline / bf16 | % of float32 peak (pipeline) "
                  "| test acc plain / pipeline / bf16 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for task in THROUGHPUT_TASKS:
            p, s, b = (med.loc[(task, v)] for v in ("plain", "pipeline", "pipeline bf16"))
            gf = [3 * machine["flops"][task] * r.images_per_s / 1e9 for r in (p, s, b)]
            lines.append(
                f"| {task} | {p.images_per_s:,.0f} | {s.images_per_s:,.0f} | "
                f"**{s.images_per_s / p.images_per_s:.2f}** | {b.images_per_s:,.0f} | "
                f"{b.images_per_s / p.images_per_s:.2f} | {gf[0]:.0f} / {gf[1]:.0f} / "
                f"{gf[2]:.0f} | {100 * gf[1] / machine['peak32']:.0f}% | "
                f"{p.accuracy:.4f} / {s.accuracy:.4f} / {b.accuracy:.4f} |")
        lines += ["", "GFLOP/s counts a training step as 3x the forward pass "
                  "(multiply-adds x 2 of the conv and dense layers).", ""]
    if over is not None:
        lines += overhead_lines(over)
    if whole is not None:
        walls = whole["walls"]
        base = walls["dvc repro"]
        lines += ["## 3. The whole study", "",
                  f"Every task at its full epochs, one seed, on {whole['images']:,} training "
                  "images (the full 10,000 test images), each run in a fresh copy.", "",
                  "| entry point | seconds | against `dvc repro` |", "|---|---|---|"]
        lines += [f"| `{name}` | {wall:.0f} | {wall / base:.2f}× |"
                  for name, wall in walls.items()]
        lines.append("")
    if swept is not None:
        lines += sweep_lines(swept)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15000, help="throughput: training images")
    parser.add_argument("--epochs", type=int, default=3, help="throughput: epochs per run")
    parser.add_argument("--reps", type=int, default=2, help="throughput: repetitions")
    parser.add_argument("--loop-images", type=int, default=20000,
                        help="edit-to-result loop: training images")
    parser.add_argument("--pairs", type=int, default=3,
                        help="edit-to-result loop: alternated pairs")
    parser.add_argument("--study-images", type=int, default=6000,
                        help="whole study: training images (60000 = the real study)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="whole study: flow workers to compare with dvc repro")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["throughput", "overhead", "study", "sweep"])
    parser.add_argument("--out", type=Path, default=OUT,
                        help="Markdown file to write (default: %(default)s)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from mnist_cnn.cli.checks import load_params

    params = load_params(ROOT / "params.yaml")
    machine = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
               "tensorflow": tf.__version__, "keras": keras.__version__,
               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
               "peak32": matmul_peak("float32"), "peak16": matmul_peak("bfloat16"),
               "flops": {t: forward_flops(t, params.tasks[t]) for t in THROUGHPUT_TASKS}}
    print(f"machine: {machine['cpu']}, peak {machine['peak32']:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        tput = (None if "throughput" in args.skip
                else throughput(work, args.images, args.epochs, args.reps))
        over = None if "overhead" in args.skip else overhead(work, args.loop_images,
                                                                 args.pairs)
        args.out.write_text(render(machine, tput, over, None, args))  # kept if a later part fails
        swept = None if "sweep" in args.skip else sweep_bench(work, args.loop_images,
                                                              [0.03, 0.05, 0.2, 0.3])
        args.out.write_text(render(machine, tput, over, None, args, swept))
        whole = None if "study" in args.skip else study(work, args.study_images, args.workers)
    args.out.write_text(render(machine, tput, over, whole, args, swept))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
