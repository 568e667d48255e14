"""What every stage does around its core, named where the stage reads
(``with runner.stage(...)``), and one clear line for expected errors.

:func:`stage` wraps a stage's core in three guards, each fixing a failure
seen before:

- **one live instance per stage**: a file lock (filelock); a second instance
  waits a few seconds (time for an orphan to stop), then refuses, naming the
  holder;
- **no orphans**: the stage stops when the process that started it
  (``dvc repro``, a flow run) is gone. DVC leaves a killed run's stage
  process running, and an orphan would train on beside the next run;
- **no result recorded for inputs that changed while it ran**: after the
  core, the params keys, the code and the input files the stage read are
  compared with what is on disk now. DVC (and the flow) record what is on
  disk after the command, so an edit made meanwhile would be recorded as
  the inputs of a result computed from the old ones. This is the one such
  guard: the flow relies on it too.

:func:`run` turns expected failures (bad params, bad data, a busy or outdated
stage, a full disk) into one message and exit status 1; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from mnist_cnn.cli import progress
from mnist_cnn.cli.checks import MAX_TASK_NAME, ParamsError, load_params, task_name_problem
from mnist_cnn.dataset import DataError
from mnist_cnn.params import PARAMS_FILE, TASK_NAME, Params, get_key, read
from mnist_cnn.provenance import file_digest, result_code

log = logging.getLogger(__name__)

WORK = Path(".work")  # stage locks and work in progress (git- and DVC-ignored)
LOCK_WAIT_S = 5.0  # time for an orphan that just lost its parent to stop
_SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}


class StageBusy(RuntimeError):
    """Another live process is this stage."""


class InputsChanged(RuntimeError):
    """params.yaml, the stage's code or its input files changed while it ran."""


def work_dir(stage_name: str) -> Path:
    """Where a stage keeps work in progress between attempts."""
    return WORK / stage_name


# --- one live instance ----------------------------------------------------------------


@contextlib.contextmanager
def stage_lock(stage_name: str, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``stage_name``'s lock; a second live instance waits ``wait`` seconds,
    then refuses with StageBusy naming the holder. The kernel drops the lock
    when its holder dies, however it dies."""
    WORK.mkdir(exist_ok=True)
    holder = WORK / f"{stage_name}.holder"
    try:
        lock = FileLock(WORK / f"{stage_name}.lock").acquire(timeout=wait)
    except Timeout:
        who = holder.read_text().strip() if holder.is_file() else "another process"
        raise StageBusy(f"{stage_name} is already running ({who}); wait for it to finish "
                        "or stop it, then run again") from None
    with lock:
        holder.write_text(f"process {os.getpid()}, started {time.strftime('%H:%M:%S')}")
        yield


# --- no orphans ---------------------------------------------------------------------------


def _launcher() -> psutil.Process | None:
    """The process that started this one: the parent, or the shell's parent
    when a shell sits between (DVC runs ``$SHELL -c cmd``)."""
    proc = psutil.Process().parent()
    with contextlib.suppress(psutil.Error):
        while proc is not None and proc.name() in _SHELLS and proc.ppid() > 1:
            proc = proc.parent()
    return proc if proc is not None and proc.pid > 1 else None


def stop_when_orphaned(interval: float = 0.5) -> None:
    """Stop this process (SIGTERM) once its launcher is gone."""
    launcher = _launcher()
    if launcher is None:
        return

    def watch() -> None:
        while launcher.is_running():  # pid and start time: a reused pid is not it
            time.sleep(interval)
        log.error("the process that started this stage (pid %d) is gone; stopping",
                  launcher.pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


# --- inputs that change while the stage runs ---------------------------------------------


def _files(paths: Iterable[Path]) -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of every file under ``paths``: DVC replaces an
    output it checks out or restores, so each change shows."""
    found = {}
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            with contextlib.suppress(FileNotFoundError):
                st = file.stat()
                if file.is_file():
                    found[str(file)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


class Inputs:
    """The params keys, code and input files a stage read, to compare after it ran."""

    def __init__(self, params_file: str | Path, keys: list[str], files: Iterable[Path] = ()):
        self.params_file, self.keys, self.paths = Path(params_file), keys, list(files)
        self.values = self._values()
        self.code = result_code()
        self.files = _files(self.paths)

    def _values(self) -> dict[str, object]:
        data = read(self.params_file)
        return {key: get_key(data, key) for key in self.keys}

    def changes(self) -> list[str]:
        try:
            now = self._values()
        except Exception as exc:  # an unreadable file is a change too
            return [f"{self.params_file} ({exc})"]
        changed = [f"{self.params_file}: {k}" for k in self.keys if now[k] != self.values[k]]
        changed += [file for file, digest in self.code.items()
                    if not Path(file).is_file() or file_digest(file) != digest]
        files = _files(self.paths)
        changed += sorted(f for f in self.files.keys() | files.keys()
                          if self.files.get(f) != files.get(f))
        return changed


@contextlib.contextmanager
def stage(name: str, params_file: str | Path, keys: list[str], inputs: Iterable[Path] = (),
          shapes: bool | Collection[str] = False) -> Iterator[Params]:
    """Run a stage's core inside: its lock held, stopped if orphaned, its params
    loaded and checked (every problem named before any work; ``shapes``: the
    layers of every task, or of the tasks it names, built with Keras too), its
    inputs compared after it; and it says where it is in its run (progress).

    ``keys`` are the params keys the stage reads, those of its ``params:`` in
    dvc.yaml (tests/test_dvc_yaml.py checks); ``inputs`` the files and
    folders it reads."""
    stop_when_orphaned()
    with stage_lock(name):
        # Inputs first: an edit between the two reads shows as a change.
        watched = Inputs(params_file, keys, inputs)
        params = load_params(params_file, shapes)
        with progress.timed(name, params):
            yield params
            if changed := watched.changes():
                raise InputsChanged(
                    f"{name}: its inputs changed while it ran ({'; '.join(changed)}), so its "
                    "outputs are from the old ones; DVC must not record them as the new "
                    "ones' result. Run it again.")


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
    try:
        main()
    except ParamsError as exc:  # one line per problem: whoever reads the last lines gets them
        for problem in exc.problems:
            print(f"error: {exc.source}: {problem}", file=sys.stderr)
        return 1
    except (DataError, StageBusy, InputsChanged) as exc:
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
    if len(name) > MAX_TASK_NAME:  # before it names a lock file
        raise ParamsError("--task" if given else str(PARAMS_FILE), [task_name_problem(name)])
    if not re.fullmatch(TASK_NAME, name):  # it names the stage's lock and work files
        if given:
            raise ParamsError("--task", [f"{name!r} is not a task name (letters, digits, _)"])
        raise ParamsError(str(PARAMS_FILE), [f"tasks.{name}: not a valid task name (letters, "
                                             "digits and _, starting with a letter)"])
    return name
