"""`bench inference` ends when the node has dealt with every frame, dropped ones included.

It used to wait for one verdict per frame published, so a node whose bounded queue dropped
frames under the saturating load left it waiting out a 300 s timeout. Here the node's queue
holds one frame, so it drops most of a burst; the bench must end, say how many it dropped,
and account for every frame. Real broker and node, nothing mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from contract.messages import NodeMetrics, NodeRole, encode_message
from contract.topics import NodeChannel, node_topic
from devtools.bench.node_counters import NodeCount, NodeCounters
from devtools.local_mosquitto import LocalMosquitto
from tests.conftest import REPO_ROOT
from transport.connection import MqttConnection, MqttSettings

SHIPPED = REPO_ROOT / "contract" / "model" / "shipped" / "thermal"


def test_a_node_that_drops_frames_ends_the_bench_with_the_drops_reported(local_servers: None) -> None:
    frames = 1500
    args = ["bench", "inference", "--json", "--model", str(SHIPPED), "--frames", str(frames), "--rounds", "1"]
    args += ["--paced-frames", "40", "--paced-rate", "200", "--node-max-pending", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # a hang, not a speed limit: it used to sit out 300 s
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["frames_dropped"] > 0, "a one-frame queue under a burst drops: the case this test is for"
    assert result["frames_verdicted"] + result["frames_dropped"] + result["frames_deadlettered"] == frames
    assert result["frames_unaccounted"] == 0 and result["frames_lost"] == 0
    assert result["verdict_duplicates"] == 0 and result["node_exit_codes"] == [0]
    assert result["paced_node_cpu_ms_per_frame"] > 0  # the node's CPU over the paced phase, per verdict


def _publish_counts(conn: MqttConnection, node_id: str, verdicted: int, dropped: int) -> None:
    metrics = NodeMetrics(
        node_id=node_id,
        role=NodeRole.INFERENCE,
        ts_ns=time.time_ns(),
        values={"frames_total": float(verdicted), "frames_dropped": float(dropped), "deadletters": 0.0},
    )
    assert conn.publish(node_topic(node_id, NodeChannel.METRICS), encode_message(metrics), qos=1).wait(5.0)


def test_counters_end_the_wait_when_they_add_up_or_stop_moving(mosquitto: LocalMosquitto) -> None:
    counters = NodeCounters(mosquitto.url, "n-1").start()
    conn = MqttConnection(MqttSettings(url=mosquitto.url), client_id="metrics-test").start()
    try:
        _publish_counts(conn, "n-1", 10, 2)
        base = counters.latest(fresh_within_s=5.0)
        assert base == NodeCount(verdicted=10, dropped=2)

        _publish_counts(conn, "n-1", 15, 7)  # 5 verdicted + 5 dropped since base: all 10 accounted
        assert counters.wait_accounted(base, 10, stall_s=5.0) == NodeCount(verdicted=5, dropped=5)

        started = time.monotonic()
        stalled = counters.wait_accounted(base, 11, stall_s=0.5)  # one frame the node never reports
        assert stalled.accounted == 10 and time.monotonic() - started < 5.0
    finally:
        conn.stop()
        counters.stop()
