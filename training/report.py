"""The cross-validation report: `model_report.json`, `model_report.md`, `roc.png` and `reliability.png`.

The Markdown says plainly whether the ensemble beats the single CNN and the trivial
baselines, on the whole set and on the confound-free `dynamic_protocol == 0` subset, how well
its probabilities are calibrated, how it does per session, and that this is a screening aid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.calibration import ECE_BINS, reliability_bins
from training.cross_validation import MODELS, PRIMARY, SUBSETS, CvResult
from training.metrics import METRIC_NAMES, roc_curve
from training.thermal_data import ThermogramSet

REPORT_JSON = "model_report.json"
REPORT_MD = "model_report.md"
ROC_PNG = "roc.png"
RELIABILITY_PNG = "reliability.png"

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
_SHORT = {"ensemble": "CNN ensemble", "cnn": "single CNN", "logreg_stats": "LR 6 stats", "logreg_pixels": "LR 768 px"}


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
            f"- {SUBSETS[subset]}: the ensemble **{verb}** the {MODELS[baseline]}: fold AUC difference "
            f"{diff_text}{spread_text}, ensemble higher in {value['cnn_wins']} of {value['folds']} folds, "
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
    recall_all = summary[PRIMARY]["all"]["recall"]["mean"]
    recall_p0 = summary[PRIMARY]["protocol0"]["recall"]["mean"]
    if recall_all is None or recall_p0 is None:
        return []
    verdict = "meets" if recall_p0 >= target else "falls short of"
    return [
        f"Sensitivity: thresholds are set on all validation patients, where the dynamic-protocol sick frames are easy; "
        f"the ensemble's mean fold sensitivity is {recall_all:.3f} on the whole set and {recall_p0:.3f} on protocol-0 "
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
            ax.plot(fpr, tpr, label=_SHORT[model], linewidth=2 if model == PRIMARY else 1.2)
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


def _plot_reliability(cv: CvResult, data: ThermogramSet, path: Path) -> None:
    """Out-of-fold calibrated ensemble probabilities (all repeats pooled) per equal-width bin vs observed share sick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.6), dpi=110)
    labels = np.tile(data.labels, (cv.oof_scores[PRIMARY].shape[0], 1)).ravel()
    for name, scores, style in (
        ("frames", cv.oof_scores[PRIMARY].ravel(), "o-"),
        ("sessions", cv.session_scores.ravel(), "s--"),
    ):
        bins = reliability_bins(scores, labels)
        ax.plot([b["mean_probability"] for b in bins], [b["fraction_positive"] for b in bins], style, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    ax.set_xlabel(f"predicted probability (mean per bin, {ECE_BINS} equal-width bins)")
    ax.set_ylabel("observed share sick")
    ax.set_title("Reliability, out-of-fold ensemble (patients no member saw)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ensemble_section(report: dict[str, Any]) -> list[str]:
    """Sessions, calibration, the inconclusive band and the marker shortcut, from the nested CV."""
    ens = report["ensemble"]
    fold = ens["per_fold"]
    settings = report["settings"]

    def m(key: str) -> str:
        return _cell(fold[key]) if key in fold else "n/a"

    return [
        "### Per session (what the doctor acts on)",
        "",
        f"Each test patient's thermogram is replayed as the sensor node makes a session ({settings['session_frames']} "
        "frames, one device offset, fresh 2 Hz noise, small shifts) and judged with the contract's own session rule "
        "(`contract/session_rule.py`, mean of logits). The session threshold and the inconclusive band were chosen "
        "on the inner-fold (validation) sessions only.",
        "",
        "| subset | session AUC | sensitivity | specificity | inconclusive share | sens. (conclusive) "
        "| spec. (conclusive) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| whole set | {m('session_auc')} | {m('session_sensitivity')} | {m('session_specificity')} "
        f"| {m('session_inconclusive_share')} | {m('session_sensitivity_conclusive')} "
        f"| {m('session_specificity_conclusive')} |",
        f"| protocol 0 | {m('session_auc_protocol0')} | {m('session_sensitivity_protocol0')} "
        f"| {m('session_specificity_protocol0')} | {m('session_inconclusive_share_protocol0')} "
        f"| {m('session_sensitivity_conclusive_protocol0')} | {m('session_specificity_conclusive_protocol0')} |",
        "",
        f"Pooled out-of-fold session AUC (per repeat): {_cell(ens['pooled_session_auc'])} on the whole set, "
        f"{_cell(ens['pooled_session_auc_protocol0'])} on protocol 0.",
        "",
        "### Calibration",
        "",
        f"Platt scaling of the members' mean logit, fitted per outer fold on its inner out-of-fold logits. Expected "
        f"calibration error ({ECE_BINS} equal-width bins, frame-weighted) on the outer test patients: per fold "
        f"{m('ece')}; pooled over each repeat's out-of-fold predictions {_cell(ens['pooled_ece'])} "
        f"(protocol 0: {_cell(ens['pooled_ece_protocol0'])}); per session, per fold {m('ece_sessions')}.",
        "",
        "![Reliability diagram](reliability.png)",
        "",
        "### Inconclusive: repeat the capture",
        "",
        f"A session is inconclusive when its probability lies in the band holding the {settings['band_share']:.0%} "
        "of validation sessions nearest the threshold (symmetric in logit), or when the members' logits spread "
        f"(population sd) more than {settings['max_member_spread']}. On the outer test patients: near the threshold "
        f"{m('share_near_threshold')}, members disagree {m('share_members_disagree')}, inconclusive in all "
        f"{m('session_inconclusive_share')} (pooled {_cell(ens['pooled_inconclusive_share'])}). Mean member spread "
        f"per frame {m('mean_member_spread')} logits.",
        "",
        "### Shortcut checks",
        "",
        "- Capture protocol: the protocol-0 rows above are the confound-free figures.",
        "- Marker square: the same test frames with a cold DMR-IR-like marker pasted at the bottom centre. "
        f"Mean change of P(sick): ensemble {m('marker_shift_ensemble')}, single CNN {m('marker_shift_single')}; "
        f"AUC with markers: ensemble {m('marker_auc_ensemble')}, single CNN {m('marker_auc_single')} "
        "(a model reading the marker would move its probabilities down and lose AUC).",
        "",
    ]


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
            f"- Nested cross-validation **by patient**: {settings['repeats']}x repeated stratified "
            f"{settings['folds']}-fold outer folds, strata = label x capture protocol, so every test fold holds "
            "protocol-0 sick patients.",
            f"- In each outer fold the training patients are split into {settings['members']} stratified inner folds; "
            "member k is fitted on the others and scores its own inner fold (validation). The ensemble's calibration, "
            "session threshold (the highest that reaches sensitivity "
            f">= {settings['sensitivity_target']:.2f} on the validation sessions: missing a lesion costs more than a "
            "referral) and inconclusive band come from those validation predictions only; the outer test patients, "
            "whom no member saw, are scored by the mean of the members' logits.",
            "- The single CNN is member 1, with its threshold from its own inner fold; the baselines are fitted on "
            "member 1's patients with the same threshold rule, so all share test patients. The "
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
        lines += [
            "### Does the ensemble beat the single CNN and the trivial baselines?",
            "",
            *_verdicts(report["comparison"]),
            "",
        ]
        lines += _ensemble_section(report)
        lines += _sensitivity_note(summary, settings["sensitivity_target"])
        lines += [
            "![Out-of-fold ROC curves](roc.png)",
            "",
            f"Fold thresholds of the ensemble: {_cell(summary[PRIMARY]['threshold'])} "
            f"(min {summary[PRIMARY]['threshold']['min']}, max {summary[PRIMARY]['threshold']['max']}): the "
            "validation parts hold few sick patients, so the threshold meeting the target moves a lot between folds.",
            "",
        ]
        fixed = report.get("cv_at_shipped_threshold")
        if fixed:
            lines += [
                f"The fold ensembles' out-of-fold scores at the one shipped threshold ({report['threshold']:.4f}), "
                "mean over repeats (approximate: each fold ensemble has its own calibration):",
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
        f"- {settings['members']} members in one `.tflite` (one output column each, averaged as logits by the "
        f"node's `ModelRunner`), each trained on all patients but one of {settings['members']} stratified folds, "
        f"{settings['epochs']} epochs, seed {settings['seed']}.",
        f"- Calibration: Platt, probability = sigmoid({report['calibration']['slope']:.4f} x mean logit "
        f"{report['calibration']['intercept']:+.4f}), {report['calibration']['fitted_on']}.",
        f"- Inconclusive band [{report['inconclusive']['band_low']:.4f}, {report['inconclusive']['band_high']:.4f}], "
        f"member spread limit {report['inconclusive']['max_member_spread']}: {report['inconclusive']['rule']}.",
        f"- Threshold **{report['threshold']:.4f}**: {report['threshold_rule']}.",
        f"- Files: `model.tflite` ({export['float_bytes']} bytes, float32) and `model_int8.tflite` "
        f"({export['int8_bytes']} bytes, full integer: int8 input and output, calibrated on augmented training "
        "frames).",
        f"- int8 vs float32 verdict agreement at the threshold: **{export['int8_agreement']:.4f}** over "
        f"{export['agreement_readings']} emulated readings (max |p_int8 - p_float| = {export['int8_max_abs_diff']}, "
        f"mean {export['int8_mean_abs_diff']}); Keras vs float `.tflite` max difference "
        f"{export['keras_vs_float_tflite_max_abs_logit_diff']} (logits).",
        "- Its members' out-of-fold predictions, on which its threshold was chosen (so optimistic at that "
        "threshold): "
        + ", ".join(f"{_TITLES.get(k, k)} {v}" for k, v in report["final_members_out_of_fold"].items())
        + ".",
        "",
        "## Limits",
        "",
        f"- {prov['frames']} frames from one database (DMR-IR: one camera, one hospital); labels are per patient, "
        "no lesion location. Per-fold protocol-0 test sets hold only a handful of sick patients, hence the wide "
        "spreads.",
        "- The 24x32 sensor sees far less than the 640x480 thermograms the DMR-IR labels were made with.",
        "- Calibration is fitted on single-member out-of-fold logits but applied to the mean of the members' "
        "logits (averaging shrinks their spread), one source of the remaining miscalibration. The member-spread "
        "limit is a declared constant, not chosen on data: validation patients are scored by one member only.",
        "- Replayed sessions repeat one thermogram; a real session's frames differ more (posture, breathing).",
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
        _plot_reliability(cv, data, out_dir / RELIABILITY_PNG)
