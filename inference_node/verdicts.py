"""Turns one scored frame into its `Verdict` message and topic.

`encode` writes the JSON directly instead of building a pydantic `Verdict` per frame: at
thousands of frames/s model validation plus serialisation was ~6% of the node's CPU. Every
input is already validated (device, incarnation, session and patient ids by `decode_frame`; label,
version and threshold by the manifest; node id by the config; probability checked to lie in
0..1 by the caller), and a test checks that the bytes decode to the same `Verdict` as the
pydantic path (`verdict`).
"""

from __future__ import annotations

import json

from contract.frame import Frame
from contract.messages import Verdict
from contract.model.model_runner import ModelRunner
from contract.session_rule import is_inconclusive
from contract.topics import verdict_topic


class VerdictEncoder:
    """Bound to one node and one model: the parts of a verdict that do not change per frame."""

    def __init__(self, node_id: str, runner: ModelRunner) -> None:
        self.node_id = node_id
        self.model_version = runner.version
        self.model_sha256 = runner.model_sha256
        self.threshold = float(runner.threshold)
        self.labels = (runner.labels[0], runner.labels[1])
        self._label_json = (json.dumps(self.labels[0]), json.dumps(self.labels[1]))
        rule = runner.inconclusive_rule
        self.band = (rule.band_low, rule.band_high) if rule is not None else (None, None)
        self.max_member_spread = rule.max_member_spread if rule is not None else None
        #: The rule's constant part of the JSON (empty without a rule: the message is as before).
        self._rule_json = (
            f',"band_low":{rule.band_low!r},"band_high":{rule.band_high!r},'
            f'"max_member_spread":{json.dumps(rule.max_member_spread)}'
            if rule is not None
            else ""
        )
        self._tail = (
            f',"threshold":{self.threshold!r},"model_version":{json.dumps(self.model_version)},'
            f'"model_sha256":{json.dumps(self.model_sha256)},'
            f'"node_id":{json.dumps(node_id)},"latency_ms":'
        )
        self._topics: dict[str, str] = {}

    def topic(self, device_id: str) -> str:
        topic = self._topics.get(device_id)
        if topic is None:
            topic = self._topics[device_id] = verdict_topic(device_id)
        return topic

    def inconclusive(self, probability: float, spread: float | None) -> bool:
        return is_inconclusive(probability, spread, self.band[0], self.band[1], self.max_member_spread)

    def verdict(self, frame: Frame, probability: float, latency_ms: float, spread: float | None = None) -> Verdict:
        """The validated message (reference path; `encode` must produce the same)."""
        flagged = probability >= self.threshold
        return Verdict(
            device_id=frame.device_id,
            seq=frame.seq,
            capture_ns=frame.capture_ns,
            session_id=frame.session_id,
            patient_ref=frame.patient_ref,
            probability=probability,
            label=self.labels[int(flagged)],
            flagged=flagged,
            threshold=self.threshold,
            model_version=self.model_version,
            model_sha256=self.model_sha256,
            node_id=self.node_id,
            latency_ms=max(0.0, latency_ms),
            incarnation=frame.incarnation,
            member_spread=spread,
            band_low=self.band[0],
            band_high=self.band[1],
            max_member_spread=self.max_member_spread,
            inconclusive=self.inconclusive(probability, spread),
        )

    def encode(
        self, frame: Frame, probability: float, latency_ms: float, spread: float | None = None
    ) -> tuple[str, bytes]:
        """(verdict topic, compact JSON). `probability` must be a float in 0..1, `spread` in logits."""
        flagged = probability >= self.threshold
        extra = f',"member_spread":{spread!r}' if spread is not None else ""
        if self._rule_json:  # without a rule a verdict is never inconclusive: the field keeps its default
            flag = "true" if self.inconclusive(probability, spread) else "false"
            extra += f'{self._rule_json},"inconclusive":{flag}'

        session = f',"session_id":"{frame.session_id}"' if frame.session_id is not None else ""
        patient = f',"patient_ref":"{frame.patient_ref}"' if frame.patient_ref is not None else ""
        text = (
            f'{{"v":2,"device_id":"{frame.device_id}","incarnation":"{frame.incarnation}","seq":{frame.seq},"capture_ns":{frame.capture_ns}'
            f'{session}{patient},"probability":{probability!r},"label":{self._label_json[flagged]},'
            f'"flagged":{"true" if flagged else "false"}{extra}{self._tail}{max(0.0, latency_ms)!r}}}'
        )
        return self.topic(frame.device_id), text.encode("ascii")
