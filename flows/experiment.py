"""A flow run with params overrides, as a DVC experiment in a temporary clone.

The user's workspace is never touched (uncommitted edits included), as with
``dvc exp run --temp``: the run happens in a temporary git clone of HEAD
that uses the project's DVC cache, with the overrides written into its
params.yaml the way ``dvc exp run -S`` writes them. At the end the result is
saved as a DVC experiment in the clone (``dvc exp save``) and pushed into the
project (``dvc exp push``), so ``dvc exp show`` and ``make compare`` list it.

A clone, not a worktree: DVC's ``exp save`` keeps its work refs
(``refs/exps/exec/...``) in the repository, which worktrees share, so two
runs saving at once clobbered each other's and one experiment was lost. A
clone has refs of its own; the only write into the project is the push of
the experiment's ref, which git makes atomically. The clone's DVC settings
are given in-process (no config file is written into it).

Interrupted training resumes: the clone's ``.work`` (checkpoints, stage
locks) lives in the project's ``.work/experiments/<key>``, keyed by the
commit and the overrides, so a rerun of the same experiment after a crash
finds the checkpoints its clone left.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvc.repo import Repo

from flows.dvc_internals import modify_yaml
from flows.lifecycle import CLONES
from flows.private import private_dir
from mnist_cnn.cli import progress
from mnist_cnn.cli.checks import ParamsError, load_params, read_params, validate
from mnist_cnn.cli.runner import WORK
from mnist_cnn.params import PARAMS_FILE, Params, get_key, set_key

# What DVC and git accept as an experiment's name (a ref's last part), kept
# simple: Prefect's run names ("sapphire-chimpanzee") fit.
EXP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def git(root: Path, *args: str) -> str:
    """git's output; RuntimeError with git's message if it fails."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} in {root}: {proc.stderr.strip()}")
    return proc.stdout


def committed_params(root: Path, commit: str) -> dict:
    """params.yaml at ``commit``, read as DVC reads it."""
    source = f"{PARAMS_FILE} at {commit[:7]}"
    try:
        text = git(root, "show", f"{commit}:./{PARAMS_FILE}")
    except RuntimeError as exc:
        raise ParamsError(source, [f"cannot read it from git: {exc}"]) from None
    with tempfile.TemporaryDirectory() as tmp:
        committed = Path(tmp, PARAMS_FILE)
        committed.write_text(text, encoding="utf-8")
        return read_params(committed, source)


FORCE = "++"  # `-S ++key=value`, as Hydra and `dvc exp run -S` write it: replace whatever is there


def override_path(key: str) -> tuple[str, bool]:
    """``++a.b`` -> (``a.b``, True): the key, and whether it may change the value's kind."""
    return (key[len(FORCE):], True) if key.startswith(FORCE) else (key, False)


def _kind(value: Any) -> str:
    return ("a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list)
            else "true/false" if isinstance(value, bool)
            else "a number" if isinstance(value, int | float) else f"a {type(value).__name__}")


def kind_change(key: str, old: Any, new: Any) -> str | None:
    """The problem with setting ``key`` from ``old`` to ``new`` if that changes
    what kind of value it holds (a schedule replaced by a number, a list of
    layers by a scalar): most likely a key one level too short."""
    if old is None or (isinstance(old, dict) == isinstance(new, dict)
                       and isinstance(old, list) == isinstance(new, list)):
        return None
    hint = ""
    if isinstance(old, dict):
        same = [k for k, v in old.items() if _kind(v) == _kind(new)]
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], same, n=1, cutoff=0) or same
        hint = f" Did you mean {key}.{close[0]}?" if close else ""
    held = (f"{_kind(old)} ({', '.join(map(str, old))})" if isinstance(old, dict) else
            f"{_kind(old)} of {len(old)}" if isinstance(old, list) else
            f"{_kind(old)} ({json.dumps(old, default=str)})")
    return (f"{key}: holds {held}; this override makes it {_kind(new)}.{hint} To replace "
            f"it anyway, write -S {FORCE}{key}=...")


def with_overrides(data: dict, overrides: dict[str, Any], source: str,
                   create: bool = True) -> Params:
    """``data`` with ``overrides`` applied, validated; ParamsError names each
    key that does not exist (with ``create`` false: also missing leaves), each
    value whose kind changes (unless forced, ``++key``), and each problem of
    the result, with the override it came from. The layers of a task whose
    layers an override touches are built with Keras too (every shape fits)."""
    problems, shapes, given = [], set(), {}
    for key, value in overrides.items():
        path, forced = override_path(key)
        given[path] = value
        if not forced and (problem := kind_change(path, get_key(data, path), value)):
            problems.append(problem)
            continue
        try:
            set_key(data, path, value, create)
        except (IndexError, ValueError, TypeError, AttributeError, KeyError):
            problems.append(f"{path}: no such key to override")
        if path.startswith("tasks.") and ".layers" in path:
            shapes.add(path.split(".")[1])
    if problems:
        raise ParamsError(f"{source} with overrides", problems)
    try:
        return validate(data, f"{source} with overrides", shapes)
    except ParamsError as exc:  # say which override set the value
        raise ParamsError(exc.source, [_blame(p, given) for p in exc.problems]) from None


def _blame(problem: str, given: dict[str, Any]) -> str:
    key = problem.split(":", 1)[0]
    for path, value in given.items():
        if key == path or key.startswith(f"{path}.") or path.startswith(f"{key}."):
            return f"{problem} (set by -S {path}={json.dumps(value, default=str)})"
    return problem


def checked_params(root: Path, overrides: dict[str, Any] | None, commit: str = "HEAD",
                   create: bool = True) -> Params:
    """The params a run will use, validated: every bad key or value is named
    before anything runs. With ``overrides`` that is ``commit``'s params.yaml
    with them applied, as the run happens in a clone of it (see workspace);
    with ``create`` false, an override must name an existing key."""
    if not overrides:
        return load_params(root / PARAMS_FILE)
    return with_overrides(committed_params(root, commit), overrides,
                          f"{PARAMS_FILE} at {commit[:7]}", create)


@dataclass
class Experiment:
    """A run with overrides: the commit it runs and what it changes."""

    root: Path
    commit: str
    overrides: dict[str, Any]
    name: str
    config: dict = field(default_factory=dict)  # the clone's DVC settings

    @property
    def key(self) -> str:
        """The same commit and overrides, the same key (and checkpoints)."""
        text = json.dumps([self.commit, sorted(self.overrides.items())], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_name(name: str) -> str:
    if not EXP_NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot name a DVC experiment (letters, digits, '.', '_' "
                         "and '-', up to 100, starting with a letter or digit): rename the run")
    return name


def applied(root: Path, commit: str, overrides: dict[str, Any]) -> dict:
    """``commit``'s params.yaml with ``overrides`` set, as the clone will hold it."""
    data = committed_params(root, commit)
    for key, value in overrides.items():
        set_key(data, override_path(key)[0], value)
    return data


def same_params(root: Path, commit: str, overrides: dict[str, Any]) -> str | None:
    """The name of an experiment of ``commit`` whose params.yaml holds what
    ``overrides`` make of it: that experiment is this run, done already."""
    want = applied(root, commit, overrides)
    refs = git(root, "for-each-ref", "--format=%(refname)",
               f"refs/exps/{commit[:2]}/{commit[2:]}").split()
    for ref in refs:
        with contextlib.suppress(ParamsError):
            if committed_params(root, ref) == want:
                return ref.rsplit("/", 1)[-1]
    return None


def taken_names(root: Path) -> set[str]:
    """The names of the project's DVC experiments (of any baseline)."""
    refs = git(root, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return {ref.rsplit("/", 1)[-1] for ref in refs if not ref.startswith("refs/exps/exec/")}


def ref_of(root: Path, name: str) -> str:
    """The git ref of the project's experiment ``name``."""
    refs = git(root, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return next(ref for ref in refs if ref.rsplit("/", 1)[-1] == name
                and not ref.startswith("refs/exps/exec/"))


def free_name(root: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... if the project has an
    experiment of that name: an experiment is never replaced."""
    taken = taken_names(root)
    return next(n for i in itertools.count(1)
                if (n := name if i == 1 else f"{name[:95]}-{i}") not in taken)


@contextlib.contextmanager
def workspace(exp: Experiment, guardian=None) -> Iterator[Path]:
    """A clone of ``exp.commit`` using the project's DVC cache, its outputs
    checked out and the overrides written into its params.yaml; removed
    afterwards (by ``guardian`` if this process dies first)."""
    # In this user's private folder: a ledger may remove only folders there.
    tmp = Path(tempfile.mkdtemp(prefix="exp-", dir=private_dir(CLONES)))
    if guardian is not None:
        guardian.own_path(tmp)
    path = tmp / "workspace"
    try:
        git(tmp, "clone", "--quiet", "--shared", "--no-checkout", str(exp.root), str(path))
        git(path, "checkout", "--quiet", "--detach", exp.commit)
        work = exp.root / WORK / "experiments" / exp.key
        work.mkdir(parents=True, exist_ok=True)
        (path / WORK).symlink_to(work, target_is_directory=True)
        # What its stages take is the project's record too (the progress estimates).
        timings = exp.root / progress.TIMINGS
        timings.mkdir(parents=True, exist_ok=True)
        if not (work / "timings").exists():
            (work / "timings").symlink_to(timings, target_is_directory=True)
        exp.config = {"cache": {"dir": str(exp.root / ".dvc" / "cache"),
                                "type": "hardlink,copy"}}  # a checkout without copies
        with Repo(str(path), config=exp.config) as repo:
            repo.checkout(force=True, allow_missing=True)
        with modify_yaml(path / PARAMS_FILE) as data:  # as `dvc exp run -S` writes it
            for key, value in exp.overrides.items():
                set_key(data, override_path(key)[0], value)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if guardian is not None:
            guardian.drop_path(tmp)


def save(exp: Experiment, path: Path) -> str:
    """Save the clone's params, dvc.lock and metrics as experiment
    ``exp.name`` and push it into the project; returns its commit. Never
    forced: if the project got an experiment of that name meanwhile, this
    fails, naming it, and the project keeps the other one."""
    with contextlib.chdir(path), Repo(str(path), config=exp.config) as repo:
        rev = repo.experiments.save(name=exp.name)
        pushed = repo.experiments.push("origin", exp_names=[exp.name])
    if exp.name not in pushed.get("success", []) + pushed.get("up_to_date", []):
        raise RuntimeError(f"experiment {exp.name}: not saved, {exp.root} has another "
                           "experiment of that name (made meanwhile); rerun this one")
    # The clone is gone soon; its work folder has served its purpose.
    shutil.rmtree(exp.root / WORK / "experiments" / exp.key, ignore_errors=True)
    return rev
