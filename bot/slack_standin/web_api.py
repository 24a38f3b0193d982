"""Slack's Web API as a loopback HTTP server, for tests, benchmarks and the terminal demo.

``SlackStandIn`` answers the methods the bot calls the way slack.com does: token checks,
``ts`` values, channels with threads, Block Kit validation, Slack's error codes. It records
every call, can inject 429/5xx answers and dropped connections, and owns a Socket Mode
endpoint (``apps.connections.open``) and ``response_url`` hooks (``/hooks/...``).

    with SlackStandIn() as slack:
        client = WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url)
        client.chat_postMessage(channel="C0EXCHANGE", text="hello")
        assert slack.messages("C0EXCHANGE")[0].text == "hello"
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import email.parser
import email.policy
import json
import logging
import secrets
import threading
import time
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

from bot.slack_standin.blocks import check_message, validate_view
from bot.slack_standin.requests import (
    DEFAULT_APP_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_CHANNEL_NAME,
    DEFAULT_TEAM_DOMAIN,
    DEFAULT_TEAM_ID,
    DEFAULT_USER_ID,
    DEFAULT_USER_NAME,
    block_actions_payload,
    slash_command_payload,
)
from bot.slack_standin.socket_mode import SocketModeServer

DEFAULT_BOT_TOKEN: Final = "xoxb-0000000000-standin-bot-token"  # noqa: S105 - fake
DEFAULT_APP_TOKEN: Final = "xapp-1-A0STANDIN-0000000000-standin-app-token"  # noqa: S105
DEFAULT_SIGNING_SECRET: Final = "standin-signing-secret-0123456789abcdef"  # noqa: S105
DEFAULT_BOT_USER_ID: Final = "U0BOT0001"
DEFAULT_BOT_ID: Final = "B0BOT0001"
RESPONSE_URL_MAX_USES: Final = 5

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandInUser:
    """A workspace member as ``users.info`` describes them."""

    id: str
    name: str
    real_name: str = ""
    tz: str = "Europe/Amsterdam"
    is_admin: bool = False
    is_bot: bool = False
    deleted: bool = False
    email: str | None = None


@dataclass(frozen=True)
class StandInChannel:
    """A conversation the stand-in knows; posting needs ``is_member``."""

    id: str
    name: str
    is_member: bool = True
    is_private: bool = False
    is_archived: bool = False


@dataclass(frozen=True)
class RecordedCall:
    """One Web API call as the stand-in received and answered it."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    http_method: str
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class StoredMessage:
    """A message in a channel (top level or in a thread), as it stands now."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    user: str
    bot_id: str | None
    posted_at: float
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    reply_broadcast: bool = False
    edited_at: float | None = None
    edit_count: int = 0
    team_id: str = DEFAULT_TEAM_ID
    app_id: str = DEFAULT_APP_ID

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_slack(self) -> dict[str, Any]:
        """The message as ``conversations.history`` would return it."""
        message: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "user": self.user,
            "text": self.text,
            "team": self.team_id,
        }
        if self.bot_id is not None:
            message["bot_id"] = self.bot_id
            message["app_id"] = self.app_id
        if self.blocks:
            message["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            message["attachments"] = copy.deepcopy(self.attachments)
        if self.thread_ts is not None:
            message["thread_ts"] = self.thread_ts
        if self.metadata is not None:
            message["metadata"] = copy.deepcopy(self.metadata)
        if self.edited_at is not None:
            message["edited"] = {"user": self.user, "ts": f"{self.edited_at:.6f}"}
        return message


@dataclass(frozen=True)
class EphemeralMessage:
    """A message only ``user`` saw (``chat.postEphemeral`` or an ephemeral response_url)."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    posted_at: float


@dataclass(frozen=True)
class ResponseUrlPost:
    """A POST to a response_url the stand-in issued."""

    hook_id: str
    channel: str
    user: str
    body: dict[str, Any]
    status: int
    answer: str
    at: float


@dataclass(frozen=True)
class OpenedView:
    """A view opened or updated with ``views.*``."""

    id: str
    method: str
    view: dict[str, Any]
    trigger_id: str | None
    at: float


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str | None
    disconnect: bool


@dataclass
class _Hook:
    channel: str
    user: str
    message_ts: str | None
    uses: int = 0


class _ApiErrorAnswer(Exception):
    """Internal: answer the current call with ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


class SlackStandIn:
    """A Slack workspace on loopback: Web API, Socket Mode and response_url hooks.

    ``channels``: if given, only these exist (``channel_not_found`` otherwise); if None, any
    channel ID is accepted. ``users``: members for ``users.info`` (default: one admin,
    ``DEFAULT_USER_ID``). ``usergroups``: group ID -> member user IDs. ``clock``: wall-clock
    seconds, for ``ts`` values and call times. ``socket_mode_scheme``: the scheme of the URLs
    ``apps.connections.open`` hands out; the endpoint itself is plain WebSocket, which
    slack_sdk's built-in client also uses for ``wss://`` on any port but 443.
    """

    def __init__(
        self,
        *,
        bot_tokens: Iterable[str] = (DEFAULT_BOT_TOKEN,),
        app_tokens: Iterable[str] = (DEFAULT_APP_TOKEN,),
        channels: Iterable[StandInChannel | str] | None = None,
        users: Iterable[StandInUser] | None = None,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        team_id: str = DEFAULT_TEAM_ID,
        team_domain: str = DEFAULT_TEAM_DOMAIN,
        team_name: str = "Stand-in Workspace",
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        bot_name: str = "exchange-tls",
        app_id: str = DEFAULT_APP_ID,
        host: str = "127.0.0.1",
        port: int = 0,
        socket_mode: bool = True,
        socket_mode_scheme: Literal["ws", "wss"] = "ws",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.team_id = team_id
        self.team_domain = team_domain
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.app_id = app_id
        self._host = host
        self._port = port
        self._clock = clock
        self._bot_tokens = set(bot_tokens)
        self._app_tokens = set(app_tokens)
        self._changed = threading.Condition(threading.RLock())
        self._channels: dict[str, StandInChannel] | None = None
        if channels is not None:
            self._channels = {}
            for channel in channels:
                self.add_channel(channel)
        default_users = [StandInUser(DEFAULT_USER_ID, DEFAULT_USER_NAME, "Exchange Admin")]
        self._users: dict[str, StandInUser] = {
            user.id: user for user in (default_users if users is None else users)
        }
        self._usergroups: dict[str, list[str]] = {
            group: list(members) for group, members in (usergroups or {}).items()
        }
        self._calls: list[RecordedCall] = []
        self._messages: dict[str, list[StoredMessage]] = {}
        self._ephemeral: list[EphemeralMessage] = []
        self._responses: list[ResponseUrlPost] = []
        self._views: list[OpenedView] = []
        self._hooks: dict[str, _Hook] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._latency: dict[str | None, float] = {}
        self._last_ts_micros = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.socket_mode: SocketModeServer | None = (
            SocketModeServer(
                host=host, app_id=app_id, scheme=socket_mode_scheme, changed=self._changed
            )
            if socket_mode
            else None
        )

    # --- life cycle ------------------------------------------------------------

    def start(self) -> Self:
        """Listen (default: an ephemeral loopback port) and serve in background threads."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-standin-web-api",
            daemon=True,
        )
        self._thread.start()
        if self.socket_mode is not None:
            self.socket_mode.start()
        return self

    def stop(self) -> None:
        """Stop serving; recorded state stays readable."""
        if self.socket_mode is not None:
            self.socket_mode.stop()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
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
            raise RuntimeError("the stand-in is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Base URL for ``WebClient(base_url=...)``, ending in ``/api/``."""
        return f"{self.base_url}/api/"

    # --- configuration ---------------------------------------------------------

    def add_channel(self, channel: StandInChannel | str, name: str | None = None) -> None:
        """Make a channel exist (from then on, unknown channels are ``channel_not_found``)."""
        if isinstance(channel, str):
            channel = StandInChannel(channel, name or channel.lower())
        with self._changed:
            if self._channels is None:
                self._channels = {}
            self._channels[channel.id] = channel

    def add_user(self, user: StandInUser) -> None:
        with self._changed:
            self._users[user.id] = user

    def set_usergroup(self, usergroup_id: str, members: Iterable[str]) -> None:
        with self._changed:
            self._usergroups[usergroup_id] = list(members)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with a failure.

        429 carries ``Retry-After: retry_after`` and ``ratelimited``; 5xx carries
        ``internal_error``; 200 with ``error`` is a plain ``{"ok": false}`` answer.
        """
        fault = _Fault(status, retry_after if status == 429 else None, error, disconnect=False)
        with self._changed:
            self._faults.setdefault(method, deque()).extend([fault] * times)

    def disconnect_next(self, method: str, *, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` calls of ``method``."""
        fault = _Fault(0, None, None, disconnect=True)
        with self._changed:
            self._faults.setdefault(method, deque()).extend([fault] * times)

    def set_latency(self, seconds: float, method: str | None = None) -> None:
        """Delay answers to ``method`` (or to every method when None) by ``seconds``."""
        with self._changed:
            self._latency[method] = seconds

    def clear_faults(self) -> None:
        with self._changed:
            self._faults.clear()
            self._latency.clear()

    def reset(self) -> None:
        """Forget calls, messages, responses, views and faults (configuration stays)."""
        with self._changed:
            self._calls.clear()
            self._messages.clear()
            self._ephemeral.clear()
            self._responses.clear()
            self._views.clear()
            self._hooks.clear()
            self._faults.clear()
            self._latency.clear()

    def response_url(self, *, channel_id: str, user_id: str, message_ts: str | None = None) -> str:
        """Issue a response_url that posts back into this stand-in (like hooks.slack.com)."""
        hook_id = secrets.token_urlsafe(12)
        with self._changed:
            self._hooks[hook_id] = _Hook(channel_id, user_id, message_ts)
        return f"{self.base_url}/hooks/{self.team_id}/{hook_id}"

    def post_as_user(
        self, channel: str, text: str, *, user: str = DEFAULT_USER_ID, thread_ts: str | None = None
    ) -> StoredMessage:
        """Store a message a person wrote (what an ``app_mention`` event then refers to)."""
        with self._changed:
            stored = replace(
                self._store(channel, text, None, thread_ts=thread_ts, args={}),
                user=user,
                bot_id=None,
            )
            history = self._messages[channel]
            history[-1] = stored
            self._changed.notify_all()
        return stored

    # --- what tests read -------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every call received (or those of ``method``), oldest first, including failed ones."""
        with self._changed:
            return [call for call in self._calls if method is None or call.method == method]

    def messages(self, channel: str) -> list[StoredMessage]:
        """Messages visible in the channel itself (top level and broadcast replies), by ts."""
        with self._changed:
            return [
                m for m in self._messages.get(channel, []) if not m.is_reply or m.reply_broadcast
            ]

    def thread(self, channel: str, ts: str) -> list[StoredMessage]:
        """The thread of ``ts``: its parent first, then the replies, as conversations.replies."""
        with self._changed:
            parent = self._find(channel, ts)
            if parent is None:
                return []
            root = parent.thread_ts or parent.ts
            return [m for m in self._messages.get(channel, []) if root in (m.ts, m.thread_ts)]

    def message(self, channel: str, ts: str) -> StoredMessage | None:
        with self._changed:
            return self._find(channel, ts)

    def ephemeral_messages(
        self, channel: str | None = None, user: str | None = None
    ) -> list[EphemeralMessage]:
        with self._changed:
            return [
                m
                for m in self._ephemeral
                if (channel is None or m.channel == channel) and (user is None or m.user == user)
            ]

    def responses(self) -> list[ResponseUrlPost]:
        """POSTs to issued response_urls, oldest first."""
        with self._changed:
            return list(self._responses)

    def views(self) -> list[OpenedView]:
        with self._changed:
            return list(self._views)

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (checked on every change); return its value."""
        with self._changed:
            result = self._changed.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"condition not met within {timeout}s")
        return result

    def wait_for_message(
        self,
        channel: str,
        predicate: Callable[[StoredMessage], bool] | None = None,
        *,
        thread_ts: str | None = None,
        timeout: float = 5.0,
    ) -> StoredMessage:
        """Wait for a message in ``channel`` (or in the thread of ``thread_ts``)."""

        def found() -> StoredMessage | None:
            pool = self.thread(channel, thread_ts) if thread_ts else self.messages(channel)
            return next((m for m in pool if predicate is None or predicate(m)), None)

        return self.wait_for(found, timeout)

    def wait_for_call(
        self,
        method: str,
        predicate: Callable[[RecordedCall], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """Wait for a call of ``method`` (matching ``predicate``) and return it."""

        def found() -> RecordedCall | None:
            return next((c for c in self.calls(method) if predicate is None or predicate(c)), None)

        return self.wait_for(found, timeout)

    # --- Socket Mode conveniences ----------------------------------------------

    def send_slash_command(
        self,
        text: str = "",
        *,
        command: str = "/exchange-tls",
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        connect_timeout: float = 5.0,
        **fields: Any,
    ) -> str:
        """Send a slash command over Socket Mode with a response_url into this stand-in.

        Waits up to ``connect_timeout`` for a client to be connected.
        """
        payload = slash_command_payload(
            command=command,
            text=text,
            user_id=user_id,
            user_name=self._user_name(user_id),
            channel_id=channel_id,
            channel_name=self._channel_name(channel_id),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
            response_url=self.response_url(channel_id=channel_id, user_id=user_id),
            **fields,
        )
        return self._socket_mode().send_envelope(
            "slash_commands", payload, connect_timeout=connect_timeout
        )

    def send_block_action(
        self,
        *,
        action_id: str,
        channel_id: str,
        message_ts: str,
        value: str | None = None,
        user_id: str = DEFAULT_USER_ID,
        block_id: str | None = None,
        connect_timeout: float = 5.0,
        **fields: Any,
    ) -> str:
        """Click a button of a stored message over Socket Mode; the payload carries it."""
        stored = self.message(channel_id, message_ts)
        if stored is None:
            raise KeyError(f"no message {message_ts} in {channel_id}")
        element = _find_action(stored.blocks, action_id, block_id)
        payload = block_actions_payload(
            action_id=action_id,
            value=value if value is not None else _str_or_none(element.get("value")),
            user_id=user_id,
            user_name=self._user_name(user_id),
            channel_id=channel_id,
            channel_name=self._channel_name(channel_id),
            message_ts=message_ts,
            message=stored.to_slack(),
            block_id=block_id or str(element.get("_block_id", "")),
            action_type=str(element.get("type", "button")),
            button_text=_plain_text(element.get("text")),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
            response_url=self.response_url(
                channel_id=channel_id, user_id=user_id, message_ts=message_ts
            ),
            thread_ts=stored.thread_ts,
            **fields,
        )
        return self._socket_mode().send_envelope(
            "interactive", payload, connect_timeout=connect_timeout
        )

    def _socket_mode(self) -> SocketModeServer:
        if self.socket_mode is None:
            raise RuntimeError("this stand-in was made with socket_mode=False")
        return self.socket_mode

    # --- request handling (called from server threads) ---------------------------

    def _handle_api(
        self, method: str, args: dict[str, Any], token: str | None, http_method: str
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """Answer one Web API call: (status, extra headers, JSON body or None to disconnect)."""
        args = {key: _decoded_json_text(key, value) for key, value in args.items()}
        with self._changed:
            delay = self._latency.get(method, self._latency.get(None, 0.0))
            queue = self._faults.get(method)
            fault = queue.popleft() if queue else None
        if delay > 0:
            time.sleep(delay)
        headers: dict[str, str] = {}
        body: dict[str, Any] | None
        if fault is not None and fault.disconnect:
            status, body = 0, None
        elif fault is not None:
            status = fault.status
            default_error = "ratelimited" if status == 429 else "internal_error"
            body = {"ok": False, "error": fault.error or default_error}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
        else:
            status = 200
            try:
                body = {"ok": True, **self._dispatch(method, args, token)}
            except _ApiErrorAnswer as answer:
                status = answer.status
                body = {"ok": False, "error": answer.error, **answer.extra}
            except Exception:
                _log.exception("stand-in failed to answer %s", method)
                status, body = 500, {"ok": False, "error": "internal_error"}
        with self._changed:
            self._calls.append(
                RecordedCall(
                    method=method,
                    args=copy.deepcopy(args),
                    token=token,
                    at=self._clock(),
                    http_method=http_method,
                    status=status,
                    response=copy.deepcopy(body) if body is not None else {},
                )
            )
            self._changed.notify_all()
        return status, headers, body

    def _dispatch(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        handler = _METHODS.get(method)
        if handler is None:
            raise _ApiErrorAnswer("unknown_method", status=404, req_method=method)
        if token is None:
            raise _ApiErrorAnswer("not_authed")
        needs_app_token = method == "apps.connections.open"
        if token in (self._app_tokens if needs_app_token else self._bot_tokens):
            return handler(self, args)
        if token in (self._bot_tokens if needs_app_token else self._app_tokens):
            raise _ApiErrorAnswer("not_allowed_token_type")
        raise _ApiErrorAnswer("invalid_auth")

    def _handle_hook(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        hook_id = path.rstrip("/").rsplit("/", 1)[-1]
        with self._changed:
            hook = self._hooks.get(hook_id)
            if hook is None:
                return 404, "no_service"
            if hook.uses >= RESPONSE_URL_MAX_USES:
                status, answer = 404, "used_url"
            else:
                hook.uses += 1
                status, answer = self._apply_response(hook, body)
            self._responses.append(
                ResponseUrlPost(
                    hook_id=hook_id,
                    channel=hook.channel,
                    user=hook.user,
                    body=copy.deepcopy(body),
                    status=status,
                    answer=answer,
                    at=self._clock(),
                )
            )
            self._changed.notify_all()
        return status, answer

    def _apply_response(self, hook: _Hook, body: dict[str, Any]) -> tuple[int, str]:
        original = hook.message_ts
        if _truthy(body.get("delete_original")):
            if original is None or self._find(hook.channel, original) is None:
                return 404, "message_not_found"
            self._messages[hook.channel] = [
                m for m in self._messages[hook.channel] if m.ts != original
            ]
            return 200, "ok"
        text, blocks = body.get("text"), _json_field(body.get("blocks"))
        rejection = check_message(text, blocks, attachments=body.get("attachments"))
        if rejection is not None:
            return 400, rejection.error
        if _truthy(body.get("replace_original")) and original is not None:
            existing = self._find(hook.channel, original)
            if existing is None:
                return 404, "message_not_found"
            self._replace(
                existing,
                replace(
                    existing,
                    text=str(text or ""),
                    blocks=_dict_list(blocks),
                    edited_at=self._clock(),
                    edit_count=existing.edit_count + 1,
                ),
            )
        elif body.get("response_type") == "in_channel":
            self._store(
                hook.channel, text, blocks, thread_ts=_str_or_none(body.get("thread_ts")), args=body
            )
        else:
            self._ephemeral.append(
                EphemeralMessage(
                    channel=hook.channel,
                    user=hook.user,
                    ts=self._next_ts(),
                    text=str(text or ""),
                    blocks=_dict_list(blocks),
                    thread_ts=_str_or_none(body.get("thread_ts")),
                    posted_at=self._clock(),
                )
            )
        return 200, "ok"

    # --- Web API methods (each takes the lock itself) ------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self._socket_mode().issue_url()}

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"), posting=True)
            text, blocks = self._checked_content(args)
            thread_ts = _str_or_none(args.get("thread_ts"))
            if thread_ts is not None:
                parent = self._find(channel, thread_ts)
                if parent is None:
                    raise _ApiErrorAnswer("thread_not_found")
                thread_ts = parent.thread_ts or parent.ts
            stored = self._store(channel, text, blocks, thread_ts=thread_ts, args=args)
        return {"channel": channel, "ts": stored.ts, "message": stored.to_slack()}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"), posting=True)
            ts = _str_or_none(args.get("ts"))
            existing = self._find(channel, ts) if ts else None
            if existing is None:
                raise _ApiErrorAnswer("message_not_found")
            if existing.bot_id != self.bot_id:
                raise _ApiErrorAnswer("cant_update_message")
            text, blocks = self._checked_content(args)
            updated = replace(
                existing,
                text=text if "text" in args else existing.text,
                blocks=blocks if "blocks" in args else existing.blocks,
                attachments=_json_list(args.get("attachments"), existing.attachments),
                edited_at=self._clock(),
                edit_count=existing.edit_count + 1,
            )
            self._replace(existing, updated)
        return {
            "channel": channel,
            "ts": updated.ts,
            "text": updated.text,
            "message": updated.to_slack(),
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"), posting=True)
            user = _str_or_none(args.get("user"))
            if user is None or (self._users and user not in self._users):
                raise _ApiErrorAnswer("user_not_in_channel")
            text, blocks = self._checked_content(args)
            ephemeral = EphemeralMessage(
                channel=channel,
                user=user,
                ts=self._next_ts(),
                text=text,
                blocks=blocks,
                thread_ts=_str_or_none(args.get("thread_ts")),
                posted_at=self._clock(),
            )
            self._ephemeral.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"))
            ts = _str_or_none(args.get("message_ts"))
            stored = self._find(channel, ts) if ts else None
            if stored is None or ts is None:
                raise _ApiErrorAnswer("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if stored.is_reply:
            link += f"?thread_ts={stored.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel_id = self._resolve_channel(args.get("channel"))
            channel = (self._channels or {}).get(channel_id) or StandInChannel(
                channel_id, channel_id.lower()
            )
        return {
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": not channel.is_private,
                "is_group": False,
                "is_im": channel.id.startswith("D"),
                "is_private": channel.is_private,
                "is_archived": channel.is_archived,
                "is_member": channel.is_member,
                "created": 1_600_000_000,
                "context_team_id": self.team_id,
            }
        }

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"))
            listed = [m.to_slack() for m in reversed(self.messages(channel))]
        limit = _int(args.get("limit"), 100)
        return {"messages": listed[:limit], "has_more": len(listed) > limit}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            channel = self._resolve_channel(args.get("channel"))
            ts = _str_or_none(args.get("ts"))
            thread = self.thread(channel, ts) if ts else []
            if not thread:
                raise _ApiErrorAnswer("thread_not_found")
        return {"messages": [m.to_slack() for m in thread], "has_more": False}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            user = self._users.get(str(args.get("user", "")))
        if user is None:
            raise _ApiErrorAnswer("user_not_found")
        offset, label = _tz_offset_and_label(user.tz, self._clock())
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "display_name": user.name,
            "real_name_normalized": user.real_name,
            "display_name_normalized": user.name,
            "team": self.team_id,
        }
        if user.email is not None:
            profile["email"] = user.email
        return {
            "user": {
                "id": user.id,
                "team_id": self.team_id,
                "name": user.name,
                "deleted": user.deleted,
                "real_name": user.real_name,
                "tz": user.tz,
                "tz_label": label,
                "tz_offset": offset,
                "is_admin": user.is_admin,
                "is_owner": False,
                "is_bot": user.is_bot,
                "is_app_user": False,
                "profile": profile,
            }
        }

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            members = self._usergroups.get(str(args.get("usergroup", "")))
        if members is None:
            raise _ApiErrorAnswer("no_such_subteam")
        return {"users": list(members)}

    def _views_open(self, args: dict[str, Any], method: str = "views.open") -> dict[str, Any]:
        trigger_id = _str_or_none(args.get("trigger_id"))
        if method in ("views.open", "views.push") and not trigger_id:
            raise _ApiErrorAnswer("invalid_trigger_id")
        try:
            view = _json_field(args.get("view"))
        except ValueError as error:
            raise _ApiErrorAnswer("invalid_arguments") from error
        problems = validate_view(view)
        if problems:
            raise _ApiErrorAnswer(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] {p}" for p in problems]},
            )
        assert isinstance(view, dict)
        view_id = _str_or_none(args.get("view_id")) or f"V{secrets.token_hex(5).upper()}"
        opened = {**view, "id": view_id, "team_id": self.team_id, "app_id": self.app_id}
        with self._changed:
            self._views.append(OpenedView(view_id, method, opened, trigger_id, self._clock()))
        return {"view": opened}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("view_id") and not args.get("external_id"):
            raise _ApiErrorAnswer("not_found")
        return self._views_open(args, method="views.update")

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._views_open(args, method="views.push")

    # --- state helpers (call with self._changed held) ---------------------------

    def _checked_content(self, args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        try:
            blocks = _json_field(args.get("blocks"))
        except ValueError as error:
            raise _ApiErrorAnswer("invalid_blocks_format") from error
        try:
            attachments = _json_field(args.get("attachments"))
        except ValueError as error:
            raise _ApiErrorAnswer("invalid_attachments") from error
        rejection = check_message(args.get("text"), blocks, attachments=attachments)
        if rejection is not None:
            extra: dict[str, Any] = {
                "response_metadata": {"messages": [f"[ERROR] {p}" for p in rejection.problems]}
            }
            if rejection.error == "invalid_blocks":
                extra["errors"] = list(rejection.problems)
            raise _ApiErrorAnswer(rejection.error, **extra)
        text = args.get("text")
        return (text if isinstance(text, str) else ""), _dict_list(blocks)

    def _resolve_channel(self, channel: object, *, posting: bool = False) -> str:
        if not isinstance(channel, str) or not channel:
            raise _ApiErrorAnswer("channel_not_found")
        if channel[0] in "UW" and channel in self._users:
            return "D" + channel[1:]
        if self._channels is None:
            return channel
        found = self._channels.get(channel) or next(
            (c for c in self._channels.values() if c.name == channel.lstrip("#")), None
        )
        if found is None:
            raise _ApiErrorAnswer("channel_not_found")
        if posting and found.is_archived:
            raise _ApiErrorAnswer("is_archived")
        if posting and not found.is_member:
            raise _ApiErrorAnswer("not_in_channel")
        return found.id

    def _store(
        self,
        channel: str,
        text: object,
        blocks: object,
        *,
        thread_ts: str | None,
        args: Mapping[str, Any],
    ) -> StoredMessage:
        metadata = _json_field(args.get("metadata")) if args.get("metadata") else None
        stored = StoredMessage(
            channel=channel,
            ts=self._next_ts(),
            text=text if isinstance(text, str) else "",
            blocks=copy.deepcopy(_dict_list(blocks)),
            thread_ts=thread_ts,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            posted_at=self._clock(),
            attachments=_json_list(args.get("attachments"), []),
            metadata=metadata if isinstance(metadata, dict) else None,
            reply_broadcast=_truthy(args.get("reply_broadcast")),
            team_id=self.team_id,
            app_id=self.app_id,
        )
        self._messages.setdefault(channel, []).append(stored)
        return stored

    def _replace(self, existing: StoredMessage, updated: StoredMessage) -> None:
        history = self._messages[existing.channel]
        history[history.index(existing)] = updated

    def _find(self, channel: str, ts: str | None) -> StoredMessage | None:
        return next((m for m in self._messages.get(channel, []) if m.ts == ts), None)

    def _next_ts(self) -> str:
        micros = max(int(self._clock() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _user_name(self, user_id: str) -> str:
        user = self._users.get(user_id)
        return user.name if user is not None else user_id.lower()

    def _channel_name(self, channel_id: str) -> str:
        channel = (self._channels or {}).get(channel_id)
        if channel is not None:
            return channel.name
        return DEFAULT_CHANNEL_NAME if channel_id == DEFAULT_CHANNEL_ID else channel_id.lower()


_METHODS: Final[dict[str, Callable[[SlackStandIn, dict[str, Any]], dict[str, Any]]]] = {
    "auth.test": SlackStandIn._auth_test,
    "apps.connections.open": SlackStandIn._apps_connections_open,
    "chat.postMessage": SlackStandIn._chat_post_message,
    "chat.update": SlackStandIn._chat_update,
    "chat.postEphemeral": SlackStandIn._chat_post_ephemeral,
    "chat.getPermalink": SlackStandIn._chat_get_permalink,
    "conversations.info": SlackStandIn._conversations_info,
    "conversations.history": SlackStandIn._conversations_history,
    "conversations.replies": SlackStandIn._conversations_replies,
    "users.info": SlackStandIn._users_info,
    "usergroups.users.list": SlackStandIn._usergroups_users_list,
    "views.open": SlackStandIn._views_open,
    "views.update": SlackStandIn._views_update,
    "views.push": SlackStandIn._views_push,
}


# --- HTTP shell -----------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    standin: SlackStandIn


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "SlackStandIn/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def _serve(self, http_method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            args = dict(parse_qsl(url.query, keep_blank_values=True))
            args.update(_parse_body(raw, self.headers.get("Content-Type", "")))
        except ValueError:
            self._answer(200, {"ok": False, "error": "invalid_form_data"})
            return
        if url.path.startswith("/api/"):
            method = url.path[len("/api/") :]
            token = _bearer(self.headers.get("Authorization")) or _str_or_none(
                args.pop("token", None)
            )
            standin = self.server.standin
            status, headers, body = standin._handle_api(method, args, token, http_method)
            if body is None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self._answer(status, body, headers)
        elif url.path.startswith("/hooks/") and http_method == "POST":
            status, answer = self.server.standin._handle_hook(url.path, args)
            self._answer_text(status, answer)
        else:
            self._answer_text(404, "not_found")

    def _answer(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _answer_text(self, status: int, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        parsed = json.loads(raw.decode("utf-8"))
        if not isinstance(parsed, dict):
            raise ValueError("JSON body is not an object")
        return parsed
    if kind == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + raw
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload if part.get_filename() else payload.decode("utf-8")
        return fields
    return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True))


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip() or None
    return None


_JSON_TEXT_FIELDS: Final = frozenset({"blocks", "attachments", "view", "metadata"})


def _decoded_json_text(key: str, value: object) -> object:
    """Form bodies carry ``blocks`` & co. as JSON text; record them as JSON bodies do."""
    if key in _JSON_TEXT_FIELDS and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def _json_field(value: object) -> object:
    """A field slack_sdk sends as JSON text in forms and as JSON values in JSON bodies."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    return value


def _json_list(value: object, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        parsed = _json_field(value)
    except ValueError:
        return default
    return _dict_list(parsed) if isinstance(parsed, list) else default


def _dict_list(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [dict(item) for item in value if isinstance(item, Mapping)]


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _int(value: object, default: int) -> int:
    try:
        return int(str(value)) if value is not None else default
    except ValueError:
        return default


def _plain_text(value: object) -> str:
    if isinstance(value, Mapping):
        return str(value.get("text", ""))
    return ""


def _find_action(
    blocks: list[dict[str, Any]], action_id: str, block_id: str | None
) -> dict[str, Any]:
    for index, block in enumerate(blocks):
        elements = list(block.get("elements") or [])
        if block.get("accessory"):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                this_block = str(block.get("block_id") or f"block-{index}")
                if block_id is None or block_id == this_block:
                    return {**element, "_block_id": this_block}
    raise KeyError(f"no element with action_id {action_id!r} in the message")


def _tz_offset_and_label(tz: str, now: float) -> tuple[int, str]:
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return 0, tz
    moment = dt.datetime.fromtimestamp(now, zone)
    offset = moment.utcoffset()
    return (int(offset.total_seconds()) if offset else 0), moment.tzname() or tz
