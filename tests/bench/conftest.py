"""The benches start Mosquitto, VictoriaMetrics and the components: `bench_servers` marks such tests."""

from __future__ import annotations

import pytest

from tests.bench.helpers import require_servers


@pytest.fixture
def bench_servers() -> None:
    require_servers()
