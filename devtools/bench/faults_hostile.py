"""The hostile devices of the fault bench: a session replayer and a flooder, each a real device account.

Both publish in this process over their own TLS connection to the stack's broker, with the
wire formats a real device uses (so the broker's ACLs let them through, as they would a
compromised or cloned device): what they send must never reach another device's records.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devtools.load_generator import DeviceAccount, SimulatedDevice, bad_payloads, image_pool

if TYPE_CHECKING:
    from devtools.stack import LocalStack

#: Frames the replayer sends under the victim's session id.
REPLAY_FRAMES = 20
#: How long the flooder sends (bounded: "a few seconds"), and at most how many messages.
FLOOD_S = 3.0
FLOOD_MAX_MESSAGES = 20_000
#: Every how many flood messages one is invalid (the six malformed kinds in turn).
FLOOD_BAD_EVERY = 4
#: How long a hostile device waits for its connection and, at the end, for its PUBACKs.
CONNECT_S = 30.0
DRAIN_S = 10.0


@dataclass(frozen=True)
class VictimSession:
    """A session as stored in the archive: whose it is and for which woman."""

    session_id: str
    device_id: str
    patient_ref: str | None


def _device(stack: LocalStack, account: DeviceAccount) -> SimulatedDevice:
    settings = stack.secure_broker.settings(None, qos=1, connect_timeout_s=CONNECT_S)
    return SimulatedDevice(account, settings, image_pool(4))


def _drain(device: SimulatedDevice) -> int:
    """Wait up to DRAIN_S for PUBACKs; the publishes still unacknowledged then."""
    deadline = time.monotonic() + DRAIN_S
    while (left := device.reap()) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the client's receipts, bounded by the deadline
    return left


def archive_session(archive: Path, session_id: str) -> VictimSession | None:
    """The archive's sessions row for `session_id` (None before it is stored)."""
    if not archive.exists():
        return None
    conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        row = conn.execute(
            "SELECT session_id, device_id, patient_ref FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        conn.close()
    return None if row is None else VictimSession(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


def victim_session(archive: Path, device_id: str, timeout: float = 30.0) -> VictimSession:
    """The session `device_id` is streaming under, as the archive stored it (what a sniffer would learn)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            row = conn.execute(
                "SELECT session_id, patient_ref FROM frames WHERE device_id = ? AND session_id IS NOT NULL LIMIT 1",
                (device_id,),
            ).fetchone()
        finally:
            conn.close()
        if row is not None:
            return VictimSession(str(row[0]), device_id, None if row[1] is None else str(row[1]))
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stored frame of {device_id} with a session after {timeout:.0f} s")
        time.sleep(0.25)  # polling the bridge's archive, bounded by the deadline


def replay_session(stack: LocalStack, account: DeviceAccount, victim: VictimSession) -> dict[str, int]:
    """`account` sends session_start and frames under the victim's session id, for another woman."""
    device = _device(stack, account)
    device.session_id = victim.session_id
    device.patient_ref = secrets.token_hex(8)  # another patient_ref for the same session
    device.connect(CONNECT_S)  # publishes the session_start
    try:
        for _ in range(REPLAY_FRAMES):
            device.publish_frame()
            time.sleep(0.02)
        unacked = _drain(device)
    finally:
        device.connection.stop()
    return {"replay_frames": device.frames, "replay_unacked": unacked}


def flood(stack: LocalStack, account: DeviceAccount, seconds: float) -> dict[str, int]:
    """`account` sends valid frames and malformed payloads as fast as it can for `seconds`."""
    device = _device(stack, account)
    device.connect(CONNECT_S)
    bad = sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and sent < FLOOD_MAX_MESSAGES:
            if sent % FLOOD_BAD_EVERY == FLOOD_BAD_EVERY - 1:
                for topic, payload in bad_payloads(device, bad):
                    device.publish_raw(topic, payload)
                bad += 1
            else:
                device.publish_frame()
            sent += 1
        unacked = _drain(device)
    finally:
        device.connection.stop()
    return {"flood_messages": sent, "flood_frames": device.frames, "flood_bad": bad, "flood_unacked": unacked}
