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
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from flows import lifecycle
from flows.private import private_dir
from tests.conftest import ROOT, gone, wait_for

# A stand-in for a flow process: a guardian, a child process (as Prefect's
# temporary server or a stage is), a registered folder; then it waits.
OWNER = textwrap.dedent("""
    import subprocess, sys, tempfile, time
    from pathlib import Path
    from flows import lifecycle
    from flows.private import private_dir
    guardian = lifecycle.Guardian(Path(sys.argv[1]))
    folder = tempfile.mkdtemp(dir=private_dir(lifecycle.CLONES))
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
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
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


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This process's temporary folder (and so flows/private.py's) is ``tmp_path``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def test_the_next_run_settles_what_a_killed_guardian_left(private_tmp):
    """Flow and guardian both killed (e.g. `kill -9 -- -PGID` of a session):
    the next run's clean_leftovers stops the leftover process by pid and start
    time, and removes the folder."""
    ledgers = private_tmp / "ledgers"
    ledgers.mkdir()
    orphan = orphan_sleep()  # what a dead flow's stage is: its parent gone
    folder = private_dir(lifecycle.CLONES) / "clone"
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


# --- nothing planted under the shared temporary folder is trusted ----------------------


class Listener:
    """An HTTP server on loopback that notes every request (and its headers)."""

    def __init__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _note(self):
                seen.append((self.command, self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"state_type": "RUNNING", "name": "x: running", "tags": []}')

            do_GET = do_POST = do_PATCH = _note

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("plant", ["open to all", "symlink"])
def test_a_state_folder_someone_else_made_first_is_refused(tmp_path, plant):
    """Another user creates $TMPDIR/mnist-cnn-<uid> before the victim's first
    run, and plants a ledger naming a folder of the victim's and a server of
    theirs: the flow refuses to start, naming the folder; nothing is deleted
    and nothing is sent."""
    listener, victim = Listener(), tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    planted = tmp_path / f"mnist-cnn-{os.getuid()}"
    if plant == "symlink":  # to a folder the attacker controls
        (tmp_path / "elsewhere").mkdir(mode=0o777)
        planted.symlink_to(tmp_path / "elsewhere")
    else:
        planted.mkdir()
        planted.chmod(0o777)
    for folder in (planted / "flows", tmp_path / f"mnist-cnn-flows-{os.getuid()}"):
        folder.mkdir(parents=True, exist_ok=True)  # (the second: where it was kept before)
        (folder / "1-x.json").write_text(json.dumps({
            "owner": [1, 1.0], "guardian": [1, 2.0], "processes": [], "paths": [str(victim)],
            "flow_run": {"id": "00000000-0000-0000-0000-000000000001",
                         "api_url": listener.url}}))
    env = {**os.environ, "TMPDIR": str(tmp_path), "PREFECT_API_AUTH_STRING": "admin:s3cret"}
    try:
        proc = subprocess.run([sys.executable, "-m", "flows.pipeline", "--project", str(ROOT)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        listener.close()
    assert proc.returncode == 1
    assert f"{planted} " in proc.stderr and ("symlink" in proc.stderr or "mode 777" in
                                            proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert listener.seen == []


def test_a_ledger_acts_only_on_the_flows_own_folders_and_server(private_tmp):
    """Even a ledger in the user's own folder (written by a flow of a buggy
    or older version, say) removes only experiment clones and sends the
    credentials only to the server this run uses."""
    ledgers = lifecycle.ledger_dir()
    listener, victim = Listener(), private_tmp / "victim"
    victim.mkdir()
    clone = Path(tempfile.mkdtemp(dir=private_dir(lifecycle.CLONES)))
    link = private_dir(lifecycle.CLONES) / "link"
    link.symlink_to(victim)
    (ledgers / "1-x.json").write_text(json.dumps({
        "owner": [1, 1.0], "guardian": [1, 2.0], "processes": [],
        "paths": [str(victim), str(link), str(clone)],
        "flow_run": {"id": "00000000-0000-0000-0000-000000000001", "api_url": listener.url}}))
    os.environ["PREFECT_API_AUTH_STRING"] = "admin:s3cret"
    try:
        lifecycle.clean_leftovers("http://127.0.0.1:9/api")  # this run's server: not theirs
    finally:
        del os.environ["PREFECT_API_AUTH_STRING"]
        listener.close()
    assert victim.is_dir() and link.is_symlink() and not clone.exists()
    assert listener.seen == []
