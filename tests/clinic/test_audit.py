"""The audit log's hash chain, called directly: removed, reordered and edited lines are found."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from clinic import audit

REF = "0123456789abcdef"


def _log(tmp_path: Path, lines: int = 4) -> Path:
    path = tmp_path / "clinic" / "audit.jsonl"
    audit.append(path, "enrol", actor="nurse-a", patient_ref=REF, reason=None)
    for n in range(lines - 2):
        audit.append(path, "lookup", actor="dr-b", patient_ref=REF, reason=f"follow-up {n}")
    audit.record_report(path, REF, sessions=["ab" * 16], report="report-abababab.html", actor="dr-b")
    return path


def _rewrite(path: Path, change: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if change == "remove":
        del lines[1]
    elif change == "remove-first":
        del lines[0]
    elif change == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif change == "edit":
        lines[1] = lines[1].replace(b"follow-up 0", b"follow-up X")
    elif change == "edit-last":
        lines[-1] = lines[-1].replace(b"dr-b", b"dr-c")
    path.write_bytes(b"".join(lines))


def test_intact_log_counts_lines_and_holds_who_when_what_why(tmp_path: Path) -> None:
    path = _log(tmp_path)
    assert audit.verify(path) == 4
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["action"] for e in entries] == ["enrol", "lookup", "lookup", "report"]
    assert entries[1]["actor"] == "dr-b"
    assert entries[1]["reason"] == "follow-up 0"
    assert entries[1]["at"].endswith("+00:00")
    assert entries[3]["detail"] == {"sessions": ["ab" * 16], "report": "report-abababab.html"}
    assert entries[0]["prev"] == audit.GENESIS


@pytest.mark.parametrize(
    ("change", "bad_line"),
    [("remove", 2), ("remove-first", 1), ("reorder", 2), ("edit", 2), ("edit-last", 4)],
)
def test_tampering_names_the_first_bad_line(tmp_path: Path, change: str, bad_line: int) -> None:
    path = _log(tmp_path)
    _rewrite(path, change)
    with pytest.raises(ValueError, match=f"line {bad_line}: "):
        audit.verify(path)


def test_edit_with_a_recomputed_own_hash_still_breaks_the_next_line(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["reason"] = "curiosity"
    entry["hash"] = audit._content_hash(entry)
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3: chain broken"):
        audit.verify(path)


def test_default_actor_is_the_os_user_and_empty_reason_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "clinic-pc-user")
    path = tmp_path / "clinic" / "audit.jsonl"
    assert audit.append(path, "lookup", actor=None, patient_ref=REF, reason="x")["actor"] == "clinic-pc-user"
    with pytest.raises(ValueError, match="reason"):
        audit.append(path, "lookup", actor=None, patient_ref=REF, reason="  ")
    assert audit.verify(path) == 1


def test_last_line_is_found_past_a_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "clinic" / "audit.jsonl"
    for _ in range(3):
        audit.append(path, "lookup", actor="a", patient_ref=REF, reason="r" * (audit._TAIL_CHUNK + 100))
    assert audit.verify(path) == 3


def test_a_rechained_log_with_a_line_removed_still_shows_the_gap(tmp_path: Path) -> None:
    """A forger who recomputes every hash after deleting a line but keeps the numbers is caught by seq."""
    path = _log(tmp_path)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    del entries[1]
    prev = audit.GENESIS
    out = []
    for entry in entries:
        entry["prev"] = prev
        entry["hash"] = audit._content_hash(entry)
        raw = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        prev = audit._sha256(raw.encode())
        out.append(raw)
    path.write_text("\n".join(out) + "\n")
    with pytest.raises(ValueError, match="line 2: sequence 3, expected 2"):
        audit.verify(path)


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    """Several clinicians at once (threads here; each append opens its own file description, so
    the flock serialises them as it does separate processes)."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "clinic" / "audit.jsonl"

    def lookups(worker: int) -> None:
        for n in range(15):
            audit.append(path, "lookup", actor=f"dr-{worker}", patient_ref=REF, reason=f"r{n}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lookups, range(4)))
    assert audit.verify(path) == 60


def test_a_log_with_a_broken_tail_is_not_appended_to(tmp_path: Path) -> None:
    path = _log(tmp_path)
    with path.open("ab") as log:
        log.write(b'{"seq": 5, "act')
    before = path.read_bytes()
    with pytest.raises(ValueError, match="last line is not an audit entry"):
        audit.append(path, "lookup", actor="dr-b", patient_ref=REF, reason="x")
    assert path.read_bytes() == before
