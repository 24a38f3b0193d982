"""HTTP mode: Bolt's WSGI adapter on a threaded HTTP/1.1 server from the standard library.

Routes: ``POST /slack/events`` (slash commands and interactivity, signature-verified by Bolt)
and ``GET /healthz`` (for the load balancer). One thread per connection, keep-alive honoured,
request bodies bounded. :meth:`BotHTTPServer.stop` stops accepting, lets requests in flight
finish, then closes idle keep-alive connections.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import IO, TYPE_CHECKING, Any, Final, Self, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

EVENTS_PATH: Final = "/slack/events"
HEALTH_PATH: Final = "/healthz"
MAX_BODY_BYTES: Final = 1024 * 1024
"""Slack's payloads are far smaller; anything bigger is refused (413) without being read."""
KEEP_ALIVE_SECONDS: Final = 30.0
CLOSE_CONNECTION_KEY: Final = "exchange_tls.close_connection"

Health = Callable[[], Mapping[str, object]]


def _plain(status: str, text: str, start_response: StartResponse,
           extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = text.encode("utf-8")
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *extra,
    ])
    return [body]


def make_wsgi_app(app: App, *, health: Health | None = None) -> WSGIApplication:
    """The WSGI application: Slack's requests to Bolt, health checks, and 404 for the rest."""
    slack = SlackRequestHandler(app, EVENTS_PATH)

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES or "HTTP_TRANSFER_ENCODING" in environ:
            close = environ.get(CLOSE_CONNECTION_KEY)
            if callable(close):
                close()
            status = "413 Content Too Large" if length > MAX_BODY_BYTES else "400 Bad Request"
            return _plain(status, status[4:] + "\n", start_response)
        body = environ["wsgi.input"].read(length) if length else b""
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _plain("405 Method Not Allowed", "use GET\n", start_response,
                              [("Allow", "GET, HEAD")])
            state = dict(health() if health is not None else {"status": "ok"})
            payload = json.dumps(state, separators=(",", ":")).encode("utf-8")
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(payload))),
                                      ("Cache-Control", "no-store")])
            return [b"" if method == "HEAD" else payload]
        if path == EVENTS_PATH:
            if method != "POST":
                return _plain("405 Method Not Allowed", "use POST\n", start_response,
                              [("Allow", "POST")])
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                return _plain("400 Bad Request", "body is not UTF-8\n", start_response)
            forwarded = dict(environ)
            forwarded["wsgi.input"] = io.BytesIO(body)
            forwarded["CONTENT_LENGTH"] = str(len(body))
            return slack(forwarded, start_response)
        return _plain("404 Not Found", "not found\n", start_response)

    return application


class _ServerHandler(ServerHandler):
    http_version = "1.1"

    def log_exception(self, exc_info: Any) -> None:
        log.error("error while answering a request", exc_info=exc_info)


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler made HTTP/1.1: several requests per connection, quiet logs."""

    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_SECONDS
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    """Status line, headers and body leave in one send (flushed per response), not five."""
    server: _ThreadingWSGIServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, opened=False)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and not self.server.stopping:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:  # idle keep-alive connection timed out or was closed at shutdown
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            self.wfile.flush()
            self.close_connection = True
            return
        if not self.parse_request():
            self.wfile.flush()
            return
        environ = self.get_environ()
        environ[CLOSE_CONNECTION_KEY] = self._close_after_response
        handler = _ServerHandler(
            self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(), environ, multithread=True
        )
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref logs through it
        application = self.server.get_app()
        assert application is not None
        with self.server.active_request():
            handler.run(application)
            self.wfile.flush()
        if self.server.stopping:
            self.close_connection = True

    def _close_after_response(self) -> None:
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _ActiveRequest:
    def __init__(self, server: _ThreadingWSGIServer) -> None:
        self._server = server

    def __enter__(self) -> None:
        with self._server.changed:
            self._server.active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._server.changed:
            self._server.active -= 1
            self._server.changed.notify_all()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    """Listen backlog: a burst of Slack requests must not overflow it."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.changed = threading.Condition()
        self.active = 0
        self.stopping = False
        self._connections: set[socket.socket] = set()
        super().__init__(address, _RequestHandler)

    def active_request(self) -> _ActiveRequest:
        return _ActiveRequest(self)

    def track(self, connection: socket.socket, *, opened: bool) -> None:
        with self.changed:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_idle_connections(self) -> None:
        with self.changed:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class BotHTTPServer:
    """The bot's HTTP endpoint; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(
        self, app: App, *, host: str = "127.0.0.1", port: int = 3000,
        health: Health | None = None,
    ) -> None:
        self._server = _ThreadingWSGIServer((host, port))
        self._server.set_app(make_wsgi_app(app, health=health))
        self._host = host
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (a wildcard host shown as 127.0.0.1)."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def events_url(self) -> str:
        return self.url + EVENTS_PATH

    def start(self) -> Self:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2}, name="exchange-tls-http", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop accepting, wait up to ``timeout`` for requests in flight, close everything.

        Returns False when requests were still running at the deadline.
        """
        if self._stopped:
            return True
        self._stopped = True
        self._server.stopping = True
        if self._thread is not None:
            self._server.shutdown()
        with self._server.changed:
            finished = self._server.changed.wait_for(lambda: self._server.active == 0, timeout)
        self._server.close_idle_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return bool(finished)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
