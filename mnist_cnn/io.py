"""Atomic file output: a process killed at any moment leaves the previous file or
none, never a truncated one that DVC or the next stage would take as valid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# mkstemp creates files 0600; give outputs the usual permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _split(dest: Path) -> tuple[str, str]:
    """``epoch-3.weights.h5`` -> (``epoch-3``, ``.weights.h5``): temporaries keep
    every suffix (Keras insists on ``.keras`` and ``.weights.h5``)."""
    suffix = "".join(dest.suffixes)
    return dest.name[: len(dest.name) - len(suffix)] or dest.name, suffix


def _clear_leftovers(dest: Path) -> None:
    """Remove temporaries a killed earlier attempt left beside ``dest``. Safe:
    one writer per output at a time (the stage lock, mnist_cnn.cli.runner)."""
    stem, _ = _split(dest)
    for old in dest.parent.glob(f".{stem}.*.tmp*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it over ``dest``.

    The temporary name keeps ``dest``'s suffix and lives in the same folder, so
    the final ``os.replace`` is atomic.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(dest)
    stem, suffix = _split(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{stem}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # data on disk before the name points at it
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``dest``; on success it replaces ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = dest.with_name(f".{dest.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success move each file in it into ``dest``,
    one atomic rename per file.

    For a folder whose files are separate DVC outputs (evaluate's): each file
    lands whole, and a file the stage does not write is left alone, where
    replacing the whole folder would drop it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(dest)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        yield staging
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = dest / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(file, 0o666 & ~_UMASK)
            os.replace(file, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json(dest: str | Path, data: Any) -> None:
    write_text(dest, json.dumps(data, indent=2) + "\n")
