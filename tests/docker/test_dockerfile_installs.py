"""Each Dockerfile's `pip install` resolves to wheels only: the slim images have no compiler.

No Docker engine runs here, so the images are not built; instead the exact requirement of
each Dockerfile's `pip install` line is resolved by the real pip with `--only-binary=:all:`
(a package that would need building from source, as RPi.GPIO once did in the sensor image,
fails the resolution) and `--dry-run` (nothing is installed). This host's platform (x86_64,
what the compose stack builds on) is checked; aarch64-only markers (lgpio) are not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILES = sorted(p.name for p in DOCKER_DIR.glob("*.Dockerfile"))
#: Installing from source needs gcc and the Python headers, which python:3.11-slim lacks.
PIP_DRY_RUN = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
PIP_DRY_RUN += ["--only-binary=:all:", "--disable-pip-version-check"]
NEVER_IN_SENSOR = {"rpi.gpio", "rpi-gpio", "mfrc522", "spidev"}


def pip_install_target(dockerfile: str) -> str:
    """The one requirement of the Dockerfile's `pip install "..."` (the repo copied to its WORKDIR)."""
    text = (DOCKER_DIR / dockerfile).read_text()
    found: list[str] = re.findall(r'pip install "([^"]+)"', text)
    assert len(found) == 1 == text.count("pip install"), f"{dockerfile}: expected one quoted pip install, got {found}"
    return found[0]


def test_every_dockerfile_has_one_parsable_pip_install_of_wheels_only() -> None:
    assert DOCKERFILES, "no Dockerfiles found"
    for name in DOCKERFILES:
        assert pip_install_target(name).startswith(".["), name
        env = " ".join(line for line in (DOCKER_DIR / name).read_text().splitlines() if line.startswith(("ENV", "  ")))
        assert "PIP_ONLY_BINARY=:all:" in env, f"{name}: the build must refuse to compile (no compiler in slim)"


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_pip_install_needs_no_compiler(dockerfile: str, tmp_path: Path) -> None:
    target = pip_install_target(dockerfile).replace(".", str(REPO_ROOT), 1)
    report = tmp_path / "report.json"
    out = subprocess.run(
        [*PIP_DRY_RUN, "--report", str(report), target],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert out.returncode == 0, f"{dockerfile}: {errors or out.stderr[-2000:]}"
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "thermoscreen" in names
    if dockerfile == "sensor.Dockerfile":
        assert not names & NEVER_IN_SENSOR, names & NEVER_IN_SENSOR
        assert not any(n.startswith(("tensorflow", "ai-edge-litert")) for n in names), names
