"""Starts the Firestore emulator (`gcloud emulators firestore start`) on a free loopback port.

The emulator is a Java program started through gcloud; it is slow to start (seconds), so
tests start it once per run. Clients find it through FIRESTORE_EMULATOR_HOST (see `env`),
and the bridge's Firestore sink then uses anonymous credentials. Data is kept in memory
only; keep tests apart with distinct project ids.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devtools.managed_process import ManagedProcess, ProcessStartError, free_port


class FirestoreEmulatorError(ProcessStartError):
    """gcloud, its emulator component or Java is missing, or the emulator did not start."""


class LocalFirestoreEmulator(ManagedProcess):
    name = "firestore emulator"
    start_error = FirestoreEmulatorError
    #: gcloud starts a Java child: the whole process group is signalled and waited for.
    signal_group = True
    start_timeout_s = 90.0
    stop_timeout_s = 15.0

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        super().__init__(
            self.workdir / f"firestore-emulator-{self.port}.log",
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )

    @property
    def host(self) -> str:
        """The value for FIRESTORE_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise FirestoreEmulatorError("gcloud not found on PATH")
        if shutil.which("java") is None:
            raise FirestoreEmulatorError("java not found on PATH (the emulator is a Java program)")
        return [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"]

    def wait_ready(self, timeout: float) -> None:
        self.wait_http_ok(f"http://{self.host}/", timeout, poll_s=0.1)
