"""Prometheus `/metrics` for a component: its settings, metric naming, and starting the HTTP server.

Shared by the inference node and (later) the bridge, so every component is scraped the same
way: off unless a port is configured, bound to loopback unless told otherwise (the figures
name nodes and models; exposing them is a deliberate choice), every metric named
`thermoscreen_<component>_<name>`. `prometheus-client` is imported only when a server starts,
so components without the extra still run with metrics off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import CollectorRegistry

#: Every exported metric starts with this namespace.
METRIC_NAMESPACE = "thermoscreen"
#: Loopback unless the operator opens it up.
DEFAULT_BIND = "127.0.0.1"
_NAME_PART = re.compile(r"^[a-z][a-z0-9_]*$")


class PrometheusSettings(BaseModel):
    """`[metrics]`: `prometheus_port` None (default) = no HTTP server; 0 = any free port (tests)."""

    model_config = ConfigDict(extra="forbid")
    prometheus_port: int | None = Field(default=None, ge=0, le=65535)
    prometheus_bind: str = Field(default=DEFAULT_BIND, min_length=1)


def metric_name(component: str, name: str) -> str:
    """`thermoscreen_<component>_<name>`, both parts snake_case (Prometheus naming conventions)."""
    for part in (component, name):
        if not _NAME_PART.match(part):
            raise ValueError(f"metric name part {part!r} must match {_NAME_PART.pattern}")
    return f"{METRIC_NAMESPACE}_{component}_{name}"


@dataclass
class MetricsServer:
    """A running `/metrics` endpoint; `port` is the bound one (also when 0 was asked for)."""

    server: WSGIServer
    thread: threading.Thread
    bind: str
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(settings: PrometheusSettings, registry: CollectorRegistry) -> MetricsServer | None:
    """Serve `registry` on `settings`' address; None when metrics are off. OSError if the port is taken."""
    if settings.prometheus_port is None:
        return None
    from prometheus_client import start_http_server

    server, thread = start_http_server(settings.prometheus_port, addr=settings.prometheus_bind, registry=registry)
    return MetricsServer(server, thread, settings.prometheus_bind, int(server.server_address[1]))
