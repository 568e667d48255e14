"""A flow run with params overrides, as a DVC experiment in a temporary workspace.

The user's workspace is never touched (uncommitted edits included), as with
``dvc exp run --temp``: the run happens in a git worktree of HEAD that shares
the project's DVC cache, with the overrides written into its params.yaml the
way ``dvc exp run -S`` writes them. At the end the result is saved as a DVC
experiment (``dvc exp save``); the worktree shares the repository's refs, so
``dvc exp show`` and ``make compare`` in the project list it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dvc.repo import Repo
from dvc.utils.serialize import modify_yaml

from mnist_cnn.cli.checks import ParamsError, load_params, read_params, validate
from mnist_cnn.params import PARAMS_FILE, Params


def _set(data: dict, key: str, value: Any) -> None:
    """``tasks.task1.layers.0.units`` = value (list items by index)."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def checked_params(root: Path, overrides: dict[str, Any] | None) -> Params:
    """The params a run will use, validated: every bad key or value is named
    before anything runs. With ``overrides`` that is HEAD's params.yaml with
    them applied, as the run happens in a worktree of HEAD (see workspace)."""
    if not overrides:
        return load_params(root / PARAMS_FILE)
    source = f"{PARAMS_FILE} at HEAD"
    show = subprocess.run(["git", "show", f"HEAD:./{PARAMS_FILE}"], cwd=root,
                          capture_output=True, text=True)
    if show.returncode:
        raise ParamsError(source, [f"cannot read it from git: {show.stderr.strip()}"])
    with tempfile.TemporaryDirectory() as tmp:  # read as DVC reads files
        committed = Path(tmp, PARAMS_FILE)
        committed.write_text(show.stdout)
        data = read_params(committed, source)
    problems = []
    for key, value in (overrides or {}).items():
        try:
            _set(data, key, value)
        except (IndexError, ValueError, TypeError, AttributeError):
            problems.append(f"{key}: no such key to override")
    if problems:
        raise ParamsError(f"{source} with overrides", problems)
    return validate(data, f"{source} with overrides")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def workspace(root: Path, overrides: dict[str, Any]) -> Iterator[Path]:
    """A worktree of HEAD sharing ``root``'s DVC cache, its outputs checked
    out, ``overrides`` written into its params.yaml; removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="mnist-cnn-exp-"))
    path = tmp / "workspace"
    _git(root, "worktree", "add", "--detach", str(path), "HEAD")
    try:
        with Repo(str(path)) as repo, repo.config.edit("local") as config:  # dvc config --local
            config["cache"]["dir"] = str(Path(root, ".dvc", "cache").resolve())
            config["cache"]["type"] = "hardlink,copy"  # a checkout without copies
        with Repo(str(path)) as repo:
            repo.checkout(force=True, allow_missing=True)
        with modify_yaml(path / PARAMS_FILE) as data:  # as `dvc exp run -S` writes it
            for key, value in overrides.items():
                _set(data, key, value)
        yield path
    finally:
        _git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(tmp, ignore_errors=True)


def save(path: Path, name: str) -> str:
    """Save the workspace's params, dvc.lock and metrics as experiment ``name``."""
    with contextlib.chdir(path), Repo(str(path)) as repo:
        return repo.experiments.save(name=name, force=True)
