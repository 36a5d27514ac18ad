"""A small wrapper over paho-mqtt 2.x (MQTT v5). Nothing else in thermoscreen imports paho.

Why a wrapper: every component needs the same things done the same way: URL-based settings,
TLS with a CA file, secrets from the environment, a last will, reconnect with exponential
back-off, re-subscription after reconnect, TCP_NODELAY (paho never sets it; without it p99
latency at QoS 0 was 54 ms here instead of 0.2 ms), PUBACK reason codes, and manual acks for
consumers that must persist a message before the broker forgets it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

#: PUBACK/SUBACK reason code for "not authorized" (MQTT v5).
NOT_AUTHORIZED = 0x87
#: Distinct topics whose matching handlers are remembered (devices x channels; cleared when full).
_HANDLER_CACHE_MAX = 4096


class MqttSettings(BaseModel):
    """Connection settings, as they appear in the `[mqtt]` table of every component's config.

    The password is never written in the config: it comes from the environment variable
    named by `password_env`, or from `password_file`.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_env: str = "THERMOSCREEN_MQTT_PASSWORD"
    password_file: Path | None = None
    ca_file: Path | None = None
    client_id: str | None = Field(default=None, max_length=64)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    reconnect_min_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    clean_start: bool = True
    session_expiry_s: int = Field(default=0, ge=0)
    max_inflight: int = Field(default=100, ge=1, le=65535)
    connect_timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"}:
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"broker URL has no host: {url!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"broker URL has an invalid port: {url!r}") from None
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def resolve_password(self) -> str | None:
        """The password from `password_file` or the environment; None for anonymous."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read MQTT password file {self.password_file}: {exc.strerror}") from None
        return os.environ.get(self.password_env)


@dataclass(frozen=True)
class Will:
    """A last-will message the broker publishes if this client vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class Message:
    """A received message. Call `ack()` when the connection was made with `manual_ack=True`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    _ack: Callable[[], None] | None = field(default=None, repr=False)
    #: The client a manual-ack QoS 1 message came on: `ack_in_order` acknowledges a run of them at once.
    _client: _Client | None = field(default=None, repr=False)

    def ack(self) -> None:
        if self._ack is not None:
            self._ack()


def ack_in_order(messages: Sequence[Message]) -> None:
    """Acknowledge `messages` in their order, a run of one client's QoS 1 messages as one queued packet.

    Why: each `ack()` queues its PUBACK and writes a byte to paho's wake-up socket pair (a
    syscall, and a wake-up of the network thread): 11% of the bridge's ingest thread in a
    py-spy profile at 200 frames/s. The PUBACKs and their order on the wire are the same.
    """
    run: list[int] = []
    client: _Client | None = None
    for message in messages:
        grouped = message._client if message.qos == 1 else None
        if grouped is None or grouped is not client:
            if client is not None:
                client.puback_many(run)
            client, run = grouped, []
        if grouped is None:
            message.ack()
        else:
            run.append(message.mid)
    if client is not None:
        client.puback_many(run)


Handler = Callable[[Message], None]


class PublishReceipt:
    """Completes when the broker acknowledged a publish (PUBACK for QoS 1), with its reason code."""

    # One receipt per publish: a bare lock held until completion is several times cheaper to
    # create than a threading.Event (a Condition), which showed up in profiles at 1000s msg/s.
    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.reason_code: int | None = None
        self._completed = False
        self._pending = threading.Lock()
        self._pending.acquire()

    def _complete(self, reason_code: int) -> None:
        if self._completed:
            return
        self.reason_code = reason_code
        self._completed = True
        self._pending.release()

    @property
    def done(self) -> bool:
        return self._completed

    @property
    def accepted(self) -> bool:
        """True once acknowledged with a success code (< 0x80)."""
        return self._completed and (self.reason_code or 0) < 0x80

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the acknowledgement; True if it came (check `accepted` for the verdict)."""
        if self._completed:
            return True
        if self._pending.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._pending.release()  # let any other waiter through too
            return True
        return self._completed


class SubscribeReceipt:
    """Completes on SUBACK with the granted QoS or failure reason code."""

    def __init__(self) -> None:
        self.reason_codes: list[int] = []
        self._done = threading.Event()

    def _complete(self, codes: list[int]) -> None:
        self.reason_codes = codes
        self._done.set()

    @property
    def granted(self) -> bool:
        return self._done.is_set() and all(code < 0x80 for code in self.reason_codes)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


@dataclass
class _Subscription:
    topic_filter: str
    match_filter: str
    handler: Handler
    qos: int
    #: False after unsubscribe(): not renewed on reconnect, but messages still in flight reach the handler.
    active: bool = True
    #: The receipt of a subscription made before connecting; completed by the SUBACK after connect.
    first_receipt: SubscribeReceipt | None = None


#: Packets read per wake-up of the network thread at most (paho reads one, or one per message in flight).
READ_PACKETS_PER_WAKEUP = 256
#: Acknowledgements (PUBACK) that go to the socket in one write at most.
ACKS_PER_WRITE = 512


class _Client(paho.Client):
    """paho's client with two changes to its network loop; nothing else differs.

    Why: paho 2.2 handles one packet per select() (`loop_read` reads `len(in flight)`
    packets, which is 1 for a pure subscriber such as the bridge), so every received
    message also cost a select, an SSL `pending()` and the loop's bookkeeping; and it writes
    every PUBACK as its own `send` (its own TLS record), so a consumer acking a group of
    2,000 messages made 2,000 writes. Here a wake-up reads packets until the socket has no
    more (at most READ_PACKETS_PER_WAKEUP: the loop still gets to write and ping), and PUBACKs
    queued back to back leave in one write. Order on the wire is unchanged, and so is what
    is acknowledged: only the packing of bytes into writes differs.

    Reading until empty is only for manual-ack consumers (the bridge): the broker sends them
    no more than its in-flight window until they ack, so a faster read cannot outrun their
    worker. An auto-acking subscriber (an inference node) has no such bound; reading faster
    there filled the node's bounded frame queue under a saturating load (`bench inference`
    dropped frames), so it keeps paho's pace, which leaves the worker the GIL.

    A packet that paho queues on its own network thread (the PUBACK of an auto-acked QoS 1
    message, as an inference node receives its frames, or a verdict the node publishes from a
    handler) no longer writes a wake-up byte to paho's socket pair: that thread is not waiting
    in select, and its next loop selects for writing because the out-queue is not empty. Why:
    at 200 frames/s the node's network thread used 25% of a core, and the wake-up send (and
    its recv on the next loop) per frame was its largest entry (py-spy). Packets queued from
    other threads wake the loop as before.

    The overrides use paho's internals (`_sock`, `_packet_read`, `_out_packet`, `_thread`),
    which is why paho is pinned in constraints.txt; tests/transport checks each path on a real
    broker.
    """

    #: Set for manual-ack consumers only (see `MqttConnection`).
    read_until_empty = False

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if not self.read_until_empty:
            return super().loop_read(max_packets)
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        for _ in range(READ_PACKETS_PER_WAKEUP):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        _coalesce_acks(self._out_packet)
        return super()._packet_write()

    def _packet_queue(
        self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None
    ) -> MQTTErrorCode:
        if self._thread is not None and threading.current_thread() is self._thread:
            self._out_packet.append(
                {
                    "command": command,
                    "mid": mid,
                    "qos": qos,
                    "pos": 0,
                    "to_process": len(packet),
                    "packet": packet,
                    "info": info,
                }
            )
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def puback_many(self, mids: Sequence[int]) -> None:
        """PUBACK each of `mids` (manual-ack QoS 1 messages), in order: one queued packet, one wake-up."""
        for start in range(0, len(mids), ACKS_PER_WRITE):
            part = mids[start : start + ACKS_PER_WRITE]
            data = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in part)
            self._packet_queue(_PUBACK, data, part[0], 1)


_PUBACK = 0x40


def _coalesce_acks(out: Any) -> None:
    """Merge the PUBACKs at the head of paho's out-queue (none partly written) into one packet.

    Only the network thread takes from the left of that deque; other threads append on the
    right, so the merge (pop left, push the merged one back left) never races with them.
    """
    if len(out) < 2:
        return
    head = out[0]
    if head["command"] & 0xF0 != _PUBACK or head["pos"] != 0:
        return
    parts: list[Any] = []
    while out and len(parts) < ACKS_PER_WRITE:
        packet = out[0]
        if packet["command"] & 0xF0 != _PUBACK or packet["pos"] != 0 or packet["info"] is not None:
            break
        parts.append(out.popleft()["packet"])
    if len(parts) == 1:
        out.appendleft(head)
        return
    data = b"".join(bytes(p) for p in parts)
    out.appendleft({**head, "packet": data, "to_process": len(data), "mid": head["mid"]})


class MqttConnectionError(ConnectionError):
    """The broker could not be reached or refused us; the message is one line."""


def _match_filter(topic_filter: str) -> str:
    """Strip the `$share/<group>/` prefix: messages arrive on the plain topic."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


class MqttConnection:
    """One MQTT v5 client: connect, publish with receipts, subscribe with handlers, manual acks.

    Callbacks (handlers, `on_connect`) run on paho's network thread; keep them short.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        manual_ack: bool = False,
        password: str | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id or settings.client_id or f"thermoscreen-{os.getpid()}-{time.monotonic_ns()}"
        self.connected = threading.Event()
        #: Set once every subscription has been (re)acknowledged after the latest connect.
        self.subscribed = threading.Event()
        self._resub_mids: set[int] = set()
        self.last_connect_error: str | None = None
        self.connect_count = 0
        self._manual_ack = manual_ack
        self._user_on_connect = on_connect
        self._lock = threading.RLock()
        self._subs: list[_Subscription] = []
        self._pending_pub: dict[int, PublishReceipt] = {}
        self._early_pub: dict[int, int] = {}
        self._pending_sub: dict[int, SubscribeReceipt] = {}
        #: topic -> handlers, so each message does not re-run topic matching (cleared on subscribe).
        self._handler_cache: dict[str, list[Handler]] = {}
        self._stopping = False

        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        # paho types these as int but computes with floats; sub-second back-off matters for devices.
        client.read_until_empty = manual_ack
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        if settings.username is not None:
            client.username_pw_set(settings.username, password if password is not None else settings.resolve_password())
        if settings.tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_subscribe  # same arguments; mids are unique across both
        client.on_socket_open = self._on_socket_open
        self._client = client

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, wait: bool = True) -> MqttConnection:
        """Connect in the background (reconnecting forever); with `wait`, block until connected."""
        self._client.connect_async(self.settings.host, self.settings.port, **self._connect_args())
        self._client.loop_start()
        if wait:
            self._await_connected()
        return self

    def _connect_args(self) -> dict[str, Any]:
        """keepalive, clean start and the CONNECT properties (session expiry) from the settings."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.settings.session_expiry_s:
            props.SessionExpiryInterval = self.settings.session_expiry_s
        return {"keepalive": self.settings.keepalive_s, "clean_start": self.settings.clean_start, "properties": props}

    def _await_connected(self) -> None:
        """Block until connected; stop and raise MqttConnectionError (with the broker's reason) on timeout."""
        if not self.connected.wait(self.settings.connect_timeout_s):
            reason = self.last_connect_error or "no answer"
            self.stop()
            raise MqttConnectionError(
                f"cannot connect to MQTT broker {self.settings.url} within "
                f"{self.settings.connect_timeout_s:.0f} s: {reason}"
            )

    def stop(self, *, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stopping = True
        try:
            self._client.disconnect()
        except Exception:  # pragma: no cover - already gone
            log.debug("disconnect failed", exc_info=True)
        self._client.loop_stop()
        self.connected.clear()

    def __enter__(self) -> MqttConnection:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- publish ---------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int | None = None, retain: bool = False) -> PublishReceipt:
        """Queue a publish; the receipt completes on PUBACK (at once for QoS 0 once written).

        While disconnected, QoS>0 messages wait in paho's queue and go out after reconnecting.
        """
        q = self.settings.qos if qos is None else qos
        # Not under self._lock: paho calls _on_publish holding its own out-message mutex, which
        # publish() takes too, so holding ours here deadlocks against PUBACKs (lock inversion).
        info = self._client.publish(topic, payload, qos=q, retain=retain)
        with self._lock:
            receipt = PublishReceipt(info.mid)
            early = self._early_pub.pop(info.mid, None)
            if early is not None:
                receipt._complete(early)
            elif info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise MqttConnectionError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
            else:
                self._pending_pub[info.mid] = receipt
        return receipt

    # -- subscribe -------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int | None = None) -> SubscribeReceipt:
        """Subscribe now (if connected) and after every reconnect; `handler` gets matching messages."""
        sub = _Subscription(
            topic_filter, _match_filter(topic_filter), handler, self.settings.qos if qos is None else qos
        )
        receipt = SubscribeReceipt()
        with self._lock:
            self._subs.append(sub)
            self._handler_cache.clear()
            if self.connected.is_set():
                rc, mid = self._client.subscribe(topic_filter, qos=sub.qos)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_sub[mid] = receipt
            else:
                # Subscribing before start() matters for persistent sessions: the broker resends
                # queued messages right after CONNACK, and they need a handler by then.
                sub.first_receipt = receipt
        return receipt

    def unsubscribe(self, topic_filter: str) -> SubscribeReceipt:
        """Stop a subscription (also after reconnects); the receipt completes on UNSUBACK.

        Messages the broker sent before the UNSUBACK still reach the handler, so a consumer
        can drain what it was given before disconnecting.
        """
        receipt = SubscribeReceipt()
        with self._lock:
            for sub in self._subs:
                if sub.topic_filter == topic_filter:
                    sub.active = False
            if self.connected.is_set():
                rc, mid = self._client.unsubscribe(topic_filter)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_sub[mid] = receipt
        return receipt

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # e.g. unix sockets
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self.last_connect_error = f"broker refused connection: {reason_code}"
            log.warning("MQTT connect to %s refused: %s", self.settings.url, reason_code)
            return
        with self._lock:
            self.subscribed.clear()
            self._resub_mids.clear()
            for sub in self._subs:
                if sub.active:
                    rc, mid = client.subscribe(sub.topic_filter, qos=sub.qos)
                    if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                        self._resub_mids.add(mid)
                    if sub.first_receipt is not None and rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                        self._pending_sub[mid] = sub.first_receipt
                        sub.first_receipt = None
            if not self._resub_mids:
                self.subscribed.set()
        self.connect_count += 1
        self.last_connect_error = None
        self.connected.set()
        log.info("MQTT connected to %s as %s", self.settings.url, self.client_id)
        if self._user_on_connect is not None:
            try:
                self._user_on_connect()
            except Exception:
                log.exception("on_connect hook failed")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.last_connect_error = self.last_connect_error or "connection failed (broker down or TLS error)"

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping:
            refused = (self.last_connect_error or "").startswith("broker refused")
            if getattr(reason_code, "is_failure", False) and not refused:
                # keep a CONNACK refusal (e.g. "Not authorized"): it says more than the disconnect after it
                self.last_connect_error = f"disconnected: {reason_code}"
            log.warning("MQTT disconnected from %s: %s; reconnecting", self.settings.url, reason_code)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        code = int(getattr(reason_code, "value", 0) or 0)
        with self._lock:
            receipt = self._pending_pub.pop(mid, None)
            if receipt is None:
                self._early_pub[mid] = code
                return
        receipt._complete(code)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._resub_mids:
                self._resub_mids.discard(mid)
                if not self._resub_mids:
                    self.subscribed.set()
            receipt = self._pending_sub.pop(mid, None)
        if receipt is not None:
            receipt._complete([int(getattr(rc, "value", rc)) for rc in reason_codes])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        ack: Callable[[], None] | None = None
        if self._manual_ack and msg.qos > 0:
            mid, qos = msg.mid, msg.qos

            def ack() -> None:
                client.ack(mid, qos)

        grouped = client if ack is not None and msg.qos == 1 and isinstance(client, _Client) else None
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, ack, grouped)
        handlers = self._handler_cache.get(msg.topic)
        if handlers is None:
            with self._lock:
                handlers = [s.handler for s in self._subs if paho.topic_matches_sub(s.match_filter, msg.topic)]
                if len(self._handler_cache) >= _HANDLER_CACHE_MAX:
                    self._handler_cache.clear()
                self._handler_cache[msg.topic] = handlers
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("handler for %s failed", msg.topic)
