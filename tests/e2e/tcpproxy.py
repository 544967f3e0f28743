"""A loopback TCP proxy for fault tests: forwards, or blackholes without closing.

In blackhole mode the proxy keeps every socket open and reads what either side sends,
but forwards nothing: the peers see no RST and no FIN, only silence, as behind a
firewall that started dropping packets. Only keepalive can tell such a peer is gone.
"""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType


class TcpProxy:
    """Listen on 127.0.0.1 (a free port) and forward each connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._blackhole = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def blackhole(self) -> None:
        """From now on, forward nothing in either direction; close nothing."""
        self._blackhole.set()

    def restore(self) -> None:
        """Forward again: new connections work; data swallowed meanwhile stays lost."""
        self._blackhole.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data and self._blackhole.is_set():
                        # The FIN is lost in the hole too: the other side hears nothing.
                        sel.unregister(src)
                        if not sel.get_map():
                            return
                        continue
                    if not data:
                        # One side closed for real: pass that on, as a network would.
                        self._drop(a, b)
                        return
                    if self._blackhole.is_set():
                        continue  # swallowed: no reply, no reset
                    try:
                        peer[src].sendall(data)
                    except OSError:
                        self._drop(a, b)
                        return

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
                sock.close()
