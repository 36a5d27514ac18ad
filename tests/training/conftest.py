"""Shared, session-scoped training artefacts: one small synthetic thermogram set and one model trained on it.

Training is the slow part, so it happens once and the tests inspect its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sensor_node.synthetic_scene import write_synthetic_npz


@dataclass(frozen=True)
class TrainedThermal:
    model_dir: Path
    report_dir: Path
    report: dict[str, Any]


@pytest.fixture(scope="session")
def synthetic_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 synthetic patients at 48x64 (twice the sensor resolution), in the DMR-IR layout."""
    return write_synthetic_npz(tmp_path_factory.mktemp("thermal") / "synthetic.npz", 30, height=48, width=64, seed=3)


@pytest.fixture(scope="session")
def trained_thermal(tmp_path_factory: pytest.TempPathFactory, synthetic_npz: Path) -> TrainedThermal:
    """Nested-cross-validated (2 outer folds, 1 repeat, 3 members) and exported with 2 epochs per training."""
    from training.thermal_pipeline import ThermalRunOptions, run_thermal_training

    root = tmp_path_factory.mktemp("thermal_model")
    report = run_thermal_training(
        ThermalRunOptions(
            data=synthetic_npz,
            out=root / "model",
            report_dir=root / "report",
            epochs=2,
            folds=2,
            repeats=1,
            members=3,
            seed=1,
            threads=2,
            command="pytest",
            progress=False,
        )
    )
    return TrainedThermal(root / "model", root / "report", report)
