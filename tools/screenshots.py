"""Retake the README's screenshots: the Prefect UI of a no-op run, a running
study, a one-key change, a switch back and a failed run, and the report, from
real flow runs on a throw-away copy of the project.

    python -m tools.screenshots [--project DIR] [--out docs/screenshots]

Default: a small sandbox (tests/sandbox.py: 2,000 images, 1 epoch (task1 60), one seed,
every task) built with `dvc repro`. With --project DIR: a `git clone` of DIR
(its last commit) using DIR's DVC cache, so a fully built project is used as
it is; DIR's workspace is not touched, but the retrained model and its
run-cache entry are added to DIR/.dvc/cache, as an experiment's would be.

On the copy, with a Prefect server of its own (a free loopback port, a
temporary PREFECT_HOME), the flow runs: unchanged (nothing to do: one task
run, the check), after changing tasks.task1.optimizer.learning_rate (task1
retrained; shot while it trains, and after), after switching it back
(restored from DVC's run-cache), and with an override that does not fit
(refused, as a run from the UI's form is). Headless Chromium (Debian's
`chromium`) then takes, in the UI a browser gets at the server's root
(Prefect 3.9 sends it to the new UI, /v2):

    runs.png                 the runs list, named and tagged
    flow-run-noop.png        the unchanged run: one task run, the check
    flow-run-progress.png    the one-change run while task1 trains: its progress
                             artifact and task run names with the epoch
    flow-run-one-change.png  the one-change run done: the check and 3 Completed
    flow-run-restored.png    the switch-back run: 3 Cached
    task-run-cached.png      that run's train[task1]: Cached, and its log saying why
    flow-run-failed.png      the refused run: Failed, its message the reason
    report.png               the top of the copy's data/report/report.html
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flows.dvc_internals import load_yaml, modify_yaml
from tests.sandbox import Project, default_mnist, make_project, project_env, shrink

ROOT = Path(__file__).resolve().parents[1]
KEY = ("tasks", "task1", "optimizer", "learning_rate")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path, cwd: Path):
    """A Prefect server of our own, yielding its API URL; stopped on exit,
    errors included. Its own PREFECT_HOME keeps the user's profile and runs
    out of it; PREFECT_API_URL also tells the UI where its API is (with
    `--port` alone, the UI would call the default port, 4200)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = str(Path(sys.executable).parent / "prefect")
    # Its own process group, so that stopping it stops what it started too.
    with open(home.parent / "prefect-server.log", "w") as log:
        server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=cwd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a busy 2-core machine takes a while
        while subprocess.run([prefect, "server", "status"], env=env, cwd=cwd,
                             capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = Path(log.name).read_text()[-3000:]
                raise RuntimeError(f"Prefect server did not start:\n{tail}")
            time.sleep(2)
        print(f"Prefect server: {api.removesuffix('/api')}", flush=True)
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def project_copy(work: Path, source: Path | None) -> Project:
    """The project to run the flow in: a fresh sandbox built with `dvc repro`,
    or a clone of ``source`` checked out from ``source``'s DVC cache."""
    dest = work / "project"
    if source is None:
        dest.mkdir()
        def task1_longer(data: dict) -> None:  # the progress shot waits for epoch 2
            shrink(data)
            data["tasks"]["task1"]["epochs"] = 60  # (an epoch of 2,000 images is under a second)

        project = make_project(dest, default_mnist(), task1_longer)
        print("dvc repro (small sandbox) ...", flush=True)
        project.dvc("repro")
        return project
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    project = Project(dest, project_env(None, work / "home"))
    project.dvc("cache", "dir", "--local", str(source.resolve() / ".dvc" / "cache"))
    project.dvc("checkout")
    return project


def run_flow(project: Project, api: str, home: Path, label: str, wait: bool = True,
             code: str | None = None):
    """`python -m flows.pipeline` in the copy (or ``python -c code``), sent to
    our server; returns the flow run as the API has it (id, name, tags), or,
    with ``wait`` false, the process."""
    print(f"flow run: {label} ...", flush=True)
    start = time.monotonic()
    env = {**project.env, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "flows.pipeline"]
    if not wait:
        with open(home.parent / "flow.log", "w") as log:  # said if it ends before its shot
            proc = subprocess.Popen(cmd, cwd=project.path, env=env, text=True,
                                    stdout=log, stderr=subprocess.STDOUT)
        proc.log = home.parent / "flow.log"
        return proc
    proc = subprocess.run(cmd, cwd=project.path, env=env, text=True, capture_output=True)
    if proc.returncode != 0 and not code:
        raise RuntimeError(f"flow run ({label}) exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    latest = api_post(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
    print(f"  {latest['name']}  [{', '.join(latest['tags'])}]  "
          f"({time.monotonic() - start:.0f} s)", flush=True)
    return latest


def training(api: str) -> dict | None:
    """The latest flow run, once a task run of it names its epoch."""
    latest = api_post(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    if not latest:
        return None
    runs = api_post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [latest[0]["id"]]}}})
    # Any epoch past the first: with epochs under a second, epoch 2 itself may pass unseen.
    return latest[0] if any(re.search(r"· epoch (?!1/)\d+/", r["name"]) for r in runs) else None


def api_post(api: str, path: str, body: dict):
    request = urllib.request.Request(api + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def set_learning_rate(project: Project, value: float) -> float:
    """Write it as `dvc exp run -S` does (only that value's line changes);
    returns the value it replaces."""
    with modify_yaml(project.path / "params.yaml") as data:
        node = data
        for part in KEY[:-1]:
            node = node[part]
        old, node[KEY[-1]] = node[KEY[-1]], value
    return old


def screenshot(url: str, out: Path, window: tuple[int, int], expect: list[str],
               profile: Path) -> None:
    """One page in headless Chromium. The UI is a JavaScript app whose first
    paint is a spinner: the page gets virtual time to fetch and draw, and its
    DOM (dumped by the same call) must show every ``expect`` text, else it is
    taken again with more time. A fresh profile; no first-run pages, no
    background traffic."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    for budget_ms in (15000, 60000):
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}",
             f"--screenshot={out}", "--dump-dom", url],
            check=True, capture_output=True, text=True, timeout=300).stdout
        missing = [text for text in expect if html.escape(text, quote=False) not in dom]
        if out.is_file() and not missing:
            print(f"  {out} ({out.stat().st_size // 1024} KB)", flush=True)
            return
    raise RuntimeError(f"{url} never showed {missing} (see {out})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, metavar="DIR",
                        help="clone this built project (default: a small sandbox)")
    parser.add_argument("--lr", type=float, default=0.05,
                        help="task1's new learning rate: one the project never ran, so it "
                        "retrains (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="folder for the PNGs (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mnist-cnn-shots-") as tmp:
        work = Path(tmp)
        home = work / "prefect-home"
        home.mkdir()
        project = project_copy(work, args.project)
        with prefect_server(home, project.path) as api:
            ui = api.removesuffix("/api")
            runs = [run_flow(project, api, home, "unchanged")]
            params = load_yaml(project.path / "params.yaml")
            old = params["tasks"]["task1"]["optimizer"]["learning_rate"]
            new = args.lr
            set_learning_rate(project, new)
            # While task1 trains: its progress and its epoch, then the run done.
            changing = run_flow(project, api, home, f"{'.'.join(KEY)} {old} -> {new}",
                                wait=False)
            deadline = time.monotonic() + 1800
            while (live := training(api)) is None:
                if changing.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("task1 did not reach its second epoch:\n"
                                       + changing.log.read_text()[-3000:])
                time.sleep(1)
            run = f"{ui}/v2/runs/flow-run/{{}}?tab={{}}"
            screenshot(run.format(live["id"], "TaskRuns"), (args.out / "flow-run-progress.png")
                       .resolve(), (1600, 1100), ["· epoch", "train[task1]"], work / "chr-p")
            screenshot(run.format(live["id"], "Artifacts"),
                       (args.out / "flow-run-progress-artifacts.png").resolve(), (1600, 1100),
                       ["mnist-cnn-progress"], work / "chr-a")
            if changing.wait() != 0:
                raise RuntimeError("the one-change flow run failed")
            runs.append(api_post(api, "/flow_runs/filter",
                                 {"sort": "START_TIME_DESC", "limit": 1})[0])
            set_learning_rate(project, old)  # DVC's run-cache has it: restored, not rerun
            runs.append(run_flow(project, api, home, f"{'.'.join(KEY)} back to {old}"))
            # As a run from the UI's form: refused inside the flow run, with the reason.
            runs.append(run_flow(project, api, home, "an override that does not fit", code=(
                "from flows.pipeline import pipeline; pipeline(overrides="
                "{'tasks.task1.layers.0.kernel_size': 40}, return_state=True)")))
            print("screenshots ...", flush=True)
            # /v2: the UI a browser gets at the server's root. Its flow run
            # page takes its tab from the URL (the old UI's does not).
            cached = api_post(api, "/task_runs/filter", {
                "flow_runs": {"id": {"any_": [runs[2]["id"]]}},
                "task_runs": {"name": {"any_": ["train[task1] · cached"]}}})[0]
            pages = [  # (url, file, window, texts the page must show)
                (f"{ui}/v2/runs", "runs.png", (1600, 1150), [r["name"] for r in runs]),
                (run.format(runs[0]["id"], "TaskRuns"), "flow-run-noop.png", (1600, 900),
                 [runs[0]["name"], "check"]),
                (run.format(runs[1]["id"], "TaskRuns"), "flow-run-one-change.png",
                 (1600, 1100), [runs[1]["name"], "check", "train[task1]"]),
                (run.format(runs[2]["id"], "TaskRuns"), "flow-run-restored.png", (1600, 1100),
                 [runs[2]["name"], "Cached"]),
                (f"{ui}/v2/runs/task-run/{cached['id']}", "task-run-cached.png", (1600, 700),
                 ["Cached", "restored from DVC's run-cache"]),
                (run.format(runs[3]["id"], "Logs"), "flow-run-failed.png", (1600, 800),
                 ["Failed", "does not fit"]),
                # The report's top: the summary table and the first findings.
                ((project.path / "data/report/report.html").as_uri(), "report.png",
                 (1400, 1800), ["Final results"]),
            ]
            for i, (url, name, window, expect) in enumerate(pages):
                screenshot(url, (args.out / name).resolve(), window, expect,
                           work / f"chromium-{i}")
    print(f"done in {time.monotonic() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
