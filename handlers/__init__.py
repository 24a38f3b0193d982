"""Slack listeners, one module per kind of request; :func:`register_handlers` wires them all."""

from __future__ import annotations

from slack_bolt import App

from bot.service import BotService
from handlers import commands


def register_handlers(app: App, service: BotService) -> None:
    """Register every listener of exchange-tls on ``app``."""
    commands.register(app, service)
