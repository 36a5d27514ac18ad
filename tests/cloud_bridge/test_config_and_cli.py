"""Config file, CLI errors, the example config, and the generated schema document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeConfig, load_config
from contract import timeseries as schema
from transport.config_file import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "bridge", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_schema_doc_is_generated_from_the_schema_module() -> None:
    assert (REPO_ROOT / "docs" / "schema.md").read_text(encoding="utf-8") == schema.render_markdown()


def test_defaults_give_a_persistent_session_and_overrides_apply() -> None:
    config = load_config(None, {"mqtt.url": "mqtt://10.0.0.5:1884", "archive.path": "a.sqlite"})
    assert config.mqtt.url == "mqtt://10.0.0.5:1884" and config.mqtt.port == 1884
    assert not config.mqtt.clean_start and config.mqtt.session_expiry_s > 0
    assert config.mqtt.client_id == "thermoscreen-bridge" and config.mqtt.qos == 1
    assert str(config.archive.path) == "a.sqlite"
    assert not config.influx.enabled and not config.firestore.enabled


def test_example_config_loads_with_tls_settings(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "cloud_bridge" / "bridge.example.toml")
    assert config.mqtt.tls and config.mqtt.username == "bridge" and config.mqtt.ca_file == Path("certs/ca.crt")
    assert config.mqtt.password_env == "THERMOSCREEN_MQTT_PASSWORD"


def test_a_partial_mqtt_table_keeps_the_bridge_session_defaults(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[mqtt]\nurl = "mqtts://broker:8883"\nusername = "bridge"\n', encoding="utf-8")
    config = load_config(path)
    assert config.mqtt.tls and not config.mqtt.clean_start and config.mqtt.client_id == "thermoscreen-bridge"


def test_secrets_cannot_be_written_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[influx]\nenabled = true\ntoken = "secret"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"b\.toml: influx\.token: Extra inputs are not permitted"):
        load_config(path)


def test_influx_token_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = BridgeConfig()
    monkeypatch.setenv("INFLUX_TOKEN", "from-env")
    assert config.influx.resolve_token() == "from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n", encoding="utf-8")
    assert load_config(None, {"influx.token_file": str(token_file)}).influx.resolve_token() == "from-file"
    with pytest.raises(ValueError, match="cannot read Influx token file"):
        load_config(None, {"influx.token_file": str(tmp_path / "missing")}).influx.resolve_token()


def test_cli_bad_config_is_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text("[queue]\nmax_items = 5\n", encoding="utf-8")
    out = _cli("--config", str(path))
    assert out.returncode == 2
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermoscreen bridge: error: ") and "queue.max_items" in lines[0]


def test_cli_unreachable_broker_is_one_line_with_exit_2(tmp_path: Path) -> None:
    from devtools.local_mosquitto import free_port

    port = free_port()
    cfg = tmp_path / "b.toml"
    cfg.write_text("[mqtt]\nconnect_timeout_s = 1.0\n", encoding="utf-8")
    out = _cli(
        "--config",
        str(cfg),
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--queue",
        str(tmp_path / "q.sqlite"),
        "--archive",
        str(tmp_path / "a.sqlite"),
    )
    assert out.returncode == 2
    err = out.stderr.decode().strip().splitlines()
    assert len(err) == 1, err  # no traceback, no log lines around it
    assert err[0].startswith(f"thermoscreen bridge: error: cannot connect to MQTT broker mqtt://127.0.0.1:{port} "), err
    assert out.stdout == b""
