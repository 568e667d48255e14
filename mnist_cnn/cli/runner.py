"""What every stage does around its core: one clear line for expected errors,
one live instance per stage, no orphans, and no result recorded for inputs
that changed while it ran.

- :func:`run` sets up logging, runs the stage's ``main`` and turns expected
  failures (bad params, bad data, a busy or outdated stage) into one message
  and exit status 1; anything else is a bug and keeps its traceback. It also
  stops the stage when the process that started it (``dvc repro``, a flow
  run) is gone: DVC leaves a killed run's stage process running, and an
  orphan would train on beside the next run.
- :func:`stage` holds the stage's lock (a second instance refuses, naming the
  holder), loads and checks params, and, after the core has run, compares the
  params keys and code the stage read with what is on disk now: DVC records
  what is on disk after the command, so an edit made meanwhile would be
  recorded as the inputs of a result computed from the old ones.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mnist_cnn.cli.checks import ParamsError, load_params
from mnist_cnn.dataset import DataError
from mnist_cnn.params import PARAMS_FILE, TASK_NAME, Params, read
from mnist_cnn.provenance import file_digest, result_code

log = logging.getLogger(__name__)

WORK = Path(".work")  # stage locks and work in progress (git- and DVC-ignored)
LOCK_WAIT_S = 5.0  # time for an orphan that just lost its parent to stop
_SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}


class StageBusy(RuntimeError):
    """Another live process is this stage."""


class InputsChanged(RuntimeError):
    """params.yaml or the stage's code changed while the stage ran."""


# --- the stage's lifetime ------------------------------------------------------------


def work_dir(stage_name: str) -> Path:
    """Where a stage keeps work in progress between attempts."""
    return WORK / stage_name


@contextlib.contextmanager
def stage_lock(stage_name: str, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``stage_name``'s lock; a second live instance waits ``wait`` seconds,
    then refuses with StageBusy naming the holder. The kernel drops the lock
    when its holder dies, however it dies."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"{stage_name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = path.read_text().strip() or "another process"
                    raise StageBusy(
                        f"{stage_name} is already running ({holder}); wait for it to finish "
                        "or stop it, then run again") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}, started {time.strftime('%H:%M:%S')}".encode())
        yield
    finally:
        os.close(fd)


class Inputs:
    """The params keys and the code a stage read, to compare after it ran."""

    def __init__(self, params_file: str | Path, keys: list[str]):
        self.params_file, self.keys = Path(params_file), keys
        self.values = self._values()
        self.code = result_code()

    def _values(self) -> dict[str, object]:
        data = read(self.params_file)
        out = {}
        for key in self.keys:
            node = data
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out[key] = node
        return out

    def changes(self) -> list[str]:
        try:
            now = self._values()
        except Exception as exc:  # an unreadable file is a change too
            return [f"{self.params_file} ({exc})"]
        changed = [f"{self.params_file}: {k}" for k in self.keys if now[k] != self.values[k]]
        changed += [file for file, digest in self.code.items()
                    if not Path(file).is_file() or file_digest(file) != digest]
        return changed


@contextlib.contextmanager
def stage(name: str, params_file: str | Path, keys: list[str]) -> Iterator[Params]:
    """Run a stage's core inside: its lock held, its params loaded and checked
    (every problem named before any work), and its inputs compared after it.

    ``keys`` are the params keys the stage reads: those of its ``params:`` in
    dvc.yaml (tests/test_dvc_yaml.py checks)."""
    with stage_lock(name):
        # Inputs first: an edit between the two reads shows as a change.
        inputs = Inputs(params_file, keys)
        params = load_params(params_file)
        yield params
        if changed := inputs.changes():
            raise InputsChanged(
                f"{name}: its inputs changed while it ran ({'; '.join(changed)}), so its "
                "outputs are from the old ones; DVC must not record them as the new ones' "
                "result. Run it again.")


# --- no orphans -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), int(fields[19])


def _launcher() -> tuple[int, int] | None:
    """(pid, start time) of the process that started this one: the parent, or
    the shell's parent when a shell sits between (DVC runs ``$SHELL -c cmd``)."""
    pid = os.getppid()
    while (info := _stat(pid)) and info[0] in _SHELLS and info[1] > 1:
        pid = info[1]
    return (pid, info[2]) if info and pid > 1 else None


def stop_when_orphaned(interval: float = 0.5) -> None:
    """Stop this process (SIGTERM) once its launcher is gone."""
    launcher = _launcher()
    if launcher is None:
        return

    def watch() -> None:
        pid, started = launcher
        while (info := _stat(pid)) and info[2] == started:
            time.sleep(interval)
        log.error("the process that started this stage (pid %d) is gone; stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


# --- a full disk --------------------------------------------------------------------------

# h5py's errors name the file in their text only.
_FILENAME = re.compile(r"filename = '([^']+)'")


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() or not os.path.ismount(path):
        if path.parent == path:
            break
        path = path.parent
    return path


def no_space(exc: BaseException) -> str | None:
    """One line for an error that a full file system caused, else None."""
    if not isinstance(exc, OSError) or (
            exc.errno not in (errno.ENOSPC, errno.EDQUOT)
            and "No space left on device" not in str(exc)):
        return None
    found = exc.filename or (m[1] if (m := _FILENAME.search(str(exc))) else None)
    path = Path(found or ".")
    mount = _mount_point(path)
    free = shutil.disk_usage(mount).free / 1e6
    return (f"no space left on the file system of {mount} ({free:.0f} MB free) while writing "
            f"{path}: free some space there, then run again (finished stages and epochs are "
            "kept)")


# --- the command line ------------------------------------------------------------------


def run(main: Callable[[], object]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    stop_when_orphaned()
    try:
        main()
    except (ParamsError, DataError, StageBusy, InputsChanged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if (message := no_space(exc)) is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        # Now, without the interpreter's clean-up: h5py crashes (SIGSEGV)
        # releasing a file whose write failed for lack of space.
        os._exit(1)
    return 0


def task_name(given: str | None) -> str:
    """The task a per-task stage works on: ``--task``, else the item of the DVC
    stage running it (``DVC_STAGE=train@task1``). dvc.yaml never pastes a task
    name into a shell command; DVC passes it here as data."""
    stage_name = os.environ.get("DVC_STAGE", "")
    if not given and "@" not in stage_name:
        raise ParamsError("--task", ["give --task NAME (or run this through `dvc repro`, "
                                     "which sets DVC_STAGE)"])
    name = given or stage_name.partition("@")[2]
    if not re.fullmatch(TASK_NAME, name):  # it names the stage's lock and work files
        if given:
            raise ParamsError("--task", [f"{name!r} is not a task name (letters, digits, _)"])
        raise ParamsError(str(PARAMS_FILE), [f"tasks.{name}: not a valid task name (letters, "
                                             "digits and _, starting with a letter)"])
    return name
