"""Writes patients, sessions and frames (with their verdicts) to Firestore via firebase-admin.

Layout (document ids are derived from the data, so a retried batch rewrites the same
documents instead of adding new ones; all writes are merges, so the frame and its verdict,
which arrive separately, end up in one document):

- `patients/{patient_ref}`: patient_ref, session_ids (array union), device_ids (array union)
- `sessions/{session_id}`: device_id, patient_ref, started_ns, ended_ns, frames_reported,
  end_reason, verdict {probability, flagged, threshold, rule, model_version, frames, ts_ns, inconclusive,
  member_spread}
- `frames/{device_id}-{seq:020d}`: device_id, seq, session_id, patient_ref, capture_ns,
  rows, cols, ambient_c, temperatures (zlib of int16 little-endian centi-degrees C, row-major),
  encoding, verdict {probability, label, flagged, threshold, model_version, node_id, latency_ms, inconclusive,
  member_spread}

Credentials: with FIRESTORE_EMULATOR_HOST set, anonymous (the emulator); else
`firestore.credentials_file` (a service-account JSON), else Application Default Credentials
(GOOGLE_APPLICATION_CREDENTIALS). Never from the config file itself.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

from cloud_bridge.archive import compress_centi
from cloud_bridge.channels import Decoded, Kind, SessionOutcome, decode_item, expect
from cloud_bridge.config import FirestoreSettings
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.sink import PermanentSinkError, SinkError
from contract.errors import ContractError
from contract.frame import Frame
from contract.ids import LEGACY_INCARNATION
from contract.messages import RfidEvent, RfidEventKind, Verdict

#: Firestore allows at most 500 writes per batch commit.
MAX_WRITES_PER_COMMIT = 500
FRAME_ENCODING = "zlib-int16le-centi-c"
EMULATOR_PROJECT = "demo-thermoscreen"
_I64_MAX = 2**63 - 1
_app_counter = itertools.count()


def frame_doc_id(device_id: str, seq: int, incarnation: str = LEGACY_INCARNATION) -> str:
    """The frame's document id: device, incarnation and zero-padded sequence (sorts in capture order).

    A legacy-incarnation frame keeps the id it had before incarnations (existing documents stay
    where they are); any other gets its incarnation in the id, so a re-imaged device's seq 0 is
    another document than its first incarnation's seq 0.
    """
    if incarnation == LEGACY_INCARNATION:
        return f"{device_id}-{seq:020d}"
    return f"{device_id}-{incarnation}-{seq:020d}"


def _int(value: int) -> int | str:
    """Firestore integers are signed 64-bit; larger sequence numbers are stored as text."""
    return value if value <= _I64_MAX else str(value)


Write = tuple[str, str, dict[str, Any]]  # (collection, document id, merge data)


def _frame_writes(frame: Frame, store_frames: bool, array_union: Any) -> list[Write]:
    if not store_frames:
        return []
    rows, cols = frame.shape
    data = {
        "device_id": frame.device_id,
        "seq": _int(frame.seq),
        "incarnation": frame.incarnation,
        "session_id": frame.session_id,
        "patient_ref": frame.patient_ref,
        "capture_ns": frame.capture_ns,
        "rows": rows,
        "cols": cols,
        "ambient_c": frame.ambient_c,
        "encoding": FRAME_ENCODING,
        "temperatures": compress_centi(frame.centi),
    }
    return [("frames", frame_doc_id(frame.device_id, frame.seq, frame.incarnation), data)]


def _verdict_writes(v: Verdict, store_frames: bool, array_union: Any) -> list[Write]:
    verdict = {
        "probability": v.probability,
        "label": v.label,
        "flagged": v.flagged,
        "threshold": v.threshold,
        "model_version": v.model_version,
        "node_id": v.node_id,
        "latency_ms": v.latency_ms,
        "inconclusive": v.inconclusive,
        "member_spread": v.member_spread,
    }
    data = {
        "device_id": v.device_id,
        "seq": _int(v.seq),
        "incarnation": v.incarnation,
        "session_id": v.session_id,
        "patient_ref": v.patient_ref,
        "capture_ns": v.capture_ns,
        "verdict": verdict,
    }
    return [("frames", frame_doc_id(v.device_id, v.seq, v.incarnation), data)]


def _rfid_writes(event: RfidEvent, store_frames: bool, array_union: Any) -> list[Write]:
    session: dict[str, Any] = {"device_id": event.device_id, "patient_ref": event.patient_ref}
    if event.event == RfidEventKind.SESSION_START:
        session["started_ns"] = event.ts_ns
    else:
        session["ended_ns"] = event.ts_ns
        session["frames_reported"] = event.frame_count
        session["end_reason"] = None if event.reason is None else event.reason.value
    patient = {
        "patient_ref": event.patient_ref,
        "session_ids": array_union([event.session_id]),
        "device_ids": array_union([event.device_id]),
    }
    return [("sessions", event.session_id, session), ("patients", event.patient_ref, patient)]


def _outcome_writes(outcome: SessionOutcome, store_frames: bool, array_union: Any) -> list[Write]:
    v = outcome.verdict
    verdict = {
        "probability": v.probability,
        "flagged": v.flagged,
        "threshold": v.threshold,
        "rule": v.rule,
        "model_version": v.model_version,
        "frames": v.frames,
        "ts_ns": v.ts_ns,
        "inconclusive": v.inconclusive,
        "member_spread": v.member_spread,
    }
    data = {"device_id": v.device_id, "patient_ref": v.patient_ref, "ended_ns": outcome.ended_ns, "verdict": verdict}
    return [("sessions", v.session_id, data)]


_WriteHandler = Callable[[Decoded, bool, Any], list[Write]]
#: One handler per kind Firestore stores (the keys are `FIRESTORE_KINDS`).
_HANDLERS: dict[str, _WriteHandler] = {
    Kind.FRAME: lambda d, frames, union: _frame_writes(expect(d, Frame), frames, union),
    Kind.VERDICT: lambda d, frames, union: _verdict_writes(expect(d, Verdict), frames, union),
    Kind.RFID: lambda d, frames, union: _rfid_writes(expect(d, RfidEvent), frames, union),
    Kind.SESSION_OUTCOME: lambda d, frames, union: _outcome_writes(expect(d, SessionOutcome), frames, union),
}
FIRESTORE_KINDS = frozenset(_HANDLERS)


def writes_for(kind: str, decoded: Decoded, *, store_frames: bool, array_union: Any) -> list[Write]:
    """The merge writes for one queued item (pure: unit-testable without Firestore)."""
    handler = _HANDLERS.get(kind)
    return [] if handler is None else handler(decoded, store_frames, array_union)


class FirestoreSink:
    name = "firestore"
    kinds: frozenset[str] | None = frozenset(str(k) for k in FIRESTORE_KINDS)

    def __init__(self, settings: FirestoreSettings, *, decoded: DecodedCache | None = None) -> None:
        import firebase_admin
        from firebase_admin import firestore
        from google.cloud.firestore_v1 import ArrayUnion

        self.settings = settings
        self._decode = decoded.decode if decoded is not None else decode_item
        atexit.register(_close_shared_http_session)
        options: dict[str, Any] = {}
        project = settings.project_id
        if os.environ.get("FIRESTORE_EMULATOR_HOST"):
            project = project or EMULATOR_PROJECT
        if project:
            options["projectId"] = project
        self._app = firebase_admin.initialize_app(
            _credential(settings), options, name=f"thermoscreen-bridge-{os.getpid()}-{next(_app_counter)}"
        )
        try:
            self._db = firestore.client(self._app, database_id=settings.database)
        except ValueError as exc:
            firebase_admin.delete_app(self._app)
            raise ValueError(f"Firestore: {exc}") from None
        self._array_union = ArrayUnion

    @property
    def client(self) -> Any:
        return self._db

    def write(self, items: Sequence[QueuedItem]) -> int:
        from google.api_core import exceptions as gexc

        writes: list[Write] = []
        for item in items:
            try:
                decoded = self._decode(item.kind, item.payload)
            except ContractError as exc:
                raise PermanentSinkError(f"queued item {item.id} is corrupt: {exc}") from None
            writes += writes_for(
                item.kind, decoded, store_frames=self.settings.store_frames, array_union=self._array_union
            )
        try:
            for start in range(0, len(writes), MAX_WRITES_PER_COMMIT):
                batch = self._db.batch()
                for collection, doc_id, data in writes[start : start + MAX_WRITES_PER_COMMIT]:
                    batch.set(self._db.collection(collection).document(doc_id), data, merge=True)
                batch.commit(timeout=30.0)
        except (gexc.InvalidArgument, gexc.FailedPrecondition) as exc:
            raise PermanentSinkError(f"Firestore refused the documents: {_short(exc)}") from None
        except (OverflowError, TypeError, ValueError) as exc:  # a value the client cannot encode
            raise PermanentSinkError(f"Firestore cannot encode the documents: {_short(exc)}") from None
        except Exception as exc:
            raise SinkError(f"Firestore write failed: {_short(exc)}") from None
        return len(writes)

    def close(self) -> None:
        import firebase_admin

        try:
            self._db.close()
        finally:
            firebase_admin.delete_app(self._app)


def _close_shared_http_session() -> None:
    """firebase_admin keeps a module-level HTTP request object; finalised at interpreter exit
    it fails noisily ("sys.meta_path is None"), so it is released while the interpreter is
    still whole (atexit; nothing uses it after that)."""
    from firebase_admin import credentials

    with contextlib.suppress(Exception):
        request, credentials._request = credentials._request, None
        del request  # its __del__ runs now, with imports still working


def _credential(settings: FirestoreSettings) -> Any:
    from firebase_admin import credentials

    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        class _Anonymous(credentials.Base):  # type: ignore[misc]
            """The emulator accepts anonymous requests (no real credentials exist there)."""

            def get_credential(self) -> Any:
                return AnonymousCredentials()  # type: ignore[no-untyped-call]

        return _Anonymous()
    if settings.credentials_file is not None:
        try:
            return credentials.Certificate(str(settings.credentials_file))
        except (OSError, ValueError) as exc:
            raise ValueError(f"Firestore credentials file {settings.credentials_file}: {_short(exc)}") from None
    if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        raise ValueError(
            "Firestore is enabled but has no credentials: set firestore.credentials_file, "
            "GOOGLE_APPLICATION_CREDENTIALS, or FIRESTORE_EMULATOR_HOST for the emulator"
        )
    return credentials.ApplicationDefault()


def _short(exc: object) -> str:
    return " ".join(str(exc).split())[:200]
