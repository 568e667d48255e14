"""Import TensorFlow without its C++ start-up lines.

Importing TensorFlow 2.21 writes "WARNING: All log messages before
absl::InitializeLog() ..." and the oneDNN notice, twice, from its C++
libraries straight to file descriptor 2: TF_CPP_MIN_LOG_LEVEL does not reach
absl's log before it is initialised (tensorflow/tensorflow#100442), and
turning oneDNN off would change the numbers. So the stages that need
TensorFlow import it here, once, with descriptor 2 sent to a temporary file,
then write back every line that is not one of those. The body runs to its
end before anything is written back, so nothing else is held: an import
error's traceback is printed after the restore, as usual.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\)"
                   rb"|I\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\]"
                   rb"|.*oneDNN custom operations are on"
                   rb"|.*This TensorFlow binary is optimized"
                   rb"|.*To enable the following instructions)")


@contextlib.contextmanager
def _without_noise() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        try:
            captured = stack.enter_context(tempfile.TemporaryFile())
        except OSError:  # no writable temp folder (a full disk): the lines are only noise
            captured = None
        if captured is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not NOISE.match(line))
            if kept:
                sys.stderr.buffer.write(kept)
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow (a no-op once imported) without its start-up lines."""
    if "tensorflow" not in sys.modules:
        with _without_noise():
            import tensorflow  # noqa: F401
