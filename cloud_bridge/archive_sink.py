"""Writes sessions, frame verdicts and frames into the local SQLite archive (always on)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cloud_bridge.archive import Archive, ArchivedFrame, VerdictRecord, compress_centi
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.intake import Kind, SessionOutcome, decode_item
from cloud_bridge.sink import PermanentSinkError
from contract.errors import ContractError
from contract.frame import Frame
from contract.messages import RfidEvent, RfidEventKind, Verdict

ARCHIVE_KINDS = frozenset({Kind.FRAME, Kind.VERDICT, Kind.RFID, Kind.SESSION_OUTCOME})


class ArchiveSink:
    """One transaction per batch; rows are keyed (session, device+seq), so replays overwrite."""

    name = "archive"
    kinds: frozenset[str] | None = frozenset(ARCHIVE_KINDS)

    def __init__(self, path: Path, *, store_frames: bool = True, decoded: DecodedCache | None = None) -> None:
        self.path = path
        self._decode = decoded.decode if decoded is not None else decode_item
        self.store_frames = store_frames
        self._archive = Archive(path, readonly=False)

    def write(self, items: Sequence[QueuedItem]) -> int:
        frames: list[ArchivedFrame] = []
        verdicts: list[VerdictRecord] = []
        conn = self._archive.connection
        written = 0
        try:
            for item in items:
                try:
                    decoded = self._decode(item.kind, item.payload)
                except ContractError as exc:
                    raise PermanentSinkError(f"queued item {item.id} is corrupt: {exc}") from None
                if isinstance(decoded, Frame):
                    if self.store_frames:
                        rows, cols = decoded.shape
                        frames.append(
                            ArchivedFrame(
                                decoded.device_id,
                                decoded.seq,
                                decoded.session_id,
                                decoded.patient_ref,
                                decoded.capture_ns,
                                rows,
                                cols,
                                decoded.ambient_c,
                                compress_centi(decoded.centi),
                            )
                        )
                elif isinstance(decoded, Verdict):
                    verdicts.append(
                        VerdictRecord(
                            decoded.device_id,
                            decoded.seq,
                            decoded.session_id,
                            decoded.patient_ref,
                            decoded.capture_ns,
                            decoded.probability,
                            decoded.flagged,
                            decoded.threshold,
                            decoded.model_version,
                            decoded.node_id,
                            decoded.latency_ms,
                        )
                    )
                elif isinstance(decoded, RfidEvent):
                    written += 1
                    if decoded.event == RfidEventKind.SESSION_START:
                        self._archive.put_session_start(
                            session_id=decoded.session_id,
                            device_id=decoded.device_id,
                            patient_ref=decoded.patient_ref,
                            started_ns=decoded.ts_ns,
                        )
                    else:
                        self._archive.put_session_end(
                            session_id=decoded.session_id,
                            device_id=decoded.device_id,
                            patient_ref=decoded.patient_ref,
                            ended_ns=decoded.ts_ns,
                            frames_reported=decoded.frame_count,
                            end_reason=None if decoded.reason is None else decoded.reason.value,
                        )
                elif isinstance(decoded, SessionOutcome):
                    written += 1
                    v = decoded.verdict
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
                    )
            self._archive.put_frames(frames)
            self._archive.put_verdicts(verdicts)
            self._archive.commit()
        except BaseException:
            conn.rollback()
            raise
        return written + len(frames) + len(verdicts)

    def close(self) -> None:
        self._archive.close()
