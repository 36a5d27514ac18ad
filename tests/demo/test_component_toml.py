"""Component configs written from the pydantic models (devtools.component_toml, devtools.stack_configs)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from broker.accounts import Role
from broker.provisioning import Credentials
from devtools import component_toml, stack_configs
from sensor_node.config import SensorConfig, load_config
from transport.config_file import ConfigError

#: Outside the Basic Multilingual Plane: JSON writes it as a surrogate pair, which TOML rejects.
THERMOMETER = "\U0001f321"


def _creds(tmp_path: Path) -> Credentials:
    return Credentials(
        username="pi-1", password="secret", role=Role.DEVICE, ca=tmp_path / "ca.crt", url="mqtts://127.0.0.1:8883"
    )


def _sensor(tmp_path: Path, **kwargs: object) -> SensorConfig:
    return stack_configs.sensor_config(
        device_id="pi-1",
        url="mqtts://127.0.0.1:8883",
        creds=_creds(tmp_path),
        rate_hz=4.0,
        spool=tmp_path / f'spool {THERMOMETER} "quoted" \\ back.sqlite',
        site_key_file=tmp_path / "site.key",
        cards=None,
        replay=None,
        anonymous_capture=True,
        status_interval_s=1.0,
        durable=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_character_outside_the_bmp_round_trips_through_a_component_config(tmp_path: Path) -> None:
    config = _sensor(tmp_path, overrides={"device.firmware": f"fw {THERMOMETER} 1.0"})
    path = component_toml.write(tmp_path / "sensor.toml", config, header="generated\nby a test")
    loaded = load_config(path)
    assert loaded.device.firmware == f"fw {THERMOMETER} 1.0"
    assert loaded.spool.path == tmp_path / f'spool {THERMOMETER} "quoted" \\ back.sqlite'
    assert loaded == config
    assert path.read_text(encoding="utf-8").startswith("# generated\n# by a test\n")


def test_only_what_was_set_is_written_and_overrides_apply(tmp_path: Path) -> None:
    config = _sensor(tmp_path, overrides={"spool.window": 64, "mqtt.qos": 0})
    data = tomllib.loads(component_toml.dumps(config))
    assert data["spool"]["window"] == 64 and data["mqtt"]["qos"] == 0
    assert data["mqtt"]["ca_file"] == str(tmp_path / "ca.crt")
    assert "password_env" not in data["mqtt"]  # a default: left to the component
    assert "cards_file" not in data["rfid"]  # None: TOML has no null, the default applies


def test_an_invalid_override_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pi-1 config: spool\.window"):
        _sensor(tmp_path, overrides={"spool.window": 0})
    with pytest.raises(ConfigError, match=r"spool\.nope"):
        _sensor(tmp_path, overrides={"spool.nope": 1})


def test_a_config_that_would_not_read_back_as_itself_is_refused(tmp_path: Path) -> None:
    # client_id has a non-None default in the bridge; None cannot be written in TOML.
    config = stack_configs.bridge_config(
        node_id="main",
        url="mqtts://127.0.0.1:8883",
        creds=_creds(tmp_path),
        queue=tmp_path / "q.sqlite",
        archive=tmp_path / "a.sqlite",
        influx_url=None,
        metrics_interval_s=1.0,
        session_grace_s=0.5,
        durable=False,
        overrides={"mqtt.client_id": "x"},
    )
    config.mqtt.client_id = None
    with pytest.raises(component_toml.ConfigWriteError, match="does not read back"):
        component_toml.write(tmp_path / "bridge.toml", config)
