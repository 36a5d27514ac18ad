"""Fixtures for broker tests: a production-like Mosquitto (TLS, passwords, ACL) on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.secure_broker import SecureBroker


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    """`thermoscreen broker init` in tmp_path, then a real `mosquitto -c DIR/mosquitto.conf`."""
    with SecureBroker(tmp_path) as broker:
        yield broker
