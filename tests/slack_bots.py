"""In-process Slack bots for tests: the bot (HTTP or Socket Mode) with the Slack stand-in, the
lab over WinRM/PSRP behind it, and a real database; the clock is injected (``TickingClock``, a
millisecond a reading)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.app import BotRuntime, Mode, SlackSecrets, build_runtime
from bot.audit import AuditEvent
from bot.config import (
    ApprovalSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    StorageSettings,
    TrustSettings,
)
from bot.exchange.session import Credentials
from bot.http_server import BotHTTPServer
from bot.lab.model import ExchangeOrganisation
from bot.lab.records import LabSendConnectorRecord
from bot.lab.server import LabServer
from bot.lab.state import parse_state
from bot.remediation.model import RemediationRequest
from bot.remediation_service import RemediationService
from bot.replicas import open_storage
from bot.runner import trust_store_for
from bot.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_USER_ID,
    SlackStandIn,
    StandInChannel,
    StandInUser,
    StoredMessage,
    block_actions,
    post,
    slash_command,
)
from bot.socket_mode import SocketModeConnection
from bot.transcript import buttons_of
from tests.clocks import TickingClock
from tests.executor_env import lab_calls, lab_send_connector

STATES = Path(__file__).resolve().parents[1] / "bot" / "lab" / "states"
CHANNEL = DEFAULT_CHANNEL_ID
REQUESTER = DEFAULT_USER_ID
"""Runs the check; an approver and the admin."""
APPROVER = "U0APPROVER1"
GROUP_APPROVER = "U0APPROVER2"
"""An approver only through the user group."""
STRANGER = "U0STRANGER"
GROUP = "S0APPROVERS"
CROWD = tuple(f"U0CROWD{i:02d}" for i in range(10))
"""More members of the approver group, for concurrent clicks."""
REQUEST_ID = re.compile(r"R-[A-Z2-7]{10}")


@dataclass
class SlackBot:
    slack: SlackStandIn
    lab: LabServer
    org: ExchangeOrganisation
    runtime: BotRuntime
    clock: TickingClock
    db_url: str
    connection: SocketModeConnection | None = None
    """Socket Mode; else HTTP mode through ``server``."""
    server: BotHTTPServer | None = None

    @property
    def remediation(self) -> RemediationService:
        assert self.runtime.remediation is not None
        return self.runtime.remediation

    def idle(self) -> None:
        assert self.runtime.service.wait_until_idle(60)

    def command(self, text: str, user: str = REQUESTER) -> dict[str, Any]:
        """Type ``/exchange-tls TEXT``; the acknowledgement."""
        if self.server is None:
            assert self.slack.socket_mode is not None
            envelope = self.slack.send_slash_command(text, user_id=user)
            return self.slack.socket_mode.wait_for_ack(envelope, timeout=5)
        status, body = post(self.server.events_url, slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET, text=text, user_id=user, channel_id=CHANNEL,
            response_url=self.slack.response_url(channel_id=CHANNEL, user_id=user)))
        assert status == 200
        try:
            answer = json.loads(body)
        except ValueError:
            return {"text": body}
        assert isinstance(answer, dict)
        return answer

    def check(self) -> StoredMessage:
        """``check EX01`` and the request card it brings (once the pool is idle)."""
        before = {m.ts for m in self.cards()}
        self.command("check EX01")
        card = self.slack.wait_for_message(
            CHANNEL, lambda m: is_card(m) and m.ts not in before, timeout=30)
        self.idle()
        return card

    def cards(self) -> list[StoredMessage]:
        return [m for m in self.slack.messages(CHANNEL) if is_card(m)]

    def press(self, card: StoredMessage, action_id: str, user: str) -> None:
        """Click a button the card shows now (as Slack would only let you)."""
        self.press_many(card, action_id, [user])

    def press_many(self, card: StoredMessage, action_id: str, users: list[str]) -> None:
        """``users`` click a button the card shows, all at once."""
        current = self.current(card)
        (value,) = [b.value for b in buttons_of(current.blocks) if b.action_id == action_id]
        assert value is not None
        if self.server is None:
            assert self.slack.socket_mode is not None
            envelopes = [self.slack.send_block_action(action_id=action_id, channel_id=CHANNEL,
                                                      message_ts=card.ts, user_id=user)
                         for user in users]
            for envelope in envelopes:
                self.slack.socket_mode.wait_for_ack(envelope, timeout=5)
        else:
            statuses: list[int] = []
            threads = [threading.Thread(target=lambda user=user: statuses.append(
                self._post_click(current, action_id, user, value))) for user in users]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert statuses == [200] * len(users)
        self.idle()

    def press_stale(self, card: StoredMessage, action_id: str, user: str,
                    value: str | None = None) -> None:
        """Click a button the card no longer shows (a client that has not refreshed)."""
        value = value if value is not None else request_id_of(card)
        if self.server is not None:
            assert self._post_click(self.current(card), action_id, user, value) == 200
        else:
            assert self.slack.socket_mode is not None
            envelope = self.slack.socket_mode.send_block_action(
                action_id=action_id, value=value, user_id=user, channel_id=CHANNEL,
                message_ts=card.ts,
                response_url=self.slack.response_url(channel_id=CHANNEL, user_id=user,
                                                      message_ts=card.ts))
            self.slack.socket_mode.wait_for_ack(envelope, timeout=5)
        self.idle()

    def _post_click(self, message: StoredMessage, action_id: str, user: str,
                    value: str) -> int:
        assert self.server is not None
        status, _ = post(self.server.events_url, block_actions(
            signing_secret=DEFAULT_SIGNING_SECRET, action_id=action_id, value=value,
            user_id=user, channel_id=CHANNEL, message_ts=message.ts,
            message=message.to_slack(),
            response_url=self.slack.response_url(channel_id=CHANNEL, user_id=user,
                                                  message_ts=message.ts)))
        return status

    def current(self, card: StoredMessage) -> StoredMessage:
        found = self.slack.message(CHANNEL, card.ts)
        assert found is not None
        return found

    def buttons(self, card: StoredMessage) -> list[str]:
        return [b.label for b in buttons_of(self.current(card).blocks)]

    def card_text(self, card: StoredMessage) -> str:
        return json.dumps(self.current(card).blocks)

    def lines(self, card: StoredMessage) -> list[str]:
        """The card's thread, without the card."""
        return [m.text for m in self.slack.thread(CHANNEL, card.ts)[1:]]

    def request(self, card: StoredMessage) -> RemediationRequest:
        found = self.remediation.repository.get_request(request_id_of(card))
        assert found is not None
        return found

    def events(self, request_id: str | None = None) -> list[AuditEvent]:
        return self.remediation.audit.events(request_id=request_id)

    def calls(self, cmdlet: str) -> list[Any]:
        return lab_calls(self.org, cmdlet)

    def connector(self) -> LabSendConnectorRecord:
        return lab_send_connector(self.org)

    def replica(self, name: str) -> BotRuntime:
        """Another bot replica on the same database, Slack and lab (not connected to Socket
        Mode: drive its remediation service directly)."""
        return _runtime(self.runtime.settings, self.slack, self.lab, self.org, self.clock,
                        replica=name, mode="http")


def is_card(message: StoredMessage) -> bool:
    return message.text.startswith(("Remediation request", "Rollback request"))


def request_id_of(card: StoredMessage) -> str:
    found = REQUEST_ID.search(card.text)
    assert found is not None, card.text
    return found.group(0)


def _runtime(settings: Settings, slack: SlackStandIn, lab: LabServer,
             org: ExchangeOrganisation, clock: TickingClock, *, replica: str,
             mode: Mode) -> BotRuntime:
    user = lab.users[0]
    storage = open_storage(settings, secrets=[user.password])
    return build_runtime(
        settings, mode=mode, environ={},
        secrets=SlackSecrets(DEFAULT_BOT_TOKEN, DEFAULT_APP_TOKEN, DEFAULT_SIGNING_SECRET),
        trust=trust_store_for(TrustSettings(include_certifi=False),
                              org.public_root_certificates()),
        credentials=lambda _server: Credentials(user.qualified_name, user.password),
        storage=storage, replica=replica, clock=clock)


BotFactory = Callable[..., SlackBot]


def bot_factory(stack: ExitStack, db_url: str) -> BotFactory:
    """Makes bots on ``db_url``, each with a lab and a Slack stand-in of its own; ``stack``
    stops them."""
    def make(state: str = "kb-2888788", *, required: int = 1, workers: int = 4,
             approvers: tuple[str, ...] = (REQUESTER, APPROVER, GROUP),
             mode: Mode = "http") -> SlackBot:
        org = ExchangeOrganisation(
            parse_state((STATES / f"{state}.yaml").read_text("utf-8"), source=state,
                        now=datetime.now(UTC)),
            clock=lambda: datetime.now(UTC))
        lab = stack.enter_context(LabServer(org, auth="ntlm"))
        people = [StandInUser(REQUESTER, "alex", "Alex Admin", is_admin=True),
                  StandInUser(APPROVER, "sam", "Sam Approver"),
                  StandInUser(GROUP_APPROVER, "kim", "Kim Approver"),
                  StandInUser(STRANGER, "eve", "Eve Stranger"),
                  *(StandInUser(member, member.lower()) for member in CROWD)]
        slack = stack.enter_context(SlackStandIn(
            users=people, usergroups={GROUP: [GROUP_APPROVER, *CROWD]},
            channels=[StandInChannel(CHANNEL, "exchange-ops")], socket_mode=mode == "socket"))
        settings = Settings(
            servers=tuple(ServerSettings(name=name, url=lab.url_for(name), auth="ntlm",
                                         connect_timeout=5, operation_timeout=20)
                          for name in lab.server_names),
            slack=SlackSettings(api_url=slack.api_url, workers=workers),
            approval=ApprovalSettings(approvers=approvers, admins=(REQUESTER,),
                                      required=required),
            storage=StorageSettings(url=db_url))
        clock = TickingClock(datetime.now(UTC), timedelta(milliseconds=1))
        runtime = _runtime(settings, slack, lab, org, clock, replica="replica-1", mode=mode)
        stack.callback(runtime.close, 30)
        assert runtime.remediation is not None
        assert runtime.remediation.wait_started(10)
        bot = SlackBot(slack, lab, org, runtime, clock, db_url)
        if mode == "http":
            bot.server = stack.enter_context(BotHTTPServer(runtime.app, port=0))
            return bot
        bot.connection = SocketModeConnection(runtime.app, DEFAULT_APP_TOKEN).start()
        stack.callback(bot.connection.stop)
        assert slack.socket_mode is not None
        slack.socket_mode.wait_for_connection(timeout=5)
        return bot

    return make
