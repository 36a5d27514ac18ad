"""The fault harness's own parts: the cuttable relay (against a real Mosquitto), the injected bad
payloads (each one really malformed by the contract), and the "caught up" rule of recovery."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cloud_bridge.intake import Accepted, classify
from contract.topics import frame_topic
from devtools.bench.landed import caught_up
from devtools.cuttable_relay import CuttableRelay
from devtools.load_generator import BAD_SEQ_BASE, DeviceAccount, SimulatedDevice, bad_payloads, impostor_id
from devtools.local_mosquitto import LocalMosquitto
from transport.connection import MqttConnection, MqttSettings


def test_relay_cut_drops_the_link_and_restore_lets_the_client_back(mosquitto: LocalMosquitto) -> None:
    with CuttableRelay("127.0.0.1", mosquitto.port) as relay:
        settings = MqttSettings(url=f"mqtt://127.0.0.1:{relay.port}", reconnect_min_s=0.05, reconnect_max_s=0.2)
        conn = MqttConnection(settings, client_id="relay-test").start()
        try:
            assert conn.connect_count == 1
            receipt = conn.publish("t/relay", b"through", qos=1)
            assert receipt.wait(5.0) and receipt.accepted

            relay.cut()
            assert relay.is_cut
            deadline = time.monotonic() + 5.0
            while conn.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the client's network thread, bounded by the deadline
            assert not conn.connected.is_set(), "the client did not notice the cut"
            queued = conn.publish("t/relay", b"while cut", qos=1)
            assert not queued.wait(0.5), "nothing gets through a cut link"

            relay.restore()
            assert conn.connected.wait(10.0), "the client did not reconnect after restore"
            assert queued.wait(10.0) and queued.accepted, "the held message went out after the restore"
            assert conn.connect_count == 2
            assert relay.cuts == 1 and relay.connections == 2
        finally:
            conn.stop()


def test_every_injected_payload_is_rejected_by_the_contract() -> None:
    settings = MqttSettings(url="mqtt://127.0.0.1:1")  # never connected: only builds payloads
    images = [np.full((24, 32), 3300, dtype=np.int16)]
    device = SimulatedDevice(DeviceAccount("dev-1", "pw"), settings, images)
    kinds_seen = set()
    for index in range(12):
        [(topic, payload)] = bad_payloads(device, index)
        kinds_seen.add(index % 6)
        result = classify(topic, payload)
        assert not isinstance(result, Accepted), (index, topic, payload[:40])
        assert result.dead_letter, index
    assert kinds_seen == set(range(6))
    assert impostor_id("dev-1") != "dev-1" and impostor_id("xa") == "yxa"
    # The oversized one stays under the broker's 1 MiB packet limit, so consumers see it.
    sizes = [len(bad_payloads(device, i)[0][1]) for i in (4, 10)]
    assert min(sizes) > 64 * 1024 and max(sizes) < 1024 * 1024
    assert frame_topic("dev-1") in {bad_payloads(device, i)[0][0] for i in range(6)}
    assert BAD_SEQ_BASE > 10**6


@pytest.mark.parametrize(
    ("stored", "first", "since", "expected"),
    [
        ({1: 10, 2: 20, 3: 30}, 1, 25, True),  # 3 is after the repair, 1-2 before it all there
        ({1: 10, 3: 30}, 1, 25, False),  # 2 missing: not caught up
        ({1: 10, 2: 20}, 1, 25, False),  # nothing from after the repair yet
        ({5: 10, 6: 20, 7: 30}, 5, 25, True),  # a sensor's seqs start wherever its spool was
    ],
)
def test_caught_up_needs_every_earlier_frame_and_a_newer_one(
    stored: dict[int, int], first: int, since: int, expected: bool
) -> None:
    ms = 1_000_000
    assert caught_up({s: t * 10 * ms for s, t in stored.items()}, first, since * 10 * ms) is expected


def test_server_cost_counts_only_the_pipeline_per_verdicted_frame() -> None:
    from devtools.bench.e2e import server_cost

    seconds = {"broker": 0.5, "tsdb": 0.25, "bridge": 1.5, "infer-1": 1.0, "load_generator": 9.0, "bench": 1.0}
    cost = server_cost({**seconds, "infer-2": None}, frames=1000)
    # (0.5 + 0.25 + 1.5 + 1.0) s over 1,000 frames; the load generator and the bench are not the server.
    assert cost["server_cpu_ms_per_frame"] == 3.25
    assert cost["pipeline_vs_broker"] == 6.5
    assert cost["cpu_ms_per_frame"] == {"bridge": 1.5, "broker": 0.5, "infer-1": 1.0, "tsdb": 0.25}
    assert server_cost(seconds, frames=0)["server_cpu_ms_per_frame"] is None
