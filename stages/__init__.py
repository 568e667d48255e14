"""Stages of the MNIST CNN study; each runs as ``python -m stages.<name>``."""

import os

# TensorFlow's C++ start-up banners drown the stage logs; users can still
# set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
