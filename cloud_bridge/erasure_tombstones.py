"""Tombstones: the hashed pseudonyms (and session ids) of erased patients, which the bridge drops.

Why: erasing the stores is not enough while messages of hers are still on their way: a
sensor's spool replays unsent frames after a network outage, the broker keeps a persistent
session's queue while the bridge is down, a held verdict waits for its frame. Without a
tombstone the next such message would re-create her record in every store. So
`thermoscreen patients forget` writes her tombstone *before* it erases anything, and the
bridge consults the list at intake: a message naming an erased `patient_ref` or one of her
session ids is acknowledged, counted (dead-letter counter `intake/erased`, no row, no
payload kept, no MQTT dead letter: that would carry her data again) and not stored.

The file holds one line per tombstone: `patient <sha256>` or `session <sha256>`, the digest
of a fixed label plus the id, so the file itself does not list who was erased (a pseudonym
can still be *tested* against it by whoever has one; it is 0600 like the stores). Lines are
only appended (under an exclusive lock, fsynced); the bridge re-reads the file when its size
or mtime changes, at most once a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from cloud_bridge.channels import Decoded, SessionOutcome
from contract.messages import DeadLetter
from transport.private_files import private_dir, private_file

_LABEL = b"thermoscreen-erased-v1:"
KINDS = ("patient", "session")
#: How often (seconds) the bridge looks at the file for new tombstones at most.
REFRESH_S = 1.0


def digest(kind: str, value: str) -> str:
    """The tombstone of one id: sha256 of a fixed label, the kind and the id."""
    if kind not in KINDS:
        raise ValueError(f"tombstone kind {kind!r}: expected one of {', '.join(KINDS)}")
    return hashlib.sha256(_LABEL + kind.encode() + b":" + value.encode("utf-8")).hexdigest()


def ids_of(decoded: Decoded | object) -> tuple[str | None, str | None]:
    """The (patient_ref, session_id) a decoded message names, where it names them."""
    if isinstance(decoded, SessionOutcome):
        return decoded.verdict.patient_ref, decoded.verdict.session_id
    if isinstance(decoded, DeadLetter):
        return None, None  # names neither; its payload sample is matched by bytes (erasure.py)
    ref = getattr(decoded, "patient_ref", None)
    sid = getattr(decoded, "session_id", None)
    return (ref if isinstance(ref, str) else None), (sid if isinstance(sid, str) else None)


def add(path: Path, patient_ref: str, session_ids: Iterable[str] = ()) -> int:
    """Append the tombstones of a patient and her sessions (those not already there); returns how many were new."""
    wanted = [f"patient {digest('patient', patient_ref)}"]
    wanted += [f"session {digest('session', sid)}" for sid in sorted(set(session_ids))]
    private_dir(path.parent)
    private_file(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, encoding="ascii") as existing:
            have = {line.strip() for line in existing}
        new = [line for line in wanted if line not in have]
        if new:
            os.write(fd, "".join(f"{line}\n" for line in new).encode("ascii"))
            os.fsync(fd)
    finally:
        os.close(fd)
    return len(new)


def load(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(patient digests, session digests) in the file; empty sets when there is no file yet."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return frozenset(), frozenset()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the erasure tombstones {path}: {exc}") from None
    patients: set[str] = set()
    sessions: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        kind, _, value = line.partition(" ")
        if kind not in KINDS or len(value) != 64:
            raise ValueError(f"{path}: line {number}: not a tombstone")
        (patients if kind == "patient" else sessions).add(value)
    return frozenset(patients), frozenset(sessions)


class ErasedIds:
    """What the bridge consults: is this patient or session erased? Reloads the file when it changed."""

    def __init__(self, path: Path, *, refresh_s: float = REFRESH_S) -> None:
        self.path = Path(path)
        self._refresh_s = refresh_s
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._patients: frozenset[str] = frozenset()
        self._sessions: frozenset[str] = frozenset()
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed (checked at most every `refresh_s`, unless `force`)."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + self._refresh_s
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and not force:
            return
        self._patients, self._sessions = load(self.path)
        self._stamp = stamp

    @property
    def empty(self) -> bool:
        return not self._patients and not self._sessions

    def covers(self, patient_ref: str | None, session_id: str | None) -> bool:
        """True if the patient or the session was erased."""
        if patient_ref is not None and self._patients and digest("patient", patient_ref) in self._patients:
            return True
        return session_id is not None and bool(self._sessions) and digest("session", session_id) in self._sessions

    def covers_decoded(self, decoded: Decoded | object) -> bool:
        """True if a decoded message names an erased patient or session (cheap while none is erased)."""
        if self.empty:
            return False
        return self.covers(*ids_of(decoded))
