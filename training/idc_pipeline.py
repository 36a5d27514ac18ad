"""`thermoscreen train idc`: patient-level 80/10/10 split, class-weighted streaming training,
Table-1 metrics on the test patients, float32 + int8 `.tflite` and manifest."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.model.manifest import Preprocessing
from training.idc_data import scan_idc_tree, split_index
from training.litert_runner import TfliteModel
from training.metrics import balanced_class_weights, binary_metrics

LABELS = ["no_idc", "idc"]
THRESHOLD = 0.5
REPORT_FILE = "idc_report.json"
#: Test patches run through both .tflite files for the int8 agreement (bounded: it loads them into memory).
AGREEMENT_PATCHES = 2000


@dataclass
class IdcRunOptions:
    data: Path
    out: Path
    epochs: int = 20
    batch_size: int = 128
    seed: int = 0
    threads: int = 2
    patience: int = 3
    version: str | None = None
    command: str = ""
    progress: bool = True


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if np.isnan(v) else round(float(v), 4)) for k, v in values.items()}


def run_idc_training(opts: IdcRunOptions) -> dict[str, Any]:
    """Train, evaluate on held-out patients, export; returns the report (also written as idc_report.json)."""
    from training.tf_setup import import_tensorflow

    started = dt.datetime.now(dt.UTC)
    index = scan_idc_tree(opts.data)  # bad input fails here, before the slow TensorFlow import
    splits = split_index(index, opts.seed)
    for name, part in splits.items():
        if len(part) == 0:
            raise ValueError(f"{opts.data}: the {name} split holds no patches")
    tf = import_tensorflow(opts.threads, opts.seed)
    import keras

    from training.export import export_tflite, write_manifest
    from training.idc_model import INPUT_SHAPE, build_idc_cnn, patch_dataset
    from training.thermal_model import EpochProgress

    train, val, test = splits["train"], splits["validation"], splits["test"]
    weights = balanced_class_weights(train.labels)
    print(
        f"idc: {len(index)} patches of {np.unique(index.patients).size} patients; train {len(train)}, "
        f"validation {len(val)}, test {len(test)} patches; class weights {weights}",
        file=sys.stderr,
        flush=True,
    )
    model = build_idc_cnn()
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=opts.patience, restore_best_weights=True)
    ]
    if opts.progress:
        callbacks.append(EpochProgress("idc", opts.epochs))
    history = model.fit(
        patch_dataset(tf, train, opts.batch_size, shuffle=True, seed=opts.seed, class_weight=weights),
        validation_data=patch_dataset(tf, val, opts.batch_size),
        epochs=opts.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles file names each epoch
        callbacks=callbacks,
    )
    scores = {
        name: np.asarray(model.predict(patch_dataset(tf, part, opts.batch_size), verbose=0), dtype=np.float64).ravel()
        for name, part in (("validation", val), ("test", test))
    }
    metrics = {
        name: _rounded(binary_metrics(part.labels, scores[name], THRESHOLD))
        for name, part in (("validation", val), ("test", test))
    }

    rng = np.random.default_rng(opts.seed)
    rep_index = train.subset(np.sort(rng.choice(len(train), size=min(200, len(train)), replace=False)))
    representative = np.concatenate([x.numpy() for x, _ in patch_dataset(tf, rep_index, 64)])
    opts.out.mkdir(parents=True, exist_ok=True)
    files = export_tflite(model, opts.out, representative)
    sample = test.subset(np.arange(min(AGREEMENT_PATCHES, len(test))))
    x_sample = np.concatenate([x.numpy() for x, _ in patch_dataset(tf, sample, 256)])
    p_float = TfliteModel(files["float32"]).predict(x_sample).ravel()
    p_int8 = TfliteModel(files["int8"]).predict(x_sample).ravel()
    export_check = {
        "keras_vs_float_tflite_max_abs_diff": float(f"{np.max(np.abs(p_float - scores['test'][: len(sample)])):.3g}"),
        "int8_agreement": round(float(np.mean((p_float >= THRESHOLD) == (p_int8 >= THRESHOLD))), 4),
        "int8_max_abs_diff": round(float(np.max(np.abs(p_float - p_int8))), 4),
        "agreement_patches": len(sample),
    }
    epochs_run = len(history.history.get("loss", []))
    provenance: dict[str, Any] = {
        "data_dir": opts.data.name,
        "patches": len(index),
        "patients": int(np.unique(index.patients).size),
        "positive_patches": int(index.labels.sum()),
        "split": "80/10/10 by patient",
        "split_patients": {name: int(np.unique(part.patients).size) for name, part in splits.items()},
        "split_patches": {name: len(part) for name, part in splits.items()},
        "class_weights": weights,
        "epochs_run": epochs_run,
        "seed": opts.seed,
        "command": opts.command,
        "tensorflow": tf.__version__,
    }
    report_metrics = {"threshold": THRESHOLD, **metrics, "export": export_check}
    version = opts.version or f"idc-{started:%Y%m%d}"
    write_manifest(
        opts.out,
        files,
        task="idc_histopathology",
        version=version,
        input_shape=list(INPUT_SHAPE),
        preprocessing=Preprocessing(kind="rgb_unit"),
        labels=LABELS,
        threshold=THRESHOLD,
        threshold_rule="0.5 on P(IDC), as in the paper's Table 1",
        provenance=provenance,
        metrics=report_metrics,
    )
    report = {
        "model_version": version,
        "test": metrics["test"],
        "validation": metrics["validation"],
        "export": export_check,
        "provenance": provenance,
        "patients_by_split": {name: sorted(set(part.patients.tolist())) for name, part in splits.items()},
        "history": {k: [round(float(v), 4) for v in vals] for k, vals in history.history.items()},
    }
    (opts.out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
