"""`thermoscreen train thermal|idc|idc-synthetic|keygen|sign`: argument parsing; TensorFlow loads inside `run`.

Signing: `thermal` and `idc` sign the manifest they write with the Ed25519 private key given
by `--signing-key FILE` (or the file named by $THERMOSCREEN_MODEL_SIGNING_KEY). The key is
read before training starts (a wrong path fails in a second, not after an hour) and is never
copied anywhere; only `manifest.json.sig` lands in the model directory. Inference nodes
refuse a model not signed by a key pinned in their config.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from contract.model.signing import SIGNING_KEY_ENV

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _command_line() -> str:
    """How this run was invoked, for the manifest's provenance (arguments as typed: keep them relative)."""
    return shlex.join(["thermoscreen", *sys.argv[1:]])


def _signing_key(args: argparse.Namespace) -> Ed25519PrivateKey | None:
    """The private key from --signing-key or the environment; None (and a hint) when neither is given."""
    from contract.model.signing import load_private_key

    path = args.signing_key if args.signing_key is not None else os.environ.get(SIGNING_KEY_ENV)
    if not path:
        print(
            f"note: no --signing-key (or ${SIGNING_KEY_ENV}): the model will be unsigned and inference nodes "
            "refuse it until `thermoscreen train sign` signs it",
            file=sys.stderr,
        )
        return None
    return load_private_key(Path(path))


def _sign_output(out: Path, key: Ed25519PrivateKey | None) -> None:
    from contract.model.manifest import sign_model_dir

    if key is not None:
        print(f"signed {sign_model_dir(out, key)}", file=sys.stderr)


def _run_thermal(args: argparse.Namespace) -> int:
    from training.thermal_pipeline import ThermalRunOptions, run_thermal_training

    key = _signing_key(args)

    if not 0.0 < args.sensitivity < 1.0 + 1e-12:
        raise ValueError(f"--sensitivity must be in (0, 1], got {args.sensitivity}")
    if args.folds < 2:
        raise ValueError(f"--folds must be at least 2, got {args.folds}")
    report = run_thermal_training(
        ThermalRunOptions(
            data=args.data,
            out=args.out,
            report_dir=args.report_dir if args.report_dir is not None else args.out,
            epochs=args.epochs,
            folds=args.folds,
            repeats=args.repeats,
            members=args.members,
            seed=args.seed,
            cross_validate=not args.no_cv,
            sensitivity_target=args.sensitivity,
            threads=args.threads,
            version=args.version,
            command=_command_line(),
            progress=not args.quiet,
        )
    )
    _sign_output(args.out, key)
    cnn = report.get("cross_validation", {}).get("ensemble")
    summary = f"thermal model {report['model_version']} written to {args.out} (threshold {report['threshold']:.4f}"
    if cnn is not None:
        summary += f", CV AUC {cnn['all']['auc']['mean']}, protocol-0 AUC {cnn['protocol0']['auc']['mean']}"
        summary += f", pooled ECE {report['ensemble']['pooled_ece']['mean']}"
    print(summary + "). Screening aid, not a diagnosis.", file=sys.stderr)
    return 0


def _run_idc(args: argparse.Namespace) -> int:
    from training.idc_pipeline import IdcRunOptions, run_idc_training

    key = _signing_key(args)

    report = run_idc_training(
        IdcRunOptions(
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            threads=args.threads,
            patience=args.patience,
            version=args.version,
            command=_command_line(),
            progress=not args.quiet,
        )
    )
    _sign_output(args.out, key)
    test = report["test"]
    print(
        f"IDC model written to {args.out}: test precision {test['precision']}, accuracy {test['accuracy']}, "
        f"AUC {test['auc']}, recall {test['recall']}",
        file=sys.stderr,
    )
    return 0


def _run_idc_synthetic(args: argparse.Namespace) -> int:
    from training.idc_synthetic import write_synthetic_idc_tree

    count = write_synthetic_idc_tree(args.out, patients=args.patients, patches_per_patient=args.patches, seed=args.seed)
    print(f"wrote {count} synthetic patches for {args.patients} patients under {args.out}", file=sys.stderr)
    return 0


def _run_keygen(args: argparse.Namespace) -> int:
    from contract.model.signing import generate_key_pair
    from transport.private_files import private_parent

    private_parent(args.out)
    public = generate_key_pair(args.out)
    print(public)
    print(
        f"private key {args.out} (0600): keep it with whoever trains, never in the repository or a model "
        f"directory; pin the public key above (also in {args.out}.pub) in each node's model_public_keys",
        file=sys.stderr,
    )
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    from contract.model.manifest import sign_model_dir
    from contract.model.signing import load_private_key

    key_path = args.signing_key if args.signing_key is not None else os.environ.get(SIGNING_KEY_ENV)
    if not key_path:
        raise ValueError(f"train sign: --signing-key FILE (or ${SIGNING_KEY_ENV}) is required")
    path = sign_model_dir(args.model_dir, load_private_key(Path(key_path)))
    print(f"signed {path}", file=sys.stderr)
    return 0


def _add_signing_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help=f"Ed25519 private key (PEM) that signs manifest.json (default: ${SIGNING_KEY_ENV})",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL", required=True)

    thermal = sub.add_parser(
        "thermal",
        help="cross-validate and train the 24x32 thermal CNN, export .tflite + manifest",
        description="Cross-validate (by patient) and train the thermal CNN on a thermogram .npz in the DMR-IR "
        "layout, export float32 and int8 .tflite with manifest.json, and write the report. "
        "A screening aid, not a diagnosis.",
    )
    thermal.add_argument("--data", type=Path, required=True, help="thermogram .npz (DMR-IR layout)")
    thermal.add_argument("--out", type=Path, required=True, help="model directory to write")
    thermal.add_argument("--report-dir", type=Path, help="where model_report.{md,json} and roc.png go (default: --out)")
    thermal.add_argument("--epochs", type=_positive, default=60, help="epochs per training run (default 60)")
    thermal.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    thermal.add_argument("--repeats", type=_positive, default=2, help="outer cross-validation repeats (default 2)")
    thermal.add_argument(
        "--members", type=_positive, default=5, help="ensemble members = inner cross-validation folds (default 5)"
    )
    thermal.add_argument("--seed", type=int, default=0, help="seed for folds, augmentation and weights (default 0)")
    thermal.add_argument("--no-cv", action="store_true", help="skip cross-validation: train and export only")
    thermal.add_argument(
        "--sensitivity", type=float, default=0.9, help="screening sensitivity target for the threshold (default 0.9)"
    )
    thermal.add_argument("--threads", type=_positive, default=2, help="TensorFlow intra-op threads (default 2)")
    thermal.add_argument("--version", help="model version string (default thermal-DATE-DATAHASH)")
    thermal.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    _add_signing_key(thermal)
    thermal.set_defaults(run=_run_thermal)

    idc = sub.add_parser(
        "idc",
        help="train the paper's CNN on IDC histopathology patches, export .tflite + manifest",
        description="Train the paper's CNN on the Kaggle 'Breast Histopathology Images' layout "
        "(<patient>/<0|1>/<name>_class<0|1>.png), split 80/10/10 by patient, report precision, accuracy, AUC "
        "and recall on the test patients, export .tflite + manifest.json.",
    )
    idc.add_argument("--data", type=Path, required=True, help="folder holding the patient directories")
    idc.add_argument("--out", type=Path, required=True, help="model directory to write")
    idc.add_argument("--epochs", type=_positive, default=20, help="maximum epochs (default 20)")
    idc.add_argument("--batch-size", type=_positive, default=128, help="batch size (default 128)")
    idc.add_argument("--patience", type=_positive, default=3, help="early stopping on validation AUC (default 3)")
    idc.add_argument("--seed", type=int, default=0, help="seed for the split, shuffling and weights (default 0)")
    idc.add_argument("--threads", type=_positive, default=2, help="TensorFlow intra-op threads (default 2)")
    idc.add_argument("--version", help="model version string (default idc-DATE)")
    idc.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    _add_signing_key(idc)
    idc.set_defaults(run=_run_idc)

    synthetic = sub.add_parser(
        "idc-synthetic",
        help="write a synthetic IDC patch tree (for trying the IDC path without the real set)",
        description="Write synthetic 50x50 RGB patches in the Kaggle IDC directory layout.",
    )
    synthetic.add_argument("--out", type=Path, required=True, help="folder to fill with patient directories")
    synthetic.add_argument("--patients", type=_positive, default=20, help="patients (default 20)")
    synthetic.add_argument("--patches", type=_positive, default=40, help="patches per patient (default 40)")
    synthetic.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    synthetic.set_defaults(run=_run_idc_synthetic)

    keygen = sub.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing models",
        description="Write a new private key (0600, never overwritten) and print its public key "
        "(ed25519:<base64>) for the nodes' model_public_keys.",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="private key file to create")
    keygen.set_defaults(run=_run_keygen)

    sign = sub.add_parser(
        "sign",
        help="sign an existing model directory's manifest.json",
        description="Check a model directory (manifest, file sha256) and write manifest.json.sig beside it.",
    )
    sign.add_argument("--model-dir", type=Path, required=True, metavar="DIR", help="model directory")
    _add_signing_key(sign)
    sign.set_defaults(run=_run_sign)
