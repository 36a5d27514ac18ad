"""`thermoscreen demo`: the whole system as a user runs it, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from devtools.stack import shipped_model_dir
from thermoscreen.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "devices", "frames_published", "verdicts", "sessions", "stored", "lost", "report",
    "first_verdict_s", "first_verdict_since_make_s",
}  # fmt: skip


def test_demo_json_run(tmp_path: Path, local_servers: None) -> None:
    if not (shipped_model_dir() / "manifest.json").exists():
        pytest.skip(f"no shipped model at {shipped_model_dir()} (the demo serves the shipped model)")
    workdir = tmp_path / "demo"
    command = [sys.executable, "-m", "thermoscreen", "demo", "--duration", "15", "--devices", "2", "--json"]
    t0 = time.time()
    proc = subprocess.run(
        [*command, "--workdir", str(workdir)],
        env={**os.environ, "THERMOSCREEN_DEMO_T0": f"{t0 - 100:.3f}"},  # as if `make demo` began 100 s earlier
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # not the repository: nothing may depend on the working directory
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got: {proc.stdout!r}"
    result = json.loads(lines[0])
    assert set(result) == KEYS
    assert result["devices"] == 2
    assert result["frames_published"] > 0
    assert result["verdicts"] == result["frames_published"]
    assert result["sessions"] >= 1
    assert result["stored"] == result["frames_published"]
    assert result["lost"] == 0
    # Time to the first verdict: after the stack was up, within the run, and counted from `make demo`'s start.
    first = result["first_verdict_s"]
    assert 0 < first < time.time() - t0
    assert result["first_verdict_since_make_s"] >= 100 + first - 1
    assert f"first verdict      {first} s after the demo started" in proc.stderr
    report = Path(result["report"])
    assert report == workdir / "report.html" and report.is_file()
    html = report.read_text(encoding="utf-8")
    assert "screening aid, not a diagnosis" in html
    assert "screening aid, not a diagnosis" in proc.stderr  # the summary's disclaimer
    assert "devices online 2/2" in proc.stderr  # the live view's progress lines (stderr is no TTY here)
    # Production-like: every process connected with its own account over TLS.
    configs = sorted(p.name for p in (workdir / "config").glob("*.toml"))
    assert configs == ["bridge.toml", "demo-1.toml", "demo-2.toml", "infer-1.toml", "infer-2.toml"]
    assert all("mqtts://" in (workdir / "config" / c).read_text(encoding="utf-8") for c in configs)


def _bad_npz(tmp_path: Path) -> Path:
    path = tmp_path / "other.npz"
    np.savez(path, labels=np.zeros(3))
    return path


def _small_npz(tmp_path: Path) -> Path:
    path = tmp_path / "small.npz"
    np.savez(path, temperature_centi_c=np.zeros((2, 10, 10), dtype=np.int16))
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "frames.npz"
    path.write_text("not a zip\n", encoding="utf-8")
    return path


def _busy_dir(tmp_path: Path) -> Path:
    path = tmp_path / "used"
    path.mkdir()
    (path / "something").write_text("x", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda p: ["--duration", "0"], "--duration 0"),
        (lambda p: ["--duration", "soon"], "--duration 'soon'"),
        (lambda p: ["--devices", "0"], "--devices 0"),
        (lambda p: ["--devices", "2.5"], "--devices '2.5'"),
        (lambda p: ["--nodes", "100"], "--nodes 100"),
        (lambda p: ["--rate", "-1"], "--rate -1"),
        (lambda p: ["--data", str(p / "missing.npz")], "no such file"),
        (lambda p: ["--data", str(_text_file(p))], "not a readable .npz"),
        (lambda p: ["--data", str(_bad_npz(p))], "no 'temperature_centi_c' array"),
        (lambda p: ["--data", str(_small_npz(p))], "H >= 24"),
        (lambda p: ["--workdir", str(_busy_dir(p))], "not an empty directory"),
        (lambda p: ["--report", str(p)], "is a directory"),
    ],
)
def test_bad_arguments_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_args: object, needle: str
) -> None:
    args = make_args(tmp_path)  # type: ignore[operator]
    code = main(["demo", "--workdir", str(tmp_path / "fresh"), *args] if "--workdir" not in args else ["demo", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermoscreen demo: error: "), err
    assert needle in lines[0]
    assert not (tmp_path / "fresh").exists(), "nothing may be started or created for bad arguments"
