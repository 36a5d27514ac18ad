"""The K cross-validation fold models as one ensemble: member logits, and one K-output Keras model to export.

Why one `.tflite` with K outputs instead of K files: the node then runs one interpreter call
per batch for all members (the convolutions of K small nets in one graph), no K-fold
Python-side dispatch; the manifest's `ensemble` section names the members and the file's
sha256 covers them all.
"""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt

from training.thermal_model import INPUT_SHAPE, model_input

#: The layer whose output is each member's features, and the sigmoid head whose weights give its logit.
FEATURE_LAYER = "fc"
HEAD_LAYER = "p_sick"


def member_logits(model: keras.Model, frames_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The member's logit (its sigmoid head before the sigmoid) per 24x32 frame in C."""
    features = keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output)
    x = model_input(frames_c)
    feats = np.asarray(features.predict(x, verbose=0, batch_size=256), dtype=np.float64)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_layer(HEAD_LAYER).get_weights())
    out: npt.NDArray[np.float64] = (feats @ kernel + bias).reshape(-1)
    return out


def ensemble_model(members: list[keras.Model]) -> keras.Model:
    """One input -> (N, K) member logits: each member's layers up to its features, then its head without sigmoid."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="frame")
    columns = []
    for k, member in enumerate(members):
        trunk = keras.Model(member.inputs, member.get_layer(FEATURE_LAYER).output, name=f"member{k + 1}")
        head = keras.layers.Dense(1, name=f"member{k + 1}_logit")
        columns.append(head(trunk(inputs)))
        head.set_weights(member.get_layer(HEAD_LAYER).get_weights())
    outputs = keras.layers.Concatenate(name="member_logits")(columns)
    return keras.Model(inputs, outputs, name="thermal_ensemble")
