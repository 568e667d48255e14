"""``make bench``: how fast the pipeline trains and how little it adds.

Writes benchmarks/results.md. Every comparison is measured in this one run,
alternating the variants (A B, then B A) and taking medians, so a busy
machine slows both sides alike. Three parts:

1. Training throughput of the train stage against the notebook's way of
   training (benchmarks/plain_keras.py), same model, data and epochs.
2. Overhead: a no-op ``dvc repro``, a no-op flow run (every task run ends
   ``UpToDate``; with a Prefect server and without), and a run after one
   changed hyperparameter minus the time spent training and evaluating that
   task.
3. The whole study run by hand stage after stage, against one flow run
   with concurrent stages.

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

from flows.dvc_internals import modify_yaml
from flows.dvc_project import DvcProject
from mnist_cnn.dataset import SPLIT_SIZES
from mnist_cnn.layout import epoch_log
from mnist_cnn.params import Task
from tests.sandbox import ROOT, Project, default_mnist, make_project, shrink

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
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port), "--no-services"],
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
    ``{"train[task1]": "Completed", "report": "UpToDate"}`` (without the
    outcome the flow adds to the name, ``report · up to date``)."""
    return {name.split(" · ")[0]: state for name, state in TASK_RUN_STATE.findall(output)}


def flow_seconds(output: str) -> float:
    """Flow time: from "Beginning flow run" to "Finished in state" in its log."""
    stamps = [line[:12] for line in output.splitlines()
              if "Beginning flow run" in line or ("Flow run" in line and "Finished in" in line)]
    t0, t1 = (sum(float(p) * f for p, f in zip(s.split(":"), (3600, 60, 1), strict=True))
              for s in (stamps[0], stamps[-1]))
    return t1 - t0


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


def overhead(work: Path) -> dict:
    project = make_project(work / "overhead", default_mnist(), shrink)
    project.dvc("repro")
    project.commit("built")
    noop = [timed(project, sys.executable, "-m", "dvc", "repro")[0] for _ in range(5)]
    out = {"noop_repro": statistics.median(noop)}

    def changed_run(cmd, lr):
        project.edit_params(lambda d: d["tasks"]["task1"]["optimizer"].update(learning_rate=lr))
        wall, proc = timed(project, *cmd)
        seconds = pd.read_csv(epoch_log(project.path / "data/models/task1", 42,
                                        "epoch_seconds"), sep="\t")["epoch_seconds"].sum()
        evaluate = json.loads((project.path / "data/eval/task1/seeds.json")
                              .read_text())["42"]["seconds"]
        return wall, seconds + evaluate, proc.stdout + proc.stderr

    wall, own, _ = changed_run((sys.executable, "-m", "dvc", "repro"), 0.02)
    out.update(changed_repro_wall=wall, changed_repro_own=own)

    flow = (sys.executable, "-m", "flows.pipeline")

    def noop_flow_run():
        wall, proc = timed(project, *flow)
        states = task_run_states(proc.stdout + proc.stderr)
        if not states or set(states.values()) != {"UpToDate"}:
            raise AssertionError(f"a no-op flow run should end every task run UpToDate: "
                                 f"{states}\n{proc.stdout}{proc.stderr}")
        return wall, proc

    with prefect_server(work / "prefect-home") as url:
        project.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-home"))
        noop_flow_run()  # warm-up: the server's first flow run registers the flow
        noop_flow = [noop_flow_run() for _ in range(3)]
        out["noop_flow_wall"] = statistics.median(w for w, _ in noop_flow)
        out["noop_flow_time"] = statistics.median(flow_seconds(p.stdout + p.stderr)
                                                  for _, p in noop_flow)
        wall, own, log = changed_run(flow, 0.03)
        out.update(changed_flow_wall=wall, changed_flow_own=own,
                   changed_flow_time=flow_seconds(log))
    del project.env["PREFECT_API_URL"]
    project.env["PREFECT_HOME"] = str(work / "prefect-ephemeral")
    noop_flow_run()
    out["noop_flow_ephemeral_wall"] = noop_flow_run()[0]
    return out


# --- 3. the whole study --------------------------------------------------------------------


def study(work: Path, images: int, workers: int) -> dict:
    def size(data):
        data["seeds"] = 1
        data["data"].update(train_size=images, test_size=SPLIT_SIZES["test"])

    by_hand = make_project(work / "study-by-hand", default_mnist(), size)
    with DvcProject(by_hand.path) as dvc:
        order = list(dvc.graph)  # dependencies first
    per_stage = {}
    for name in order:
        per_stage[name] = timed(by_hand, sys.executable, "-m", "dvc", "repro", "-s", name)[0]
    concurrent = make_project(work / "study-flow", default_mnist(), size)
    with prefect_server(work / "prefect-study") as url:
        concurrent.env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-study"))
        wall, _ = timed(concurrent, sys.executable, "-m", "flows.pipeline", "--workers",
                        str(workers))
    return {"images": images, "naive_sum": sum(per_stage.values()), "per_stage": per_stage,
            "flow_wall": wall, "workers": workers}


# --- results.md ------------------------------------------------------------------------------


def render(machine: dict, tput: pd.DataFrame | None, over: dict | None, whole: dict | None,
           args) -> str:
    lines = ["# Benchmarks", "",
             f"Measured by `make bench` (`python -m benchmarks.run`) on {machine['date']}.", "",
             "## Machine", "",
             f"- CPU: {machine['cpu']}, {machine['cores']} cores",
             f"- TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
             f"oneDNN {'on' if machine['onednn'] else 'off'}",
             f"- Measured matmul peak (2048², all cores): {machine['peak32']:.0f} GFLOP/s "
             f"float32, {machine['peak16']:.0f} GFLOP/s bfloat16", ""]
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
        lines += ["## 2. Overhead", "",
                  "A copy of the project on 2,000 training images, one epoch per task.", "",
                  "| measurement | seconds | target |", "|---|---|---|",
                  f"| no-op `dvc repro` (wall, median of 5) | {over['noop_repro']:.2f} | ≤ 1.5 |",
                  f"| no-op flow run (every task run `UpToDate`), Prefect server running "
                  f"(wall, median of 3) | {over['noop_flow_wall']:.2f} | ≤ 3 |",
                  f"| the same, flow time only (Prefect's log) | {over['noop_flow_time']:.2f} | |",
                  f"| no-op flow run (every task run `UpToDate`), ephemeral Prefect (wall) | "
                  f"{over['noop_flow_ephemeral_wall']:.2f} | |",
                  f"| one changed lr, `dvc repro`: wall {over['changed_repro_wall']:.1f} − "
                  f"task1's own training and evaluation {over['changed_repro_own']:.1f} | "
                  f"{over['changed_repro_wall'] - over['changed_repro_own']:.1f} | ≤ 10 |",
                  f"| one changed lr, flow run: wall {over['changed_flow_wall']:.1f} − "
                  f"{over['changed_flow_own']:.1f} | "
                  f"{over['changed_flow_wall'] - over['changed_flow_own']:.1f} | ≤ 10 |", ""]
    if whole is not None:
        ratio = whole["flow_wall"] / whole["naive_sum"]
        lines += ["## 3. The whole study", "",
                  f"Every task at its full epochs on {whole['images']:,} training images "
                  "(the full 10,000 test images).", "",
                  "| measurement | seconds |", "|---|---|",
                  f"| naive sum: each stage alone, one after another (`dvc repro -s`) | "
                  f"{whole['naive_sum']:.0f} |",
                  f"| one flow run, `--workers {whole['workers']}` | {whole['flow_wall']:.0f} |",
                  f"| ratio (target ≤ 0.6) | **{ratio:.2f}** |", "",
                  "Per stage (by hand): " + ", ".join(
                      f"{k} {v:.0f}" for k, v in whole["per_stage"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15000, help="throughput: training images")
    parser.add_argument("--epochs", type=int, default=3, help="throughput: epochs per run")
    parser.add_argument("--reps", type=int, default=2, help="throughput: repetitions")
    parser.add_argument("--study-images", type=int, default=6000,
                        help="whole study: training images (60000 = the real study)")
    parser.add_argument("--workers", type=int, default=2, help="whole study: flow workers")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["throughput", "overhead", "study"])
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
        over = None if "overhead" in args.skip else overhead(work)
        whole = None if "study" in args.skip else study(work, args.study_images, args.workers)
    args.out.write_text(render(machine, tput, over, whole, args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
