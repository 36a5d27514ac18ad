"""How the frame verdicts of a session become one session verdict (documented in docs/bridge.md).

Rule `mean-logit-v1`:
1. Keep one verdict per frame (device, seq); a frame verdicted twice counts once.
2. If the session's frames were verdicted by more than one model version (a model swap
   mid-session), keep only the version that verdicted the most frames (ties: the version
   of the latest frame), so probabilities and the threshold belong to one model.
3. Convert each probability to a logit (probabilities clipped to [1e-6, 1 - 1e-6]), take the
   mean over frames and map it back with the sigmoid: that is the session probability.
4. Flag the session when that probability >= the model's threshold (carried in its verdicts).

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
from collections.abc import Sequence
from dataclasses import dataclass

from contract.messages import Verdict

RULE_NAME = "mean-logit-v1"
_EPS = 1e-6


@dataclass(frozen=True)
class Combined:
    frames: int
    probability: float
    flagged: bool
    threshold: float
    model_version: str


def logit(p: float) -> float:
    q = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(q / (1.0 - q))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


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
    probability = sigmoid(sum(logit(v.probability) for v in chosen) / len(chosen))
    threshold = chosen[-1].threshold
    return Combined(
        frames=len(chosen),
        probability=probability,
        flagged=probability >= threshold,
        threshold=threshold,
        model_version=version,
    )
