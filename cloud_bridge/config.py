"""The bridge's configuration file (`bridge.example.toml` documents every key).

Secrets never live here: the Influx token comes from the environment variable named by
`influx.token_env` or from `influx.token_file`; Firebase credentials from
`firestore.credentials_file` or GOOGLE_APPLICATION_CREDENTIALS (or anonymous against the
emulator when FIRESTORE_EMULATOR_HOST is set); the MQTT password from `mqtt.password_env`
or `mqtt.password_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from transport.config_file import load_toml_model, validate_model
from transport.connection import MqttSettings
from transport.metrics_http import PrometheusSettings

#: The bridge needs a persistent MQTT session so the broker keeps messages while it is down.
BRIDGE_MQTT_DEFAULTS: dict[str, Any] = {
    "client_id": "thermoscreen-bridge",
    "clean_start": False,
    "session_expiry_s": 7 * 24 * 3600,
    "qos": 1,
    "max_inflight": 1000,
}


class SourceQuotaSettings(BaseModel):
    """What one device (or node) may hold in the bridge queue at most; beyond it its new messages
    are refused (acknowledged, counted per device), so a flooding device cannot push the other
    devices' data out. The defaults hold hours of one sensor node's frames during a sink outage."""

    model_config = ConfigDict(extra="forbid")

    max_items: int = Field(default=250_000, ge=10)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)


class QueueSettings(BaseModel):
    """The on-disk queue between MQTT and the sinks."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path("thermoscreen-data/bridge-queue.sqlite")
    #: Items kept at most (all sinks together); beyond it `drop_policy` applies and drops are counted.
    max_items: int = Field(default=2_000_000, ge=100)
    #: Payload bytes kept at most (all sinks together); the same `drop_policy` applies.
    max_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    per_source: SourceQuotaSettings = SourceQuotaSettings()
    #: Messages waiting in memory for the ingest thread at most; beyond it QoS 0 messages are
    #: dropped (counted per device). QoS 1 ones are bounded by the broker's in-flight window.
    max_inbox: int = Field(default=20_000, ge=100)
    drop_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    #: FULL: a commit survives power loss before the broker is told to forget the message.
    synchronous: Literal["full", "normal"] = "full"
    #: Most MQTT messages committed (and then acknowledged) in one transaction.
    ingest_batch: int = Field(default=2000, ge=1, le=100_000)


class SinkRetry(BaseModel):
    """Batch size, linger and exponential back-off of one sink."""

    model_config = ConfigDict(extra="forbid")

    batch_items: int = Field(default=500, ge=1, le=50_000)
    #: After the first item is queued, wait up to this long for `batch_items` while items keep
    #: arriving (fewer, bigger writes); 0 = write at once. Never delays a stop or a backlog.
    linger_ms: float = Field(default=50.0, ge=0, le=5000)
    backoff_min_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)


class ArchiveSettings(SinkRetry):
    """The local SQLite archive: always on; the default store without Influx or Firebase."""

    path: Path = Path("thermoscreen-data/archive.sqlite")
    store_frames: bool = True
    batch_items: int = Field(default=2000, ge=1, le=50_000)


class InfluxSettings(SinkRetry):
    """InfluxDB v2 write API (synchronous writes). VictoriaMetrics accepts the same API."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "thermoscreen"
    bucket: str = "thermoscreen"
    token_env: str = "INFLUX_TOKEN"
    token_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    #: Pixel rows (`frame_row`) are written for frames whose seq is a multiple of this; 0 = never.
    frame_rows_every: int = Field(default=8, ge=0)
    batch_items: int = Field(default=1000, ge=1, le=50_000)

    def resolve_token(self) -> str | None:
        """The token from `token_file` or the environment; None lets servers without auth work."""
        if self.token_file is not None:
            try:
                return self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read Influx token file {self.token_file}: {exc.strerror}") from None
        return os.environ.get(self.token_env) or None


class FirestoreSettings(SinkRetry):
    """Firestore through firebase-admin: patients, sessions and frames (with their verdicts)."""

    enabled: bool = False
    project_id: str | None = None
    database: str | None = None
    credentials_file: Path | None = None
    store_frames: bool = True
    batch_items: int = Field(default=400, ge=1, le=500)


class SessionSettings(BaseModel):
    """When a session verdict is computed after `session_end`."""

    model_config = ConfigDict(extra="forbid")

    #: Wait this long after session_end and after each later verdict (unless all reported frames are
    #: in); late verdicts still coming extend the wait, never past max_wait_s after the end.
    grace_s: float = Field(default=5.0, ge=0)
    #: Late verdicts extend the grace no further than this after the end; a session with no verdict
    #: at all after this long is closed without a verdict.
    max_wait_s: float = Field(default=120.0, ge=0)


def _shipped_models() -> list[str]:
    from cloud_bridge.provenance import shipped_model_version

    return [shipped_model_version()]


class ProvenanceSettings(BaseModel):
    """Which verdicts the bridge stores (`provenance`): approved models, and how early ones wait."""

    model_config = ConfigDict(extra="forbid")

    #: Model versions whose verdicts this site stores; by default the shipped model's.
    approved_models: list[str] = Field(default_factory=_shipped_models, min_length=1)
    #: A verdict that arrives before its frame waits this long for it, then is a dead letter.
    hold_s: float = Field(default=10.0, ge=0)
    #: Verdicts waiting for their frame at most (beyond it they are dead letters at once).
    max_held: int = Field(default=10_000, ge=0)
    #: Frame keys (for matching and one verdict per frame) are remembered this long.
    frame_memory_s: float = Field(default=3600.0, gt=0)
    #: A frame without a verdict this long is offered to the inference nodes again (its node may
    #: have died with it) on `thermo/v1/reoffer/<device>/frame`; 0 = never.
    reoffer_s: float = Field(default=30.0, ge=0)
    #: Offers of one frame at most.
    max_reoffers: int = Field(default=3, ge=0)


class ErasureSettings(BaseModel):
    """`[erasure]`: what `thermoscreen patients forget` and the bridge share (docs/patients.md)."""

    model_config = ConfigDict(extra="forbid")

    #: Hashed ids of erased patients and sessions; the bridge drops their late messages at intake.
    tombstones: Path = Path("thermoscreen-data/erased-patients.txt")
    #: How the TSDB deletes by tag: `auto` asks the server (`/ping`); `victoriametrics`
    #: (`/api/v1/admin/tsdb/delete_series`), `influxql` (InfluxDB 1.x `DROP SERIES`), `v2`
    #: (InfluxDB 2 `/api/v2/delete`, untested here).
    influx_api: Literal["auto", "victoriametrics", "influxql", "v2"] = "auto"


class RetentionSettings(BaseModel):
    """`[retention]`: sessions, frames and verdicts older than `days` leave the archive and
    Firestore, checked every `interval_s`. Off unless `days` is set. InfluxDB keeps its own
    bucket retention; VictoriaMetrics its `-retentionPeriod` flag (docs/patients.md)."""

    model_config = ConfigDict(extra="forbid")

    days: float | None = Field(default=None, gt=0)
    interval_s: float = Field(default=3600.0, ge=1.0)


class ClusterSettings(BaseModel):
    """`[cluster]`: several bridges sharing the frames (docs/scaling.md, "Several bridges").

    - `single` (the default): one bridge does everything, as it always did.
    - `sessions`: exactly one per site. Takes its share of the frames, and alone receives (not
      shared) rfid events, verdicts, statuses and the other bridges' frame receipts: it stores
      the verdicts, checks their provenance and computes every session verdict once.
    - `storage`: any number. Takes its share of the frames, stores them (archive, TSDB,
      Firestore), and publishes a receipt per committed group; it follows the rfid events only
      to know who owns a session, and the verdicts only to know which frames to re-offer.

    With `sessions` or `storage`, a session is owned only by the device named in its rfid
    `session_start` (or `session_end`), never by its first frame: every bridge sees the rfid
    events in the broker's one order, so all of them agree on every owner. A frame naming a session
    nobody claimed yet waits (`provenance.hold_s`) for its claim. Bridges of one site share the
    archive file and the tombstones; each has its own queue file and MQTT client id.
    """

    model_config = ConfigDict(extra="forbid")

    role: Literal["single", "sessions", "storage"] = "single"
    #: The shared-subscription group the frames are shared in.
    group: str = Field(default="bridges", pattern=r"^[a-z0-9-]{1,32}$")
    #: A receipt is published at most this long after its frames' commit (the receipts sink's linger).
    receipt_linger_ms: float = Field(default=5.0, ge=0, le=1000)
    #: Sessions bridge: a verdict waits this long for its frame's receipt (a storage bridge may be
    #: restarting, its share of the frames queued at the broker) before it is a dead letter; the
    #: session stage does not judge a session while one of its verdicts waits. Replaces
    #: `provenance.hold_s` there when longer.
    receipt_hold_s: float = Field(default=600.0, ge=0)
    #: Sessions bridge: verdicts waiting for receipts at most (about 1 KB of memory each); replaces
    #: `provenance.max_held` there when larger. 100,000 is ~200 s of a storage bridge's share at
    #: 1,000 frames/s split over two bridges.
    max_waiting_verdicts: int = Field(default=100_000, ge=0)


class BridgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(default="bridge", pattern=r"^[a-z0-9-]{1,32}$")
    metrics_interval_s: float = Field(default=5.0, gt=0)
    #: On shutdown, let sinks drain for at most this long.
    shutdown_drain_s: float = Field(default=5.0, ge=0)


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bridge: BridgeSettings = BridgeSettings()
    mqtt: MqttSettings = MqttSettings(**BRIDGE_MQTT_DEFAULTS)
    queue: QueueSettings = QueueSettings()
    archive: ArchiveSettings = ArchiveSettings()
    influx: InfluxSettings = InfluxSettings()
    firestore: FirestoreSettings = FirestoreSettings()
    sessions: SessionSettings = SessionSettings()
    #: `[metrics]`: Prometheus `/metrics` (off unless `prometheus_port` is set).
    metrics: PrometheusSettings = PrometheusSettings()
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    erasure: ErasureSettings = ErasureSettings()
    retention: RetentionSettings = RetentionSettings()
    cluster: ClusterSettings = ClusterSettings()

    @model_validator(mode="before")
    @classmethod
    def _bridge_mqtt_defaults(cls, data: Any) -> Any:
        """A partial `[mqtt]` table keeps the bridge's persistent-session defaults."""
        if isinstance(data, dict) and isinstance(data.get("mqtt"), dict):
            data = dict(data)
            data["mqtt"] = {**BRIDGE_MQTT_DEFAULTS, **data["mqtt"]}
        return data


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> BridgeConfig:
    """The config file at `path` (or the defaults) with dotted-key CLI overrides applied."""
    if path is None:
        return validate_model({}, BridgeConfig, source="<defaults>", overrides=overrides)
    return load_toml_model(path, BridgeConfig, overrides=overrides)
