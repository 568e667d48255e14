"""The DVC stages of the MNIST CNN study, one runnable module each
(``python -m stages.<name>``, as dvc.yaml runs them).

Each is a thin command line: it parses its arguments, reads its section of
params.yaml into a typed value (``PARAMS`` lists the keys, as the stage's
``params:`` in dvc.yaml does) and calls one core function of the mnist_cnn
library, which does the work.
"""

import importlib.util
import os
import sys

# dvc.yaml runs `python`: whichever is first on PATH. Run from a shell where
# the project's environment is not active (`.venv/bin/dvc repro`), that is the
# system's, which lacks the libraries: say so in one line, not in an import
# traceback from deep inside the stage.
_MISSING = [m for m in ("dvc", "pydantic", "keras") if importlib.util.find_spec(m) is None]
if _MISSING:
    sys.exit(f"error: {sys.executable} lacks this project's libraries ({', '.join(_MISSING)}):"
             " activate its environment first (`source .venv/bin/activate`), or use "
             "`make run`")

# TensorFlow's C++ start-up banners drown the stage logs; users can still
# set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
