"""The thermal CNN and its training loop (Keras).

A small network in the spirit of the paper: three blocks of conv -> batch normalisation ->
ReLU -> max-pool, then a fully connected head with dropout and one sigmoid output (the
probability of "sick"). Its input is the manifest's `frame_standardize` of a 24x32 frame, so
the device's +-1 C calibration offset cannot matter. With about a hundred training frames the
network is kept to ~12k parameters.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from contract.model.preprocessing import frame_standardize
from contract.sensor import MLX_COLS, MLX_ROWS
from training.metrics import balanced_class_weights
from training.thermal_data import FloatArray, augmented_device_frames

INPUT_SHAPE: tuple[int, int, int] = (MLX_ROWS, MLX_COLS, 1)
MIN_STD_C = 0.1


@dataclass(frozen=True)
class ThermalTrainingConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    filters: tuple[int, ...] = (8, 16, 32)
    dense_units: int = 16
    max_shift_px: int = 2


def build_thermal_cnn(config: ThermalTrainingConfig) -> keras.Model:
    """conv/BN/ReLU/max-pool blocks -> flatten -> dropout -> dense ReLU -> dense sigmoid."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="frame")
    x = inputs
    for i, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_sick")(x)
    model = keras.Model(inputs, outputs, name="thermal_cnn")
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay),
        loss="binary_crossentropy",
    )
    return model


def model_input(frames_c: npt.ArrayLike) -> FloatArray:
    """(N, 24, 32) degrees -> the model's (N, 24, 32, 1) input, exactly as the inference node prepares it."""
    return frame_standardize(frames_c, MIN_STD_C)


class AugmentedFrames(keras.utils.PyDataset):  # type: ignore[misc]
    """Each epoch a fresh augmented sensor reading of every training frame, shuffled, with class weights."""

    def __init__(
        self, frames_c: FloatArray, labels: npt.NDArray[np.generic], config: ThermalTrainingConfig, seed: int
    ) -> None:
        super().__init__()
        self.frames_c = frames_c
        self.labels = np.asarray(labels, dtype=np.float32)
        self.batch_size = config.batch_size
        self.max_shift_px = config.max_shift_px
        weights = balanced_class_weights(self.labels)
        self.sample_weights = np.where(self.labels > 0.5, weights[1], weights[0]).astype(np.float32)
        self.rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        self.order = self.rng.permutation(len(self.labels))
        self.x = model_input(augmented_device_frames(self.frames_c, self.rng, self.max_shift_px))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[idx], self.labels[idx], self.sample_weights[idx]

    def on_epoch_end(self) -> None:
        self._draw()


class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """One line per epoch on stderr: long training shows that it is alive and how it goes."""

    def __init__(self, label: str, epochs: int) -> None:
        super().__init__()
        self.label = label
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        parts = [f"{key} {value:.4f}" for key, value in sorted((logs or {}).items()) if isinstance(value, float)]
        print(f"[{self.label}] epoch {epoch + 1}/{self.epochs} " + " ".join(parts), file=sys.stderr, flush=True)


def train_thermal_cnn(
    frames_c: FloatArray,
    labels: npt.NDArray[np.generic],
    config: ThermalTrainingConfig,
    *,
    seed: int,
    label: str = "train",
    progress: bool = True,
) -> keras.Model:
    """Train a fresh CNN for `config.epochs` epochs on augmented readings of these (oversampled) frames."""
    keras.utils.set_random_seed(seed)
    model = build_thermal_cnn(config)
    data = AugmentedFrames(frames_c, labels, config, seed)
    callbacks = [EpochProgress(label, config.epochs)] if progress else []
    model.fit(data, epochs=config.epochs, verbose=0, callbacks=callbacks)
    return model


def predict_probability(model: keras.Model, frames_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """P(sick) per 24x32 frame in degrees."""
    x = model_input(frames_c)
    out = model.predict(x, verbose=0, batch_size=256)
    return np.asarray(out, dtype=np.float64).reshape(-1)
