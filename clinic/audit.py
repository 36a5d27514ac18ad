"""The audit log: who looked up, enrolled or reported on which patient, when and why.

JSON lines, append-only, 0600. Each line carries `prev`, the sha256 of the previous line as
written (64 zeros for the first), and `hash`, the sha256 of its own content, so a removed,
reordered or edited line breaks the chain at that line. Names never go in the log, only refs.
What the chain cannot show alone: lines cut off the end (the count printed by `--verify` is the
thing to compare with an earlier run).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from transport.private_files import private_dir, private_file

GENESIS = "0" * 64
AUDIT_SUFFIX = ".audit.jsonl"
ACTIONS = frozenset({"enrol", "lookup", "list-names", "report", "forget"})
_TAIL_CHUNK = 4096


def default_audit_path(registry: Path) -> Path:
    """The log next to the registry: `patients.sqlite` -> `patients.sqlite.audit.jsonl`."""
    return registry.with_name(registry.name + AUDIT_SUFFIX)


def current_actor(actor: str | None) -> str:
    """`--actor` if given, else the OS user."""
    name = (actor if actor is not None else getpass.getuser()).strip()
    if not name or "\n" in name:
        raise ValueError("actor: must be a non-empty single line")
    return name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _last_line(fd: int) -> bytes | None:
    """The last complete line of the file, read from the end (the log only grows)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None
    buf = b""
    pos = end
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        body = buf[:-1] if buf.endswith(b"\n") else buf
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1 :]
    return buf[:-1] if buf.endswith(b"\n") else buf


def _seq_of(last: bytes, path: Path) -> int:
    """The last line's number; a log whose tail is not an entry is not appended to (fail closed)."""
    try:
        seq = json.loads(last)["seq"]
    except (ValueError, KeyError, TypeError):
        seq = None
    if not isinstance(seq, int):
        raise ValueError(f"{path}: last line is not an audit entry; check it with `patients audit --verify`")
    return seq


def append(
    path: Path,
    action: str,
    *,
    actor: str | None,
    patient_ref: str | None,
    reason: str | None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one chained line (under an exclusive lock) and fsync it; returns the entry."""
    if action not in ACTIONS:
        raise ValueError(f"audit: unknown action {action!r}")
    if reason is not None and not reason.strip():
        raise ValueError("reason: must not be empty")
    private_dir(path.parent)
    private_file(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev_seq = 0 if last is None else _seq_of(last, path)
        entry: dict[str, Any] = {
            "seq": prev_seq + 1,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "actor": current_actor(actor),
            "action": action,
            "patient_ref": patient_ref,
            "reason": reason.strip() if reason is not None else None,
            "detail": detail or {},
            "prev": GENESIS if last is None else _sha256(last),
        }
        entry["hash"] = _content_hash(entry)
        os.write(fd, json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def record_report(
    path: Path,
    patient_ref: str,
    *,
    sessions: list[str],
    report: str,
    actor: str | None = None,
    reason: str | None = "screening report",
) -> dict[str, Any]:
    """For the report code: log that a report on `patient_ref` (these sessions, this file) was made."""
    return append(
        path,
        "report",
        actor=actor,
        patient_ref=patient_ref,
        reason=reason,
        detail={"sessions": list(sessions), "report": report},
    )


def verify(path: Path) -> int:
    """The number of lines if the chain is intact, else ValueError naming the first bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read audit log {path}: {exc.strerror or exc}") from None
    prev = GENESIS
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        raise ValueError(f"{path}: line {len(lines)}: incomplete (no newline)")
    for number, raw in enumerate(lines, start=1):
        problem = _line_problem(raw, number, prev)
        if problem:
            raise ValueError(f"{path}: line {number}: {problem}")
        prev = _sha256(raw)
    return len(lines)


def _line_problem(raw: bytes, number: int, prev: str) -> str | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("hash") != _content_hash(entry):
        return "edited (its hash does not match its content)"
    if entry.get("prev") != prev:
        return "chain broken (a line before it was removed, reordered or edited)"
    if entry.get("seq") != number:
        return f"sequence {entry.get('seq')!r}, expected {number} (lines removed or reordered)"
    return None
