"""Every use of DVC beyond ``dvc.repo.Repo`` (and its stages' methods) and
``dvc.exceptions`` in this project, and why; one exception: the stages read
params.yaml with DVC's YAML reader (mnist_cnn/params.py), so that what trains
is what dvc.lock records, and the stage code must not import the flows.

Through Repo go the calls ``dvc repro`` makes (``Stage.changed``,
``remove_outs``, ``repo.stage_cache.restore``, ``save``, ``commit``, ``dump``)
and ``Repo.push``/``pull``. tests/test_dvc_internals.py fails if a DVC upgrade
moves what this module relies on, and if another module imports DVC otherwise.

Three patches, active while a DvcProject is open in this process (a flow's
control plane, a worker's executor) and in :func:`cli`; none changes a result:

- :func:`atomic_dvc_writes`: DVC rewrites dvc.lock in place (open with
  truncation, then dump). A flow stopped during that write (SIGTERM raises
  inside the flow) left it cut short, and every stage after the cut looked
  stale. Written beside and renamed, it is the old file or the new one.
  The same for ``.dvc/tmp/rwlock``, DVC's record of which process holds which
  path (:func:`atomic_rwlock`): a ``dvc repro`` killed (``kill -9``) while
  rewriting it left it empty, and every DVC command then failed ("Unable to
  read RWLock-file ... JSON structure is corrupted") until it was deleted.
- :func:`params_parsed_once`: for every params dependency it checks, DVC
  parses the whole params.yaml afresh, then finds each key with
  ``dpath.get``, which walks every leaf of the file
  (dvc/dependency/param.py ``read_param_file``). With a train and an
  evaluate stage per task and every task in params.yaml, that is O(tasks²):
  a no-op ``dvc status`` took 91 s with 200 tasks. Patched, each version of
  the file (by mtime, size, inode) is parsed once and a key is found by
  walking its path; each caller gets a copy of just its keys: O(tasks).
  :func:`cli` is DVC's command line with these patches (``python -m
  tools.dvc``, which ``make run`` uses).

Two readings of DVC's state that it offers no API for:

- :func:`stages_running`: ``dvc repro`` releases the repository lock while a
  stage's command runs, keeping only its per-path locks (``.dvc/tmp/rwlock``).
  A flow that took the project in that window would make the ``dvc repro``
  fail to record the stage it was running: the flow refuses instead.
- :func:`command_recorded`: a stage object remembers that its ``cmd`` differs
  from dvc.lock (``cmd_changed``, set when DVC loads it); ``dvc repro`` loads
  stages afresh, the flow keeps them for the run and resets it once recorded.

And sharing the run-cache with a team (``make push`` / ``make pull``):

- :func:`push` / :func:`pull`: ``dvc push --run-cache`` sends the run-cache's
  records but not the outputs they point to (only the workspace's), so a
  teammate who pulls them still has to train. These also transfer the
  outputs of every record, with DVC's own transfer; a plain ``dvc repro``
  then restores any variant either of you computed. DVC collects every
  record's outputs at once and fails the whole transfer for one record
  whose outputs are gone (``dvc gc``); these skip that record with a warning.
- :func:`record_matches`: DVC trusts a record by where it lies; a record is
  used here only if its content hashes to its key.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

# DVC's classes and helpers this project uses beyond Repo and dvc.exceptions,
# imported here so that a DVC upgrade that moves one breaks in one place
# (tests/test_dvc_internals.py imports each):
from dvc.dependency.param import ParamsDependency  # a stage's params dependency
from dvc.lock import LockError  # another DVC process holds the project
from dvc.repo import lock_repo  # hold the repository lock, as dvc repro does
from dvc.stage.cache import RunCacheNotFoundError  # restore() found no record
from dvc.utils.serialize import load_yaml, loads_yaml, modify_yaml  # DVC's YAML, as -S writes

from mnist_cnn.io import atomic_path

__all__ = ["LockError", "ParamsDependency", "RunCacheNotFoundError", "load_yaml", "loads_yaml",
           "lock_repo", "modify_yaml"]

# What the patches replace: module, attribute (tests check they still exist).
DUMP_TARGETS = (("dvc.utils.serialize._common", "_dump_data"),
                ("dvc.utils.serialize._yaml", "_dump_data"))
PARAMS_TARGET = ("dvc.dependency.param", "read_param_file")
RWLOCK_TARGET = ("dvc.rwlock", "_edit_rwlock")
RUN_STAGE_TARGET = ("dvc.stage", "Stage", "_run_stage")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


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
    modules = [importlib.import_module(module) for module, _ in DUMP_TARGETS]
    original = getattr(modules[0], DUMP_TARGETS[0][1])

    def dump_data(path, data, dumper, fs=None, **dumper_args):
        if not _is_local(fs):
            return original(path, data, dumper, fs=fs, **dumper_args)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fd:
            dumper(data, fd, **dumper_args)
        return None

    # _yaml imported the name from _common: replace it in both.
    with contextlib.ExitStack() as patches:
        for module, (_, name) in zip(modules, DUMP_TARGETS, strict=True):
            patches.enter_context(_replaced(module, name, dump_data))
        yield


class _AtomicWrites:
    """A DVC filesystem whose files opened for writing are written beside
    and renamed into place when closed."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name: str):
        return getattr(self._fs, name)

    @contextlib.contextmanager
    def open(self, path, mode: str = "r", **kwargs):
        if "w" not in mode or not _is_local(self._fs):
            with self._fs.open(path, mode, **kwargs) as fobj:
                yield fobj
            return
        with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fobj:
            yield fobj


@contextlib.contextmanager
def atomic_rwlock() -> Iterator[None]:
    module = importlib.import_module(RWLOCK_TARGET[0])
    original = getattr(module, RWLOCK_TARGET[1])

    def edit_rwlock(lock_dir, fs, hardlink):
        return original(lock_dir, _AtomicWrites(fs), hardlink)

    with _replaced(module, RWLOCK_TARGET[1], edit_rwlock):
        yield


_MISSING = object()


def _lookup(config, key_path: str):
    """``a.b.0.c`` in the parsed file, as DVC's dpath.get finds it, in O(depth)."""
    node = config
    for segment in key_path.split("."):
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return _MISSING
    return node


@contextlib.contextmanager
def params_parsed_once() -> Iterator[None]:
    import dpath
    from dvc.dependency import param
    original = param.read_param_file
    parsed: dict = {}  # path: (version, parsed file)

    def read_param_file(fs, path, key_paths=None, flatten=False, **load_kwargs):
        if not _is_local(fs) or load_kwargs:
            return original(fs, path, key_paths, flatten=flatten, **load_kwargs)
        stat = os.stat(path)
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if parsed.get(path, (None,))[0] != version:  # only the current version is kept
            parsed[path] = (version, param.load_path(path, fs))
        config = parsed[path][1]
        if not key_paths:
            return copy.deepcopy(config)
        found: dict = {}
        if not flatten:  # as DVC does it, on the parsed file
            for key_path in dict.fromkeys(key_paths):  # each once, in order
                dpath.merge(found, copy.deepcopy(dpath.search(config, key_path, separator=".")),
                            separator=".")
            return found
        for key_path in key_paths:
            value = _MISSING if any(c in key_path for c in "*?[]") else _lookup(config, key_path)
            if value is _MISSING:  # globs, non-string keys, a missing key: dpath's way
                value = dpath.get(config, key_path, separator=".", default=_MISSING)
            if value is not _MISSING:
                found[key_path] = copy.deepcopy(value)
        return found

    with _replaced(param, "read_param_file", read_param_file):
        yield


def stages_running(repo) -> list[str]:
    """"process PID: command" for each live process holding DVC's per-path
    locks: a ``dvc repro`` (or ``dvc exp run``) inside a stage's command."""
    from dvc.rwlock import RWLOCK_FILE, SCHEMA

    path = Path(repo.tmp_dir, RWLOCK_FILE)
    for _ in range(3):  # DVC rewrites the file in place: an empty read, once in a while
        try:
            lock = SCHEMA(json.loads(path.read_text()))
            break
        except FileNotFoundError:
            return []
        except ValueError:
            time.sleep(0.1)
    else:
        return []
    infos = [*lock["write"].values(), *(i for infos in lock["read"].values() for i in infos)]
    return sorted({f"process {i['pid']}: {i['cmd']}" for i in infos
                   if psutil.pid_exists(i["pid"])})


def leftover_outputs(repo) -> list[Path]:
    """What lies in a stage's dependency folder that holds the outputs of a
    ``foreach`` stage (``data/models``) but that no stage of dvc.yaml writes: the
    outputs of a stage since removed, such as a task taken out of
    params.yaml. DVC leaves them there, and hashes them into that folder's
    dependency, so a clone without them would see the stage changed."""
    stages = repo.index.stages
    outs = {Path(out.fs_path) for stage in stages for out in stage.outs}
    # Only folders of a `foreach` stage's outputs (train@<task>): what the
    # stages of another item would have written, nothing a user put there.
    per_item = {Path(out.fs_path) for stage in stages if "@" in stage.addressing
                for out in stage.outs}
    # Sets, not a scan of every output per path: linear in the stages (403 at 200 tasks).
    folders = ({Path(dep.fs_path) for stage in stages for dep in stage.deps}
               & {parent for out in per_item for parent in out.parents})
    written = outs | {parent for out in outs for parent in out.parents}
    return sorted(child for folder in folders if folder.is_dir()
                  for child in folder.iterdir()
                  if not child.name.startswith(".")  # .gitignore, a stage's temporary files
                  and child not in written)


def remove_leftover_outputs(repo, emit=_warn) -> list[Path]:
    """Remove :func:`leftover_outputs` (their files stay in DVC's cache)."""
    found = leftover_outputs(repo)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        emit(f"removed {os.path.relpath(path, repo.root_dir)}: no stage of dvc.yaml writes "
             "it any more (a task removed from params.yaml?); DVC's cache keeps its files")
    return found


def command_recorded(stage) -> None:
    """After the flow recorded ``stage`` in dvc.lock: its cmd no longer differs."""
    stage.cmd_changed = False


_APPLIED = {"users": 0, "patches": None}
_APPLIED_LOCK = threading.Lock()


@contextlib.contextmanager
def applied() -> Iterator[None]:
    """The patches, while any DvcProject of this process is open (several
    may be: a flow's control plane and executors in its threads)."""
    with _APPLIED_LOCK:
        if _APPLIED["users"] == 0:
            patches = contextlib.ExitStack()
            patches.enter_context(atomic_dvc_writes())
            patches.enter_context(atomic_rwlock())
            patches.enter_context(params_parsed_once())
            _APPLIED["patches"] = patches
        _APPLIED["users"] += 1
    try:
        yield
    finally:
        with _APPLIED_LOCK:
            _APPLIED["users"] -= 1
            if _APPLIED["users"] == 0:
                _APPLIED["patches"].close()


# --- sharing the run-cache ----------------------------------------------------------
# A record on a remote means its outputs are there: a record is sent after its
# outputs, and only if they are all in the local cache. A record whose outputs
# are missing (removed by `dvc gc`, or by hand from a remote) is skipped with
# one warning, never failing the transfer of the others.


def run_cache_records(repo) -> list[tuple[str, str]]:
    """Every (key, value) record of the local run-cache: runs/<xx>/<key>/<value>."""
    runs = Path(repo.stage_cache.cache_dir)
    return sorted((p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file())


def record_matches(record: dict, key: str) -> bool:
    """Whether a run-cache record is one of ``key``: its command, deps and
    params hash to it. DVC trusts a record's place; a record copied under
    another key, or edited, would restore outputs computed from other inputs."""
    from dvc.stage.cache import _get_cache_hash

    return _get_cache_hash(copy.deepcopy(record), key=True) == key


def _outs(stage) -> str:
    return ", ".join(out.def_path for out in stage.outs)


def _record_stage(repo, key: str, value: str, warn=_warn):
    """The stage a local record describes, with its outputs; None (and a
    warning) if the record does not match its key."""
    record = repo.stage_cache._load_cache(key, value)
    if not record:
        return None
    if not record_matches(record, key):
        warn(f"ignoring run-cache record {key[:8]}/{value[:8]} "
             f"({', '.join(o['path'] for o in record.get('outs', []))}): its content does "
             "not match its key (altered?)")
        return None
    return repo.stage_cache._create_stage(record, wdir=repo.root_dir)


def _used_objs(stage, remote: str | None = None) -> dict | None:
    """{odb: objects} of the stage's outputs (a folder's listing fetched from
    ``remote`` if missing here); None if a listing is nowhere to be found."""
    from dvc.exceptions import CollectCacheError

    try:
        return stage.get_used_objs(remote=remote)
    except CollectCacheError:
        return None


def _send_record(repo, key: str, value: str, remote: str | None, warn=_warn) -> int:
    """Send one record's outputs, then the record; files sent. Skipped, with
    a warning, if its outputs are not all in the local cache."""
    stage = _record_stage(repo, key, value, warn)
    if stage is None:
        return 0
    objs = _used_objs(stage)
    if objs is None or not stage.outs_cached():
        warn(f"not sending run-cache record {key[:8]}/{value[:8]} ({_outs(stage)}): its "
             "outputs are not all in the local cache (removed by `dvc gc`?)")
        return 0
    sent = 0
    for odb, hashes in objs.items():
        result = repo.cloud.push(hashes, remote=remote, odb=odb)
        if result.failed:
            warn(f"not sending run-cache record {key[:8]}/{value[:8]}: "
                 f"{len(result.failed)} of its files could not be sent")
            return sent
        sent += len(result.transferred)
    local, fs, runs = _runs(repo, remote)
    dest = fs.join(runs, key[:2], key, value)
    if not fs.exists(dest):  # last: a record on the remote means its outputs are there
        fs.makedirs(fs.parent(dest), exist_ok=True)
        fs.put_file(str(local / key[:2] / key / value), dest)
        sent += 1
    return sent


def _fetch_record_outputs(repo, key: str, value: str, remote: str | None, warn=_warn) -> int:
    """Fetch one local record's outputs from ``remote``; files fetched.
    Skipped, with a warning, if the remote lacks some of them."""
    stage = _record_stage(repo, key, value, warn)
    if stage is None:
        return 0
    objs = _used_objs(stage, remote)
    got = 0
    for odb, hashes in (objs or {}).items():
        got += len(repo.cloud.pull(hashes, remote=remote, odb=odb).transferred)
    if objs is None or not stage.outs_cached():
        warn(f"run-cache record {key[:8]}/{value[:8]} ({_outs(stage)}): its outputs are not "
             "all on the remote; that variant will be computed again when needed")
    return got


def push(repo, remote: str | None = None, warn=_warn) -> int:
    """The workspace's outputs (``dvc push``), then every run-cache record
    whose outputs are all here, each after its outputs; files sent."""
    sent = repo.push(remote=remote)
    with contextlib.chdir(repo.root_dir):  # DVC builds the records' stages from here
        for key, value in run_cache_records(repo):
            sent += _send_record(repo, key, value, remote, warn)
    return sent


def pull(repo, remote: str | None = None, warn=_warn) -> int:
    """The remote's run-cache records and their outputs, into the cache, then
    the workspace's outputs (``dvc pull``); files fetched."""
    got = len(repo.stage_cache.pull(remote))
    with contextlib.chdir(repo.root_dir):
        for key, value in run_cache_records(repo):
            got += _fetch_record_outputs(repo, key, value, remote, warn)
    repo.pull(remote=remote)
    return got


# --- a stage run on another machine (flows/executor.py) -------------------------------
# DVC has no remote execution; it has the pieces: a stage's lock entry, its
# run-cache key, and object transfer by hash. These assemble them.


def stage_definition(stage) -> dict:
    """The stage as dvc.yaml writes it, its templating resolved: cmd, deps,
    params keys, outs (with their flags, plots' options)."""
    from dvc.stage.serialize import to_pipeline_file

    return to_pipeline_file(stage)[stage.name]


def lock_entry(stage) -> dict:
    """The stage as dvc.lock records it: cmd, deps and params with their
    hashes and values, outs with theirs (once saved)."""
    from dvc.stage.serialize import to_single_stage_lockfile

    return json.loads(json.dumps(to_single_stage_lockfile(stage)))


def run_cache_key(stage) -> str:
    """The key of the stage's run-cache record (its cmd, deps and params),
    the same on any machine with the same inputs. Its deps must be saved."""
    from dvc.stage.cache import _get_stage_hash

    return _get_stage_hash(stage)


def _runs(repo, remote: str | None):
    """(local runs folder, remote fs, remote runs folder) of the run-cache."""
    odb = repo.cloud.get_remote_odb(remote, "run-cache", hash_name="md5-dos2unix")
    return Path(repo.stage_cache.cache_dir), odb.fs, odb.fs.join(odb.path, "runs")


def check_remote(repo, remote: str) -> None:
    """DvcException naming ``remote`` and its URL if it cannot be used: a
    local remote's folder must exist (a missing one is a typo or a share not
    mounted, not a remote to create), any other must answer."""
    from dvc.exceptions import DvcException

    url = repo.config["remote"][remote]["url"]
    try:
        odb = repo.cloud.get_remote_odb(remote, "run-cache", hash_name="md5-dos2unix")
        found = odb.fs.exists(odb.path)  # the remote's root
    except Exception as exc:  # the filesystem's own errors: credentials, network, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DvcException(f"the DVC remote {remote!r} ({url}) cannot be reached: "
                           f"{first}") from None
    if _is_local(odb.fs) and not odb.fs.isdir(odb.path):
        raise DvcException(f"the DVC remote {remote!r} ({url}): "
                           f"{'not a folder' if found else 'no such folder'}; create it "
                           f"or fix the URL (`dvc remote modify {remote} url ...`)")


def push_record(repo, stage, remote: str | None) -> int:
    """Send the stage's run-cache records (not every record, as ``dvc push
    --run-cache`` does), each after its outputs, to ``remote``; files sent."""
    key = run_cache_key(stage)
    local = Path(repo.stage_cache.cache_dir) / key[:2] / key
    return sum(_send_record(repo, key, record.name, remote)
               for record in sorted(local.glob("*")))


def fetch_run_cache_record(repo, stage, remote: str | None) -> bool:
    """Fetch the stage's run-cache record from ``remote`` if it has one: then
    :func:`restore_record` restores the stage."""
    key = run_cache_key(stage)
    local, fs, runs = _runs(repo, remote)
    folder = fs.join(runs, key[:2], key)
    if not fs.exists(folder):
        return False
    for path in fs.find(folder):
        dest = local / key[:2] / key / fs.name(path)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                fs.get_file(path, str(tmp))
    return True


def _holder(repo, outs: list[dict]):
    """A stage holding ``outs`` (lock entries: path, md5, ...), to move them by hash."""
    return repo.stage_cache._create_stage({"cmd": "fetch", "outs": outs}, wdir=repo.root_dir)


def send_outputs(repo, outs: list[dict], remote: str | None) -> None:
    """Send outputs by their hashes from the local cache to ``remote`` (what
    is there already is not sent again); RunCacheNotFoundError if some are
    not in the local cache."""
    holder = _holder(repo, outs)
    objs = _used_objs(holder)
    if objs is None or not holder.outs_cached():
        raise RunCacheNotFoundError(holder)
    for odb, hashes in objs.items():
        if repo.cloud.push(hashes, remote=remote, odb=odb).failed:
            raise RunCacheNotFoundError(holder)


def fetch_outputs(repo, outs: list[dict], remote: str | None) -> None:
    """Fetch outputs by their hashes (lock entries: path, md5, ...) from
    ``remote`` into the cache and check them out, as a run-cache restore
    does. A file whose content does not match its hash is refused when the
    remote's ``verify`` is on; a missing one raises RunCacheNotFoundError."""
    if not outs:
        return
    holder = _holder(repo, outs)
    for hashes in (_used_objs(holder, remote) or {}).values():
        repo.cloud.pull(hashes, remote=remote)
    if not holder.outs_cached():
        raise RunCacheNotFoundError(holder)
    holder.checkout()


def restore_record(repo, stage, remote: str | None, warn=_warn) -> dict | None:
    """Restore ``stage`` from its run-cache record for its current inputs
    (deps saved), its outputs fetched from ``remote`` if missing, and return
    the record (None: no record, one that does not match its key, or its
    outputs are not all there). This is what ``repo.stage_cache.restore(stage,
    pull=True)`` does for a stage whose inputs changed, without its shortcut
    for one whose inputs did not (which takes the outputs dvc.lock had, stale
    once the deps were saved)."""
    record = repo.stage_cache._load(stage)
    if not record:
        return None
    if not record_matches(record, run_cache_key(stage)):
        warn(f"{stage.addressing}: ignoring its run-cache record: its content does not "
              "match its key (altered?)")
        return None
    cached = repo.stage_cache._create_stage(record, wdir=stage.wdir)
    for hashes in (_used_objs(cached, remote) or {}).values():
        repo.cloud.pull(hashes, remote=remote)
    if not cached.outs_cached():
        return None
    cached.checkout()
    return json.loads(json.dumps(record))


@contextlib.contextmanager
def announced_runs() -> Iterator[None]:
    """Before DVC runs (or restores) a stage (``Stage._run_stage``), tell the
    stage its place in the run and what the stages after it should take
    (mnist_cnn/cli/progress.py, in the environment its command inherits).
    The plan is made when the first stage runs, from the stages DVC finds
    changed then and those downstream of them: a no-op pays nothing."""
    import networkx as nx
    from dvc.stage import Stage

    from flows.plan import Plan, to_run
    from mnist_cnn.cli.progress import PLAN_ENV

    original = Stage._run_stage
    plans: list[Plan] = []

    def run_stage(self, *args, **kwargs):
        if not plans:
            graph = self.repo.index.graph  # edges: a stage -> the stages it reads from
            by_name = {s.addressing: s for s in graph}
            order = [s.addressing for s in reversed(list(nx.topological_sort(graph)))]
            upstream = {s.addressing: [u.addressing for u in graph.successors(s)]
                        for s in graph}
            plans.append(Plan(to_run(order, upstream, lambda name: name == self.addressing
                                     or by_name[name].changed()), Path(self.repo.root_dir)))
        os.environ[PLAN_ENV] = plans[0].start(self.addressing).to_env()
        return original(self, *args, **kwargs)

    with _replaced(Stage, "_run_stage", run_stage):
        yield


def sweep_overrides(text: str) -> list[str]:
    """One ``-S`` as ``dvc exp run --queue -S`` expands it (DVC's use of
    Hydra's basic sweeper): ``k=a,b`` -> ``["k=a", "k=b"]``; ``k=range(1,3)``,
    ``k=choice(a,b)`` alike; a single value -> itself."""
    from dvc.utils.hydra import get_hydra_sweeps

    return [point["params.yaml"][0] for point in get_hydra_sweeps({"params.yaml": [text]})]


def cli(argv: list[str]) -> int:
    """DVC's command line (``dvc ...``) with the patches above applied; before
    ``repro``, :func:`remove_leftover_outputs`, and while it runs,
    :func:`announced_runs`."""
    from dvc.cli import main
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with applied(), announced_runs():
        if argv[:1] == ["repro"]:
            with contextlib.suppress(DvcException), Repo() as repo:  # DVC says what is wrong
                remove_leftover_outputs(repo, lambda line: print(line, flush=True))
        return main(argv)
