"""Slack listeners, one module per kind of request; :func:`register_handlers` wires them all."""

from __future__ import annotations

from slack_bolt import App

from bot.remediation_service import RemediationService
from bot.service import BotService
from handlers import actions, commands


def register_handlers(app: App, service: BotService,
                      remediation: RemediationService | None = None) -> None:
    """Register every listener of exchange-tls on ``app`` (the request cards' buttons, and
    ``audit`` / ``freeze`` / ``unfreeze``, only with ``remediation``)."""
    commands.register(app, service, remediation=remediation)
    if remediation is not None:
        actions.register(app, remediation)
