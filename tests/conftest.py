"""Shared fixtures: real servers on free loopback ports, started with the project's own configs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_mosquitto import LocalMosquitto

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "dmr_ir" / "dmr_ir.npz"
#: Points the real-data tests at the DMR-IR file where `../shared` is not beside the checkout
#: (a git worktree elsewhere, a CI cache).
DMR_IR_ENV = "THERMOSCREEN_DMR_IR"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A real Mosquitto with the project's generated dev config (plaintext, loopback only)."""
    (tmp_path / "mosquitto").mkdir(exist_ok=True)
    broker = LocalMosquitto(workdir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def dmr_ir_path() -> Path:
    """The real DMR-IR thermograms, where this machine has them: `$THERMOSCREEN_DMR_IR`, else `../shared`.

    A set variable that names no file is an error, not a skip: a typo must not silently skip
    the real-data checks.
    """
    named = os.environ.get(DMR_IR_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            pytest.fail(f"{DMR_IR_ENV}={named}: no such file")
        return path
    if not SHARED_DATA.exists():
        pytest.skip(
            f"real thermograms not present at {SHARED_DATA} nor named by ${DMR_IR_ENV}"
            " (tests use synthetic data elsewhere)"
        )
    return SHARED_DATA
