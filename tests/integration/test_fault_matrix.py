"""Faults on either side of the bot: what the user sees, and that the next command still works.

Each case injects one fault (the lab's fault injection, a custom wire codec for malformed
payloads, or the Slack stand-in's), sends a signed slash command over HTTP, asserts the message
a person reads, then clears the fault and asserts the next command produces a normal report.
The README's fault table is this file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.app import SlackSecrets, build_runtime
from bot.config import ServerSettings, Settings, SlackSettings, TrustSettings
from bot.exchange.session import Credentials
from bot.http_server import BotHTTPServer
from bot.lab import wire
from bot.lab.model import ExchangeOrganisation
from bot.lab.psrp_session import WireCodec
from bot.lab.records import LabCertificateRecord
from bot.lab.server import LabServer
from bot.lab.state import LabFaults, LabWSManFault, default_state
from bot.runner import trust_store_for
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_USER_ID,
    SlackStandIn,
    post,
    slash_command,
)


class SwitchableWire:
    """The lab's real wire codec, with an optional corruption of certificate RawData."""

    def __init__(self) -> None:
        self.corrupt_certificates = False

    def to_psobject(self, record: object, **kwargs: Any) -> object:
        shaped = wire.to_psobject(record, **kwargs)
        if self.corrupt_certificates and isinstance(record, LabCertificateRecord):
            shaped.RawData = b"\x30\x82\x01\x00 not a certificate"  # type: ignore[attr-defined]
        return shaped


@dataclass
class Harness:
    slack: SlackStandIn
    lab: LabServer
    server: BotHTTPServer
    codec: SwitchableWire
    wait_idle: Callable[[], bool]

    def check(self, inject: Callable[[Harness], None] | None = None) -> str:
        """Send `check EX01` (after ``inject``); return all text the requester and channel got."""
        self.slack.reset()
        if inject is not None:
            inject(self)
        signed = slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET, text="check EX01",
            channel_id=DEFAULT_CHANNEL_ID,
            response_url=self.slack.response_url(channel_id=DEFAULT_CHANNEL_ID,
                                                 user_id=DEFAULT_USER_ID))
        status, _ = post(self.server.events_url, signed)
        assert status == 200
        assert self.wait_idle()
        texts = [m.text for m in self.slack.messages(DEFAULT_CHANNEL_ID)]
        for message in self.slack.messages(DEFAULT_CHANNEL_ID):
            texts += [reply.text for reply in self.slack.thread(DEFAULT_CHANNEL_ID, message.ts)]
            texts += [str(block) for block in message.blocks]
        texts += [str(response.body) for response in self.slack.responses()]
        return "\n".join(texts)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    codec = SwitchableWire()
    with LabServer(organisation, auth="ntlm",
                   wire=WireCodec(to_psobject=codec.to_psobject,
                                  error_record=wire.error_record)) as lab, \
            SlackStandIn(socket_mode=False) as slack:
        user = lab.users[0]
        settings = Settings(
            servers=(ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm",
                                    connect_timeout=3, operation_timeout=2),),
            slack=SlackSettings(api_url=slack.api_url),
        )
        runtime = build_runtime(
            settings, mode="http", environ={},
            secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
            trust=trust_store_for(TrustSettings(include_certifi=False),
                                  organisation.public_root_certificates()),
            credentials=lambda _: Credentials(f"{user.domain}\\{user.name}", user.password),
        )
        with BotHTTPServer(runtime.app, port=0) as server:
            yield Harness(slack, lab, server, codec,
                          lambda: runtime.service.wait_until_idle(30))
        runtime.close()


def _lab_fault(**kwargs: Any) -> Callable[[Harness], None]:
    def apply(harness: Harness) -> None:
        harness.lab.faults = LabFaults(**kwargs)
    return apply


def _corrupt(harness: Harness) -> None:
    harness.codec.corrupt_certificates = True


def _slack_fails(status: int, times: int) -> Callable[[Harness], None]:
    def apply(harness: Harness) -> None:
        harness.slack.fail_next("chat.postMessage", status=status, retry_after=1, times=times)
    return apply


FAULTS: list[tuple[str, Callable[[Harness], None], tuple[str, ...]]] = [
    ("exchange authentication refused", _lab_fault(auth_refused=True),
     ("SERVER_UNREACHABLE", "authentication")),
    ("exchange command time-out", _lab_fault(slow_cmdlets={"Get-Queue": 4}),
     ("SERVER_UNREACHABLE", "did not finish within 2 s")),
    ("connection dropped mid-pipeline", _lab_fault(drop_connection_on="Get-SendConnector"),
     ("SERVER_UNREACHABLE", "connection dropped")),
    ("wsman fault on a cmdlet",
     _lab_fault(wsman_fault=LabWSManFault(cmdlet="Get-Queue", code="0x80338012",
                                          message="The client cannot connect")),
     ("SERVER_UNREACHABLE", "0x80338012")),
    ("malformed certificate payload", _corrupt, ("certificate skipped",)),
    ("slack rate limit (429) on the report", _slack_fails(429, 1), ("Exchange TLS check",)),
]


@pytest.mark.parametrize(("name", "inject", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_reported_readably_and_the_next_command_works(
        harness: Harness, name: str, inject: Callable[[Harness], None],
        expected: tuple[str, ...]) -> None:
    try:
        seen = harness.check(inject)
    finally:
        harness.lab.faults = LabFaults()
        harness.codec.corrupt_certificates = False
    for text in expected:
        assert text in seen, f"{name}: {text!r} not shown"
    assert "Traceback" not in seen
    recovered = harness.check()
    assert "Exchange TLS check: CRITICAL" in recovered
    assert "SMTP_MIXED_TRUST_BINDING" in recovered


def test_slack_server_error_on_the_report_tells_the_requester(harness: Harness) -> None:
    seen = harness.check(_slack_fails(500, 5))
    assert "I could not post the report in this channel (internal_error)" in seen
    assert "Traceback" not in seen
    assert "Exchange TLS check: CRITICAL" in harness.check()
