"""Intake's shortcuts refuse exactly what the full checks refuse: the 64-bit range pre-check and
the remembered topic parses."""

from __future__ import annotations

import json

import pytest

from cloud_bridge import intake
from cloud_bridge.channels import may_exceed_i64
from cloud_bridge.intake import Accepted, Rejected, RejectReason, classify
from contract.messages import encode_message
from contract.topics import rfid_topic, verdict_topic
from devtools.synthetic_stream import make_session


@pytest.mark.parametrize("count", [2**63 - 1, 2**63, 10**18, 10**19, -(2**63), -(2**63) - 1, 10**40])
def test_an_integer_beyond_64_bits_is_refused_whatever_its_length(count: int) -> None:
    end = make_session("dev-1", 1).end
    doc = json.loads(encode_message(end))
    doc["frame_count"] = count
    result = classify(rfid_topic("dev-1"), json.dumps(doc).encode())
    fits = -(2**63) <= count <= 2**63 - 1
    if fits:
        assert isinstance(result, Accepted) or result.category is not RejectReason.RANGE, result
    else:
        assert isinstance(result, Rejected), result
        assert result.category in (RejectReason.RANGE, RejectReason.MALFORMED), result


def test_the_pre_check_skips_only_payloads_whose_long_digit_runs_all_fit() -> None:
    verdict = make_session("dev-1", 1).verdicts[0]
    assert not may_exceed_i64(encode_message(verdict))  # capture_ns has 19 digits but fits: skipped
    assert not may_exceed_i64(b'{"seq": 9223372036854775807}')  # 2**63 - 1
    assert may_exceed_i64(b'{"seq": 9223372036854775808}')  # 2**63: the full check runs
    assert may_exceed_i64(b'{"n": -9223372036854775808}')  # -2**63 fits; the full check says so
    assert may_exceed_i64(b'{"x": "99999999999999999999"}')  # in a string: checked anyway (harmless)


def test_a_remembered_topic_still_names_the_device_and_bad_topics_are_not_remembered() -> None:
    intake._topics.clear()
    verdict = make_session("dev-7", 1).verdicts[0]
    for _ in range(2):
        result = classify(verdict_topic("dev-7"), encode_message(verdict))
        assert isinstance(result, Accepted) and result.device_id == "dev-7"
    # The same payload on another device's topic is still refused (ownership, not the cache).
    other = classify(verdict_topic("dev-8"), encode_message(verdict))
    assert isinstance(other, Rejected) and other.category is RejectReason.OWNERSHIP
    for k in range(50):
        bad = classify(f"thermo/v1/dev-{k}/nonsense", b"{}")
        assert isinstance(bad, Rejected) and bad.category is RejectReason.TOPIC
    assert set(intake._topics) == {verdict_topic("dev-7"), verdict_topic("dev-8")}
