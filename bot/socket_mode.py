"""Socket Mode, the default: the bot opens a WebSocket to Slack, so no inbound port is needed.

A thin wrapper around Bolt's built-in :class:`SocketModeHandler` (slack_sdk's own WebSocket
client, reconnecting on its own) with a clean start and stop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Self

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackClientError

from bot.app import BotStartError

log = logging.getLogger(__name__)


class SocketModeConnection:
    """The app connected to Slack over Socket Mode (``app_token``: ``xapp-...``)."""

    def __init__(self, app: App, app_token: str, *, concurrency: int = 10) -> None:
        self._handler = SocketModeHandler(app, app_token, concurrency=concurrency)
        self._connected = False

    def start(self) -> Self:
        """Open the connection (``apps.connections.open``, then the WebSocket)."""
        try:
            self._handler.connect()  # type: ignore[no-untyped-call]
        except SlackClientError as error:
            self._handler.client.auto_reconnect_enabled = False
            self._handler.close()  # type: ignore[no-untyped-call]
            raise BotStartError(
                f"cannot open the Socket Mode connection: {_reason(error)} "
                "(is SLACK_APP_TOKEN an app-level token with connections:write?)"
            ) from None
        self._connected = True
        return self

    def stop(self) -> None:
        """Close the connection without reconnecting."""
        if not self._connected:
            return
        self._connected = False
        self._handler.client.auto_reconnect_enabled = False
        self._wake_receiver()
        try:
            self._handler.close()  # type: ignore[no-untyped-call]
        except Exception as error:  # already gone: nothing left to close
            log.debug("closing the Socket Mode connection: %s", type(error).__name__)

    def _wake_receiver(self) -> None:
        """Shut the socket down first: slack_sdk's close otherwise waits for its receiving
        thread's read to time out (about 3 s) before it can take the socket's lock."""
        session = getattr(self._handler.client, "current_session", None)
        sock = getattr(session, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def is_connected(self) -> bool:
        return self._connected and bool(self._handler.client.is_connected())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _reason(error: SlackClientError) -> str:
    response = getattr(error, "response", None)
    if response is not None:
        return str(response.get("error") or f"HTTP {response.status_code}")
    return type(error).__name__
