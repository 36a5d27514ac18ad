"""What the local server launchers (VictoriaMetrics, the Firestore emulator) share: waiting
for a freshly started process to answer HTTP, and reading the tail of its log for errors."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file on one line ('' if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float, poll_s: float = 0.05) -> int | None:
    """Poll `url` until it answers 200 (returns None) or `proc` exits (returns its exit code).

    Raises TimeoutError when neither happens within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            return rc
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} not answering after {timeout:.0f} s")
