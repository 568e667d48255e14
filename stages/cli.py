"""Entry point shared by every stage: logging set-up and clean errors.

Expected failures (bad params, bad data) end with one clear message and exit
status 1, not a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from stages.config import ParamsError
from stages.mnist import DataError


def run(main: Callable[[], object]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        main()
    except (ParamsError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
