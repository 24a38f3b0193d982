"""The ``/exchange-tls`` listener: understand, acknowledge, hand the work to the service.

Nothing slow happens before ``ack``: parsing and the run-check policy are pure and take
microseconds, so Slack gets its answer at once whatever Exchange is doing. The check itself
runs on the service's worker pool after the listener has returned.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot.remediation.policy import Actor
from bot.replies import SLASH_COMMAND, interpret_command
from bot.service import BotService, Origin


def register(app: App, service: BotService, *, slash_command: str = SLASH_COMMAND) -> None:
    """Listen for ``slash_command`` on ``app``."""
    settings = service.settings

    def exchange_tls_command(ack: Ack, command: dict[str, Any]) -> None:
        text = str(command.get("text") or "")
        user_id = str(command.get("user_id") or "")
        channel_id = str(command.get("channel_id") or "")
        interpretation = interpret_command(
            text,
            actor=Actor(user_id=user_id, team_id=str(command.get("team_id") or "")),
            channel_id=channel_id,
            settings=settings,
            slash_command=slash_command,
        )
        reply = interpretation.ack
        if reply.blocks:
            ack(text=reply.text, blocks=list(reply.blocks), response_type="ephemeral")
        else:
            ack(text=reply.text)
        if interpretation.work is not None:
            service.perform(interpretation.work, Origin(
                channel_id=channel_id,
                user_id=user_id,
                team_id=str(command.get("team_id") or ""),
                command_text=text,
                response_url=str(command.get("response_url") or "") or None,
            ))

    app.command(slash_command)(exchange_tls_command)
