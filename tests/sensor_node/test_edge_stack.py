"""Edge mode in the whole system: real broker (TLS, ACL), inference node, bridge and device processes.

The device shows its provisional result when a session ends; the bridge's session verdict
(from the inference node's frame verdicts) then replaces it on the device, and that verdict,
not the device's, is what the archive stores.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from contract.messages import DeviceStatus, decode_message
from contract.model.shipped import shipped_model_dir
from contract.topics import status_topic
from devtools.stack import LocalStack, SessionPlan, StackOptions
from tests.mqtt_helpers import Collector, subscribe_and_wait
from tests.sensor_node.conftest import wait_until

pytestmark = pytest.mark.slow
TIMEOUT_S = 90.0
PROVISIONAL = re.compile(r"session ([0-9a-f]{8}): provisional on-device result")
REPLACED = re.compile(r"session ([0-9a-f]{8}): the cloud's session verdict, replacing the provisional")


def test_the_cloud_verdict_replaces_the_provisional_result_and_is_the_one_stored(
    tmp_path: Path, local_servers: None
) -> None:
    options = StackOptions(
        devices=1,
        nodes=1,
        rate_hz=8.0,
        sessions=SessionPlan(start_after_s=1.0, length_s=3.0, gap_s=2.0, count=1),
        sensor_overrides={"edge.model_dir": str(shipped_model_dir())},
    )
    with LocalStack(tmp_path / "stack", options) as stack:
        device = stack.device_ids[0]
        log = stack.log_dir / f"{device}.log"

        def text() -> str:
            return log.read_text(encoding="utf-8", errors="replace")

        wait_until(lambda: bool(REPLACED.search(text())), TIMEOUT_S, "the cloud verdict replacing the provisional")
        provisional = PROVISIONAL.findall(text())
        replaced = REPLACED.findall(text())
        assert provisional == replaced and len(provisional) == 1  # one session, shown twice, in that order
        assert text().index("provisional on-device result") < text().index("replacing the provisional")
        assert "edge mode on (model " in text()
        results = stack.monitor.session_results()
        assert [r.session_id[:8] for r in results] == provisional

        statuses = Collector()
        reader = stack.connect(stack.accounts["monitor"])
        subscribe_and_wait(reader, status_topic(device), statuses)
        retained = decode_message(statuses.wait_for(1, 10)[-1].payload, DeviceStatus)
        reader.stop()
        assert retained.last_session_id == results[0].session_id and retained.provisional_result is None
        report = stack.shutdown(drain_timeout_s=20.0)

    assert report.exit_codes[device] == 0
    with sqlite3.connect(stack.archive_path) as db:
        stored = db.execute("SELECT session_id, model_version FROM sessions WHERE probability IS NOT NULL").fetchall()
        nodes = {row[0] for row in db.execute("SELECT DISTINCT node_id FROM verdicts")}
    assert stored == [(results[0].session_id, results[0].model_version)]
    assert nodes and all(node.startswith("infer") for node in nodes)  # every stored verdict is the cloud's
