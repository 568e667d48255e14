"""The only places where this project reaches into DVC's internals, and why.

Everything else goes through DVC's stage and repository APIs (``Stage.changed``,
``remove_outs``, ``repo.stage_cache.restore``, ``save``, ``commit``, ``dump``:
the calls ``dvc repro`` makes; ``Repo.push``/``pull``). tests/test_dvc_internals.py
fails if a DVC upgrade moves what these rely on.

Two patches, active only while a flow holds the project; neither changes a result:

- :func:`atomic_dvc_writes`: DVC rewrites dvc.lock in place (open with
  truncation, then dump). A flow stopped during that write (SIGTERM raises
  inside the flow) left it cut short, and every stage after the cut looked
  stale. Written beside and renamed, it is the old file or the new one.
- :func:`params_parsed_once`: DVC parses params.yaml afresh (ruamel, pure
  Python, ~50 ms) for every params dependency it checks: 40+ times in a flow
  run, most of a no-op run's time. Each version of the file (by mtime and
  size) is parsed once.

And sharing the run-cache with a team (``make push`` / ``make pull``):

- :func:`push` / :func:`pull`: ``dvc push --run-cache`` sends the run-cache's
  records but not the outputs they point to (only the workspace's), so a
  teammate who pulls them still has to train. These also transfer the
  outputs of every record, with DVC's own transfer; a plain ``dvc repro``
  then restores any variant either of you computed.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path

from mnist_cnn.io import atomic_path

# What the patches replace: module, attribute (tests check they still exist).
DUMP_TARGETS = (("dvc.utils.serialize._common", "_dump_data"),
                ("dvc.utils.serialize._yaml", "_dump_data"))
PARAMS_TARGET = ("dvc.dependency.param", "load_path")


@contextlib.contextmanager
def _replaced(module, name: str, value) -> Iterator[object]:
    """``module.name`` is ``value`` inside the block; restored after."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield original
    finally:
        setattr(module, name, original)


def _is_local(fs) -> bool:
    return fs is None or getattr(fs, "protocol", None) == "local"


@contextlib.contextmanager
def atomic_dvc_writes() -> Iterator[None]:
    from dvc.utils.serialize import _common, _yaml

    original = _common._dump_data

    def dump_data(path, data, dumper, fs=None, **dumper_args):
        if not _is_local(fs):
            return original(path, data, dumper, fs=fs, **dumper_args)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fd:
            dumper(data, fd, **dumper_args)
        return None

    # _yaml imported the name from _common: replace it in both.
    with _replaced(_common, "_dump_data", dump_data), _replaced(_yaml, "_dump_data", dump_data):
        yield


@contextlib.contextmanager
def params_parsed_once() -> Iterator[None]:
    from dvc.dependency import param

    original = param.load_path
    parsed: dict = {}

    def load_path(path, fs, **kwargs):
        if not _is_local(fs):
            return original(path, fs, **kwargs)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size, tuple(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = original(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    with _replaced(param, "load_path", load_path):
        yield


@contextlib.contextmanager
def applied() -> Iterator[None]:
    with atomic_dvc_writes(), params_parsed_once():
        yield


# --- sharing the run-cache ----------------------------------------------------------


def run_cache_records(repo) -> list[tuple[str, str]]:
    """Every (key, value) record of the local run-cache: runs/<xx>/<key>/<value>."""
    runs = Path(repo.stage_cache.cache_dir)
    return sorted((p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file())


def _record_outputs(repo) -> dict:
    """{remote odb or None: objects} the run-cache's records point to."""
    with contextlib.chdir(repo.root_dir):  # DVC builds the records' stages from here
        return repo.stage_cache.get_used_objs(run_cache_records(repo))


def push(repo, remote: str | None = None) -> int:
    """``dvc push --run-cache`` plus every record's outputs; returns files sent."""
    sent = repo.push(run_cache=True, remote=remote)
    for odb, objs in _record_outputs(repo).items():
        sent += len(repo.cloud.push(objs, remote=remote, odb=odb).transferred)
    return sent


def pull(repo, remote: str | None = None) -> int:
    """``dvc pull --run-cache`` plus every record's outputs, into the cache."""
    got = repo.fetch(run_cache=True, remote=remote)
    for odb, objs in _record_outputs(repo).items():
        got += len(repo.cloud.pull(objs, remote=remote, odb=odb).transferred)
    repo.pull(remote=remote)
    return got
