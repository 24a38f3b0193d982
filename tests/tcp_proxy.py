"""A TCP proxy between the bot and its database that a test can cut and restore.

``cut()`` closes every connection through the proxy and stops listening, so new connections
are refused (what a client sees while PostgreSQL restarts or fails over); ``restore()``
listens again on the same port. The cut can also wait for given bytes from the client
(``cut_before``: that message never reaches the database; ``cut_after_reply_to``: the
database gets it and answers, the answer is lost). Threads only: one acceptor, two pumps per
connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_CHUNK = 65536


class CuttableProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` until cut."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        """Connections accepted since the start (a reconnect shows here)."""
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._cut_before: bytes | None = None
        self._cut_after_reply_to: bytes | None = None
        self._swallow: set[socket.socket] = set()
        self.triggered = threading.Event()
        """Set when an armed cut happened."""

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self._listen()
        return self

    def stop(self) -> None:
        self.cut()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def is_cut(self) -> bool:
        with self._lock:
            return self._listener is None

    def cut(self) -> None:
        """Close every connection and stop listening: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None

    def cut_before(self, pattern: bytes) -> None:
        """Cut when the client next sends ``pattern``, before the database receives it."""
        with self._lock:
            self._cut_before = pattern
            self.triggered.clear()

    def cut_after_reply_to(self, pattern: bytes) -> None:
        """Cut when the database answers the client's next message containing ``pattern``:
        the database received and processed it; the client never hears the answer."""
        with self._lock:
            self._cut_after_reply_to = pattern
            self.triggered.clear()

    def restore(self) -> None:
        """Listen again on the same port."""
        if self.is_cut:
            self._listen()

    # -- the work ------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,),
                                          name="tcp-proxy-accept", daemon=True)
        self._acceptor.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _close(client)
                    _close(server)
                    return
                self._open.update((client, server))
                self.accepted += 1
            for source, target, upstream in ((client, server, True),
                                             (server, client, False)):
                threading.Thread(target=self._pump, args=(source, target, upstream),
                                 name="tcp-proxy-pump", daemon=True).start()

    def _armed(self, data: bytes, source: socket.socket, target: socket.socket,
               upstream: bool) -> bool:
        """Whether to cut instead of forwarding ``data``."""
        with self._lock:
            if not upstream:
                if source in self._swallow:
                    self._swallow.discard(source)
                    return True
                return False
            if self._cut_before is not None and self._cut_before in data:
                self._cut_before = None
                return True
            if self._cut_after_reply_to is not None and self._cut_after_reply_to in data:
                self._cut_after_reply_to = None
                self._swallow.add(target)
            return False

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if self._armed(data, source, target, upstream):
                    self.triggered.set()
                    self.cut()
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
