"""The ``/exchange-tls`` listener: understand, acknowledge, hand the work to the service.

Nothing slow happens before ``ack``: parsing and the run-check policy are pure and take
microseconds, so Slack gets its answer at once whatever Exchange is doing. The check itself
runs on the service's worker pool after the listener has returned.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot.commands import AuditCommand, FreezeCommand, UnfreezeCommand
from bot.remediation.policy import Actor
from bot.remediation_service import RemediationService
from bot.replies import SLASH_COMMAND, interpret_command
from bot.service import BotService, Origin


def register(app: App, service: BotService, *, slash_command: str = SLASH_COMMAND,
             remediation: RemediationService | None = None) -> None:
    """Listen for ``slash_command`` on ``app``; ``audit``, ``freeze`` and ``unfreeze`` go to
    ``remediation`` (without it they answer that they are not available)."""
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
            remediation=remediation is not None,
        )
        reply = interpretation.ack
        if reply.blocks:
            ack(text=reply.text, blocks=list(reply.blocks), response_type="ephemeral")
        else:
            ack(text=reply.text)
        work = interpretation.work
        if work is None:
            return
        origin = Origin(
            channel_id=channel_id,
            user_id=user_id,
            team_id=str(command.get("team_id") or ""),
            command_text=text,
            response_url=str(command.get("response_url") or "") or None,
        )
        if isinstance(work, AuditCommand | FreezeCommand | UnfreezeCommand):
            if remediation is not None:
                remediation.perform(work, origin)
        else:
            service.perform(work, origin)

    app.command(slash_command)(exchange_tls_command)
