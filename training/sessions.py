"""Session-level evaluation: replay each thermogram as the sensor node makes a session, judge it
with the contract's own session rule, and choose the inconclusive band on validation sessions.

A replayed session is `SESSION_FRAMES` readings of one thermogram by one device (one +-1 C
offset for the session), each with fresh 2 Hz noise and a small shift (the woman breathes and
sways: up to one intermediate pixel, half a sensor pixel). The frames' probabilities become
contract `Verdict`s and `contract.session_rule.combine` makes the session verdict, exactly as
the bridge and the device's edge mode do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contract.messages import Verdict
from contract.model.model_runner import probability_logit, stable_sigmoid
from contract.sensor import MLX_COLS, MLX_ROWS, emulate_mlx_frame, random_device_offset
from contract.session_rule import Combined, combine
from training.thermal_data import FloatArray, shift_frame

#: Frames per replayed session: the sensor node's replay default (16 frames per thermogram, 8 s at 2 Hz).
SESSION_FRAMES = 16
#: Largest per-frame shift in intermediate pixels (half a sensor pixel at 48x64).
SESSION_SHIFT_PX = 1
#: Share of validation sessions nearest the threshold that the inconclusive band takes in.
#: Declared before any run (like the sensitivity target), not tuned to a test figure.
BAND_SHARE = 0.10
#: Members "disagree" when their logits spread (population std) more than this: one standard
#: deviation then multiplies the odds by e^2 ~ 7. A declared constant: validation patients are
#: scored by one member only (the one that did not see them), so no spread exists there to tune it on.
MAX_MEMBER_SPREAD = 2.0


def session_readings(frames_c: FloatArray, n_frames: int, seed: int) -> FloatArray:
    """(N, H, W) thermograms in C -> (N, n_frames, 24, 32): one replayed session per thermogram."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(frames_c), n_frames, MLX_ROWS, MLX_COLS), dtype=np.float32)
    for i, scene in enumerate(frames_c):
        offset = random_device_offset(rng)
        for j in range(n_frames):
            dy, dx = (int(v) for v in rng.integers(-SESSION_SHIFT_PX, SESSION_SHIFT_PX + 1, size=2))
            out[i, j] = emulate_mlx_frame(shift_frame(scene, dy, dx), rng, offset_c=offset)
    return out


@dataclass(frozen=True)
class Band:
    """The inconclusive rule as the manifest stores it."""

    low: float
    high: float
    max_spread: float | None


def choose_band(
    session_probabilities: npt.ArrayLike, threshold: float, share: float = BAND_SHARE
) -> tuple[float, float]:
    """[low, high] symmetric in logit around `threshold`, holding `share` of these (validation) sessions."""
    p = np.asarray(session_probabilities, dtype=np.float64)
    centre = float(probability_logit(np.asarray([threshold]))[0])
    distance = np.abs(probability_logit(p) - centre)
    width = float(np.quantile(distance, share)) if p.size else 0.0
    low, high = stable_sigmoid(np.asarray([centre - width, centre + width]))
    return min(float(low), threshold), max(float(high), threshold)


def judge_sessions(
    probabilities: npt.NDArray[np.float64],
    spreads: npt.NDArray[np.float64] | None,
    threshold: float,
    band: Band | None,
) -> list[Combined]:
    """(sessions, frames) frame probabilities (and member spreads) -> one contract session verdict each."""
    out = []
    for i, row in enumerate(probabilities):
        verdicts = [  # model_construct: thousands of in-process verdicts, no validation needed
            Verdict.model_construct(
                device_id="replay",
                seq=j,
                capture_ns=j,
                probability=float(p),
                label="",
                flagged=bool(p >= threshold),
                threshold=threshold,
                model_version="evaluation",
                node_id="evaluation",
                latency_ms=0.0,
                member_spread=None if spreads is None else float(spreads[i, j]),
                band_low=None if band is None else band.low,
                band_high=None if band is None else band.high,
                max_member_spread=None if band is None else band.max_spread,
            )
            for j, p in enumerate(row)
        ]
        combined = combine(verdicts)
        assert combined is not None  # every replayed session has frames
        out.append(combined)
    return out


def session_metrics(labels: npt.NDArray[np.generic], sessions: list[Combined]) -> dict[str, float]:
    """AUC, sensitivity and specificity over all sessions, the inconclusive share, and both on the conclusive ones."""
    from training.metrics import binary_metrics, roc_auc

    y = np.asarray(labels).astype(np.int64)
    p = np.asarray([s.probability for s in sessions])
    flagged = np.asarray([s.flagged for s in sessions])
    inconclusive = np.asarray([s.inconclusive for s in sessions])
    threshold = sessions[0].threshold if sessions else 0.5
    metrics = binary_metrics(y, p, threshold)
    decided = ~inconclusive
    sick, healthy = decided & (y == 1), decided & (y == 0)
    return {
        "auc": roc_auc(y, p),
        "sensitivity": metrics["recall"],
        "specificity": metrics["specificity"],
        "inconclusive_share": float(inconclusive.mean()) if inconclusive.size else math.nan,
        "sensitivity_conclusive": float(flagged[sick].mean()) if sick.any() else math.nan,
        "specificity_conclusive": float((~flagged[healthy]).mean()) if healthy.any() else math.nan,
    }
