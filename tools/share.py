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

from dvc.exceptions import CheckoutError, DvcException
from dvc.repo import Repo

from flows import dvc_internals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.share", description=__doc__)
    parser.add_argument("action", choices=("push", "pull"))
    parser.add_argument("--remote", help="a DVC remote's name (default: the default remote)")
    args = parser.parse_args(argv)
    try:
        with Repo() as repo:  # which remote: the named one, else the default
            remote = args.remote or repo.config["core"].get("remote")
        # Every file fetched is hashed and compared with its name before it
        # enters the cache (a remote's `verify`, off by default in DVC): a
        # damaged or altered object is refused, never checked out.
        with Repo(config={"remote": {remote: {"verify": True}}} if remote else None) as repo:
            files = getattr(dvc_internals, args.action)(repo, remote)
    except CheckoutError as exc:
        targets = ", ".join(exc.target_infos) or "some outputs"
        print(f"error: {targets}: not fetched whole: the remote lacks some of their files, or "
              "holds a damaged copy (a file whose content does not match its hash is "
              "refused, never used); `dvc repro` computes what is missing",
              file=sys.stderr)
        return 1
    except DvcException as exc:  # no remote configured, unreachable remote, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.action}: {files} file(s) transferred")
    return 0


if __name__ == "__main__":
    sys.exit(main())
