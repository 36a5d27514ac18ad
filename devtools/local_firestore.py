"""Starts the Firestore emulator (`gcloud emulators firestore start`) on a free loopback port.

The emulator is a Java program started through gcloud; it is slow to start (seconds), so
tests start it once per run. Clients find it through FIRESTORE_EMULATOR_HOST (see `env`),
and the bridge's Firestore sink then uses anonymous credentials. Data is kept in memory
only; keep tests apart with distinct project ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from devtools.http_ready import log_tail, wait_http_ok
from devtools.local_mosquitto import free_port


class FirestoreEmulatorError(RuntimeError):
    """gcloud, its emulator component or Java is missing, or the emulator did not start."""


class LocalFirestoreEmulator:
    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.log_path = self.workdir / f"firestore-emulator-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """The value for FIRESTORE_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> LocalFirestoreEmulator:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise FirestoreEmulatorError("gcloud not found on PATH")
        if shutil.which("java") is None:
            raise FirestoreEmulatorError("java not found on PATH (the emulator is a Java program)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        # A new session gives the emulator (gcloud's Java child) its own process group to stop.
        self._proc = subprocess.Popen(
            [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            rc = wait_http_ok(f"http://{self.host}/", self._proc, timeout, poll_s=0.1)
        except TimeoutError:
            self.stop()
            raise FirestoreEmulatorError(f"emulator not answering on {self.host} after {timeout:.0f} s") from None
        if rc is not None:
            tail = self.log_tail()
            self.stop()
            raise FirestoreEmulatorError(f"gcloud exited with code {rc}: {tail}")
        return self

    def log_tail(self, lines: int = 5) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            pgid = proc.pid  # the leader of the session started above
            try:
                os.killpg(pgid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
            # The Java child may outlive gcloud: make sure nothing of the group is left.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
