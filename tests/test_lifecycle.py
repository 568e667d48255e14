"""The guardian of a flow process (flows/lifecycle.py), with real processes:
whatever kills the process, what it started and the folders it registered
do not outlive it, and a ledger left by a killed guardian is settled by the
next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from flows import lifecycle
from tests.conftest import ROOT, gone, wait_for

# A stand-in for a flow process: a guardian, a child process (as Prefect's
# temporary server or a stage is), a registered folder; then it waits.
OWNER = textwrap.dedent("""
    import subprocess, sys, tempfile, time
    from pathlib import Path
    from flows import lifecycle
    guardian = lifecycle.Guardian(Path(sys.argv[1]))
    folder = tempfile.mkdtemp(dir=sys.argv[2])
    guardian.own_path(folder)
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    print(folder, child.pid, flush=True)
    if sys.argv[3] == "exit":
        guardian.drop_path(folder)
        guardian.close()
        child.kill()
        sys.exit(0)
    time.sleep(600)
""")


def start_owner(tmp_path: Path, mode: str = "wait") -> tuple[subprocess.Popen, Path, int]:
    ledgers = tmp_path / "ledgers"
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(ledgers), str(tmp_path), mode],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    folder, child = proc.stdout.readline().split()
    if mode == "wait":  # the guardian notes descendants twice a second: let it see the child
        wait_for(lambda: any(child in p.read_text() for p in ledgers.glob("*.json")),
                 timeout=10)
    return proc, Path(folder), int(child)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_what_a_killed_process_started_is_stopped_and_removed(tmp_path, sig):
    proc, folder, child = start_owner(tmp_path)
    assert folder.is_dir() and not gone(child)
    os.kill(proc.pid, sig)
    proc.wait(timeout=10)
    wait_for(lambda: gone(child) and not folder.exists(), timeout=10)
    wait_for(lambda: not list((tmp_path / "ledgers").glob("*.json")), timeout=10)


def test_a_normal_exit_leaves_the_guardian_nothing_to_do(tmp_path):
    proc, folder, _ = start_owner(tmp_path, "exit")
    assert proc.wait(timeout=20) == 0
    wait_for(lambda: not list((tmp_path / "ledgers").glob("*.json")), timeout=10)
    assert folder.is_dir()  # dropped: the owner keeps it (here: the test's tmp_path)


def test_the_next_run_settles_what_a_killed_guardian_left(tmp_path):
    """Flow and guardian both killed (e.g. `kill -9 -- -PGID` of a session):
    the next run's clean_leftovers stops the leftover process by pid and start
    time, and removes the folder."""
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    orphan = orphan_sleep()  # what a dead flow's stage is: its parent gone
    folder = tmp_path / "clone"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ledger = {"owner": [dead.pid, 1.0], "guardian": [dead.pid, 2.0],
              "processes": [[orphan.pid, orphan.create_time()], [os.getpid(), 3.0]],
              "paths": [str(folder)], "flow_run": None}
    (ledgers / "1-x.json").write_text(json.dumps(ledger))
    assert lifecycle.clean_leftovers(folder=ledgers) == 1
    wait_for(lambda: gone(orphan.pid), timeout=10)
    assert not folder.exists()
    assert psutil.Process(os.getpid()).is_running()  # same pid, other start time: spared
    assert not list(ledgers.glob("*.json"))


def orphan_sleep() -> psutil.Process:
    out = subprocess.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    return psutil.Process(int(out))


def test_a_process_whose_parent_lives_is_never_stopped_by_a_ledger(tmp_path):
    """Even if a ledger of a dead flow names it with its pid and start time
    (a live flow can look dead to another process after the clock is
    stepped): it belongs to its live parent."""
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        ledger = {"owner": [dead.pid, 1.0], "guardian": [dead.pid, 2.0],
                  "processes": [[child.pid, psutil.Process(child.pid).create_time()]],
                  "paths": [], "flow_run": None}
        (ledgers / "1-x.json").write_text(json.dumps(ledger))
        assert lifecycle.clean_leftovers(folder=ledgers) == 1
        time.sleep(1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_ledger_of_a_live_flow_is_left_alone(tmp_path):
    proc, folder, child = start_owner(tmp_path)
    try:
        assert lifecycle.clean_leftovers(folder=tmp_path / "ledgers") == 0
        assert folder.is_dir() and not gone(child)
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: gone(child), timeout=10)


def test_watch_server_reports_a_lost_server_once(tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "health").write_text("true")  # served as /health, as Prefect's API answers
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lost: list[str] = []
    stop = lifecycle.watch_server(url, lost.append, interval=0.1, misses=3)
    time.sleep(0.5)
    assert lost == []  # it answers
    server.shutdown()
    server.server_close()
    wait_for(lambda: lost, timeout=5)
    time.sleep(0.5)
    assert len(lost) == 1 and f"the Prefect server at {url} stopped answering" in lost[0]
    stop.set()
