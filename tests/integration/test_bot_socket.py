"""The bot in Socket Mode, end to end: envelopes from the Slack stand-in's WebSocket, acks back,
reports through its Web API, and the lab over WinRM/PSRP behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from bot.app import BotRuntime, BotStartError, SlackSecrets, build_runtime
from bot.config import ServerSettings, Settings, SlackSettings, TrustSettings
from bot.exchange.session import Credentials
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state
from bot.runner import trust_store_for
from bot.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    SlackStandIn,
    SocketModeServer,
    validate_message,
)
from bot.socket_mode import SocketModeConnection


@dataclass
class SocketBot:
    slack: SlackStandIn
    socket_mode: SocketModeServer
    lab: LabServer
    runtime: BotRuntime


@pytest.fixture(scope="module")
def bot() -> Iterator[SocketBot]:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab, SlackStandIn() as slack:
        user = lab.users[0]
        settings = Settings(
            servers=tuple(ServerSettings(name=name, url=lab.url_for(name), auth="ntlm")
                          for name in lab.server_names),
            slack=SlackSettings(api_url=slack.api_url),
        )
        runtime = build_runtime(
            settings,
            mode="socket",
            environ={},
            secrets=SlackSecrets(DEFAULT_BOT_TOKEN, DEFAULT_APP_TOKEN, None),
            trust=trust_store_for(TrustSettings(include_certifi=False),
                                  organisation.public_root_certificates()),
            credentials=lambda _server: Credentials(f"{user.domain}\\{user.name}", user.password),
        )
        assert slack.socket_mode is not None
        connection = SocketModeConnection(runtime.app, DEFAULT_APP_TOKEN).start()
        slack.socket_mode.wait_for_connection(timeout=5)
        yield SocketBot(slack, slack.socket_mode, lab, runtime)
        connection.stop()
        runtime.close()


@pytest.fixture(autouse=True)
def clean(bot: SocketBot) -> Iterator[None]:
    bot.slack.reset()
    yield
    assert bot.runtime.service.wait_until_idle(30)


def test_check_envelope_is_acked_then_the_report_posted(bot: SocketBot) -> None:
    requests_before = bot.lab.request_count
    envelope = bot.slack.send_slash_command("check EX01")

    ack = bot.socket_mode.wait_for_ack_record(envelope, timeout=5)
    assert "Checking *EX01*" in ack.payload["text"]
    assert ack.latency < 1
    report = bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
    assert report.text.startswith("Exchange TLS check: CRITICAL")
    assert validate_message(report.text, report.blocks) == []
    assert report.user == bot.slack.bot_user_id
    assert bot.lab.request_count > requests_before
    assert bot.socket_mode.unexpected_messages() == []


def test_help_is_answered_in_the_ack_itself(bot: SocketBot) -> None:
    envelope = bot.slack.send_slash_command("help")
    payload = bot.socket_mode.wait_for_ack(envelope, timeout=5)
    assert payload["response_type"] == "ephemeral"
    assert validate_message(payload["text"], payload["blocks"]) == []
    assert "`EX01`" in json.dumps(payload["blocks"])
    assert bot.slack.calls("chat.postMessage") == []


def test_unknown_server_makes_no_connection_attempt(bot: SocketBot) -> None:
    requests_before = bot.lab.request_count
    envelope = bot.slack.send_slash_command("check ex01.contoso.com")
    payload = bot.socket_mode.wait_for_ack(envelope, timeout=5)
    assert bot.runtime.service.wait_until_idle(10)
    assert "ex01.contoso.com" in json.dumps(payload["blocks"])
    assert bot.lab.request_count == requests_before


def test_status_goes_to_the_requester_through_the_response_url(bot: SocketBot) -> None:
    bot.slack.send_slash_command("check")
    bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
    envelope = bot.slack.send_slash_command("status")
    assert "status" in bot.socket_mode.wait_for_ack(envelope, timeout=5)["text"]
    answer = bot.slack.wait_for(lambda: bot.slack.responses(), timeout=10)[0]
    assert answer.body["response_type"] == "ephemeral"
    assert "critical" in json.dumps(answer.body["blocks"])


def test_socket_mode_needs_an_app_token() -> None:
    with pytest.raises(BotStartError, match="SLACK_APP_TOKEN"):
        build_runtime(Settings(), mode="socket", environ={"SLACK_BOT_TOKEN": "xoxb-1"})
