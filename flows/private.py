"""Per-user state (flow ledgers, a worker's cache, experiment clones) in a
folder only this user can write.

The system's temporary folder is shared: anyone can create
``/tmp/mnist-cnn-<uid>`` before its owner does, open to all, or as a symlink
to a folder of the victim's, and plant files there that a flow would act on
(a ledger naming folders to delete and a server to send credentials to; a
run-cache record naming another model). So the folder is created
exclusively with mode 0700, and one found is used only if it is a real
folder (not a symlink), owned by this user and writable by nobody else: the
check ssh-agent and tmux make of their sockets' folders. Anything else is
refused, naming the folder. Below it, only this user can create anything.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class UnsafeFolder(RuntimeError):
    """A folder for per-user state that someone else could write."""


def check_private(path: Path) -> Path:
    """``path`` if it is a folder (not a symlink) of this user's that no one
    else may write; UnsafeFolder naming it otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeFolder(f"{path}: no such folder") from None
    problem = ("is a symlink" if stat.S_ISLNK(st.st_mode) else
               "is not a folder" if not stat.S_ISDIR(st.st_mode) else
               f"belongs to user id {st.st_uid}, not to you ({os.getuid()})"
               if st.st_uid != os.getuid() else
               f"can be written by others (mode {stat.S_IMODE(st.st_mode):o})"
               if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) else None)
    if problem:
        raise UnsafeFolder(f"{path} {problem}: this project keeps per-user state there and "
                           "trusts nothing another user could have put in it. Remove it (or "
                           "set TMPDIR to a folder of your own), then run again")
    return path


def root() -> Path:
    """``$TMPDIR/mnist-cnn-<uid>``: made here (0700) or checked as found."""
    path = Path(tempfile.gettempdir()) / f"mnist-cnn-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # exclusive: fails if anything is there already
    return check_private(path)


def private_dir(*parts: str) -> Path:
    """A folder under :func:`root` (made if missing); only this user can have
    made it or anything in it."""
    path = root().joinpath(*parts)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
