"""The wheel carries the shipped model: install it into a fresh venv and run `infer --check` outside the checkout.

The venv sees no checkout: the wheel is built from a clean copy of the source tree
(`pip wheel --no-deps`) and installed with `--no-deps` into a new venv. The third-party
dependencies come from the shared venv's site-packages through a `.pth` file (this machine has
no package index), after the venv's own site-packages; the shared venv's editable hook of the
checkout stays off (it is a `.pth` too, and `.pth` files in a `.pth`-added directory do not run).
The test proves the import comes from the new venv and the cwd is a temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: No PYTHONPATH: it would put the checkout on the path (pip would even call the wheel "already installed").
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=400, check=False)


#: Not copied into the build tree: a stale `build/` would hide a file missing from package-data.
BUILD_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "shared", "node_modules"
)


@pytest.mark.slow
def test_installed_wheel_serves_the_shipped_model_from_anywhere(tmp_path: Path) -> None:
    source = shutil.copytree(REPO_ROOT, tmp_path / "src", ignore=BUILD_IGNORE, symlinks=True)
    wheels = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("thermoscreen-*.whl")
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    purelib = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
        ).stdout.strip()
    )
    shared = sysconfig.get_paths()["purelib"]
    assert shared in site.getsitepackages()
    (purelib / "zz_shared_deps.pth").write_text(shared + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import contract.model.shipped as s; print(s.__file__)"], cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout
    check = run([str(venv / "bin" / "thermoscreen"), "infer", "--check", "--json"], cwd=elsewhere)
    assert check.returncode == 0, check.stderr
    result = json.loads(check.stdout)
    assert Path(result["model_dir"]).is_relative_to(purelib)
    assert result["version"].startswith("thermal-") and len(result["sha256"]) == 64
    version = run([str(venv / "bin" / "thermoscreen"), "--version"], cwd=elsewhere)
    assert version.returncode == 0 and result["version"] in version.stdout, version.stderr
