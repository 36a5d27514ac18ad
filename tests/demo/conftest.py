"""Fixtures for the demo and local-stack tests: the model the inference nodes serve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.stack import shipped_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model if the repository has it, else a tiny untrained one (TensorFlow, ~15 s)."""
    shipped = shipped_model_dir()
    if (shipped / "manifest.json").exists():
        return shipped
    out = tmp_path_factory.mktemp("model") / "thermal"
    code = (
        "import sys; from pathlib import Path; from tests.inference_node.model_factory import write_model_dir\n"
        "write_model_dir(Path(sys.argv[1]), version='stack-test', seed=1, variants=('float32',))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, timeout=300, cwd=REPO_ROOT)
    return out
