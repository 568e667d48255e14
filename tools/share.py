"""Share results through the DVC remote (``make push`` / ``make pull``).

``push`` sends the workspace's outputs, the run-cache's records and the
outputs of every record; ``pull`` brings them all back and checks out the
workspace. After ``make pull`` a fresh clone trains nothing for any variant
that was pushed: ``dvc repro``, ``dvc exp run`` and the flow restore it.

    python -m tools.share push|pull [--remote NAME]
"""

from __future__ import annotations

import argparse
import sys

from dvc.exceptions import DvcException
from dvc.repo import Repo

from flows import dvc_internals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.share", description=__doc__)
    parser.add_argument("action", choices=("push", "pull"))
    parser.add_argument("--remote", help="a DVC remote's name (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        with Repo() as repo:
            files = getattr(dvc_internals, args.action)(repo, args.remote)
    except DvcException as exc:  # no remote configured, unreachable remote, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.action}: {files} file(s) transferred")
    return 0


if __name__ == "__main__":
    sys.exit(main())
