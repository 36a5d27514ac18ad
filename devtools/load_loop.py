"""One network thread for all of a load generator's device connections, instead of one paho thread each.

Why: each simulated device needs its own connection (the ACL lets a device account publish
only on its own topics), and `MqttConnection` gives each one its own paho network thread.
At 1,000 frames/s from 200 devices that is 200 threads, each woken about three times per
frame (the frame written, its PUBACK, the verdict and its PUBACK): the generator used
52-69% of a core in `bench e2e --devices 200 --rate 5` (issue 17 asks under 40%). Here one
thread runs a `selectors` loop over every device's socket with paho's own external-loop
calls (`loop_read`, `loop_write`, `loop_misc`), and the pacer publishes from that same
thread, so a frame is written in the publish call itself with no wake-up at all.

Everything paho is touched from the loop thread only (paho is not thread-safe without its
own thread): other threads hand work over with `DeviceLoop.run`. A dropped connection is
reconnected by the loop (`RECONNECT_S` apart; the connect blocks the loop while it runs),
so this is for benches on a healthy broker (`bench e2e`); the fault drills, which cut links
and kill the broker, keep one paho thread per device.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from transport.connection import MqttConnection, MqttConnectionError, MqttSettings

T = TypeVar("T")

#: Keep-alive pings and reconnects are checked this often.
MISC_INTERVAL_S = 0.5
#: A lost connection is retried this long after it went (and after each failed attempt).
RECONNECT_S = 1.0
#: The loop waits at most this long in select when there is nothing to pace.
IDLE_WAIT_S = 0.05
#: However long the loop is busy, work handed to it must be done within this.
CALL_TIMEOUT_S = 60.0


class DeviceLoop:
    """A selector loop in one thread driving many `LoopConnection`s, with an optional pacing hook.

    `on_tick`, if set, runs in the loop thread on every pass and returns how long the loop may
    wait before the next call (the pacer publishes from it).
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        #: connection -> (socket it is registered with, events), None while it has no socket.
        self._registered: dict[LoopConnection, tuple[Any, int] | None] = {}
        self._retry_at: dict[LoopConnection, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-loop", daemon=True)
        self.on_tick: Callable[[], float] | None = None
        #: What ended the loop thread, if anything did (calls handed over afterwards fail with it).
        self.error: BaseException | None = None

    def start(self) -> DeviceLoop:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(10.0)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- handing work to the loop thread ---------------------------------------------------
    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the loop thread and return its result (at once when called from it)."""
        if threading.current_thread() is self._thread:
            return fn()
        if not self._thread.is_alive():
            raise RuntimeError(f"the device loop is not running (it ended with {self.error!r})")
        future: Future[T] = Future()
        self._calls.put((fn, future))
        self._wake()
        return future.result(CALL_TIMEOUT_S)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    # -- connections (loop thread) ---------------------------------------------------------
    def add(self, conn: LoopConnection) -> None:
        self._registered.setdefault(conn, None)
        self.sync(conn)

    def remove(self, conn: LoopConnection) -> None:
        entry = self._registered.pop(conn, None)
        self._retry_at.pop(conn, None)
        if entry is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(entry[0])

    def sync(self, conn: LoopConnection) -> None:
        """Write what the client has queued, then match the selector to its socket and write interest."""
        if conn not in self._registered:
            return
        if conn.wants_write():
            conn.on_writable()
        sock = conn.sock()
        entry = self._registered[conn]
        if entry is not None and entry[0] is not sock:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(entry[0])
            entry = None
        if sock is None:
            self._registered[conn] = None
            if not conn.stopping:
                self._retry_at.setdefault(conn, time.monotonic() + RECONNECT_S)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.wants_write() else 0)
        if entry is None:
            self._selector.register(sock, events, conn)
        elif entry[1] != events:
            self._selector.modify(sock, events, conn)
        self._registered[conn] = (sock, events)

    def _misc(self) -> None:
        now = time.monotonic()
        for conn in list(self._registered):
            if conn.sock() is not None:
                conn.misc()
            elif not conn.stopping and self._retry_at.get(conn, now) <= now:
                self._retry_at.pop(conn, None)
                try:
                    conn.reconnect()
                except (OSError, MqttConnectionError):
                    self._retry_at[conn] = now + RECONNECT_S
            self.sync(conn)

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the thread's end: kept, and every waiting call gets it
            self.error = exc
        finally:
            while True:
                try:
                    _fn, future = self._calls.get_nowait()
                except queue.Empty:
                    break
                future.set_exception(RuntimeError(f"the device loop ended ({self.error!r})"))

    def _serve(self) -> None:
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while not self._stop.is_set():
            wait = IDLE_WAIT_S
            if self.on_tick is not None:
                wait = min(wait, self.on_tick())
            for key, events in self._selector.select(max(wait, 0.0)):
                conn = key.data
                if conn is None:
                    self._run_calls()
                    continue
                if events & selectors.EVENT_READ:
                    conn.on_readable()
                if events & selectors.EVENT_WRITE:
                    conn.on_writable()
                self.sync(conn)  # PUBACKs for what was read, a socket that closed
            if time.monotonic() >= next_misc:
                self._misc()
                next_misc = time.monotonic() + MISC_INTERVAL_S


class LoopConnection(MqttConnection):
    """An `MqttConnection` whose paho client is driven by a `DeviceLoop`, never by its own thread.

    Subscriptions, receipts and handlers are `MqttConnection`'s own; only starting, stopping
    and the network I/O differ. Call `publish` and `subscribe` in the loop thread (`loop.run`).
    """

    def __init__(self, settings: MqttSettings, *, password: str | None, loop: DeviceLoop) -> None:
        super().__init__(settings, password=password)
        # One device reads only its PUBACKs and verdicts: read all that is there on each wake-up.
        self._client.read_until_empty = True
        self._loop = loop

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self, wait: bool = True) -> LoopConnection:
        self._loop.run(self._open)
        if wait:
            self._await_connected()
        return self

    def _open(self) -> None:
        self._client.connect(self.settings.host, self.settings.port, **self._connect_args())
        self._loop.add(self)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no last will): the DISCONNECT is written before the socket closes."""
        self._stopping = True
        self._loop.run(self._close)
        self.connected.clear()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
            self._client.loop_write()
        self._loop.remove(self)

    # -- the loop's side (loop thread) -----------------------------------------------------
    def sock(self) -> Any:
        return self._client.socket()

    def wants_write(self) -> bool:
        return self._client.want_write()

    def on_readable(self) -> None:
        self._client.loop_read()
        sock = self._client.socket()
        # TLS may hold decrypted bytes the selector cannot see: read them before waiting again.
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            self._client.loop_read()
            sock = self._client.socket()

    def on_writable(self) -> None:
        self._client.loop_write()

    def misc(self) -> None:
        self._client.loop_misc()

    def reconnect(self) -> None:
        self._client.reconnect()
