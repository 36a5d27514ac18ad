"""The configs and card scripts the local stack writes for each component it starts.

Why generated files rather than CLI flags: each component then runs exactly as an operator
would run it (`thermoscreen <job> --config FILE`, the password in THERMOSCREEN_MQTT_PASSWORD,
the CA in `mqtt.ca_file`), so the demo and the benches exercise the production path. Each
config is the component's own pydantic model (dotted-key overrides applied, validated), which
`devtools.component_toml` writes as TOML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.provisioning import Credentials
from cloud_bridge.config import BridgeConfig
from devtools.component_toml import build
from inference_node.config import InferenceConfig
from sensor_node.config import SensorConfig

#: Dotted config keys and their values (`{"spool.window": 64}`), applied over a generated config.
Overrides = Mapping[str, object]


@dataclass(frozen=True)
class SessionPlan:
    """Scripted card scans per device: `count` sessions of `length_s`, `gap_s` apart.

    Device i starts its first session `start_after_s + i * stagger_s` after it starts, so the
    devices do not all scan at the same instant.
    """

    start_after_s: float = 1.0
    length_s: float = 4.0
    gap_s: float = 1.5
    count: int = 200
    stagger_s: float = 0.7

    def __post_init__(self) -> None:
        if self.length_s <= 0 or self.gap_s < 0 or self.start_after_s < 0 or self.count < 1:
            raise ValueError("session plan: length_s must be > 0, gap_s and start_after_s >= 0, count >= 1")


def card_uid(device_index: int, session_index: int) -> str:
    """A distinct 4-byte card UID (hex) per device and session: every session is a new patient."""
    return f"04{device_index % 256:02x}{(session_index >> 8) % 256:02x}{session_index % 256:02x}"


def card_script(plan: SessionPlan, device_index: int) -> str:
    """The card script (`UID DELAY` per line, delays since the previous scan) for one device."""
    lines = [f"# {plan.count} sessions of {plan.length_s:g} s, {plan.gap_s:g} s apart (generated)"]
    for n in range(plan.count):
        uid = card_uid(device_index, n)
        first = plan.start_after_s + device_index * plan.stagger_s if n == 0 else plan.gap_s
        lines.append(f"{uid} {first:.3f}")  # the card: the session starts
        lines.append(f"{uid} {plan.length_s:.3f}")  # the same card again: it ends
    return "\n".join(lines) + "\n"


def mqtt_table(url: str, creds: Credentials) -> dict[str, object]:
    """`[mqtt]` for an account: URL, username and CA; the password stays in the environment."""
    return {"url": url, "username": creds.username, "ca_file": str(creds.ca), "reconnect_max_s": 2.0}


def sensor_config(
    *,
    device_id: str,
    url: str,
    creds: Credentials,
    rate_hz: float,
    spool: Path,
    site_key_file: Path,
    cards: Path | None,
    replay: Path | None,
    anonymous_capture: bool,
    status_interval_s: float,
    durable: bool,
    overrides: Overrides | None = None,
) -> SensorConfig:
    source: dict[str, object] = {"kind": "replay" if replay else "synthetic", "rate_hz": rate_hz}
    if replay is not None:
        source["replay"] = {"path": str(replay)}
    data = {
        "device": {"id": device_id},
        "source": source,
        "rfid": {
            "kind": "scripted" if cards is not None else "none",
            "cards_file": None if cards is None else str(cards),
            "site_key_file": str(site_key_file),
        },
        "session": {"anonymous_capture": anonymous_capture},
        "spool": {"path": str(spool), "synchronous": "full" if durable else "normal", "flush_timeout_s": 15.0},
        "status": {"interval_s": status_interval_s},
        "mqtt": mqtt_table(url, creds),
    }
    return build(SensorConfig, data, source=f"{device_id} config", overrides=overrides)


def inference_config(
    *,
    node_id: str,
    url: str,
    creds: Credentials,
    model_dir: Path,
    metrics_interval_s: float,
    overrides: Overrides | None = None,
) -> InferenceConfig:
    data = {
        "node_id": node_id,
        "model_dir": str(model_dir),
        "model_poll_s": 0.0,
        "metrics_interval_s": metrics_interval_s,
        "mqtt": mqtt_table(url, creds),
    }
    return build(InferenceConfig, data, source=f"{node_id} config", overrides=overrides)


def bridge_config(
    *,
    node_id: str,
    url: str,
    creds: Credentials,
    queue: Path,
    archive: Path,
    influx_url: str | None,
    metrics_interval_s: float,
    session_grace_s: float,
    durable: bool,
    overrides: Overrides | None = None,
) -> BridgeConfig:
    data: dict[str, object] = {
        "bridge": {"node_id": node_id, "metrics_interval_s": metrics_interval_s, "shutdown_drain_s": 10.0},
        "sessions": {"grace_s": session_grace_s},
        "queue": {"path": str(queue), "synchronous": "full" if durable else "normal"},
        "archive": {"path": str(archive)},
        "mqtt": mqtt_table(url, creds),
    }
    if influx_url is not None:
        data["influx"] = {"enabled": True, "url": influx_url}
    return build(BridgeConfig, data, source=f"{node_id} bridge config", overrides=overrides)
