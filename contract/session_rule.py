"""How the frame verdicts of a session become one session verdict (documented in docs/bridge.md).

Rule `mean-logit-v1`:
1. Keep one verdict per frame (device, seq); a frame verdicted twice counts once.
2. If the session's frames were verdicted by more than one model version (a model swap
   mid-session), keep only the version that verdicted the most frames (ties: the version
   of the latest frame), so probabilities and the threshold belong to one model.
3. Convert each probability to a logit (probabilities clipped to [1e-6, 1 - 1e-6]), take the
   mean over frames and map it back with the sigmoid: that is the session probability.
4. Flag the session when that probability >= the model's threshold (carried in its verdicts).
5. The session is "inconclusive: repeat the capture" (`is_inconclusive`) when its verdicts carry
   an inconclusive rule and the session probability lies in the rule's band, or the mean of
   the frames' member spreads exceeds the rule's limit. The band and the limit are chosen by
   training on validation patients (see docs/model_report.md) and travel in every verdict.

Why the mean of logits: it is the geometric-mean odds, so one noisy frame moves the result
less than one confident frame does under a max rule, and a uniform session keeps its
per-frame probability exactly.

Lives in the contract because the bridge, the device's edge mode and training's session-level
evaluation all apply it (runtime packages cannot import each other). Written against the
contract's `Verdict` (what inference nodes publish), not a store's row type.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contract.messages import Verdict

RULE_NAME = "mean-logit-v1"
#: Probabilities are clipped to [eps, 1 - eps] before a logit.
LOGIT_EPS = 1e-6


@dataclass(frozen=True)
class Combined:
    frames: int
    probability: float
    flagged: bool
    threshold: float
    model_version: str
    member_spread: float | None = None
    inconclusive: bool = False


def logit(p: float) -> float:
    q = min(max(p, LOGIT_EPS), 1.0 - LOGIT_EPS)
    return math.log(q / (1.0 - q))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def mean_logit_probability(probabilities: Iterable[float]) -> float | None:
    """Step 3: the sigmoid of the mean logit of frame probabilities; None without any frame."""
    logits = [logit(float(p)) for p in probabilities]
    if not logits:
        return None
    return sigmoid(math.fsum(logits) / len(logits))


def is_inconclusive(
    probability: float,
    spread: float | None,
    band_low: float | None,
    band_high: float | None,
    max_spread: float | None,
) -> bool:
    """The inconclusive rule, for a frame (the node) and for a session (the bridge, edge mode, training)."""
    near = band_low is not None and band_high is not None and band_low <= probability <= band_high
    apart = spread is not None and max_spread is not None and spread > max_spread
    return near or apart


def combine(verdicts: Sequence[Verdict]) -> Combined | None:
    """The session verdict from its frame verdicts, or None without any."""
    by_frame: dict[tuple[str, int], Verdict] = {}
    for v in verdicts:
        by_frame[(v.device_id, v.seq)] = v
    if not by_frame:
        return None
    frames = sorted(by_frame.values(), key=lambda v: (v.capture_ns, v.seq))
    counts = Counter(v.model_version for v in frames)
    latest = {v.model_version: i for i, v in enumerate(frames)}
    version = max(counts, key=lambda mv: (counts[mv], latest[mv]))
    chosen = [v for v in frames if v.model_version == version]
    probability = mean_logit_probability(v.probability for v in chosen)
    assert probability is not None  # `chosen` holds the frames of the most frequent version
    last = chosen[-1]
    spreads = [v.member_spread for v in chosen if v.member_spread is not None]
    spread = sum(spreads) / len(spreads) if spreads else None
    return Combined(
        frames=len(chosen),
        probability=probability,
        flagged=probability >= last.threshold,
        threshold=last.threshold,
        model_version=version,
        member_spread=spread,
        inconclusive=is_inconclusive(probability, spread, last.band_low, last.band_high, last.max_member_spread),
    )
