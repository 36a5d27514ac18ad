"""Marks every test that needs a real server by the fixtures it uses, for `make test-fast`.

`make test` runs everything; `make test-fast` runs `-m "not server and not slow"`: the tests
that need neither a server from apt (Mosquitto, VictoriaMetrics, influxd, the Firestore
emulator, Chromium) nor minutes of training, without root. A test is a server test when its
fixture closure includes one of `SERVER_FIXTURES`; a test that starts a server by itself
carries `@pytest.mark.server` explicitly.
"""

from __future__ import annotations

import pytest

#: Fixtures that start (or stand for) a real server process.
SERVER_FIXTURES = frozenset(
    {
        "mosquitto",
        "secure_broker",
        "persistent_mosquitto",
        "victoria",
        "running_victoria",
        "firestore_emulator",
        "influx",
        "start_node",
        "run_node",
        "browser",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
