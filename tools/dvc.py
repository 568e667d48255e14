"""DVC's command line with this project's DVC patches (flows/dvc_internals.py):
params.yaml parsed once per run, so a no-op grows linearly with the number of
tasks (plain ``dvc`` parses it once per stage), and dvc.lock written
atomically. The same commands and results as ``dvc``; ``make run`` uses it.

    python -m tools.dvc repro | status | exp run -S KEY=VALUE | ...
"""

from __future__ import annotations

import sys

from flows.dvc_internals import cli

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
