"""The inference node's configuration (`inference.toml`): which model, how to batch, where the broker is."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.ids import validate_node_id
from contract.model.shipped import SHIPPED_MODEL_PUBLIC_KEY, shipped_model_dir
from contract.model.signing import SigningError, parse_public_key
from transport.config_file import load_toml_model, validate_model
from transport.connection import MqttSettings
from transport.metrics_http import PrometheusSettings

Variant = Literal["auto", "float32", "int8"]

#: Frames received but not yet scored; beyond this the node drops (and counts) new frames
#: instead of growing without bound while the broker keeps delivering faster than it scores.
DEFAULT_MAX_PENDING_FRAMES = 10_000
#: Verdicts published but not yet acknowledged; beyond this the worker waits for the broker,
#: so a slow broker backs up into the bounded frame queue rather than into memory.
DEFAULT_MAX_UNACKED_VERDICTS = 5_000


def default_node_id() -> str:
    """`infer-<host>-<pid>`: unique per process, so two workers on one host never share a client id."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:16] or "host"
    return f"infer-{host}-{os.getpid()}"[:32]


#: Unacknowledged QoS 1 verdicts in flight. paho rescans its whole in-flight window on every
#: PUBACK (17% of the node's CPU at 100, 30% at 1000 in profiles); 32 keeps that cheap and
#: still covers the broker round trip at several thousand verdicts/s.
NODE_MAX_INFLIGHT = 32


class InferenceConfig(BaseModel):
    """Everything a worker needs; every field has a default so `thermoscreen infer` runs bare."""

    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(default_factory=default_node_id)
    #: Shared-subscription group: each frame goes to exactly one worker of the group.
    group: str = "inference"
    #: Default: the model shipped inside the package (contract/model/shipped/thermal), so a
    #: wheel install serves it from any working directory. Relative paths: from the working directory.
    model_dir: Path = Field(default_factory=shipped_model_dir)
    #: Every model the node serves must lie inside this directory (symlinks followed); admin
    #: swaps name a directory relative to it. Default: the parent of `model_dir` (for the
    #: shipped model, the package's shipped-models directory).
    models_root: Path | None = None
    #: Pinned Ed25519 keys (`ed25519:<base64>`): a model is served only if one of them signed its manifest.
    model_public_keys: list[str] = Field(default_factory=lambda: [SHIPPED_MODEL_PUBLIC_KEY], min_length=1)
    #: `auto` uses the manifest's default_variant.
    variant: Variant = "auto"
    #: LiteRT interpreter threads; 1 leaves the other core to MQTT and the rest of the host.
    num_threads: int = Field(default=1, ge=1, le=64)
    #: Micro-batch: at most `batch_max` frames, and a frame waits at most `batch_ms` for company.
    batch_max: int = Field(default=32, ge=1, le=1024)
    batch_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    metrics_interval_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    #: Poll the model directory this often for a new model (0 disables the file watch).
    model_poll_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    #: On shutdown, keep answering frames until none arrived for this long (bounded by drain_max_s).
    drain_quiet_ms: float = Field(default=200.0, ge=0.0, le=10_000.0)
    drain_max_s: float = Field(default=10.0, gt=0.0, le=600.0)
    max_pending_frames: int = Field(default=DEFAULT_MAX_PENDING_FRAMES, ge=1, le=1_000_000)
    max_unacked_verdicts: int = Field(default=DEFAULT_MAX_UNACKED_VERDICTS, ge=1, le=1_000_000)
    #: `[metrics]`: the Prometheus endpoint (off by default; `prometheus_port`, `prometheus_bind`).
    metrics: PrometheusSettings = Field(default_factory=PrometheusSettings)
    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(max_inflight=NODE_MAX_INFLIGHT))

    @model_validator(mode="before")
    @classmethod
    def _node_mqtt_inflight(cls, data: Any) -> Any:
        """Apply the node's in-flight default also when `[mqtt]` exists but does not set it."""
        if isinstance(data, dict) and isinstance(data.get("mqtt"), dict) and "max_inflight" not in data["mqtt"]:
            return {**data, "mqtt": {**data["mqtt"], "max_inflight": NODE_MAX_INFLIGHT}}
        return data

    @field_validator("model_public_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                parse_public_key(key)
            except SigningError as exc:
                raise ValueError(f"model_public_keys: {exc}") from None
        return keys

    @model_validator(mode="after")
    def _model_dir_inside_root(self) -> InferenceConfig:
        """The configured model must itself obey the confinement every swap obeys."""
        root = self.resolved_models_root
        if not self.model_dir.resolve().is_relative_to(root):
            raise ValueError(f"model_dir {self.model_dir} is outside models_root {root}")
        return self

    @property
    def resolved_models_root(self) -> Path:
        root = self.models_root if self.models_root is not None else self.model_dir.resolve().parent
        return root.resolve()

    @field_validator("node_id", "group")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_node_id(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> InferenceConfig:
    """The config from `path` (or the defaults when None) with dotted-key CLI overrides applied."""
    if path is None:
        return validate_model({}, InferenceConfig, source="defaults", overrides=overrides)
    return load_toml_model(path, InferenceConfig, overrides=overrides)
