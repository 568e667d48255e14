"""A local Prefect server for the UI (``make ui`` / ``make ui-stop``).

``start`` is idempotent: a server that answers is left alone; a PID file left
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
    url = f"http://127.0.0.1:{port}"
    if answers(url):
        print(f"Prefect UI already running: {url}")
        return 0
    pid_file = _home() / PID_FILE
    if pid_file.exists() and _server_process() is None:
        print(f"removing {pid_file}: its server is gone (stopped without `make ui-stop`)")
        pid_file.unlink()
    env = {**dict.fromkeys(IDLE_SERVICES, "false"), **os.environ,
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": url,
           "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true"}
    proc = subprocess.run(["prefect", "server", "start", "--host", "127.0.0.1", "--port",
                           str(port), "--background"], env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"error: prefect server start failed: {(proc.stderr or proc.stdout).strip()}",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    while not answers(url):
        waited = time.monotonic() - started
        if waited > WAIT_S or (waited > 10 and _server_process() is None):
            print(f"error: the Prefect server did not answer at {url} after {waited:.0f} s; "
                  "run `prefect server start` in the foreground to see why", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"Prefect UI: {url}")
    return 0


def stop() -> int:
    proc = _server_process()
    (_home() / PID_FILE).unlink(missing_ok=True)
    if proc is None:
        print("no Prefect server of `make ui` is running")
        return 0
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except psutil.TimeoutExpired:
        proc.kill()
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
