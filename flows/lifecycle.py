"""Nothing a flow run starts on this machine outlives it.

A flow run starts processes (its stages' commands and ready interpreters;
Prefect's temporary server when no PREFECT_API_URL is set; Dask's local
workers) and folders (an experiment's temporary clone). Stopped by Ctrl-C or
``kill``, it stops and removes them itself, and stops the stages it sent to
Dask workers; killed with ``kill -9``, it cannot. So each flow run has a
guardian (a stage already sent to a Dask worker of another machine then runs
to its end there; its result goes to the remote, where the next run finds it):

- :class:`Guardian` starts ``python -m flows.lifecycle`` in a session of its
  own (a ``kill`` of the flow's process group spares it). The flow tells it,
  on a pipe, the folders to remove if it dies and its flow run's id; the
  pipe's end of file means the flow process is gone, however it died. Twice
  a second the guardian notes the flow's descendant processes; once the flow
  is gone without saying "done", it stops those still running (each known by
  pid *and* start time, so a reused pid is never hit), removes the folders
  and marks the flow run Crashed on the Prefect server.
- It keeps all that in a ledger file, in a folder only this user can write
  (flows/private.py). If the guardian itself was killed, or the server was
  unreachable, the next flow run finishes the job (:func:`clean_leftovers`).
  Even so a ledger is acted on only within bounds: folders are removed only
  inside this user's folder of experiment clones, processes stopped only if
  they lost their parent, and a flow run is marked only on the server this
  flow run uses (with its credentials), never one a ledger names.

:func:`watch_server` ends a flow run within seconds of losing its Prefect
server, instead of letting Prefect's client retry for minutes.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

from flows.private import private_dir

CLONES = "experiments"  # under flows/private.py's folder: experiment clones
SNAPSHOT_S = 0.5  # how often the guardian notes the flow's descendants
STOP_WAIT_S = 5.0  # between SIGTERM and SIGKILL for a leftover process
LEDGER_DAYS = 7  # a flow run still unmarked after this long is given up
CRASH_MESSAGE = "the flow's process ended without reporting (killed, or its server was lost)"


def ledger_dir() -> Path:
    """Per user, private: a ledger names processes and folders to stop and remove."""
    return private_dir("flows")


def removable(path: str | Path) -> bool:
    """Whether a ledger may remove ``path``: a folder (not a symlink) inside
    this user's folder of experiment clones, the only folders a flow owns."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    return private_dir(CLONES) in path.resolve().parents


def _identity(proc: psutil.Process) -> tuple[int, float]:
    return proc.pid, proc.create_time()


def _same_process(pid: int, created: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the one started at ``created``."""
    try:
        proc = psutil.Process(pid)
        return proc if abs(proc.create_time() - created) < 0.01 else None
    except psutil.Error:
        return None


# --- what a guardian does when its flow is gone ---------------------------------------


def _left_behind(proc: psutil.Process, listed: set[int]) -> bool:
    """Whether ``proc`` lost the process that started it: its parent is gone
    (re-parented to PID 1) or is itself a leftover of the same ledger. A
    process whose parent lives belongs to that parent, even if its pid and
    start time match a ledger's: a start time read after the system clock was
    stepped can make a live flow look dead to another process (seen on a busy
    VM: another flow's clean-up stopped a live flow's stages)."""
    try:
        parent = proc.parent()  # None once the parent is gone
    except psutil.Error:
        return False
    return parent is None or parent.pid <= 1 or parent.pid in listed or _gone(parent)


def _gone(proc: psutil.Process) -> bool:
    """Ended (a zombie has ended: its children have a new parent already)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def terminate(processes: list[psutil.Process], wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM, then SIGKILL after ``wait_s`` for those still running: the one
    way this project stops a process (a stage and its children, a leftover,
    a server)."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            proc.resume()  # a suspended process (Ctrl-Z) gets its TERM now, not a KILL later
    _, still = psutil.wait_procs(processes, timeout=wait_s)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(still, timeout=wait_s)


def _stop(processes: list[tuple[int, float]]) -> None:
    found = [p for pid, created in processes if (p := _same_process(pid, created))]
    listed = {p.pid for p in found}
    terminate([p for p in found if _left_behind(p, listed)])


def _mark_crashed(flow_run: dict, api_url: str | None = None) -> bool:
    """Set the flow run Crashed (if it still looks running) and say so in its
    name. False if the server did not answer: try again later. A run of a
    temporary server (``api_url`` None in the ledger) is looked up at
    ``api_url``: temporary servers share Prefect's local database. Only
    ``api_url`` is sent this user's credentials, when given: a run of
    another server waits for a flow run that uses that one."""
    import httpx

    if api_url and flow_run.get("api_url") not in (None, api_url):
        return False
    base = (api_url or flow_run.get("api_url") or "").rstrip("/")
    if not base:
        return False
    try:
        with httpx.Client(timeout=5, headers=api_headers()) as http:
            run = http.get(f"{base}/flow_runs/{flow_run['id']}")
            if run.status_code == 404:
                return True
            run.raise_for_status()
            data = run.json()
            if data["state_type"] in ("RUNNING", "PENDING", "SCHEDULED"):
                http.post(f"{base}/flow_runs/{flow_run['id']}/set_state", json={
                    "state": {"type": "CRASHED", "name": "Crashed", "message": CRASH_MESSAGE},
                    "force": True}).raise_for_status()
            name = data["name"]
            if name.endswith(": running"):
                http.patch(f"{base}/flow_runs/{flow_run['id']}", json={
                    "name": name.removesuffix(": running") + ": crashed",
                    "tags": ["crashed", *[t for t in data["tags"] if t != "running"]],
                }).raise_for_status()
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    return True


def clean_up(ledger: dict, api_url: str | None = None) -> bool:
    """Undo what ``ledger`` lists; True once nothing is left to do. The flow
    run is marked first: its server may be one of the processes to stop."""
    run = ledger.get("flow_run")
    marked = run is None or _mark_crashed(run, api_url)
    _stop([tuple(p) for p in ledger.get("processes", [])])
    for path in ledger.get("paths", []):
        if removable(path):
            shutil.rmtree(path, ignore_errors=True)
    return marked


def clean_leftovers(api_url: str | None = None, folder: Path | None = None) -> int:
    """Clean up after guardians that died before their flow run's leftovers
    were gone (``api_url``: the server this run uses, for flow runs of a
    temporary server); returns how many ledgers were settled. A ledger whose
    flow run could not be marked for a week is given up."""
    folder = folder or ledger_dir()
    settled = 0
    for path in sorted(folder.glob("*.json")):
        try:
            ledger = json.loads(path.read_text())
            owner, guardian = ledger["owner"], ledger["guardian"]
        except (OSError, ValueError, KeyError):
            continue
        if _same_process(*owner) or _same_process(*guardian):
            continue  # its flow or its guardian is still at work
        with contextlib.suppress(OSError):
            stale = time.time() - path.stat().st_mtime > LEDGER_DAYS * 86400
        if clean_up(ledger, api_url) or stale:
            path.unlink(missing_ok=True)
            settled += 1
        else:
            ledger.update(processes=[], paths=[])
            path.write_text(json.dumps(ledger))
    return settled


# --- the guardian process --------------------------------------------------------------


def _descendants(owner: psutil.Process, me: int) -> set[tuple[int, float]]:
    found = set()
    with contextlib.suppress(psutil.Error):
        for child in owner.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.pid != me:
                    found.add(_identity(child))
    return found


def guard(owner_pid: int, ledger_path: Path) -> None:
    """The guardian's loop (``python -m flows.lifecycle``): read instructions
    on stdin until end of file, noting the owner's descendants meanwhile."""
    owner = psutil.Process(owner_pid)
    ledger = {"owner": list(_identity(owner)), "guardian": list(_identity(psutil.Process())),
              "processes": [], "paths": [], "flow_run": None}
    seen: set[tuple[int, float]] = set()

    def save() -> None:
        ledger["processes"] = sorted(map(list, seen))
        tmp = ledger_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ledger))
        os.replace(tmp, ledger_path)

    save()
    done = False
    stdin = sys.stdin.buffer.raw
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stdin, selectors.EVENT_READ)
        while True:
            if sel.select(timeout=SNAPSHOT_S):
                chunk = os.read(stdin.fileno(), 65536)
                if not chunk:
                    break  # the flow process is gone, or closed the pipe
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    what, _, arg = line.decode().partition(" ")
                    if what == "own-path":
                        ledger["paths"].append(arg)
                    elif what == "drop-path":
                        ledger["paths"] = [p for p in ledger["paths"] if p != arg]
                    elif what == "flow-run":
                        ledger["flow_run"] = json.loads(arg)
                    elif what == "done":
                        done = True
                changed = bool(lines)
            else:
                changed = False
            now = _descendants(owner, os.getpid())
            alive = {p for p in seen if _same_process(*p)}
            if now - alive or alive != seen or changed:
                seen = alive | now
                save()
    if not done:  # the pipe closes before the owner's children are re-parented
        deadline = time.monotonic() + STOP_WAIT_S
        while not _gone(owner) and time.monotonic() < deadline:
            time.sleep(0.02)
    if done or clean_up(ledger):
        ledger_path.unlink(missing_ok=True)
    else:  # the server did not answer: the next flow run marks the run
        seen.clear()
        ledger["paths"] = []
        save()


class Guardian:
    """The flow process's side: start a guardian, tell it what to undo."""

    def __init__(self, folder: Path | None = None):
        if folder is None:
            folder = ledger_dir()
        else:  # a test's
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ledger = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "flows.lifecycle", str(os.getpid()), str(self.ledger)],
            stdin=subprocess.PIPE, start_new_session=True,
            cwd=Path(__file__).resolve().parents[1])

    def _say(self, line: str) -> None:
        with self._lock, contextlib.suppress(BrokenPipeError, ValueError):
            self._proc.stdin.write(f"{line}\n".encode())
            self._proc.stdin.flush()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def own_path(self, path: str | Path) -> None:
        """Remove ``path`` if this process dies before it calls drop_path."""
        self._say(f"own-path {path}")

    def drop_path(self, path: str | Path) -> None:
        self._say(f"drop-path {path}")

    def flow_run(self, flow_run_id: str, api_url: str | None = None) -> None:
        """Mark this flow run Crashed if this process dies while the run has
        no final state yet. ``api_url`` None: a temporary server's run."""
        self._say("flow-run " + json.dumps({"id": flow_run_id, "api_url": api_url}))

    def close(self) -> None:
        """This process ends normally: nothing to undo."""
        self._say("done")
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)


_GUARDIAN: Guardian | None = None
_GUARDIAN_LOCK = threading.Lock()


def guardian() -> Guardian:
    """This process's guardian, started on first use. It acts only if the
    process dies: a normal exit tells it so (atexit)."""
    global _GUARDIAN
    with _GUARDIAN_LOCK:
        if _GUARDIAN is None or not _GUARDIAN.alive:
            _GUARDIAN = Guardian()
            atexit.register(_GUARDIAN.close)
        return _GUARDIAN


# --- a lost Prefect server ------------------------------------------------------------------


def api_headers() -> dict[str, str]:
    """What Prefect's client sends to authenticate, from the same settings."""
    if key := os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {key}"}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    return {}


def server_alive(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout,
                         headers=api_headers()).status_code == 200
    except httpx.HTTPError:
        return False


def watch_server(api_url: str, on_lost: Callable[[str], None], interval: float = 2.0,
                 misses: int = 3) -> threading.Event:
    """Call ``on_lost(message)`` once the server at ``api_url`` has failed
    ``misses`` health checks in a row; set the returned event to stop watching."""
    stop = threading.Event()

    def watch() -> None:
        failed = 0
        while not stop.wait(interval):
            failed = 0 if server_alive(api_url) else failed + 1
            if failed >= misses:
                on_lost(f"the Prefect server at {api_url} stopped answering "
                        f"({misses} health checks in {misses * interval:.0f} s)")
                return

    threading.Thread(target=watch, name="watch-prefect-server", daemon=True).start()
    return stop


def exit_now(message: str, before: Callable[[], None] = lambda: None) -> None:
    """Print ``error: message`` and end this process at once, after ``before``
    (stop what must not outlive it). The guardian does the rest."""
    with contextlib.suppress(Exception):
        before()
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the flow, not for this
    guard(int(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
