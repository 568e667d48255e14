"""A local Prefect server for the UI (``make ui`` / ``make ui-stop``).

``start`` is idempotent: a server that answers is left alone (two starts at
once take turns, so the second finds the first's server); a PID file left
by a server that died (``kill -9``, a reboot) is removed, where Prefect's own
``prefect server start --background`` would refuse to start, naming only
"already running". ``stop`` stops the server of the PID file only if that
process is a Prefect server (a reused PID is never signalled).

The server listens on 127.0.0.1 only, and answers API calls from web pages
of its own origin only (CORS), with Prefect's CSRF protection on: a page on
another site, open in your browser, cannot start runs through it. Anyone
with an account on this machine can reach it, as with any local port; set
``PREFECT_SERVER_API_AUTH_STRING`` (and ``PREFECT_API_AUTH_STRING`` for the
clients) to require a password (see README).

The server runs the services a single user's runs need (task runs are
recorded from their events, and events kept for the UI) and not the rest:
schedules, late runs, work pools, concurrency leases, automations, pauses
and cancellation clean-up serve deployments with schedules, workers and
automations this project does not use. Together they cost the server 60 %
more CPU while a flow runs (benchmarks/results.md); set any of the variables
in ``IDLE_SERVICES`` to ``true`` to run one.

    python -m tools.prefect_server start|stop [--port 4200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from filelock import FileLock

from flows.lifecycle import terminate

WAIT_S = 120  # a first start migrates the database: slow on a busy 2-core machine
PID_FILE = "server.pid"  # prefect.cli._server_utils.SERVER_PID_FILE_NAME
IDLE_SERVICES = [f"PREFECT_SERVER_SERVICES_{name}_ENABLED" for name in (
    "SCHEDULER", "LATE_RUNS", "FOREMAN", "REPOSSESSOR", "TRIGGERS", "PAUSE_EXPIRATIONS",
    "CANCELLATION_CLEANUP")]


def _home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value())


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _server_process() -> psutil.Process | None:
    """The process of Prefect's PID file, if it is a Prefect server."""
    try:
        proc = psutil.Process(int((_home() / PID_FILE).read_text()))
        cmd = " ".join(proc.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return proc if "prefect" in cmd and ("server" in cmd or "uvicorn" in cmd) else None


def start(port: int) -> int:
    """Start a server on ``port`` unless one answers there; two at once take
    turns (a lock), so the second finds the first's server."""
    url = f"http://127.0.0.1:{port}"
    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(home / "mnist-cnn-ui.lock", timeout=2 * WAIT_S):
        return _start(url, port)


def _wait(url: str) -> float | None:
    """Seconds until the server at ``url`` answered; None if it did not
    within WAIT_S, or its process ended."""
    started = time.monotonic()
    while not answers(url):
        waited = time.monotonic() - started
        if waited > WAIT_S or (waited > 10 and _server_process() is None):
            return None
        time.sleep(0.5)
    return time.monotonic() - started


def _start(url: str, port: int) -> int:
    if answers(url):
        print(f"Prefect UI already running: {url}")
        return 0
    pid_file = _home() / PID_FILE
    running = _server_process()
    if pid_file.exists() and running is None:
        print(f"removing {pid_file}: its server is gone (stopped without `make ui-stop`)")
        pid_file.unlink()
    elif running is not None:  # Prefect runs one background server per PREFECT_HOME
        if _wait(url) is not None:  # one just started, on this port
            print(f"Prefect UI already running: {url}")
            return 0
        print(f"error: a Prefect server started in the background (process {running.pid}) "
              f"does not answer at {url}: it serves another port. Stop it with `make "
              "ui-stop`, or use its port: `make ui PREFECT_PORT=...`", file=sys.stderr)
        return 1
    env = {**dict.fromkeys(IDLE_SERVICES, "false"), **os.environ,
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": url,
           "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true"}
    proc = subprocess.run([sys.executable, "-m", "prefect", "server", "start", "--host",
                           "127.0.0.1", "--port", str(port), "--background"],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"error: prefect server start failed: {(proc.stderr or proc.stdout).strip()}",
              file=sys.stderr)
        return 1
    if _wait(url) is None:
        print(f"error: the Prefect server did not answer at {url}; run `prefect server "
              "start` in the foreground to see why", file=sys.stderr)
        return 1
    print(f"Prefect UI: {url}")
    return 0


def stop() -> int:
    proc = _server_process()
    (_home() / PID_FILE).unlink(missing_ok=True)
    if proc is None:
        print("no Prefect server of `make ui` is running")
        return 0
    terminate([proc], wait_s=30)
    print("Prefect server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.prefect_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)
    return start(args.port) if args.action == "start" else stop()


if __name__ == "__main__":
    sys.exit(main())
