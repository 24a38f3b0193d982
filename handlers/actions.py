"""The request card's buttons (``block_actions``): acknowledge, read the click, hand it over.

Nothing slow happens before ``ack``: the listener acknowledges first, then reads who clicked
what where from the payload and validates the button's value (a request id is ``R-`` and 10
base32 characters; anything else is refused without a database query), and queues the click
on the remediation service, which decides it on a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from slack_bolt import Ack, App

from bot.remediation_service import Click, ClickAction, RemediationService, parse_request_id
from bot.render.card import APPROVE_ACTION, DENY_ACTION, ROLLBACK_ACTION

log = logging.getLogger(__name__)

ACTIONS: Final[Mapping[str, ClickAction]] = {
    APPROVE_ACTION: "approve",
    DENY_ACTION: "deny",
    ROLLBACK_ACTION: "rollback",
}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def click_from_payload(body: Mapping[str, Any], action: Mapping[str, Any]) -> Click | None:
    """The click a ``block_actions`` payload describes; None when it is not one of ours or
    lacks the user or the channel."""
    kind = ACTIONS.get(_text(action.get("action_id")))
    user = _mapping(body.get("user"))
    container = _mapping(body.get("container"))
    channel = _text(_mapping(body.get("channel")).get("id")) or _text(container.get("channel_id"))
    user_id = _text(user.get("id"))
    if kind is None or not user_id or not channel:
        return None
    message_ts = _text(container.get("message_ts")) or _text(
        _mapping(body.get("message")).get("ts"))
    return Click(
        action=kind,
        value=_text(action.get("value")),
        user_id=user_id,
        team_id=_text(user.get("team_id")) or _text(_mapping(body.get("team")).get("id")),
        channel_id=channel,
        message_ts=message_ts or None,
        response_url=_text(body.get("response_url")) or None,
    )


def register(app: App, remediation: RemediationService) -> None:
    """Listen for the Approve, Deny and Rollback buttons of request cards."""

    def request_card_button(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        click = click_from_payload(body, action)
        if click is None:
            log.warning("ignored a block action without a user or a channel")
            return
        request_id = parse_request_id(click.value)
        if request_id is None:
            remediation.malformed_click(click)
            return
        remediation.click(click, request_id)

    for action_id in ACTIONS:
        app.action(action_id)(request_card_button)
