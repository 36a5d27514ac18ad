"""Keys and paths for the registry tests (random keys; the registry lives in its own directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def registry_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def site_key() -> bytes:
    return os.urandom(16)


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    return tmp_path / "clinic" / "patients.sqlite"
