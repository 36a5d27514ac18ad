"""The session rule the device applies to its own frame probabilities (edge mode's provisional result).

The bridge's rule `mean-logit-v1` (cloud_bridge/session_rule.py, docs/bridge.md): each
probability clipped to [1e-6, 1 - 1e-6] becomes a logit, the session probability is the
sigmoid of their mean, and the session is flagged when it is >= the model's threshold. The
device runs one model, so the bridge's "one model version per session" step has nothing to
choose. Kept here because the sensor may not import cloud_bridge (layering); the lead moves
the rule into `contract` once, and both sides then import it from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: The bridge's rule name: the provisional result is the same rule on the device's own scores.
RULE_NAME = "mean-logit-v1"
_EPS = 1e-6


def logit(p: float) -> float:
    q = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(q / (1.0 - q))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def session_probability(probabilities: Iterable[float]) -> float | None:
    """The sigmoid of the mean logit of the frames' probabilities; None without any frame."""
    logits = [logit(float(p)) for p in probabilities]
    if not logits:
        return None
    return sigmoid(math.fsum(logits) / len(logits))
