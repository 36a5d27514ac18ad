"""Import TensorFlow quietly, with few threads and every seed set: training must be reproducible
and must not starve the other processes on a small machine."""

from __future__ import annotations

import os
import random
from types import ModuleType

import numpy as np


def import_tensorflow(threads: int = 2, seed: int | None = None) -> ModuleType:
    """`tensorflow`, configured: intra-op `threads`, one inter-op thread, Python/numpy/TF seeds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process (tests): the first setting stays
    if seed is not None:
        set_seeds(seed)
    module: ModuleType = tf
    return module


def set_seeds(seed: int) -> None:
    """Seed Python, numpy and Keras/TF (Keras' seed covers its initialisers and dropout)."""
    import keras

    random.seed(seed)
    np.random.seed(seed % (2**32))
    keras.utils.set_random_seed(seed)
