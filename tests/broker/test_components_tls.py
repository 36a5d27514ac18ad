"""The real sensor, inference and bridge CLIs, each over TLS with its own account, through the ACL.

One production-like broker (`broker init` + `mosquitto -c`), four accounts (device `pi-1`,
`inference.gpu-1`, `bridge.main`, and `admin.ops` to watch everything), three subprocesses
configured the way docs/security.md tells an operator to: `[mqtt]` with an `mqtts://` URL,
username and `ca_file`, the password in THERMOSCREEN_MQTT_PASSWORD. A card scan on the
sensor's stdin starts a session; frames, per-frame verdicts and the session verdict must flow,
the bridge must store what it received, and the site key must appear nowhere.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from pydantic import BaseModel

from broker.provisioning import Credentials
from cloud_bridge.config import BridgeConfig
from contract import topics as t
from contract.messages import (
    DeviceState,
    DeviceStatus,
    NodeStatus,
    RfidEvent,
    SessionVerdict,
    Verdict,
    decode_message,
)
from devtools import component_toml
from devtools.secure_broker import SecureBroker
from inference_node.config import InferenceConfig
from sensor_node.config import SensorConfig
from tests.mqtt_helpers import Collector, subscribe_and_wait
from transport.connection import Message

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO_ROOT / "contract" / "model" / "shipped" / "thermal"
CARD_UID = "04a2197c"
#: Generous: three Python processes start on two shared cores (LiteRT import included).
STARTUP_S = 90.0
FLOW_S = 60.0


def _mqtt_table(broker: SecureBroker, creds: Credentials) -> dict[str, str]:
    return {"url": broker.tls_url, "username": creds.username, "ca_file": str(creds.ca)}


def _write(path: Path, model: type[BaseModel], data: dict[str, Any]) -> None:
    component_toml.write(path, component_toml.build(model, data, source=path.name))


class Component:
    """A `thermoscreen <job>` subprocess with its stderr kept in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path, stdin: bool = False) -> None:
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thermoscreen", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=workdir,
        )

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.stderr_text()[-2000:]}")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM (a clean shutdown for every component), then its exit code and stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._stderr.close()
        return self.proc.returncode, out.decode("utf-8", errors="replace")


Predicate = Callable[[list[Message]], bool]


def _is_up(topic: str, model: type[NodeStatus] | type[DeviceStatus]) -> Predicate:
    def predicate(messages: list[Message]) -> bool:
        return any(m.topic == topic and decode_message(m.payload, model).state is DeviceState.ONLINE for m in messages)

    return predicate


def _wait(collector: Collector, predicate: Predicate, timeout: float, what: str, *procs: Component) -> None:
    """Wait for `predicate` over everything seen so far; fail at once if a component died."""

    def check(messages: list[Message]) -> bool:
        for proc in procs:
            proc.check_alive()
        return predicate(messages)

    collector.wait_until(check, timeout, what)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model if the repository has it, else a tiny untrained one (TensorFlow, ~15 s)."""
    if (SHIPPED_MODEL / "manifest.json").exists():
        return SHIPPED_MODEL
    out = tmp_path_factory.mktemp("model") / "thermal"
    code = (
        "import sys; from pathlib import Path; from tests.inference_node.model_factory import write_model_dir\n"
        "write_model_dir(Path(sys.argv[1]), version='tls-test', seed=1, variants=('float32',))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, timeout=300, cwd=REPO_ROOT)
    return out


@pytest.fixture
def components_workdir(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    yield work


def test_sensor_inference_and_bridge_over_tls(
    secure_broker: SecureBroker, model_dir: Path, components_workdir: Path
) -> None:
    work = components_workdir
    device = secure_broker.add_device("pi-1")
    inference = secure_broker.add_service("inference", "gpu-1")
    bridge = secure_broker.add_service("bridge", "main")
    admin = secure_broker.add_service("admin", "ops")

    _write(
        work / "bridge.toml",
        BridgeConfig,
        {
            "bridge": {"node_id": "main", "metrics_interval_s": 1.0},
            "sessions": {"grace_s": 0.5},
            "queue": {"path": str(work / "queue.sqlite"), "synchronous": "normal"},
            "archive": {"path": str(work / "archive.sqlite")},
            "mqtt": _mqtt_table(secure_broker, bridge),
        },
    )
    _write(
        work / "inference.toml",
        InferenceConfig,
        {"model_poll_s": 0, "metrics_interval_s": 1.0, "mqtt": _mqtt_table(secure_broker, inference)},
    )
    _write(
        work / "sensor.toml",
        SensorConfig,
        {
            "device": {"id": "pi-1"},
            "source": {"kind": "synthetic", "rate_hz": 8.0},
            "rfid": {"kind": "scripted", "cards_file": "-", "site_key_file": str(device.site_key_file)},
            "spool": {"path": str(work / "spool.sqlite"), "synchronous": "normal"},
            "status": {"interval_s": 1.0},
            "mqtt": _mqtt_table(secure_broker, device),
        },
    )

    watcher = secure_broker.connect(admin)
    seen = Collector()
    subscribe_and_wait(watcher, "#", seen)
    procs: list[Component] = []
    try:
        bridge_proc = Component(
            "bridge",
            ["bridge", "--config", str(work / "bridge.toml"), "--progress-s", "0", "--json"],
            secure_broker.env(bridge),
            work,
        )
        procs.append(bridge_proc)
        infer_proc = Component(
            "infer",
            ["infer", "--config", str(work / "inference.toml"), "--node-id", "gpu-1", "--model", str(model_dir)],
            secure_broker.env(inference),
            work,
        )
        procs.append(infer_proc)
        _wait(seen, _is_up(t.node_topic("main", t.NodeChannel.STATUS), NodeStatus), STARTUP_S, "bridge online", *procs)
        _wait(seen, _is_up(t.node_topic("gpu-1", t.NodeChannel.STATUS), NodeStatus), STARTUP_S, "infer online", *procs)

        sensor_proc = Component(
            "sensor", ["sensor", "--config", str(work / "sensor.toml")], secure_broker.env(device), work, stdin=True
        )
        procs.append(sensor_proc)
        _wait(seen, _is_up(t.status_topic("pi-1"), DeviceStatus), STARTUP_S, "sensor online", *procs)

        sensor_proc.stdin.write(f"{CARD_UID}\n".encode())  # the card: a session starts
        sensor_proc.stdin.flush()

        def frames_and_verdicts(messages: list[Message]) -> bool:
            frames = sum(m.topic == t.frame_topic("pi-1") for m in messages)
            verdicts = sum(m.topic == t.verdict_topic("pi-1") for m in messages)
            topics = {m.topic for m in messages}
            # Each service's metrics got through the ACL too (a denied publish reaches nobody).
            metrics = {t.node_topic(n, t.NodeChannel.METRICS) for n in ("main", "gpu-1")}
            return frames >= 5 and verdicts >= 5 and metrics <= topics

        _wait(seen, frames_and_verdicts, FLOW_S, "frames and verdicts", *procs)
        sensor_proc.stdin.write(f"{CARD_UID}\n".encode())  # the same card again: the session ends
        sensor_proc.stdin.flush()
        _wait(
            seen,
            lambda msgs: any(m.topic == t.session_verdict_topic("pi-1") for m in msgs),
            FLOW_S,
            "session verdict from the bridge",
            *procs,
        )
        results = {proc.name: proc.stop() for proc in reversed(procs)}
    finally:
        for proc in procs:
            proc.stop()
        watcher.stop()

    assert all(code == 0 for code, _ in results.values()), {p.name: p.stderr_text()[-1500:] for p in procs}
    messages = list(seen.messages)
    rfid = [decode_message(m.payload, RfidEvent) for m in messages if m.topic == t.rfid_topic("pi-1")]
    assert [e.event.value for e in rfid][:2] == ["session_start", "session_end"]
    verdicts = [decode_message(m.payload, Verdict) for m in messages if m.topic == t.verdict_topic("pi-1")]
    assert verdicts and all(v.device_id == "pi-1" for v in verdicts)
    assert any(v.session_id == rfid[0].session_id for v in verdicts)
    session = next(m for m in messages if m.topic == t.session_verdict_topic("pi-1"))
    assert decode_message(session.payload, SessionVerdict).session_id == rfid[0].session_id

    summary = json.loads(results["bridge"][1])
    assert summary["stored"] > 0 and summary["session_verdicts"] >= 1
    assert (work / "archive.sqlite").exists()
    assert not [m for m in messages if m.topic.startswith(f"{t.ROOT}/deadletter/")], "unexpected dead letters"

    log = secure_broker.log_text()
    for username in ("pi-1", "inference.gpu-1", "bridge.main"):
        assert f"u'{username}')" in log, f"{username} never logged in"
    assert "not authorised" not in log  # no component was refused at CONNECT

    site_key = secure_broker.site_key
    secrets = [site_key, site_key.hex().encode(), site_key.hex().upper().encode()]
    texts = [log.encode(), *(p.stderr_path.read_bytes() for p in procs), *(out.encode() for _, out in results.values())]
    for secret in secrets:
        assert not any(secret in m.payload for m in messages), "site key on the wire"
        assert not any(secret in text for text in texts), "site key in a log"
