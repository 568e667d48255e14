"""Where a result came from: the code that computed it, the libraries that
shape its numbers, and the locked environment they were installed from."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
LOCK_FILE = ROOT / "uv.lock"
# How commands talk to people (arguments, messages, process control): not part
# of any result, so not part of any stage's dependencies either.
PRESENTATION = f"{PACKAGE.name}.cli"


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def result_code() -> dict[str, str]:
    """sha256 of each module of this package loaded in this process, except the
    presentation ones: the code that determined this process's results, the
    same files dvc.yaml lists as the stage's code dependencies."""
    found = {}
    for name, module in sys.modules.items():
        if name.split(".")[0] != PACKAGE.name or name.startswith(PRESENTATION):
            continue
        if file := getattr(module, "__file__", None):
            found[Path(file).resolve().relative_to(ROOT).as_posix()] = file_digest(file)
    return dict(sorted(found.items()))


def environment() -> dict[str, str | None]:
    """Versions of what shapes the numbers, and the lock file's hash."""
    import keras
    import numpy
    import tensorflow

    return {"tensorflow": tensorflow.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(),
            "lock": file_digest(LOCK_FILE)[:12] if LOCK_FILE.is_file() else None}
