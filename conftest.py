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
        "local_servers",
        "bench_servers",
        "hostile_stack",
    }
)

#: Fixtures that train or build models with TensorFlow (seconds to minutes on two cores).
SLOW_FIXTURES = frozenset({"trained_thermal", "test_models"})


@pytest.fixture
def local_servers() -> None:
    """For a test that starts the local stack itself: skip (with the reason) where Mosquitto is missing."""
    from devtools.local_mosquitto import BrokerStartError, find_mosquitto

    try:
        find_mosquitto()
    except BrokerStartError as exc:
        pytest.skip(str(exc))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if SERVER_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.server)
        if SLOW_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.slow)
