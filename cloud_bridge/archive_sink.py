"""Writes sessions, frame verdicts and frames into the local SQLite archive (always on).

The archive sink is the one writer of the archive: session starts and ends, frame verdicts,
frames, and the session stage's results (a verdict, or "closed without a verdict") all reach
it through the queue. Dispatch is a handler per queued kind (`channels` registry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cloud_bridge.archive import Archive, ArchivedFrame, VerdictRecord, compress_centi
from cloud_bridge.channels import Decoded, Kind, SessionClosed, SessionOutcome, decode_item, expect
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.sink import PermanentSinkError
from contract.errors import ContractError
from contract.frame import Frame
from contract.messages import RfidEvent, RfidEventKind, Verdict

ARCHIVE_KINDS = frozenset({Kind.FRAME, Kind.VERDICT, Kind.RFID, Kind.SESSION_OUTCOME, Kind.SESSION_CLOSED})


class _BatchRows:
    """Rows of one batch: frames and verdicts are inserted in bulk, sessions one by one."""

    def __init__(self) -> None:
        self.frames: list[ArchivedFrame] = []
        self.verdicts: list[VerdictRecord] = []


class ArchiveSink:
    """One transaction per batch; rows are keyed (session, device+seq), so replays overwrite."""

    name = "archive"
    kinds: frozenset[str] | None = frozenset(ARCHIVE_KINDS)

    def __init__(self, path: Path, *, store_frames: bool = True, decoded: DecodedCache | None = None) -> None:
        self.path = path
        self._decode = decoded.decode if decoded is not None else decode_item
        self.store_frames = store_frames
        self._archive = Archive(path, readonly=False)
        self._handlers: dict[str, Callable[[Decoded, _BatchRows], int]] = {
            Kind.FRAME: self._frame,
            Kind.VERDICT: self._verdict,
            Kind.RFID: self._rfid,
            Kind.SESSION_OUTCOME: self._outcome,
            Kind.SESSION_CLOSED: self._closed,
        }

    def write(self, items: Sequence[QueuedItem]) -> int:
        rows = _BatchRows()
        conn = self._archive.connection
        written = 0
        try:
            for item in items:
                try:
                    decoded = self._decode(item.kind, item.payload)
                except ContractError as exc:
                    raise PermanentSinkError(f"queued item {item.id} is corrupt: {exc}") from None
                handler = self._handlers.get(item.kind)
                if handler is None:
                    raise PermanentSinkError(f"queued item {item.id}: the archive does not store {item.kind!r}")
                written += handler(decoded, rows)
            self._archive.put_frames(rows.frames)
            self._archive.put_verdicts(rows.verdicts)
            self._archive.commit()
        except BaseException:
            conn.rollback()
            raise
        return written + len(rows.frames) + len(rows.verdicts)

    def _frame(self, decoded: Decoded, rows: _BatchRows) -> int:
        frame = expect(decoded, Frame)
        if self.store_frames:
            n_rows, n_cols = frame.shape
            rows.frames.append(
                ArchivedFrame(
                    frame.device_id,
                    frame.seq,
                    frame.session_id,
                    frame.patient_ref,
                    frame.capture_ns,
                    n_rows,
                    n_cols,
                    frame.ambient_c,
                    compress_centi(frame.centi),
                    frame.incarnation,
                )
            )
        return 0

    def _verdict(self, decoded: Decoded, rows: _BatchRows) -> int:
        v = expect(decoded, Verdict)
        rows.verdicts.append(VerdictRecord.from_verdict(v))
        return 0

    def _rfid(self, decoded: Decoded, rows: _BatchRows) -> int:
        event = expect(decoded, RfidEvent)
        if event.event == RfidEventKind.SESSION_START:
            self._archive.put_session_start(
                session_id=event.session_id,
                device_id=event.device_id,
                patient_ref=event.patient_ref,
                started_ns=event.ts_ns,
            )
        else:
            self._archive.put_session_end(
                session_id=event.session_id,
                device_id=event.device_id,
                patient_ref=event.patient_ref,
                ended_ns=event.ts_ns,
                frames_reported=event.frame_count,
                end_reason=None if event.reason is None else event.reason.value,
            )
        return 1

    def _outcome(self, decoded: Decoded, rows: _BatchRows) -> int:
        v = expect(decoded, SessionOutcome).verdict
        self._archive.put_session_verdict(
            session_id=v.session_id,
            device_id=v.device_id,
            patient_ref=v.patient_ref,
            frames=v.frames,
            probability=v.probability,
            flagged=v.flagged,
            threshold=v.threshold,
            rule=v.rule,
            model_version=v.model_version,
            verdict_ns=v.ts_ns,
            member_spread=v.member_spread,
            inconclusive=v.inconclusive,
        )
        return 1

    def _closed(self, decoded: Decoded, rows: _BatchRows) -> int:
        closed = expect(decoded, SessionClosed)
        self._archive.put_session_no_verdict(closed.session_id, closed.closed_ns)
        return 1

    def close(self) -> None:
        self._archive.close()
