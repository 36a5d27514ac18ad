"""The direct JSON verdict encoder produces exactly the message the pydantic path would."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.frame import Frame
from contract.messages import Verdict, decode_message
from contract.model.model_runner import ModelRunner
from inference_node.verdicts import VerdictEncoder
from tests.inference_node.conftest import ModelDirs

ids = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True).filter(lambda s: s not in {"nodes", "deadletter", "admin"})


def test_fast_verdict_json_equals_the_validated_message(test_models: ModelDirs) -> None:
    runner = ModelRunner.load(test_models.v1)

    @settings(max_examples=200, deadline=None)
    @given(
        device=ids,
        node=ids,
        seq=st.integers(0, 2**63 - 1),
        capture_ns=st.integers(0, 2**63 - 1),
        session=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        patient=st.none() | st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
        probability=st.floats(0.0, 1.0),
        latency=st.floats(-1.0, 1e6),
    )
    def check(
        *,
        device: str,
        node: str,
        seq: int,
        capture_ns: int,
        session: str | None,
        patient: str | None,
        probability: float,
        latency: float,
    ) -> None:
        encoder = VerdictEncoder(node, runner)
        frame = Frame(device, seq, capture_ns, np.zeros((24, 32), np.int16), session_id=session, patient_ref=patient)
        topic, payload = encoder.encode(frame, probability, latency)
        assert topic == f"thermo/v1/{device}/verdict"
        decoded = decode_message(payload, Verdict)
        assert decoded == encoder.verdict(frame, probability, latency)
        assert decoded.flagged == (probability >= runner.threshold)
        assert decoded.label == runner.labels[int(decoded.flagged)]

    check()
