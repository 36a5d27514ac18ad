"""The benches' handle on a `devtools.load_generator` child process: start, command, read results.

The generator speaks one JSON object per line on stdout and takes one command per line on
stdin (see `devtools.load_generator`); a reader thread queues its lines so a command can
wait for its answer with a timeout, and a generator that dies is reported with its log tail.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from devtools.load_generator import MAX_DRAIN_S, DeviceAccount, write_accounts

REPO_ROOT = Path(__file__).resolve().parents[1]


class LoadGeneratorProcess:
    """One load generator process simulating the given device accounts."""

    def __init__(
        self,
        accounts: list[DeviceAccount],
        *,
        url: str,
        ca_file: Path,
        rate: float,
        workdir: Path,
        name: str = "load",
        single_loop: bool = False,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        accounts_file = write_accounts(workdir / f"{name}-accounts.json", accounts)
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "devtools.load_generator", "--accounts", str(accounts_file)),
                *("--url", url, "--ca", str(ca_file), "--rate", repr(float(rate))),
                *(["--single-loop"] if single_loop else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.strip()
            if text.startswith("{"):
                self._lines.put(json.loads(text))
        self._lines.put(None)  # end of output: the process exited

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            data = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"load generator: no {event!r} within {timeout:.0f} s; log: {self.log_tail()}") from None
        if data is None:
            code = self.proc.wait()
            raise RuntimeError(f"load generator exited with code {code} before {event!r}; log: {self.log_tail()}")
        if data.get("event") != event:
            raise RuntimeError(f"load generator answered {data.get('event')!r}, expected {event!r}: {data}")
        return data

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise RuntimeError(f"load generator is gone; log: {self.log_tail()}") from None

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Block until every simulated device is connected, subscribed and publishing."""
        return self._expect("ready", timeout)

    def snapshot(self, timeout: float = 30.0) -> dict[str, Any]:
        self._send("snapshot")
        return self._expect("snapshot", timeout)

    def inject(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Have the devices publish `count` malformed/oversized payloads between good frames."""
        self._send(f"inject {int(count)}")
        payloads: list[dict[str, Any]] = self._expect("injected", timeout)["payloads"]
        return payloads

    def stop(self, drain_s: float, window_ns: tuple[int, int] | None = None) -> dict[str, Any]:
        """Stop publishing, wait for acks and verdicts (until `drain_s` pass without any), return the result."""
        command = f"stop {drain_s:.3f}"
        if window_ns is not None:
            command += f" {window_ns[0]} {window_ns[1]}"
        self._send(command)
        result = self._expect("result", MAX_DRAIN_S + 60.0)
        self.proc.wait(30.0)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()
