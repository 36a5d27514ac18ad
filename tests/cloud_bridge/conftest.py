"""Fixtures of the bridge tests (VictoriaMetrics and the Firestore emulator are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bridge_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bridge"
    path.mkdir()
    return path
