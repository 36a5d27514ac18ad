"""The sensor node's configuration: one TOML file (see sensor.example.toml), CLI overrides on top.

Every timing parameter (rates, timeouts, back-off, status period) is here so tests can run the
real node quickly; defaults suit a Raspberry Pi in a clinic.
"""

from __future__ import annotations

import os
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.ids import validate_device_id
from contract.model.shipped import SHIPPED_MODEL_PUBLIC_KEY
from contract.sensor import MAX_AMBIENT_C, MIN_AMBIENT_C, REFRESH_RATES_HZ
from transport.config_file import load_toml_model, validate_model
from transport.connection import MqttSettings

#: The chip refreshes at most 64 subpages/s, i.e. 32 full frames/s through the driver.
MAX_MLX_RATE_HZ = 32.0


class SourceKind(StrEnum):
    MLX90640 = "mlx90640"
    EMULATED = "emulated"
    REPLAY = "replay"
    SYNTHETIC = "synthetic"


class RfidKind(StrEnum):
    MFRC522 = "mfrc522"
    EMULATED = "emulated"
    SCRIPTED = "scripted"
    NONE = "none"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


def default_device_id() -> str:
    """The host name, lowercased and reduced to [a-z0-9-] (a Pi's name is usually its device id)."""
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")[:32]
    try:
        return validate_device_id(name)
    except ValueError:
        return "sensor"


class DeviceSettings(_Settings):
    id: str = Field(default_factory=default_device_id)
    firmware: str | None = Field(default=None, max_length=64)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return validate_device_id(value)


class ReplaySettings(_Settings):
    #: A thermogram file in the DMR-IR .npz layout (temperature_centi_c: N x H x W).
    path: Path | None = None
    frames_per_thermogram: int = Field(default=16, ge=1)


class SyntheticSettings(_Settings):
    #: Fraction of synthetic subjects with a hot spot and asymmetry.
    sick_fraction: float = Field(default=0.4, ge=0.0, le=1.0)
    #: A new synthetic subject every N frames outside sessions (sessions always start one).
    frames_per_subject: int = Field(default=64, ge=1)


class SourceSettings(_Settings):
    kind: SourceKind = SourceKind.SYNTHETIC
    #: Full frames per second captured.
    rate_hz: float = Field(default=2.0, gt=0, le=10000)
    #: MLX90640 refresh (subpages/s); default the lowest one >= 2 x rate_hz.
    refresh_hz: float | None = None
    #: How long one frame may take before the source reports SensorTimeout (at least 4 subpage periods).
    frame_timeout_s: float = Field(default=5.0, gt=0)
    i2c_address: int = Field(default=0x33, ge=0x08, le=0x77)
    #: Die/room temperature of the emulated, synthetic and replay sources.
    ambient_c: float = Field(default=24.0, ge=MIN_AMBIENT_C, le=MAX_AMBIENT_C)
    #: Seed of the synthetic scenes, sensor noise and device offset; default derived from the device id.
    seed: int | None = None
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)

    @field_validator("refresh_hz")
    @classmethod
    def _check_refresh(cls, value: float | None) -> float | None:
        if value is not None and value not in REFRESH_RATES_HZ:
            raise ValueError(f"must be one of {', '.join(f'{r:g}' for r in REFRESH_RATES_HZ)}")
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> SourceSettings:
        if self.kind in (SourceKind.MLX90640, SourceKind.EMULATED) and self.rate_hz > MAX_MLX_RATE_HZ:
            raise ValueError(f"rate_hz {self.rate_hz:g} exceeds the MLX90640's {MAX_MLX_RATE_HZ:g} frames/s")
        if self.kind is SourceKind.REPLAY and self.replay.path is None:
            raise ValueError("source.replay.path is required for kind 'replay'")
        return self


class RfidSettings(_Settings):
    kind: RfidKind = RfidKind.SCRIPTED
    #: Card script for 'scripted' and 'emulated' readers: a file, or "-" for stdin.
    cards_file: str | None = None
    #: A file holding the site key as hex (else the THERMOSCREEN_SITE_KEY environment variable).
    site_key_file: Path | None = None
    #: How often the MFRC522 is polled for a card.
    poll_interval_s: float = Field(default=0.1, gt=0, le=5)
    #: A card counts as a new scan only after it was out of the field this long.
    gone_after_s: float = Field(default=1.0, gt=0, le=60)
    #: MFRC522 wiring, BCM GPIO numbers: NRSTPD (gpiozero output) and SPI0 chip select (CE0 = 8).
    reset_pin: int = Field(default=25, ge=0, le=27)
    cs_pin: int = Field(default=8, ge=0, le=27)
    #: SPI clock; the MFRC522 takes up to 10 MHz, long jumper wires less.
    spi_baudrate: int = Field(default=1_000_000, ge=100_000, le=10_000_000)
    #: How long an emulated card stays on the emulated reader per scripted scan.
    emulated_tap_s: float = Field(default=0.3, gt=0, le=10)


class SessionSettings(_Settings):
    #: A session ends by itself after this long (a forgotten second scan).
    timeout_s: float = Field(default=300.0, gt=0)
    #: Publish frames captured outside a session too (without session id and patient_ref).
    anonymous_capture: bool = False


def default_spool_path(device_id: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "thermoscreen" / f"sensor-{device_id}.spool.sqlite"


class SpoolSettings(_Settings):
    #: SQLite file; default $XDG_STATE_HOME/thermoscreen/sensor-<device>.spool.sqlite.
    path: Path | None = None
    max_items: int = Field(default=200_000, ge=10)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    #: "full" survives power loss; "normal" survives crashes only and is faster on SD cards.
    synchronous: Literal["full", "normal"] = "full"
    #: Messages in flight (sent, PUBACK pending); order per device is kept regardless.
    window: int = Field(default=32, ge=1, le=1000)
    #: Resend the in-flight window if the head has no PUBACK this long while connected.
    ack_timeout_s: float = Field(default=30.0, gt=0)
    #: On shutdown, wait this long for the spool to drain before exiting (the rest stays spooled).
    flush_timeout_s: float = Field(default=5.0, ge=0)


class StatusSettings(_Settings):
    #: Retained DeviceStatus is republished this often (and on every connect).
    interval_s: float = Field(default=10.0, gt=0)


class ResultSettings(_Settings):
    """`[result]`: how the device shows the session verdict the bridge sends back."""

    #: BCM pin of an LED lit while a "refer for follow-up" result is shown (gpiozero); None: no LED.
    led_pin: int | None = Field(default=None, ge=0, le=27)
    #: BCM pin of a buzzer that beeps once for any result; None: no buzzer.
    buzzer_pin: int | None = Field(default=None, ge=0, le=27)
    #: How long the LED stays lit, seconds.
    show_s: float = Field(default=30.0, gt=0, le=3600)


#: Edge frames scored per LiteRT call: batch 32 costs 0.018 ms of CPU per frame against 0.040 ms
#: one frame at a time (shipped model, x86, one thread; `thermoscreen bench sensor`).
EDGE_BATCH_FRAMES = 32


class EdgeSettings(_Settings):
    """`[edge]`: on-board inference (needs the `inference` extra, LiteRT; never TensorFlow). Off without model_dir.

    The device scores its own session frames and shows a provisional result when the session
    ends, also offline; the cloud's session verdict replaces it when it arrives.
    """

    #: A signed model directory (manifest.json, its .sig and the .tflite files); None: edge mode off.
    model_dir: Path | None = None
    #: Pinned Ed25519 keys (`ed25519:<base64>`): the model runs only if one of them signed its manifest.
    model_public_keys: list[str] = Field(default_factory=lambda: [SHIPPED_MODEL_PUBLIC_KEY], min_length=1)
    #: `auto` uses the manifest's default_variant.
    variant: Literal["auto", "float32", "int8"] = "auto"
    #: LiteRT threads; 1 leaves the Pi's other cores to capture and publishing.
    num_threads: int = Field(default=1, ge=1, le=4)
    batch_frames: int = Field(default=EDGE_BATCH_FRAMES, ge=1, le=256)
    #: Frames waiting to be scored; beyond this new frames are left unscored (and counted), never
    #: blocking capture. 1024 frames are 3 MB, over two minutes of 8 Hz capture.
    max_pending_frames: int = Field(default=1024, ge=1, le=100_000)

    @property
    def enabled(self) -> bool:
        return self.model_dir is not None

    @model_validator(mode="after")
    def _check_keys(self) -> EdgeSettings:
        """The pinned keys must parse; checked only with edge mode on (cryptography is in its extra)."""
        if self.model_dir is None:
            return self
        try:
            from contract.model.signing import SigningError, parse_public_key
        except ImportError as exc:
            raise ValueError(f"edge mode needs the inference extra: {exc}") from None
        for key in self.model_public_keys:
            try:
                parse_public_key(key)
            except SigningError as exc:
                raise ValueError(f"model_public_keys: {exc}") from None
        return self


class SensorConfig(_Settings):
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    rfid: RfidSettings = Field(default_factory=RfidSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    result: ResultSettings = Field(default_factory=ResultSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)

    @property
    def spool_path(self) -> Path:
        return self.spool.path or default_spool_path(self.device.id)

    @property
    def refresh_hz(self) -> float:
        from sensor_node.thermal_source import refresh_for_rate

        return self.source.refresh_hz or refresh_for_rate(self.source.rate_hz)

    @property
    def frame_timeout_s(self) -> float:
        """The configured frame timeout, but never under four subpage periods of the chip."""
        return max(self.source.frame_timeout_s, 4.0 / self.refresh_hz)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SensorConfig:
    """The config from `path` (or defaults when None) with dotted-key overrides; ConfigError if invalid."""
    if path is None:
        return validate_model({}, SensorConfig, source="sensor defaults", overrides=overrides)
    return load_toml_model(path, SensorConfig, overrides=overrides)
