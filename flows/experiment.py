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
import hashlib
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
from mnist_cnn.cli.checks import ParamsError, load_params, read_params, validate
from mnist_cnn.cli.runner import WORK
from mnist_cnn.params import PARAMS_FILE, Params, set_key

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


def with_overrides(data: dict, overrides: dict[str, Any], source: str,
                   create: bool = True) -> Params:
    """``data`` with ``overrides`` applied, validated; ParamsError names each
    key that does not exist (with ``create`` false: also missing leaves)."""
    problems = []
    for key, value in overrides.items():
        try:
            set_key(data, key, value, create)
        except (IndexError, ValueError, TypeError, AttributeError, KeyError):
            problems.append(f"{key}: no such key to override")
    if problems:
        raise ParamsError(f"{source} with overrides", problems)
    return validate(data, f"{source} with overrides")


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


@contextlib.contextmanager
def workspace(exp: Experiment, guardian=None) -> Iterator[Path]:
    """A clone of ``exp.commit`` using the project's DVC cache, its outputs
    checked out and the overrides written into its params.yaml; removed
    afterwards (by ``guardian`` if this process dies first)."""
    tmp = Path(tempfile.mkdtemp(prefix="mnist-cnn-exp-"))
    if guardian is not None:
        guardian.own_path(tmp)
    path = tmp / "workspace"
    try:
        git(tmp, "clone", "--quiet", "--shared", "--no-checkout", str(exp.root), str(path))
        git(path, "checkout", "--quiet", "--detach", exp.commit)
        work = exp.root / WORK / "experiments" / exp.key
        work.mkdir(parents=True, exist_ok=True)
        (path / WORK).symlink_to(work, target_is_directory=True)
        exp.config = {"cache": {"dir": str(exp.root / ".dvc" / "cache"),
                                "type": "hardlink,copy"}}  # a checkout without copies
        with Repo(str(path), config=exp.config) as repo:
            repo.checkout(force=True, allow_missing=True)
        with modify_yaml(path / PARAMS_FILE) as data:  # as `dvc exp run -S` writes it
            for key, value in exp.overrides.items():
                set_key(data, key, value)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if guardian is not None:
            guardian.drop_path(tmp)


def save(exp: Experiment, path: Path) -> str:
    """Save the clone's params, dvc.lock and metrics as experiment
    ``exp.name`` and push it into the project; returns its commit."""
    with contextlib.chdir(path), Repo(str(path), config=exp.config) as repo:
        rev = repo.experiments.save(name=exp.name, force=True)
        repo.experiments.push("origin", exp_names=[exp.name], force=True)
    # The clone is gone soon; its work folder has served its purpose.
    shutil.rmtree(exp.root / WORK / "experiments" / exp.key, ignore_errors=True)
    return rev
