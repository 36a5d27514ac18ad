"""The archive keeps the inconclusive fields, and archives written before them gain the columns in place."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from cloud_bridge.archive import SCHEMA_SQL, Archive, VerdictRecord


def _record(seq: int, **extra: object) -> VerdictRecord:
    return VerdictRecord("dev-1", seq, "a" * 32, "b" * 16, 100 + seq, 0.3, True, 0.28, "m-1", "n-1", 1.0, **extra)  # type: ignore[arg-type]


def test_verdict_and_session_rows_keep_the_inconclusive_fields(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    rule = {"member_spread": 0.4, "band_low": 0.25, "band_high": 0.33, "max_member_spread": 2.0, "inconclusive": True}
    with Archive(path, readonly=False) as archive:
        archive.put_verdicts([_record(1, **rule), _record(2)])
        archive.put_session_verdict(
            session_id="a" * 32, device_id="dev-1", patient_ref="b" * 16, frames=2, probability=0.3, flagged=True,
            threshold=0.28, rule="mean-logit-v1", model_version="m-1", verdict_ns=5, member_spread=0.4,
            inconclusive=True,
        )  # fmt: skip
        archive.commit()
    with Archive(path) as archive:
        first, second = archive.verdicts("a" * 32)
        session = archive.session("a" * 32)
    assert first == _record(1, **rule) and first.as_verdict().inconclusive
    assert second.inconclusive is False and second.member_spread is None
    assert session is not None and session.inconclusive is True and session.member_spread == 0.4


def test_an_archive_from_before_the_inconclusive_fields_gains_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_schema = re.sub(
        r",\n    (member_spread|band_low|band_high|max_member_spread|inconclusive)\s+[A-Z][^,\n]*(?=[,\n])",
        "",
        SCHEMA_SQL,
    )
    assert "inconclusive" not in old_schema
    conn = sqlite3.connect(path)
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO verdicts (device_id, seq, session_id, patient_ref, capture_ns, probability, flagged, threshold, "
        "model_version, node_id, latency_ms) VALUES ('dev-1', 1, ?, ?, 101, 0.3, 1, 0.28, 'm-1', 'n-1', 1.0)",
        ("a" * 32, "b" * 16),
    )
    conn.execute("INSERT INTO sessions (session_id, device_id, probability) VALUES (?, 'dev-1', 0.3)", ("a" * 32,))
    conn.commit()
    conn.close()
    with Archive(path, readonly=False) as archive:
        (verdict,) = archive.verdicts("a" * 32)
        session = archive.session("a" * 32)
    assert verdict.inconclusive is False and verdict.band_low is None and verdict.probability == 0.3
    assert session is not None and session.inconclusive is None and session.probability == 0.3
