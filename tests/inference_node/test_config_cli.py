"""Configuration file, CLI overrides and one-line errors of `thermoscreen infer`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contract.model.shipped import shipped_model_dir
from inference_node.cli import overrides_from_args
from inference_node.config import NODE_MAX_INFLIGHT, InferenceConfig, load_config
from tests.conftest import REPO_ROOT
from tests.inference_node.conftest import ModelDirs
from transport.config_file import ConfigError

EXAMPLE = REPO_ROOT / "inference_node" / "inference.example.toml"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_example_config_loads_and_matches_the_defaults() -> None:
    config = load_config(EXAMPLE)
    defaults = InferenceConfig()
    assert config.node_id == "infer-1"
    assert config.model_dir == shipped_model_dir() == defaults.model_dir
    assert (config.metrics.prometheus_port, config.metrics.prometheus_bind) == (None, "127.0.0.1")
    assert (config.batch_max, config.batch_ms) == (defaults.batch_max, defaults.batch_ms)
    assert config.mqtt.max_inflight == defaults.mqtt.max_inflight == NODE_MAX_INFLIGHT
    assert config.mqtt.clean_start and config.mqtt.session_expiry_s == 0 and config.mqtt.qos == 1


def test_cli_flags_override_the_file() -> None:
    from argparse import Namespace

    args = Namespace(
        broker="mqtt://10.0.0.5:1884",
        node_id="infer-9",
        group="ward-b",
        model=Path("/srv/models/v3"),
        batch=8,
        batch_ms=1.5,
        variant="int8",
        model_key=None,
    )
    config = load_config(EXAMPLE, overrides_from_args(args))
    assert config.mqtt.url == "mqtt://10.0.0.5:1884"
    assert config.mqtt.max_inflight == NODE_MAX_INFLIGHT  # the rest of [mqtt] stays
    assert (config.node_id, config.group, config.model_dir) == ("infer-9", "ward-b", Path("/srv/models/v3"))
    assert (config.batch_max, config.batch_ms, config.variant) == (8, 1.5, "int8")


def test_default_node_id_is_a_valid_unique_id() -> None:
    config = load_config(None, {"mqtt.url": "mqtt://127.0.0.1:1"})
    assert config.node_id.startswith("infer-") and len(config.node_id) <= 32


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("batch_max = 0\n", "batch_max"),
        ("colour = 'red'\n", "colour"),
        ("node_id = 'Infer_1'\n", "node_id"),
        ("[mqtt]\nurl = 'http://x'\n", "mqtt.url"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "inference.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_cli_missing_model_is_one_line_exit_2(tmp_path: Path) -> None:
    out = run_cli("infer", "--broker", "mqtt://127.0.0.1:9", "--model", str(tmp_path / "none"))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermoscreen infer: error:") and "manifest.json" in lines[0]


def test_cli_bad_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "inference.toml"
    path.write_text("batch_ms = -1\n")
    out = run_cli("infer", "--config", str(path))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "batch_ms" in out.stderr and str(path) in out.stderr


def test_cli_unreachable_broker_is_one_line_exit_2(test_models: ModelDirs, tmp_path: Path) -> None:
    from devtools.local_mosquitto import free_port

    path = tmp_path / "inference.toml"
    path.write_text(
        f'model_public_keys = ["{test_models.public_key}"]\n[mqtt]\nconnect_timeout_s = 1\nreconnect_min_s = 0.1\n'
    )
    out = run_cli(
        "infer", "--config", str(path), "--broker", f"mqtt://127.0.0.1:{free_port()}", "--model", str(test_models.v1)
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to MQTT broker" in lines[0], lines
