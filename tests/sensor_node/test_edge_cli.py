"""Edge mode from the command line: misconfiguration is one line and exit 2; off, LiteRT is never imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.model.shipped import shipped_model_dir
from contract.model.signing import format_public_key
from devtools.local_mosquitto import free_port
from tests.sensor_node.test_cli_process import REPO, run_cli, sensor_env

#: Run the CLI in-process with LiteRT (and tflite-runtime) made unimportable, as without the
#: inference extra; stdout is one JSON line of the exit code and the runtimes/TensorFlow imported.
NO_EXTRA = """
import json, sys
blocked = sys.argv[1] == "blocked"
if blocked:
    sys.modules["ai_edge_litert"] = None
    sys.modules["tflite_runtime"] = None
from thermoscreen.cli import main
rc = main(sys.argv[2:])
loaded = sorted({m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}
                & {"ai_edge_litert", "tflite_runtime", "tensorflow", "keras"})
print(json.dumps({"rc": rc, "loaded": loaded}))
"""


def run_python(mode: str, args: list[str], env: dict[str, str]) -> tuple[dict[str, object], str]:
    out = subprocess.run(
        [sys.executable, "-c", NO_EXTRA, mode, *args],
        capture_output=True, text=True, timeout=90, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def sensor_args(tmp_path: Path, config: Path | None = None) -> list[str]:
    args = ["sensor", "--duration", "1.5", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--rfid", "none"]
    args += ["--spool", str(tmp_path / "spool.sqlite")]
    return [*args, "--config", str(config)] if config else args


def write_config(tmp_path: Path, edge: str) -> Path:
    path = tmp_path / "sensor.toml"
    path.write_text(f'[device]\nid = "pi-1"\n[edge]\n{edge}\n', encoding="utf-8")
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("thermoscreen sensor: error: ") or "sensor.toml" in lines[0], lines[0]
    return lines[0]


def copy_shipped(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(shipped_model_dir(), target)
    return target


def test_edge_mode_off_runs_without_the_inference_extra_and_never_imports_litert(tmp_path: Path) -> None:
    env = sensor_env(tmp_path)
    result, stderr = run_python("plain", sensor_args(tmp_path), env)
    assert result == {"rc": 0, "loaded": []}, stderr
    assert "edge mode off" in stderr
    result, stderr = run_python("blocked", sensor_args(tmp_path), env)  # no LiteRT installed at all
    assert result == {"rc": 0, "loaded": []}, stderr


def test_edge_mode_without_the_inference_extra_is_one_line_and_never_falls_back_to_tensorflow(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, f'model_dir = "{shipped_model_dir()}"')
    result, stderr = run_python("blocked", sensor_args(tmp_path, config), sensor_env(tmp_path))
    assert result == {"rc": 2, "loaded": []}
    line = one_error_line(stderr)
    assert "needs the inference extra" in line and "thermoscreen[inference]" in line


def test_edge_mode_with_the_shipped_model_starts_and_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'model_dir = "{shipped_model_dir()}"')
    result, stderr = run_python("plain", sensor_args(tmp_path, config), sensor_env(tmp_path))
    assert result == {"rc": 0, "loaded": ["ai_edge_litert"]}, stderr
    assert "edge mode on (model " in stderr and "provisional results until the cloud's verdict" in stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "no manifest.json in model directory"),
        ("unsigned", "manifest is not signed"),
        ("other_key", "does not verify with any trusted key"),
        ("tampered", "sha256 mismatch"),
        ("bad_key", "model_public_keys"),
        ("unknown_key", "edge.model_path"),
    ],
)
def test_a_bad_edge_model_or_edge_config_is_one_line_and_exit_2(tmp_path: Path, case: str, expected: str) -> None:
    model = copy_shipped(tmp_path)
    edge = f'model_dir = "{model}"'
    if case == "missing":
        edge = f'model_dir = "{tmp_path / "nowhere"}"'
    elif case == "unsigned":
        (model / "manifest.json.sig").unlink()
    elif case == "other_key":
        edge += f'\nmodel_public_keys = ["{format_public_key(Ed25519PrivateKey.generate().public_key())}"]'
    elif case == "tampered":
        with (model / "model.tflite").open("ab") as fh:
            fh.write(b"\0")
    elif case == "bad_key":
        edge += '\nmodel_public_keys = ["ed25519:not-a-key"]'
    else:
        edge = f'model_path = "{model}"'
    out = run_cli(sensor_args(tmp_path, write_config(tmp_path, edge)), sensor_env(tmp_path))
    assert out.returncode == 2, out.stderr
    line = one_error_line(out.stderr)
    assert expected in line, line
    assert out.stdout == ""
