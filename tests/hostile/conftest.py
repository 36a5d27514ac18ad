"""One real stack per test module: the secured Mosquitto (per-device accounts, role ACL), the
bridge and one inference node as child processes, VictoriaMetrics behind the bridge's Influx sink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.local_mosquitto import BrokerStartError, find_mosquitto
from devtools.stack import LocalStack, StackOptions


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Devices are in-process clients of the test (honest and hostile), not sensor processes."""
    try:
        find_mosquitto()
    except BrokerStartError as exc:
        pytest.skip(str(exc))
    options = StackOptions(devices=0, nodes=1, sessions=None, anonymous_capture=True, tsdb=True, startup_timeout_s=60.0)
    with LocalStack(tmp_path_factory.mktemp("hostile") / "stack", options) as stack:
        yield stack
