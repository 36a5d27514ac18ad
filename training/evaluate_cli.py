"""`thermoscreen evaluate`: score a thermal model directory on a thermogram `.npz` with LiteRT (no TensorFlow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from training.evaluation import evaluate_thermal_model

    result = evaluate_thermal_model(args.model, args.data, seed=args.seed)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"model {result['model_version']} on {result['data_file']} ({result['n']} frames, {result['n_sick']} sick)")
    print(f"threshold {result['threshold']} ({result['variant']})")
    for key in (
        "auc",
        "auc_protocol0",
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "balanced_accuracy",
        "f1",
        "recall_protocol0",
        "specificity_protocol0",
        "int8_agreement",
        "ece",
        "session_auc",
        "session_sensitivity",
        "session_specificity",
        "session_auc_protocol0",
        "inconclusive_share",
    ):
        print(f"  {key:<22} {result[key] if result.get(key) is not None else 'n/a'}")
    print("A screening aid, not a diagnosis.", file=sys.stderr)
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Evaluate a thermal model directory (manifest.json + .tflite) on a thermogram .npz through LiteRT, "
        "at the manifest's threshold. A screening aid, not a diagnosis."
    )
    parser.add_argument("--model", type=Path, required=True, help="model directory with manifest.json")
    parser.add_argument("--data", type=Path, required=True, help="thermogram .npz (DMR-IR layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the emulated sensor noise/offset (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(run=_run)
