"""The bot in HTTP mode, end to end: signed requests in, Web API calls out to the Slack
stand-in, and the lab over WinRM/PSRP behind it."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bot.analysis.model import FleetReport, ServerAnalysis
from bot.analysis.verdict import build_report
from bot.app import BotRuntime, BotStartError, SlackSecrets, build_runtime, run_bot
from bot.check import check_server
from bot.config import ServerSettings, Settings, SlackSettings, TrustSettings
from bot.exchange.session import Credentials, SessionCache
from bot.http_server import BotHTTPServer
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import LabFaults, default_state
from bot.runner import trust_store_for
from bot.service import BotService
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_USER_ID,
    Forgery,
    SlackStandIn,
    StandInChannel,
    StoredMessage,
    post,
    slash_command,
    validate_message,
)

NOT_MEMBER_CHANNEL = "C0NOTIN"


@dataclass
class HttpBot:
    slack: SlackStandIn
    lab: LabServer
    runtime: BotRuntime
    server: BotHTTPServer

    def command(
        self, text: str, *, channel_id: str = DEFAULT_CHANNEL_ID, forgery: Forgery | None = None,
        server: BotHTTPServer | None = None,
    ) -> tuple[int, str, float]:
        """POST a signed slash command; (HTTP status, body, seconds until the answer)."""
        signed = slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET,
            text=text,
            channel_id=channel_id,
            response_url=self.slack.response_url(channel_id=channel_id, user_id=DEFAULT_USER_ID),
            forgery=forgery,
        )
        started = time.perf_counter()
        status, body = post((server or self.server).events_url, signed)
        return status, body, time.perf_counter() - started

    def idle(self) -> None:
        assert self.runtime.service.wait_until_idle(30)

    def reports(self, channel: str = DEFAULT_CHANNEL_ID) -> list[StoredMessage]:
        return [m for m in self.slack.messages(channel) if "Exchange TLS check" in m.text]


def lab_servers(lab: LabServer) -> tuple[ServerSettings, ...]:
    return tuple(
        ServerSettings(name=name, url=lab.url_for(name), auth="ntlm", connect_timeout=5,
                       operation_timeout=20)
        for name in lab.server_names
    )


def lab_credentials(lab: LabServer) -> Credentials:
    user = lab.users[0]
    return Credentials(f"{user.domain}\\{user.name}", user.password)


@pytest.fixture(scope="module")
def bot() -> Iterator[HttpBot]:
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    channels = [StandInChannel(DEFAULT_CHANNEL_ID, "exchange-ops"),
                StandInChannel(NOT_MEMBER_CHANNEL, "elsewhere", is_member=False),
                StandInChannel("C0RANDOM", "random")]
    with LabServer(organisation, auth="ntlm") as lab, \
            SlackStandIn(socket_mode=False, channels=channels) as slack:
        settings = Settings(
            servers=lab_servers(lab),
            slack=SlackSettings(api_url=slack.api_url,
                                allowed_channels=(DEFAULT_CHANNEL_ID, NOT_MEMBER_CHANNEL)),
        )
        runtime = build_runtime(
            settings,
            mode="http",
            environ={},
            secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
            trust=trust_store_for(TrustSettings(include_certifi=False),
                                  organisation.public_root_certificates()),
            credentials=lambda _server: lab_credentials(lab),
        )
        with BotHTTPServer(runtime.app, port=0) as server:
            yield HttpBot(slack, lab, runtime, server)
        runtime.close()


@pytest.fixture(autouse=True)
def clean(bot: HttpBot) -> Iterator[None]:
    bot.slack.reset()
    yield
    bot.lab.faults = LabFaults()
    bot.idle()
    bot.runtime.service.cache.close_all()


def test_check_is_acknowledged_and_its_report_posted_with_valid_blocks(bot: HttpBot) -> None:
    requests_before = bot.lab.request_count
    status, body, seconds = bot.command("check EX01")

    assert status == 200
    assert "Checking *EX01*" in body
    assert seconds < 1
    report = bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
    assert report.text.startswith("Exchange TLS check: CRITICAL")
    assert validate_message(report.text, report.blocks) == []
    assert report.blocks[0]["type"] == "header"
    everything = json.dumps(report.blocks)
    assert "SMTP_MIXED_TRUST_BINDING" in everything
    assert f"<@{DEFAULT_USER_ID}>" in everything
    assert bot.lab.request_count > requests_before


def test_status_after_a_check_shows_the_last_result_to_the_requester(bot: HttpBot) -> None:
    bot.command("check")
    bot.idle()
    status, body, _ = bot.command("status")
    assert (status, "Gathering the status" in body) == (200, True)
    bot.idle()
    (answer,) = bot.slack.responses()
    assert answer.body["response_type"] == "ephemeral"
    shown = json.dumps(answer.body["blocks"])
    assert "EX01" in shown
    assert "critical" in shown
    assert validate_message(answer.body["text"], answer.body["blocks"]) == []


@pytest.mark.parametrize("forgery", [Forgery.BAD_SIGNATURE, Forgery.STALE_TIMESTAMP,
                                     Forgery.MISSING_SIGNATURE, Forgery.TAMPERED_BODY])
def test_forged_requests_are_refused_and_do_nothing(bot: HttpBot, forgery: Forgery) -> None:
    requests_before = bot.lab.request_count
    status, _, _ = bot.command("check EX01", forgery=forgery)
    bot.idle()
    assert status == 401
    assert bot.slack.calls("chat.postMessage") == []
    assert bot.lab.request_count == requests_before


def test_unknown_server_gets_the_known_ones_and_no_connection_attempt(bot: HttpBot) -> None:
    requests_before = bot.lab.request_count
    status, body, _ = bot.command("check EX99")
    bot.idle()

    assert status == 200
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral"
    shown = json.dumps(answer["blocks"])
    assert "EX99" in shown
    assert "`EX01`" in shown
    assert validate_message(answer["text"], answer["blocks"]) == []
    assert bot.lab.request_count == requests_before
    assert bot.slack.calls("chat.postMessage") == []


def test_hostile_text_is_answered_safely(bot: HttpBot) -> None:
    requests_before = bot.lab.request_count
    status, body, _ = bot.command("check <!channel> <@U0ADMIN01> \x1b[2J\u202e" + "A" * 5000)
    bot.idle()
    assert status == 200
    assert "<!channel>" not in body
    assert "<@U0ADMIN01>" not in body
    assert "\x1b" not in body
    assert "\u202e" not in body
    assert len(body) < 4000
    assert bot.lab.request_count == requests_before


def test_unreachable_exchange_becomes_a_readable_report(bot: HttpBot) -> None:
    bot.lab.faults = LabFaults(auth_refused=True)
    status, _, _ = bot.command("check EX01")
    assert status == 200
    report = bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
    assert report.text.startswith("Exchange TLS check: UNKNOWN")
    everything = json.dumps(report.blocks)
    assert "authentication failed" in everything
    assert "SERVER_UNREACHABLE" in everything
    assert validate_message(report.text, report.blocks) == []


def test_rate_limited_post_is_retried_after_retry_after_and_delivered_once(bot: HttpBot) -> None:
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    bot.command("check EX01")
    bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
    bot.idle()

    attempts = bot.slack.calls("chat.postMessage")
    assert [call.status for call in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0
    assert len(bot.reports()) == 1


def test_report_in_a_channel_without_the_bot_reaches_the_requester(bot: HttpBot) -> None:
    bot.command("check EX01", channel_id=NOT_MEMBER_CHANNEL)
    bot.idle()
    assert bot.slack.messages(NOT_MEMBER_CHANNEL) == []
    notice, report = bot.slack.responses()
    assert "not_in_channel" in notice.body["text"]
    assert "/invite" in json.dumps(notice.body["blocks"])
    assert report.body["text"].startswith("Exchange TLS check: CRITICAL")


def test_channel_outside_the_allow_list_is_refused(bot: HttpBot) -> None:
    requests_before = bot.lab.request_count
    status, body, _ = bot.command("check EX01", channel_id="C0RANDOM")
    bot.idle()
    assert status == 200
    assert "not enabled in <#C0RANDOM>" in body
    assert bot.lab.request_count == requests_before
    assert bot.slack.calls("chat.postMessage") == []


def test_slow_exchange_is_still_acknowledged_at_once(bot: HttpBot) -> None:
    bot.lab.faults = LabFaults(slow_cmdlets={"Get-Queue": 5})
    started = time.monotonic()
    first = bot.command("check EX01")
    second = bot.command("check EX01")
    acknowledged = time.monotonic()

    assert [first[0], second[0]] == [200, 200]
    assert first[2] < 1
    assert second[2] < 1
    assert bot.reports() == []
    report = bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=30)
    arrived = time.monotonic()
    assert arrived - started >= 4.5
    assert arrived > acknowledged
    assert validate_message(report.text, report.blocks) == []


def test_forty_server_fleet_is_paged_into_the_thread_within_slack_limits(bot: HttpBot) -> None:
    trust = bot.runtime.service.trust
    cache = SessionCache(credentials=lambda _server: lab_credentials(bot.lab))
    try:
        real = check_server(lab_servers(bot.lab)[0], cache, trust)
    finally:
        cache.close_all()
    fleet: list[ServerAnalysis] = [
        dataclasses.replace(real, name=f"EX{index:02d}", fqdn=f"ex{index:02d}.contoso.com")
        for index in range(1, 41)
    ]
    servers = tuple(dataclasses.replace(lab_servers(bot.lab)[0], name=a.name) for a in fleet)

    def forty(*_args: Any, **kwargs: Any) -> FleetReport:
        return build_report(fleet, datetime.now(UTC))

    settings = dataclasses.replace(bot.runtime.settings, servers=servers)
    runtime = build_runtime(
        settings, mode="http", environ={}, secrets=bot.runtime.secrets, trust=trust,
        service_factory=partial(BotService, check_runner=forty),
    )
    requests_before = bot.lab.request_count
    try:
        with BotHTTPServer(runtime.app, port=0) as server:
            status, body, _ = bot.command("check all", server=server)
            assert runtime.service.wait_until_idle(30)
    finally:
        runtime.close()

    assert (status, "Checking all 40 servers" in body) == (200, True)
    (first,) = bot.slack.messages(DEFAULT_CHANNEL_ID)
    thread = bot.slack.thread(DEFAULT_CHANNEL_ID, first.ts)
    pages = thread[1:]
    assert len(pages) >= 2
    for page in thread:
        assert validate_message(page.text, page.blocks) == []
        assert len(page.blocks) <= 50
        assert len(json.dumps(page.blocks)) < 40_000
    assert all(call.ok for call in bot.slack.calls("chat.postMessage"))
    details = json.dumps([page.blocks for page in pages])
    for analysis in fleet:
        assert f"*{analysis.name}*" in details
    assert bot.lab.request_count == requests_before


def test_health_and_routes(bot: HttpBot) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", bot.server.port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        health = connection.getresponse()
        assert health.status == 200
        assert json.loads(health.read())["status"] == "ok"
        connection.request("GET", "/slack/events")
        wrong_method = connection.getresponse()
        wrong_method.read()
        assert wrong_method.status == 405
        connection.request("GET", "/nowhere")
        missing = connection.getresponse()
        missing.read()
        assert missing.status == 404
        assert missing.version == 11
    finally:
        connection.close()


def test_oversized_body_is_refused_unread(bot: HttpBot) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", bot.server.port, timeout=5)
    try:
        connection.putrequest("POST", "/slack/events")
        connection.putheader("Content-Length", str(10 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()


def test_http_mode_needs_the_signing_secret(bot: HttpBot) -> None:
    with pytest.raises(BotStartError, match="SLACK_SIGNING_SECRET"):
        build_runtime(bot.runtime.settings, mode="http",
                      environ={"SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN})


def test_bot_command_serves_http_from_its_configuration_until_stopped(
    bot: HttpBot, tmp_path: Path
) -> None:
    user = bot.lab.users[0]
    config = tmp_path / "exchange-tls.toml"
    config.write_text(
        f'[slack]\napi_url = "{bot.slack.api_url}"\n\n'
        f'[[servers]]\nname = "EX01"\nurl = "{bot.lab.url_for("EX01")}"\nauth = "ntlm"\n'
        'username_env = "EX01_USER"\npassword_env = "EX01_PASSWORD"\n\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "bot.db"}"\n',
        encoding="utf-8",
    )
    environ = {
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": DEFAULT_SIGNING_SECRET,
        "EX01_USER": f"{user.domain}\\{user.name}",
        "EX01_PASSWORD": user.password,
    }
    out, err = _LineBuffer(), io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_bot(
        config_path=str(config), mode="http", host="127.0.0.1", port=0, out=out, err=err,
        environ=environ, stop=stop, freeze_heap=False,
    )))
    thread.start()
    try:
        line = out.wait_for("listening on ")
        events_url = line.split("listening on ", 1)[1].split()[0]
        status, body = post(events_url, slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET, text="check EX01"))
        assert status == 200
        assert "Checking" in body
        report = bot.slack.wait_for_message(DEFAULT_CHANNEL_ID, timeout=20)
        assert report.text.startswith("Exchange TLS check: CRITICAL")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result == [0], err.getvalue()
    assert DEFAULT_SIGNING_SECRET not in out.getvalue() + err.getvalue()
    assert user.password not in out.getvalue() + err.getvalue()


class _LineBuffer(io.StringIO):
    """A StringIO another thread writes to, with a wait for a line containing some text."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            written = super().write(text)
            self._changed.notify_all()
            return written

    def wait_for(self, needle: str, timeout: float = 10) -> str:
        with self._changed:
            assert self._changed.wait_for(lambda: needle in self.getvalue(), timeout)
            return next(line for line in self.getvalue().splitlines() if needle in line)


def _runtime_with(bot: HttpBot, **service_options: Any) -> BotRuntime:
    return build_runtime(
        bot.runtime.settings, mode="http", environ={}, secrets=bot.runtime.secrets,
        trust=bot.runtime.service.trust,
        service_factory=partial(BotService, **service_options),
    )


def test_a_crashing_check_is_told_to_the_requester(bot: HttpBot) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> FleetReport:
        raise RuntimeError("trust store vanished")

    runtime = _runtime_with(bot, check_runner=broken)
    try:
        with BotHTTPServer(runtime.app, port=0) as server:
            assert bot.command("check EX01", server=server)[0] == 200
            assert runtime.service.wait_until_idle(10)
    finally:
        runtime.close()
    (notice,) = bot.slack.responses()
    assert "Your check failed: RuntimeError: trust store vanished" in notice.body["text"]
    assert bot.slack.calls("chat.postMessage") == []


def test_a_full_queue_is_said_and_nothing_is_dropped_silently(bot: HttpBot) -> None:
    release = threading.Event()

    def held(*_args: Any, **_kwargs: Any) -> FleetReport:
        release.wait(10)
        return build_report((), datetime.now(UTC))

    runtime = _runtime_with(bot, check_runner=held, max_pending=1)
    try:
        with BotHTTPServer(runtime.app, port=0) as server:
            first = bot.command("check EX01", server=server)
            second = bot.command("check EX01", server=server)
            busy = bot.slack.wait_for(lambda: bot.slack.responses(), timeout=5)[0]
            release.set()
            assert runtime.service.wait_until_idle(10)
    finally:
        release.set()
        runtime.close()
    assert (first[0], second[0]) == (200, 200)
    assert "I am busy: 1 job is already waiting or running" in busy.body["text"]
    assert len(bot.reports()) == 1
