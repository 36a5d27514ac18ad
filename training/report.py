"""The cross-validation report: `model_report.json`, `model_report.md` and `roc.png`.

The Markdown says plainly whether the CNN beats the trivial baselines, on the whole set and
on the confound-free `dynamic_protocol == 0` subset, and that this is a screening aid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.cross_validation import MODELS, SUBSETS, CvResult
from training.metrics import METRIC_NAMES, roc_curve
from training.thermal_data import ThermogramSet

REPORT_JSON = "model_report.json"
REPORT_MD = "model_report.md"
ROC_PNG = "roc.png"

_TITLES = {
    "auc": "AUC",
    "pooled_auc": "pooled AUC",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall (sens.)",
    "specificity": "specificity",
    "balanced_accuracy": "balanced acc.",
    "f1": "F1",
}
_SHORT = {"cnn": "CNN", "logreg_stats": "LR 6 stats", "logreg_pixels": "LR 768 px"}


def _cell(stat: dict[str, Any]) -> str:
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _results_table(summary: dict[str, Any], subset: str) -> list[str]:
    columns = ["auc", "pooled_auc", *[m for m in METRIC_NAMES if m != "auc"]]
    lines = [
        "| model | " + " | ".join(_TITLES[c] for c in columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for model in MODELS:
        cells = [_cell(summary[model][subset][c]) for c in columns]
        lines.append(f"| {_SHORT[model]} | " + " | ".join(cells) + " |")
    return lines


def _verdicts(comparison: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in comparison.items():
        baseline, subset = key.split("/")
        diff, spread, p = value["mean_auc_difference"], value["std_auc_difference"], value["p_value"]
        verb = {
            "beats": "beats",
            "leads, not significantly": "leads, but does NOT clearly beat,",
        }.get(value["verdict"], "does NOT beat")
        diff_text = "n/a" if diff is None else f"{diff:+.3f}"
        spread_text = "" if spread is None else f" ± {spread:.3f} sd"
        p_text = "n/a" if p is None else f"{p:.3f}"
        lines.append(
            f"- {SUBSETS[subset]}: the CNN **{verb}** the {MODELS[baseline]}: fold AUC difference "
            f"{diff_text}{spread_text}, CNN higher in {value['cnn_wins']} of {value['folds']} folds, "
            f"corrected resampled t-test p = {p_text}."
        )
    lines += [
        "",
        '"Beats" needs a higher mean fold AUC, a majority of folds, and p < 0.05 in Nadeau and Bengio\'s corrected '
        "resampled t-test (folds share training patients, so an ordinary t-test would be overconfident).",
    ]
    return lines


def _sensitivity_note(summary: dict[str, Any], target: float) -> list[str]:
    """Say plainly when the protocol-0 sick patients are caught less often than the target."""
    recall_all = summary["cnn"]["all"]["recall"]["mean"]
    recall_p0 = summary["cnn"]["protocol0"]["recall"]["mean"]
    if recall_all is None or recall_p0 is None:
        return []
    verdict = "meets" if recall_p0 >= target else "falls short of"
    return [
        f"Sensitivity: thresholds are set on all validation patients, where the dynamic-protocol sick frames are easy; "
        f"the CNN's mean fold sensitivity is {recall_all:.3f} on the whole set and {recall_p0:.3f} on protocol-0 "
        f"patients, which {verdict} the {target:.2f} target.",
        "",
    ]


def _plot_roc(cv: CvResult, data: ThermogramSet, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110)
    for ax, subset in zip(axes, SUBSETS, strict=True):
        mask = np.ones(data.n, bool) if subset == "all" else data.dynamic_protocol == 0
        for model in MODELS:
            scores = cv.oof_scores[model][:, mask]
            labels = np.tile(data.labels[mask], (scores.shape[0], 1))
            fpr, tpr = roc_curve(labels.ravel(), scores.ravel())
            ax.plot(fpr, tpr, label=_SHORT[model], linewidth=2 if model == "cnn" else 1.2)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{SUBSETS[subset]} (n={int(mask.sum())})", fontsize=9)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Out-of-fold ROC, {cv.settings.repeats}x{cv.settings.folds}-fold CV by patient (pooled over repeats). "
        "Screening aid, not a diagnosis.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _data_paragraph(prov: dict[str, Any]) -> str:
    text = (
        f"`{prov['data_file']}` (sha256 `{prov['data_sha256'][:16]}...`): {prov['frames']} frontal thermograms of "
        f"{prov['patients']} patients, {prov['healthy']} healthy and {prov['sick']} sick; {prov['protocol0']} frames "
        "from the older static protocol (`dynamic_protocol == 0`)."
    )
    dynamic = prov["frames"] - prov["protocol0"]
    if dynamic and prov["dynamic_all_sick"]:
        text += (
            f" All {dynamic} dynamic-protocol frames are sick, so capture protocol is confounded with the label: only "
            "the protocol-0 rows below say something about disease rather than about the camera session."
        )
    return text


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    prov = report["provenance"]
    settings = report["settings"]
    export = report["export"]
    lines = [
        "# Thermal screening model: cross-validated report",
        "",
        '> **A screening aid, not a diagnosis.** A flagged result means "refer for clinical follow-up";',
        "> a negative result does not rule anything out. These numbers come from "
        f"{prov['frames']} frames of one public",
        "> database and say little about any other population or camera.",
        "",
        f"Model `{report['model_version']}`, written {report['created']} by `{prov['command'] or 'training API'}`"
        f" (git {prov.get('git_commit') or 'unknown'}, TensorFlow {prov['tensorflow']}).",
        "",
        "## Data",
        "",
        _data_paragraph(prov),
        "",
        "Every frame is turned into what the device publishes with the sensor node's own emulation, "
        f"{prov['emulation']}; the CNN sees it after the manifest's `frame_standardize` (per-frame zero mean, unit "
        "spread), so the device's absolute calibration cannot matter. Training augmentation, "
        f"{prov['augmentation']}.",
        "",
        "## Method",
        "",
    ]
    if settings["cross_validated"]:
        lines += [
            f"- {settings['repeats']}x repeated stratified {settings['folds']}-fold cross-validation **by patient**, "
            "strata = label x capture protocol, so every test fold holds protocol-0 sick patients.",
            f"- In each fold the training patients are split again ({int(settings['validation_fraction'] * 100)}% "
            "validation, stratified). Every model is fitted on the rest; its threshold is the highest that reaches "
            f"sensitivity >= {settings['sensitivity_target']:.2f} on the validation patients (a screening target: "
            "missing a lesion costs more than a referral); the test fold is scored at that threshold.",
            "- The CNN and the baselines share folds, fitting/validation patients and the threshold rule. The "
            "baselines see the block-averaged 24x32 frames in absolute degrees without sensor noise (their best "
            "case, as in the data README); the CNN sees emulated device frames.",
            "- Table cells are mean ± standard deviation over folds; pooled AUC is the AUC of all out-of-fold scores "
            "of one repeat (mean ± sd over repeats), steadier than per-fold AUC on the small protocol-0 folds.",
            "",
            "## Results",
            "",
        ]
        summary = report["cross_validation"]
        for subset, title in SUBSETS.items():
            lines += [f"### {title}", "", *_results_table(summary, subset), ""]
        lines += ["### Does the CNN beat the trivial baselines?", "", *_verdicts(report["comparison"]), ""]
        lines += _sensitivity_note(summary, settings["sensitivity_target"])
        lines += [
            "![Out-of-fold ROC curves](roc.png)",
            "",
            f"Fold thresholds of the CNN: {_cell(summary['cnn']['threshold'])} "
            f"(min {summary['cnn']['threshold']['min']}, max {summary['cnn']['threshold']['max']}): the "
            "validation parts hold few sick patients, so the threshold meeting the target moves a lot between folds.",
            "",
        ]
        fixed = report.get("cv_at_shipped_threshold")
        if fixed:
            lines += [
                f"The fold models' out-of-fold scores at the one shipped threshold ({report['threshold']:.4f}), mean "
                "over repeats (approximate: that threshold is a median of all folds' validation thresholds):",
                "",
                "| subset | " + " | ".join(_TITLES[k] for k in fixed["all"]) + " |",
                "| --- | " + " | ".join("---" for _ in fixed["all"]) + " |",
                *(
                    f"| {SUBSETS[s]} | "
                    + " | ".join("n/a" if v is None else f"{v:.3f}" for v in fixed[s].values())
                    + " |"
                    for s in SUBSETS
                ),
                "",
            ]
    else:
        lines += ["No cross-validation in this run (`--no-cv`): there are no held-out metrics.", ""]
    lines += [
        "## Shipped model",
        "",
        f"- Trained on all {prov['frames']} frames, {settings['epochs']} epochs, seed {settings['seed']}.",
        f"- Threshold **{report['threshold']:.4f}**: {report['threshold_rule']}.",
        f"- Files: `model.tflite` ({export['float_bytes']} bytes, float32) and `model_int8.tflite` "
        f"({export['int8_bytes']} bytes, full integer: int8 input and output, calibrated on augmented training "
        "frames).",
        f"- int8 vs float32 verdict agreement at the threshold: **{export['int8_agreement']:.4f}** over "
        f"{export['agreement_readings']} emulated readings (max |p_int8 - p_float| = {export['int8_max_abs_diff']}, "
        f"mean {export['int8_mean_abs_diff']}); Keras vs float `.tflite` max difference "
        f"{export['keras_vs_float_tflite_max_abs_diff']}.",
        "- On its own training frames (resubstitution, optimistic, not an estimate of anything): "
        + ", ".join(f"{_TITLES.get(k, k)} {v}" for k, v in report["final_model_resubstitution"].items())
        + ".",
        "",
        "## Limits",
        "",
        f"- {prov['frames']} frames from one database (DMR-IR: one camera, one hospital); labels are per patient, "
        "no lesion location. Per-fold protocol-0 test sets hold only a handful of sick patients, hence the wide "
        "spreads.",
        "- The 24x32 sensor sees far less than the 640x480 thermograms the DMR-IR labels were made with.",
        "- Screening aid, not a diagnosis: every flagged result needs a clinician's follow-up.",
        "",
    ]
    return "\n".join(lines)


def write_thermal_report(report: dict[str, Any], cv: CvResult | None, data: ThermogramSet, out_dir: Path) -> None:
    """Write the JSON, the Markdown and (with cross-validation) the ROC plot into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (out_dir / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    if cv is not None:
        _plot_roc(cv, data, out_dir / ROC_PNG)
