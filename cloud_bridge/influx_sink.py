"""Writes every queued item as line protocol to InfluxDB v2 (or VictoriaMetrics), synchronously.

Why synchronous: the client's batching mode retries and drops in a background thread and
reports loss only to a callback; a synchronous write either returns (the store has the
points) or raises, so the queue keeps the batch until it really landed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud_bridge.channels import decode_item
from cloud_bridge.config import InfluxSettings
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import QueuedItem
from cloud_bridge.line_protocol import item_lines
from cloud_bridge.sink import PermanentSinkError, SinkError
from contract.errors import ContractError

#: HTTP statuses that mean "this data will never be accepted" (not auth or availability problems).
_PERMANENT_STATUS = frozenset({400, 413, 422})


class InfluxSink:
    name = "influx"
    kinds: frozenset[str] | None = None

    def __init__(self, settings: InfluxSettings, *, decoded: DecodedCache | None = None) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        self._decode = decoded.decode if decoded is not None else decode_item
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.resolve_token() or "",
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def lines(self, items: Sequence[QueuedItem]) -> list[str]:
        out: list[str] = []
        for item in items:
            try:
                decoded = self._decode(item.kind, item.payload)
                out += item_lines(
                    item.kind, item.topic, decoded, item.received_ns, rows_every=self.settings.frame_rows_every
                )
            except (ContractError, ValueError) as exc:
                raise PermanentSinkError(f"queued item {item.id} cannot be written: {exc}") from None
        return out

    def write(self, items: Sequence[QueuedItem]) -> int:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        lines = self.lines(items)
        if not lines:
            return 0
        try:
            self._write_api.write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            status = int(getattr(exc, "status", 0) or 0)
            detail = _short(getattr(exc, "body", None) or exc.reason)
            if status in _PERMANENT_STATUS:
                raise PermanentSinkError(f"InfluxDB refused the points: HTTP {status} {detail}") from None
            raise SinkError(f"InfluxDB write failed: HTTP {status} {detail}") from None
        except Exception as exc:
            raise SinkError(f"InfluxDB at {self.settings.url} unreachable: {_short(exc)}") from None
        return len(lines)

    def close(self) -> None:
        self._write_api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
        # The write service keeps its own reference to the HTTP client; drop ours so it is
        # collected now rather than at interpreter exit (where urllib3 fails noisily).
        del self._write_api
        del self._client


def _short(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:200]
