"""The bridge process is killed with SIGKILL mid-run and restarted: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cloud_bridge.archive import Archive
from contract.messages import DeviceState, NodeStatus, decode_message
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import MODEL_VERSION as SYNTHETIC_MODEL
from devtools.synthetic_stream import expected_points, make_session, session_verdict_points
from tests.cloud_bridge.helpers import archive_counts, publish_all, wait_until
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from transport.connection import Message

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write_config(path: Path, workdir: Path, broker_url: str, influx_url: str) -> None:
    path.write_text(
        f"""
[bridge]
node_id = "bridge-crash"
metrics_interval_s = 0.5

[mqtt]
url = "{broker_url}"
client_id = "bridge-crash-test"

[queue]
path = "{workdir / "queue.sqlite"}"

[archive]
path = "{workdir / "archive.sqlite"}"

[influx]
enabled = true
url = "{influx_url}"
frame_rows_every = 4
backoff_max_s = 1.0

[sessions]
grace_s = 1.0

[provenance]
approved_models = ["{SYNTHETIC_MODEL}"]
""",
        encoding="utf-8",
    )


def _start_bridge(config: Path, status: Collector) -> subprocess.Popen[bytes]:
    seen = len(status.messages)
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermoscreen", "bridge", "--config", str(config), "--progress-s", "0", "--json"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def online(msgs: list[Message]) -> bool:
        return any(decode_message(m.payload, NodeStatus).state == DeviceState.ONLINE for m in msgs[seen:])

    try:
        status.wait_until(online, 30.0, "the bridge to come online")
    except AssertionError:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"bridge did not start: {err.decode()[-500:]}") from None
    return proc


def test_sigkill_mid_run_and_restart_loses_and_doubles_nothing(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    config = bridge_dir / "bridge.toml"
    _write_config(config, bridge_dir, mosquitto.url, running_victoria.url)
    sessions = [make_session(f"crash-{i}", 60, seed=10 + i) for i in range(4)]
    total_frames = sum(len(s.frames) for s in sessions)
    watcher = connect(mosquitto.url)
    status = Collector()
    subscribe_and_wait(watcher, "thermo/v1/nodes/bridge-crash/status", status)
    publisher = connect(mosquitto.url)
    archive_path = bridge_dir / "archive.sqlite"
    proc = _start_bridge(config, status)
    published = threading.Event()
    failure: list[BaseException] = []

    def publish() -> None:
        try:
            for s in sessions:
                messages = list(s.ordered_messages())
                for i in range(0, len(messages), 20):  # paced, so the kill lands mid-stream
                    publish_all(publisher, messages[i : i + 20])
                    time.sleep(0.02)
        except BaseException as exc:
            failure.append(exc)
        finally:
            published.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        wait_until(lambda: archive_counts(archive_path)["frames"], lambda n: n >= 60, 30.0, "frames archived")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = archive_counts(archive_path)["frames"]
        assert killed_at < total_frames, "the kill came too late to be mid-run"
        proc = _start_bridge(config, status)
        assert published.wait(60.0) and not failure, failure
        counts = wait_until(
            lambda: archive_counts(archive_path),
            lambda c: c["frames"] >= total_frames and c["verdicts"] >= total_frames,
            60.0,
            "all frames archived",
        )
        expected = set().union(*(expected_points(s, rows_every=4) | session_verdict_points(s) for s in sessions))
        keys, rewrites = running_victoria.wait_for_points('{device_id=~"crash-.*"}', len(expected), timeout=60.0)
    finally:
        thread.join(10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        publisher.stop()
        watcher.stop()
    assert proc.returncode == 0, err.decode()[-500:]
    summary = json.loads(out.decode())
    assert summary["dropped"] == 0 and summary["sink_rejected"] == 0
    assert counts == {"sessions": 4, "verdicts": total_frames, "frames": total_frames}
    assert keys == expected, (len(keys - expected), len(expected - keys))
    # Rewrites (a batch written again because the kill came before its confirmation) are
    # overwrites in InfluxDB; VictoriaMetrics keeps them as repeated samples.
    print(f"killed after {killed_at} archived frames; {rewrites} repeated samples in VictoriaMetrics")
    with Archive(archive_path) as archive:
        assert all(archive.session(s.session_id).has_verdict for s in sessions)  # type: ignore[union-attr]
    assert os.path.exists(bridge_dir / "queue.sqlite")
