"""Shared by the erasure tests: a patient's synthetic sessions as queue items, archive rows and TSDB lines."""

from __future__ import annotations

from pathlib import Path

from cloud_bridge.archive import Archive, ArchivedFrame, VerdictRecord, compress_centi
from cloud_bridge.channels import Kind, decode_item
from cloud_bridge.durable_queue import NewItem
from cloud_bridge.line_protocol import item_lines
from contract.frame import Frame
from devtools.synthetic_stream import SyntheticSession, make_session

#: The queue kind of each message of `SyntheticSession.ordered_messages()` (by topic suffix).
_KINDS = {"rfid": Kind.RFID, "frame": Kind.FRAME, "verdict": Kind.VERDICT}


def sessions_of(patient_ref: str, device: str, count: int, *, frames: int = 3, seed: int = 0) -> list[SyntheticSession]:
    """`count` sessions of one patient on one device (seq numbers continue across them)."""
    return [
        make_session(device, frames, patient_ref=patient_ref, seed=seed + i, first_seq=i * frames) for i in range(count)
    ]


def queue_items(session: SyntheticSession) -> list[NewItem]:
    return [
        NewItem(_KINDS[topic.rsplit("/", 1)[1]].value, topic, payload, 1, session.device_id)
        for topic, payload in session.ordered_messages()
    ]


def tsdb_lines(session: SyntheticSession) -> list[str]:
    lines: list[str] = []
    for item in queue_items(session):
        lines += item_lines(item.kind, item.topic, decode_item(item.kind, item.payload), 1, rows_every=1)
    return lines


def fill_archive(path: Path, sessions: list[SyntheticSession]) -> None:
    with Archive(path, readonly=False) as archive:
        for s in sessions:
            archive.put_session_start(
                session_id=s.session_id, device_id=s.device_id, patient_ref=s.patient_ref, started_ns=s.start.ts_ns
            )
            archive.put_session_end(
                session_id=s.session_id, device_id=s.device_id, patient_ref=s.patient_ref, ended_ns=s.end.ts_ns,
                frames_reported=len(s.frames), end_reason="card",
            )  # fmt: skip
            archive.put_verdicts(VerdictRecord.from_verdict(v) for v in s.verdicts)
            archive.put_session_verdict(
                session_id=s.session_id, device_id=s.device_id, patient_ref=s.patient_ref, frames=len(s.verdicts),
                probability=0.5, flagged=True, threshold=0.5, rule="mean-logit-v1",
                model_version=s.verdicts[0].model_version, verdict_ns=s.end.ts_ns,
            )  # fmt: skip
            archive.put_frames(_archived(f) for f in s.frames)
        archive.commit()


def _archived(f: Frame) -> ArchivedFrame:
    rows, cols = f.shape
    return ArchivedFrame(
        f.device_id, f.seq, f.session_id, f.patient_ref, f.capture_ns, rows, cols, f.ambient_c,
        compress_centi(f.centi), f.incarnation,
    )  # fmt: skip
