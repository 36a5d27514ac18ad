"""Fairness under flood (issue 13.4, bridge part), against a real Mosquitto and the real bridge.

One device floods (valid statuses at QoS 0 and QoS 1 and invalid ones, for about two seconds) while another
sends a normal session. A sink that cannot write (an unreachable InfluxDB) keeps everything
in the queue, so the queue's bounds are really reached: the flooding device is held to its
quota (drops counted for it alone) and the calm device's data all stays queued and stored.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.ingest import DEADLETTERS_PER_SOURCE_S
from cloud_bridge.service import Bridge
from contract.messages import DeviceState, DeviceStatus, encode_message
from contract.topics import status_topic
from devtools.local_mosquitto import LocalMosquitto
from devtools.synthetic_stream import make_session
from tests.cloud_bridge.helpers import bridge_config, publish_all, wait_until
from tests.mqtt_helpers import connect

FLOOD_S = 2.0
#: The flood stops here too: its size then does not depend on how fast this machine publishes (34k-69k in 2 s).
FLOOD_MAX = 12_000
QUOTA_ITEMS = 300


def test_a_flooding_device_cannot_push_other_devices_data_out(mosquitto: LocalMosquitto, bridge_dir: Path) -> None:
    config = bridge_config(
        bridge_dir,
        mosquitto.url,
        influx_url="http://127.0.0.1:1",  # never reachable: its cursor holds every item in the queue
        queue={"max_items": 1000, "drop_policy": "drop_oldest", "per_source": {"max_items": QUOTA_ITEMS}},
    )
    calm = make_session("calm-1", 6, seed=7)
    status = encode_message(DeviceStatus(state=DeviceState.ONLINE, ts_ns=1, spool_depth=3))
    bridge = Bridge(config).start()
    flooder, calm_conn = connect(mosquitto.url), connect(mosquitto.url)
    sent = 0
    try:
        end = time.monotonic() + FLOOD_S
        calm_messages = list(calm.ordered_messages())
        while time.monotonic() < end and sent < FLOOD_MAX:
            for _ in range(200):
                flooder.publish(status_topic("flood-1"), status, qos=0 if sent % 2 else 1)
                flooder.publish(status_topic("flood-1"), b"not json", qos=0)  # invalid ones too
                sent += 2
            if calm_messages:  # the calm device's session, spread over the flood
                publish_all(calm_conn, [calm_messages.pop(0)])
        publish_all(calm_conn, calm_messages)
        summary = wait_until(
            bridge.summary, lambda s: s.received >= 1000 and s.dropped_by_source.get("flood-1", 0) > 0, 20.0, "drops"
        )
        with Archive(config.archive.path) as archive:
            wait_until(archive.counts, lambda c: c["verdicts"] == 6 and c["frames"] == 6, 20.0, "calm session")
        summary = bridge.summary()
        assert bridge.queue is not None
        held = bridge.queue.stats()
    finally:
        flooder.stop()
        calm_conn.stop()
        bridge.stop()
    assert sent >= 1000, f"the flood was too small to test anything ({sent} messages)"
    # The flood was cut at the device's quota; nothing of anybody was pushed out of the queue.
    # The bridge's own dead letters about the flood come back on its deadletter topic and are held to the
    # same quota (each is in the dead-letter table already); a long run reaches it. Nobody else is cut.
    assert set(summary.dropped_by_source) - {"deadletter/bridge"} == {"flood-1"}, summary.dropped_by_source
    assert held.dropped == 0, "the global bound dropped items: the quota did not hold the flood"
    # Influx is down, so the queue still holds everything accepted: all of calm-1, flood-1 at its quota.
    with sqlite3.connect(config.queue.path) as queue_db:
        held_by_source = dict(queue_db.execute("SELECT source, COUNT(*) FROM items GROUP BY source").fetchall())
    assert held_by_source["calm-1"] == len(list(calm.ordered_messages()))
    assert held_by_source["flood-1"] == QUOTA_ITEMS
    assert summary.queue_bytes > 0
    # The invalid half is counted in full, but kept (row + MQTT dead letter) only at a bounded rate.
    with sqlite3.connect(config.queue.path) as queue_db:
        [(rows,)] = queue_db.execute("SELECT COUNT(*) FROM deadletters WHERE topic = ?", (status_topic("flood-1"),))
    counted = summary.dead_letters.get("intake/malformed", 0)
    assert counted > rows > 0
    assert rows <= DEADLETTERS_PER_SOURCE_S * (FLOOD_S + 10)
