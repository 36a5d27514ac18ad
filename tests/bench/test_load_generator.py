"""The load generator's cheap frame path: a patched template is byte for byte the frame it stands for.

Why it matters: the generator no longer encodes each frame; if the header layout in
contract/frame.py moved, patched templates would carry wrong seq or capture times and the
benches would measure nonsense. The check compares against `encode_frame` itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contract.frame import Frame, SensorKind, decode_frame, encode_frame
from contract.ids import new_incarnation, new_session_id
from devtools.load_generator import FrameTemplates


def _frames(device_id: str) -> list[Frame]:
    rng = np.random.default_rng(3)
    session, incarnation = new_session_id(), new_incarnation()
    return [
        Frame(
            device_id=device_id,
            seq=0,
            capture_ns=0,
            centi=rng.integers(2500, 3700, size=(24, 32), dtype=np.int16),
            ambient_c=24.0,
            sensor=SensorKind.SYNTHETIC,
            session_id=session,
            patient_ref="0123456789abcdef",
            incarnation=incarnation,
        )
        for _ in range(3)
    ]


@pytest.mark.parametrize("device_id", ["d", "load-17", "x" * 32])
def test_a_patched_template_equals_the_encoded_frame(device_id: str) -> None:
    frames = _frames(device_id)
    templates = FrameTemplates(frames)
    for index, seq, capture_ns in ((0, 1, 1_700_000_000_000_000_000), (2, 2**63 - 1, 5), (1, 42, 2**63 - 1)):
        payload = templates.frame(index, seq, capture_ns)
        assert payload == encode_frame(dataclasses.replace(frames[index], seq=seq, capture_ns=capture_ns))
        decoded = decode_frame(payload)
        assert (decoded.seq, decoded.capture_ns) == (seq, capture_ns)
        np.testing.assert_array_equal(decoded.centi, frames[index].centi)


def test_each_frame_is_its_own_bytes_object() -> None:
    templates = FrameTemplates(_frames("load-1"))
    first = templates.frame(0, 1, 10)
    second = templates.frame(0, 2, 20)
    assert isinstance(first, bytes) and first != second
    assert decode_frame(first).seq == 1, "building the next frame must not change one already handed to paho"


def test_no_images_is_refused() -> None:
    with pytest.raises(ValueError, match="no images"):
        FrameTemplates([])
