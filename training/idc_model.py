"""The paper's CNN for 50x50 IDC patches and the tf.data pipeline that streams them from disk.

Architecture (conv -> batch normalisation -> ReLU -> max-pool, three times, then fully
connected layers with dropout and one sigmoid output = P(IDC)), compiled with the paper's
Table-1 metrics: precision, accuracy, AUC and recall.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from training.idc_data import PATCH_SIZE, PatchIndex

INPUT_SHAPE: tuple[int, int, int] = (PATCH_SIZE, PATCH_SIZE, 3)


def build_idc_cnn(
    learning_rate: float = 1e-3, filters: tuple[int, ...] = (32, 64, 128), dense: int = 128
) -> keras.Model:
    inputs = keras.Input(shape=INPUT_SHAPE, name="patch")
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.5, name="dropout1")(x)
    x = keras.layers.Dense(dense, activation="relu", name="fc")(x)
    x = keras.layers.Dropout(0.5, name="dropout2")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_idc")(x)
    model = keras.Model(inputs, outputs, name="idc_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.Precision(name="precision"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Recall(name="recall"),
        ],
    )
    return model


def patch_dataset(
    tf: Any,
    index: PatchIndex,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    class_weight: dict[int, float] | None = None,
) -> Any:
    """A tf.data pipeline reading, decoding and scaling (`rgb_unit`) patches on the fly.

    Smaller edge patches are zero-padded to 50x50 (centred). With `class_weight` every element
    carries a sample weight, which is how the class imbalance enters the loss.
    """
    labels = index.labels.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(index.paths), labels))
    if shuffle:
        ds = ds.shuffle(len(index), seed=seed, reshuffle_each_iteration=True)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        image = tf.image.resize_with_crop_or_pad(image, PATCH_SIZE, PATCH_SIZE)
        return tf.cast(image, tf.float32) / 255.0, label

    ds = ds.map(load, num_parallel_calls=2, deterministic=True)
    if class_weight is not None:
        weights = tf.constant([class_weight[0], class_weight[1]], dtype=tf.float32)

        def with_weight(x: Any, y: Any) -> tuple[Any, Any, Any]:
            return x, y, tf.gather(weights, tf.cast(y, tf.int32))

        ds = ds.map(with_weight)
    return ds.batch(batch_size).prefetch(2)
