"""The bridge process is killed with SIGKILL mid-run and restarted: nothing lost, replays idempotent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from cloud_bridge.archive import Archive
from contract.messages import DeviceState, NodeStatus, decode_message
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics, PointKey
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


#: Frames the publisher may run ahead of the archive: traffic is in flight when the kill lands,
#: and the kill always lands mid-run (paced by archive progress, not by sleeps).
WINDOW_FRAMES = 40
CHUNK_MESSAGES = 20


def _conflicting_samples(victoria: LocalVictoriaMetrics, selector: str) -> list[PointKey]:
    """Points whose repeated samples disagree (a replay that wrote something else)."""
    values: dict[PointKey, set[float]] = {}
    for series in victoria.export(selector):
        labels = tuple(sorted(series.labels.items()))
        for value, ts in zip(series.values, series.timestamps_ms, strict=True):
            values.setdefault((series.name, labels, ts), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def test_sigkill_mid_run_and_restart_loses_nothing_and_replays_idempotently(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    """A SIGKILL legitimately causes redelivery (unconfirmed batches, unacknowledged messages):
    what must hold is no loss, stored content equal to what was sent, every replayed write an
    exact copy of the first, and replays only of what was sent before the kill."""
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
    published, kill_now, killed = threading.Event(), threading.Event(), threading.Event()
    frames_sent = [0]
    failure: list[BaseException] = []

    def archived(n: int) -> None:
        wait_until(lambda: archive_counts(archive_path)["frames"], lambda have: have >= n, 60.0, "archive progress")

    def publish() -> None:
        try:
            for s in sessions:
                messages = list(s.ordered_messages())
                for i in range(0, len(messages), CHUNK_MESSAGES):
                    chunk = messages[i : i + CHUNK_MESSAGES]
                    publish_all(publisher, chunk)
                    frames_sent[0] += sum(1 for topic, _ in chunk if topic.endswith("/frame"))
                    if frames_sent[0] >= 60 and not kill_now.is_set():
                        kill_now.set()  # the chunk just acknowledged by the broker is in flight
                        assert killed.wait(30.0), "the bridge was not killed"
                    archived(frames_sent[0] - WINDOW_FRAMES)
        except BaseException as exc:
            failure.append(exc)
        finally:
            published.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        assert kill_now.wait(30.0) and not failure, failure
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at, sent_at_kill = archive_counts(archive_path)["frames"], frames_sent[0]
        killed.set()
        assert sent_at_kill < total_frames, "the kill came too late to be mid-run"
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
        conflicting = _conflicting_samples(running_victoria, '{device_id=~"crash-.*"}')
    finally:
        killed.set()
        thread.join(70)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        publisher.stop()
        watcher.stop()
    assert proc.returncode == 0, err.decode()[-500:]
    summary = json.loads(out.decode())
    assert summary["dropped"] == 0 and summary["sink_rejected"] == 0
    # Nothing lost, no row or distinct point added.
    assert counts == {"sessions": 4, "verdicts": total_frames, "frames": total_frames}
    assert keys == expected, (len(keys - expected), len(expected - keys))
    # Idempotent: every repeated sample equals the first, and the archive holds what was sent.
    assert conflicting == [], conflicting[:5]
    with Archive(archive_path) as archive:
        replayed = archive.rewrites()
        for s in sessions:
            record = archive.session(s.session_id)
            assert record is not None and record.has_verdict
            stored = archive.frames(s.session_id)
            assert stored.seq.tolist() == [f.seq for f in s.frames]
            assert np.array_equal(stored.temperatures_c, np.stack([f.centi for f in s.frames]) / np.float32(100.0))
            assert [v.probability for v in archive.verdicts(s.session_id)] == [v.probability for v in s.verdicts]
    # Only what was sent before the kill can be replayed (a restart that replays more is a bug).
    assert replayed.get("frames", 0) <= sent_at_kill and replayed.get("verdicts", 0) <= sent_at_kill, replayed
    print(
        f"killed after {killed_at} archived / {sent_at_kill} sent frames; archive rewrites {replayed}; "
        f"{rewrites} repeated samples in VictoriaMetrics"
    )
    assert os.path.exists(bridge_dir / "queue.sqlite")
