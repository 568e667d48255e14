"""The DVC stages of the MNIST CNN study, one runnable module each
(``python -m stages.<name>``, as dvc.yaml runs them).

Each is a thin command line: it parses its arguments, reads its section of
params.yaml into a typed value (``PARAMS`` lists the keys, as the stage's
``params:`` in dvc.yaml does) and calls one core function of the mnist_cnn
library, which does the work.
"""

import os

# TensorFlow's C++ start-up banners drown the stage logs; users can still
# set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
