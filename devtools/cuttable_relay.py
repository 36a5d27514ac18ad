"""A TCP relay between one device and the broker that the fault bench can cut and restore.

Why a relay: "a device cut off from the broker" must hit only that device, with everything
else (its process, its spool, the broker) left alone. The device connects to the relay's
port (TLS passes through untouched: the relay only copies bytes), and `cut()` does what a
dropped network link does from the device's point of view: its connection dies and new
connection attempts are refused until `restore()`. The relay cannot fake a silently
black-holed link (the device would notice only at its keepalive timeout); the reset is the
common case (Wi-Fi access point or switch port going down) and the one a device sees first.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from devtools.local_mosquitto import free_port

CHUNK = 65536


class CuttableRelay:
    """127.0.0.1:`port` -> `target_host`:`target_port`, one pair of copy threads per connection."""

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._closed = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> CuttableRelay:
        self._listen()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._close_all()

    def __enter__(self) -> CuttableRelay:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones (connection refused) until `restore()`."""
        with self._lock:
            self.cuts += 1
        self._close_all()

    def restore(self) -> None:
        """Accept and relay connections again, on the same port."""
        if self._listener is None and not self._closed.is_set():
            self._listen()

    # -- internals -----------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._listener = sock
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(sock,), name="relay-accept", daemon=True)
        self._accept_thread.start()

    def _close_all(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5.0)
            self._accept_thread = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: cut or stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="relay-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One direction ended: end the other too, as a broken link would.
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for sock in (src, dst):
                if sock in self._sockets:
                    self._sockets.discard(sock)
                    sock.close()
