"""`bench faults --bridges`: the cluster scenario needs two bridges; every bridge is a dead-letter witness."""

from __future__ import annotations

import pytest

from devtools.bench.fault_scenarios import CLUSTER_SCENARIOS, SCENARIOS, STORAGE_BRIDGE_KILL, scenario
from devtools.bench.faults import FaultOptions, deadletter_components
from devtools.bench.faults_cli import default_scenarios


def test_the_storage_bridge_scenario_needs_several_bridges() -> None:
    with pytest.raises(ValueError, match="needs --bridges 2"):
        FaultOptions(scenarios=(STORAGE_BRIDGE_KILL,))
    assert FaultOptions(scenarios=(STORAGE_BRIDGE_KILL,), bridges=2).bridges == 2
    assert scenario(STORAGE_BRIDGE_KILL).restarts == ("bridge-2",)
    assert default_scenarios(1) == SCENARIOS and default_scenarios(2) == SCENARIOS + CLUSTER_SCENARIOS


def test_a_bad_frame_is_reported_by_one_bridge_and_a_bad_rfid_event_by_every_bridge() -> None:
    assert deadletter_components(1) == {"frame": [("main",), ("inference",)], "rfid": [("main",)]}
    assert deadletter_components(2) == {"frame": [("main", "main-2"), ("inference",)], "rfid": [("main",), ("main-2",)]}
