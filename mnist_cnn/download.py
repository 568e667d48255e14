"""The ``download`` stage's core: fetch MNIST and verify its content.

Sources, first that exists wins: the ``MNIST_NPZ`` environment variable (a
path or URL), the Keras cache (``$KERAS_HOME/datasets/mnist.npz``, default
``~/.keras``), then ``data.url`` from params.yaml. Whatever the source, every
array is checked against MNIST's sha256 before the output appears, atomically.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mnist_cnn.dataset import DataError
from mnist_cnn.io import atomic_path
from mnist_cnn.mnist import read_raw, verify_raw

log = logging.getLogger(__name__)

ENV_VAR = "MNIST_NPZ"
TIMEOUT_S = 60
HOW_TO_FIX = (f"Provide MNIST offline with {ENV_VAR}=/path/to/mnist.npz (or a URL), "
              "or put the file in ~/.keras/datasets/mnist.npz")


def keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file", "ftp")


def choose_source(env_value: str | None, cache: Path, url: str) -> str:
    """The source to use, by the documented order of precedence."""
    if env_value:
        if not _is_url(env_value) and not Path(env_value).is_file():
            raise DataError(f"{ENV_VAR}={env_value}: no such file")
        return env_value
    if cache.is_file():
        return str(cache)
    return url


def fetch(source: str, dest: Path) -> None:
    """Copy ``source`` (a path or a URL) to ``dest``."""
    if not _is_url(source):
        shutil.copyfile(source, dest)
        return
    try:
        with urllib.request.urlopen(source, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
            expected = resp.headers.get("Content-Length")
            shutil.copyfileobj(resp, out, length=1 << 20)
            if expected is not None and out.tell() != int(expected):
                raise DataError(f"{source}: download truncated "
                                f"({out.tell()} of {expected} bytes)")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{source}: cannot download ({reason}). {HOW_TO_FIX}") from None


def download(source: str, out: Path) -> None:
    """Fetch ``source`` to ``out``, verified; ``out`` is untouched on any error."""
    log.info("downloading MNIST from %s", source)
    with atomic_path(out) as tmp:
        fetch(source, tmp)
        verify_raw(read_raw(tmp, source=source), source=source)
    log.info("verified all four arrays; wrote %s", out)

