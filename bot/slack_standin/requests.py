"""Requests as Slack sends them to an app: payloads, HTTP-mode signing, and a poster.

The ``*_payload`` functions are pure and shared with the Socket Mode server (which sends the
same payloads inside envelopes). ``slash_command``, ``block_actions`` and ``view_submission``
build form-encoded bodies signed as Slack signs them: ``v0=`` + HMAC-SHA256 of
``v0:{timestamp}:{body}`` under the signing secret, in ``X-Slack-Signature`` beside
``X-Slack-Request-Timestamp``. ``forgery`` makes deliberately wrong requests for security tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final
from urllib.parse import urlencode

DEFAULT_TEAM_ID: Final = "T0STANDIN"
DEFAULT_TEAM_DOMAIN: Final = "standin"
DEFAULT_APP_ID: Final = "A0STANDIN"
DEFAULT_USER_ID: Final = "U0ADMIN01"
DEFAULT_USER_NAME: Final = "admin"
DEFAULT_CHANNEL_ID: Final = "C0EXCHANGE"
DEFAULT_CHANNEL_NAME: Final = "exchange-ops"
DEFAULT_COMMAND: Final = "/exchange-tls"
STALE_AFTER_SECONDS: Final = 5 * 60
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"


class Forgery(Enum):
    """Ways to make a request that a correct verifier must refuse."""

    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    MISSING_SIGNATURE = "missing_signature"
    TAMPERED_BODY = "tampered_body"


@dataclass(frozen=True)
class SignedRequest:
    """An HTTP-mode request body with Slack's headers, ready to POST to ``/slack/events``."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def timestamp(self) -> str | None:
        return self.headers.get("X-Slack-Request-Timestamp")


def signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """Slack's ``X-Slack-Signature`` for ``body`` sent at ``timestamp``."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def sign(
    body: bytes,
    *,
    signing_secret: str,
    timestamp: int | None = None,
    content_type: str = FORM_CONTENT_TYPE,
    forgery: Forgery | None = None,
) -> SignedRequest:
    """Sign ``body`` as Slack would at ``timestamp`` (default: now), or forge it as asked."""
    now = int(time.time()) if timestamp is None else timestamp
    if forgery is Forgery.STALE_TIMESTAMP:
        now -= STALE_AFTER_SECONDS + 60
    stamp = str(now)
    signed = signature(signing_secret, stamp, body)
    if forgery is Forgery.BAD_SIGNATURE:
        signed = signature(signing_secret + "-wrong", stamp, body)
    if forgery is Forgery.TAMPERED_BODY:
        body = body + b"&tampered=1"
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signed,
    }
    if forgery is Forgery.MISSING_SIGNATURE:
        del headers["X-Slack-Signature"]
    return SignedRequest(body=body, headers=headers)


def new_trigger_id() -> str:
    """A trigger_id shaped like Slack's."""
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def default_response_url(team_id: str = DEFAULT_TEAM_ID) -> str:
    """A response_url shaped like Slack's (it points nowhere reachable)."""
    return (
        f"https://hooks.slack.com/commands/{team_id}/"
        f"{secrets.randbelow(10**13)}/{secrets.token_urlsafe(18)}"
    )


def slash_command_payload(
    *,
    command: str = DEFAULT_COMMAND,
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    response_url: str | None = None,
    trigger_id: str | None = None,
    enterprise_id: str | None = None,
) -> dict[str, str]:
    """The fields of a slash command invocation, as Slack sends them (all strings)."""
    payload = {
        "token": "standin-verification-token",
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url or default_response_url(team_id),
        "trigger_id": trigger_id or new_trigger_id(),
    }
    if enterprise_id is not None:
        payload["enterprise_id"] = enterprise_id
    return payload


def block_actions_payload(
    *,
    action_id: str,
    value: str | None = None,
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    message_ts: str = "1700000000.000100",
    message: Mapping[str, Any] | None = None,
    block_id: str = "actions",
    action_type: str = "button",
    button_text: str = "Button",
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    response_url: str | None = None,
    trigger_id: str | None = None,
    action_ts: str | None = None,
    thread_ts: str | None = None,
    state_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload: a click on ``action_id`` in a message at ``message_ts``."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": action_ts or f"{time.time():.6f}",
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": button_text, "emoji": True}
    if value is not None:
        action["value"] = value
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "standin-verification-token",
        "container": container,
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": dict(message)
        if message is not None
        else {"type": "message", "ts": message_ts, "text": "", "blocks": []},
        "state": {"values": dict(state_values or {})},
        "response_url": response_url
        or default_response_url(team_id).replace("/commands/", "/actions/"),
        "actions": [action],
    }


def view_submission_payload(
    *,
    callback_id: str,
    values: Mapping[str, Any] | None = None,
    private_metadata: str = "",
    view_id: str = "V0STANDIN01",
    blocks: list[Mapping[str, Any]] | None = None,
    title: str = "Exchange TLS",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """A ``view_submission`` payload; ``values`` is ``state.values`` (block -> action -> value)."""
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "standin-verification-token",
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": [dict(block) for block in blocks or []],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": dict(values or {})},
            "hash": secrets.token_hex(8),
            "title": {"type": "plain_text", "text": title, "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": api_app_id,
            "external_id": "",
            "app_installed_team_id": team_id,
            "bot_id": "B0STANDIN",
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def form_body(fields: Mapping[str, str]) -> bytes:
    """``application/x-www-form-urlencoded`` body of ``fields``."""
    return urlencode(fields).encode("utf-8")


def interactive_body(payload: Mapping[str, Any]) -> bytes:
    """The form body Slack posts for interactivity: one ``payload`` field holding JSON."""
    return form_body({"payload": json.dumps(payload, separators=(",", ":"))})


def slash_command(
    *,
    signing_secret: str,
    command: str = DEFAULT_COMMAND,
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    channel_name: str = DEFAULT_CHANNEL_NAME,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    response_url: str | None = None,
    trigger_id: str | None = None,
    timestamp: int | None = None,
    forgery: Forgery | None = None,
) -> SignedRequest:
    """A signed slash-command request (form-encoded, as Slack posts it)."""
    payload = slash_command_payload(
        command=command,
        text=text,
        user_id=user_id,
        user_name=user_name,
        channel_id=channel_id,
        channel_name=channel_name,
        team_id=team_id,
        team_domain=team_domain,
        api_app_id=api_app_id,
        response_url=response_url,
        trigger_id=trigger_id,
    )
    return sign(
        form_body(payload), signing_secret=signing_secret, timestamp=timestamp, forgery=forgery
    )


def block_actions(
    *,
    signing_secret: str,
    action_id: str,
    value: str | None = None,
    user_id: str = DEFAULT_USER_ID,
    user_name: str = DEFAULT_USER_NAME,
    channel_id: str = DEFAULT_CHANNEL_ID,
    message_ts: str = "1700000000.000100",
    message: Mapping[str, Any] | None = None,
    block_id: str = "actions",
    team_id: str = DEFAULT_TEAM_ID,
    response_url: str | None = None,
    trigger_id: str | None = None,
    timestamp: int | None = None,
    forgery: Forgery | None = None,
) -> SignedRequest:
    """A signed ``block_actions`` request: form field ``payload`` holding the JSON payload."""
    payload = block_actions_payload(
        action_id=action_id,
        value=value,
        user_id=user_id,
        user_name=user_name,
        channel_id=channel_id,
        message_ts=message_ts,
        message=message,
        block_id=block_id,
        team_id=team_id,
        response_url=response_url,
        trigger_id=trigger_id,
    )
    return sign(
        interactive_body(payload),
        signing_secret=signing_secret,
        timestamp=timestamp,
        forgery=forgery,
    )


def view_submission(
    *,
    signing_secret: str,
    callback_id: str,
    values: Mapping[str, Any] | None = None,
    private_metadata: str = "",
    user_id: str = DEFAULT_USER_ID,
    team_id: str = DEFAULT_TEAM_ID,
    timestamp: int | None = None,
    forgery: Forgery | None = None,
) -> SignedRequest:
    """A signed ``view_submission`` request."""
    payload = view_submission_payload(
        callback_id=callback_id,
        values=values,
        private_metadata=private_metadata,
        user_id=user_id,
        team_id=team_id,
    )
    return sign(
        interactive_body(payload),
        signing_secret=signing_secret,
        timestamp=timestamp,
        forgery=forgery,
    )


def post(url: str, signed: SignedRequest, *, timeout: float = 10.0) -> tuple[int, str]:
    """POST ``signed`` to ``url`` (an app's ``/slack/events``); return (HTTP status, body text)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=signed.body, headers=signed.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode("utf-8", "replace")
