"""Socket Mode as Slack serves it: a WebSocket endpoint that sends envelopes and expects acks.

A client gets a URL from ``apps.connections.open`` (see ``SocketModeServer.issue_url``),
connects, receives ``hello``, and then receives envelopes
(``{"envelope_id", "type", "payload", "accepts_response_payload", ...}``) that it must
acknowledge with ``{"envelope_id": ..., "payload": ...}``. Acks are recorded with their latency.
Works with slack_sdk's built-in ``SocketModeClient`` (what ``slack_bolt``'s
``SocketModeHandler`` uses) and with the websockets/aiohttp variants over ``ws://``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from bot.slack_standin.requests import (
    DEFAULT_APP_ID,
    block_actions_payload,
    slash_command_payload,
    view_submission_payload,
)

EnvelopeType = Literal["slash_commands", "interactive", "events_api"]
ENVELOPE_TYPES: Final = ("slash_commands", "interactive", "events_api")

T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    """An envelope the stand-in sent, and to which connection."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection_id: str
    sent_at: float


@dataclass(frozen=True)
class SocketModeAck:
    """A client's acknowledgement of an envelope."""

    envelope_id: str
    payload: dict[str, Any]
    received_at: float
    latency: float
    connection_id: str


@dataclass
class _Connection:
    connection_id: str
    websocket: ServerConnection
    send_lock: threading.Lock


class SocketModeError(RuntimeError):
    """The stand-in could not do what a test asked (no client connected, no ack in time)."""


class SocketModeTimeout(SocketModeError, TimeoutError):
    """A wait for a connection, an ack or a condition ran out of time."""


class SocketModeServer:
    """A Socket Mode WebSocket endpoint on loopback.

    ``clock`` is monotonic seconds, used for ack latency. ``changed`` is a condition (on an
    RLock) notified on every connection, envelope and ack; pass one to share it with other
    state, as ``SlackStandIn`` does so that its ``wait_for`` also wakes on Socket Mode events.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        app_id: str = DEFAULT_APP_ID,
        scheme: Literal["ws", "wss"] = "ws",
        clock: Callable[[], float] = time.monotonic,
        changed: threading.Condition | None = None,
    ) -> None:
        self._host = host
        self._app_id = app_id
        self._scheme = scheme
        self._clock = clock
        self._changed = changed or threading.Condition(threading.RLock())
        self._tickets: set[str] = set()
        self._connections: list[_Connection] = []
        self._connects = 0
        self._envelopes: dict[str, Envelope] = {}
        self._acks: dict[str, SocketModeAck] = {}
        self._other_messages: list[str] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------

    def start(self) -> Self:
        """Listen on an ephemeral port and serve in a background thread."""
        if self._server is not None:
            return self
        self._server = serve(
            self._handle,
            self._host,
            0,
            process_request=self._check_ticket,
            compression=None,
            ping_interval=None,
            close_timeout=1,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slack-standin-socket-mode", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        self.drop_connections()
        server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise SocketModeError("the Socket Mode server is not started")
        return int(self._server.socket.getsockname()[1])

    def issue_url(self) -> str:
        """A new connection URL, as ``apps.connections.open`` returns it."""
        ticket = str(uuid.uuid4())
        with self._changed:
            self._tickets.add(ticket)
        return (
            f"{self._scheme}://{self._host}:{self.port}/link/?ticket={ticket}&app_id={self._app_id}"
        )

    # --- what tests read -------------------------------------------------------

    def connection_count(self) -> int:
        """Open connections that have received ``hello``."""
        with self._changed:
            return len(self._connections)

    def total_connects(self) -> int:
        """Connections accepted since start (reconnects count again)."""
        with self._changed:
            return self._connects

    def wait_for_connection(self, timeout: float = 5.0, count: int = 1) -> None:
        """Wait until at least ``count`` clients are connected."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._connections) >= count, timeout):
                raise SocketModeTimeout(f"no Socket Mode client connected within {timeout}s")

    def envelopes(self) -> list[Envelope]:
        with self._changed:
            return list(self._envelopes.values())

    def acks(self) -> list[SocketModeAck]:
        with self._changed:
            return list(self._acks.values())

    def ack(self, envelope_id: str) -> SocketModeAck | None:
        with self._changed:
            return self._acks.get(envelope_id)

    def unexpected_messages(self) -> list[str]:
        """Client messages that were not acks of an envelope we sent."""
        with self._changed:
            return list(self._other_messages)

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (checked on every change); return its value."""
        with self._changed:
            result = self._changed.wait_for(predicate, timeout)
        if not result:
            raise SocketModeTimeout(f"condition not met within {timeout}s")
        return result

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the client's ack of ``envelope_id``; return its payload ({} when none)."""
        return self.wait_for_ack_record(envelope_id, timeout).payload

    def wait_for_ack_record(self, envelope_id: str, timeout: float = 5.0) -> SocketModeAck:
        """Wait for the client's ack of ``envelope_id``; return the recorded ack."""
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self._acks, timeout):
                raise SocketModeTimeout(
                    f"envelope {envelope_id} was not acknowledged in {timeout}s"
                )
            return self._acks[envelope_id]

    # --- sending ---------------------------------------------------------------

    def send_envelope(
        self,
        type: EnvelopeType,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        connect_timeout: float = 5.0,
    ) -> str:
        """Send an envelope to the newest connection; return its ``envelope_id``."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type: {type}")
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or payload.get("type") in (
                "view_submission",
                "block_suggestion",
            )
        envelope_id = str(uuid.uuid4())
        message: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": dict(payload),
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            message["retry_attempt"] = retry_attempt
            message["retry_reason"] = retry_reason
        self.wait_for_connection(connect_timeout)
        with self._changed:
            connection = self._connections[-1]
            self._envelopes[envelope_id] = Envelope(
                envelope_id=envelope_id,
                type=type,
                payload=dict(payload),
                accepts_response_payload=accepts_response_payload,
                connection_id=connection.connection_id,
                sent_at=self._clock(),
            )
        self._send(connection, message)
        return envelope_id

    def send_slash_command(self, **fields: Any) -> str:
        """Send a ``slash_commands`` envelope; ``fields`` as for ``slash_command_payload``."""
        return self.send_envelope("slash_commands", slash_command_payload(**fields))

    def send_block_action(self, **fields: Any) -> str:
        """Send an ``interactive`` block_actions envelope; ``fields`` as for the payload builder."""
        return self.send_envelope("interactive", block_actions_payload(**fields))

    def send_view_submission(self, **fields: Any) -> str:
        """Send an ``interactive`` view_submission envelope."""
        return self.send_envelope("interactive", view_submission_payload(**fields))

    def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Tell every client to reconnect, as Slack does before recycling a connection."""
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            self._send(
                connection,
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}},
            )

    def drop_connections(self) -> None:
        """Close every connection abruptly (a network fault, not a polite disconnect)."""
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.websocket.socket.shutdown(socket.SHUT_RDWR)

    # --- WebSocket side ---------------------------------------------------------

    def _check_ticket(self, websocket: ServerConnection, request: Request) -> Response | None:
        ticket = _query_value(request.path, "ticket")
        with self._changed:
            valid = ticket is not None and ticket in self._tickets
        if not valid:
            return websocket.respond(401, "invalid or missing ticket\n")
        return None

    def _handle(self, websocket: ServerConnection) -> None:
        connection = _Connection(
            connection_id=secrets.token_hex(6), websocket=websocket, send_lock=threading.Lock()
        )
        with self._changed:
            self._connects += 1
            count = len(self._connections) + 1
        self._send(
            connection,
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {
                    "host": "applink-standin",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self._app_id},
            },
        )
        with self._changed:
            self._connections.append(connection)
            self._changed.notify_all()
        try:
            for message in websocket:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                self._receive(connection, text)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                if connection in self._connections:
                    self._connections.remove(connection)
                self._changed.notify_all()

    def _receive(self, connection: _Connection, text: str) -> None:
        received_at = self._clock()
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        with self._changed:
            envelope = self._envelopes.get(envelope_id) if isinstance(envelope_id, str) else None
            if envelope is None or envelope.envelope_id in self._acks:
                self._other_messages.append(text)
            else:
                assert isinstance(message, dict)
                payload = message.get("payload")
                self._acks[envelope.envelope_id] = SocketModeAck(
                    envelope_id=envelope.envelope_id,
                    payload=dict(payload) if isinstance(payload, dict) else {},
                    received_at=received_at,
                    latency=received_at - envelope.sent_at,
                    connection_id=connection.connection_id,
                )
            self._changed.notify_all()

    def _send(self, connection: _Connection, message: Mapping[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"))
        try:
            with connection.send_lock:
                connection.websocket.send(data)
        except ConnectionClosed as error:
            raise SocketModeError(
                f"connection {connection.connection_id} closed before the message was sent"
            ) from error


def _query_value(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0] if values else None
