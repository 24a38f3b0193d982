"""The bot's database unavailable for a while: what people see, that the bot keeps serving and
serves normally once the database is back, and that no audit event is lost or invented.

A real outage, not a mock. On PostgreSQL the bot talks to the database through a TCP proxy
(:class:`tests.tcp_proxy.CuttableProxy`) that the test cuts (every connection closed, new ones
refused) and restores, or cuts at a chosen moment of a transaction: just before the audit event
of an approval reaches the database, or after the database committed but before the bot heard
so. On SQLite the file goes away (the bot's connections are closed and a directory stands in
its place). The bot is driven as in production: signed HTTP requests in, Slack Web API calls
out to the stand-in, the lab behind it; the scheduled posts run on the bot's scheduler.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from bot.analysis.model import RemediationPlan
from bot.app import BotRuntime, SlackSecrets, build_runtime, run_bot
from bot.audit import AuditEvent
from bot.config import (
    ApprovalSettings,
    ScheduleSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    StorageSettings,
    TrustSettings,
)
from bot.exchange.session import Credentials
from bot.http_server import BotHTTPServer
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import parse_state
from bot.remediation.states import State
from bot.remediation_service import RemediationService
from bot.render.blocks import SlackMessage
from bot.render.card import APPROVE_ACTION, DENY_ACTION
from bot.replicas import open_storage
from bot.runner import trust_store_for
from bot.schedule import FireOutcome, PostMessage, ScheduleRunner, web_client_poster
from bot.slack_standin import (
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
from bot.storage import create_engine_from_url
from bot.storage.outage import CommitOutcomeUnknown, outcome_unknown, unavailable_reason
from bot.storage.repository import Repository
from bot.storage.schema import schedule_fires
from bot.transcript import buttons_of
from tests.clocks import ManualClock, TickingClock
from tests.slack_bots import request_id_of
from tests.tcp_proxy import CuttableProxy

pytest_plugins = ("tests.conftest_db",)

STATES = Path(__file__).resolve().parents[2] / "bot" / "lab" / "states"
CHANNEL = DEFAULT_CHANNEL_ID
HEALTH = "C0HEALTH"
REQUESTER = DEFAULT_USER_ID
"""Runs the checks; an approver and the admin."""
APPROVER = "U0APPROVER1"
UNAVAILABLE = ("was not done: the bot's database is unavailable, so nothing was changed. "
               "Please try again in a moment.")
NOT_SHOWN = ("Traceback", "OperationalError", "psycopg", "sqlite3", "Connection refused",
             "unable to open")
"""What a person must never read: stack traces, driver errors."""
LEAP_DAY = "0 8 29 2 *"
"""A cron schedule that is not due in real time while the tests run (next: 2028-02-29)."""
FIRE_TIME = datetime(2024, 2, 29, 8, tzinfo=UTC)
ON_POSTGRESQL = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


class Outage(Protocol):
    def cut(self) -> None: ...

    def restore(self) -> None: ...


class SqliteFileOutage:
    """The SQLite file goes away: the bot's pooled connections are closed and a directory
    stands where the file was, so every connection fails until :meth:`restore`."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self._moved: list[tuple[Path, Path]] = []

    def cut(self) -> None:
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            kept = Path(f"{self.path}{suffix}")
            if kept.exists():
                away = kept.with_name(kept.name + ".away")
                kept.rename(away)
                self._moved.append((away, kept))
        self.path.mkdir()

    def restore(self) -> None:
        self.path.rmdir()
        for away, kept in self._moved:
            away.rename(kept)
        self._moved.clear()


@dataclass
class Bot:
    slack: SlackStandIn
    lab: LabServer
    org: ExchangeOrganisation
    runtime: BotRuntime
    server: BotHTTPServer
    outage: Outage
    db_url: str
    """The database itself (not through the proxy), for looking at it."""

    @property
    def remediation(self) -> RemediationService:
        assert self.runtime.remediation is not None
        return self.runtime.remediation

    def idle(self) -> None:
        assert self.runtime.service.wait_until_idle(30)

    def command(self, text: str, user: str = REQUESTER) -> list[str]:
        """Type ``/exchange-tls TEXT``; what the user was told privately after the ack."""
        told = len(self.slack.responses())
        status, _ = post(self.server.events_url, slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET, text=text, user_id=user, channel_id=CHANNEL,
            response_url=self.slack.response_url(channel_id=CHANNEL, user_id=user)))
        assert status == 200
        self.idle()
        return self.private()[told:]

    def press(self, card: StoredMessage, action_id: str, user: str = APPROVER) -> list[str]:
        """Click a button the card shows now; what the clicker was told privately."""
        current = self.current(card)
        (value,) = [b.value for b in buttons_of(current.blocks) if b.action_id == action_id]
        assert value is not None
        return self.click(current, action_id, value, user)

    def click(self, message: StoredMessage, action_id: str, value: str,
              user: str = APPROVER) -> list[str]:
        """A signed click on ``message`` (whatever buttons it shows); what ``user`` is told."""
        told = len(self.slack.responses())
        status, _ = post(self.server.events_url, block_actions(
            signing_secret=DEFAULT_SIGNING_SECRET, action_id=action_id, value=value,
            user_id=user, channel_id=CHANNEL, message_ts=message.ts,
            message=message.to_slack(),
            response_url=self.slack.response_url(channel_id=CHANNEL, user_id=user,
                                                  message_ts=message.ts)))
        assert status == 200
        self.idle()
        return self.private()[told:]

    def private(self) -> list[str]:
        return [str(r.body.get("text")) for r in self.slack.responses()]

    def channel(self) -> list[str]:
        return [m.text for m in self.slack.messages(CHANNEL)]

    def cards(self) -> list[StoredMessage]:
        return [m for m in self.slack.messages(CHANNEL)
                if m.text.startswith("Remediation request")]

    def current(self, card: StoredMessage) -> StoredMessage:
        found = self.slack.message(CHANNEL, card.ts)
        assert found is not None
        return found

    def buttons(self, card: StoredMessage) -> list[str]:
        return [b.label for b in buttons_of(self.current(card).blocks)]

    def lines(self, card: StoredMessage) -> list[str]:
        return [m.text for m in self.slack.thread(CHANNEL, card.ts)[1:]]

    def events(self) -> list[AuditEvent]:
        return self.remediation.audit.events()

    def state(self, card: StoredMessage) -> State:
        request = self.remediation.repository.get_request(request_id_of(card))
        assert request is not None
        return request.state

    def calls(self, cmdlet: str) -> int:
        return sum(1 for entry in self.org.call_log() if entry.cmdlet == cmdlet)


def proxied(url: str, proxy: CuttableProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


def assert_readable(texts: list[str]) -> None:
    for text in texts:
        for hidden in NOT_SHOWN:
            assert hidden not in text, text


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    """The bot on the test database (PostgreSQL through the proxy), the lab with the KB 2888788
    fault, the Slack stand-in; approvers configured, so checks bring request cards."""
    with ExitStack() as stack:
        proxy: CuttableProxy | None = None
        url = db_url
        if not db_url.startswith("sqlite"):
            parsed = make_url(db_url)
            proxy = stack.enter_context(CuttableProxy(parsed.host or "127.0.0.1",
                                                      parsed.port or 5432))
            url = proxied(db_url, proxy)
        org = ExchangeOrganisation(
            parse_state((STATES / "kb-2888788.yaml").read_text("utf-8"), source="kb",
                        now=datetime.now(UTC)), clock=lambda: datetime.now(UTC))
        lab = stack.enter_context(LabServer(org, auth="ntlm"))
        slack = stack.enter_context(SlackStandIn(
            users=[StandInUser(REQUESTER, "alex", "Alex Admin", is_admin=True),
                   StandInUser(APPROVER, "sam", "Sam Approver")],
            channels=[StandInChannel(CHANNEL, "exchange-ops"),
                      StandInChannel(HEALTH, "exchange-health")], socket_mode=False))
        settings = Settings(
            servers=(ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm",
                                    connect_timeout=5, operation_timeout=20),),
            slack=SlackSettings(api_url=slack.api_url),
            approval=ApprovalSettings(approvers=(REQUESTER, APPROVER), admins=(REQUESTER,),
                                      required=1),
            storage=StorageSettings(url=url))
        user = lab.users[0]
        storage = open_storage(settings, secrets=[user.password])
        runtime = build_runtime(
            settings, mode="http", environ={},
            secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
            trust=trust_store_for(TrustSettings(include_certifi=False),
                                  org.public_root_certificates()),
            credentials=lambda _server: Credentials(user.qualified_name, user.password),
            storage=storage, replica="replica-1",
            clock=TickingClock(datetime.now(UTC), timedelta(milliseconds=1)))
        stack.callback(runtime.close, 30)
        assert runtime.remediation is not None
        assert runtime.remediation.wait_started(10)
        server = stack.enter_context(BotHTTPServer(runtime.app, port=0))
        outage: Outage
        if proxy is not None:
            outage = proxy
        else:
            outage = SqliteFileOutage(Path(make_url(db_url).database or ""), storage.engine)
        yield Bot(slack, lab, org, runtime, server, outage, db_url)


def check_card(bot: Bot) -> StoredMessage:
    """``check EX01`` with the database up: the report and a pending request's card."""
    cards = len(bot.cards())
    assert bot.command("check EX01") == []
    assert len(bot.cards()) == cards + 1
    return bot.cards()[-1]


# --------------------------------------------------------------------------- commands, clicks


def test_during_an_outage_every_command_and_click_says_so_and_afterwards_all_works(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    card = check_card(bot)
    request_id = request_id_of(card)
    trail = bot.events()
    assert [e.event_type for e in trail] == ["request_created"]

    bot.outage.cut()
    reports = len(bot.channel())
    told = bot.command("check EX01")
    assert len(bot.channel()) == reports + 1, "the report is posted all the same"
    assert bot.channel()[-1].startswith("Exchange TLS check: CRITICAL")
    assert told == ["Error: The report is complete, but the bot's database is unavailable: its "
                    "result is not kept for /exchange-tls status and no remediation request "
                    "was made. Run the check again once the database is back."]
    assert len(bot.cards()) == 1
    seen = list(told)
    for text, what in (("status", "status request"), ("audit", "audit request"),
                       ("freeze", "freeze")):
        told = bot.command(text)
        assert told == [f"Error: Your {what} {UNAVAILABLE}"], text
        seen += told
    with caplog.at_level(logging.WARNING, logger="bot.service"):
        for action, word in ((APPROVE_ACTION, "approve"), (DENY_ACTION, "deny")):
            told = bot.press(card, action)
            assert told == [f"Error: Your {word} of {request_id} {UNAVAILABLE}"]
            seen += told
    assert_readable(seen + bot.channel())
    assert bot.buttons(card) == ["Approve", "Deny"]
    assert bot.lines(card) == []
    assert bot.calls("Set-SendConnector") == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.service"]
    assert any(f"approve of {request_id} for {APPROVER} not done: the database is unavailable"
               in line and "not audited" in line for line in warnings)

    bot.outage.restore()
    assert bot.events() == trail, "nothing was audited that did not happen"
    assert bot.remediation.audit.verify().ok
    assert not bot.remediation.repository.get_freeze().frozen
    assert bot.state(card) is State.PENDING
    (status,) = bot.command("status")
    assert status.startswith("Exchange TLS status: 1 servers, 1 open requests")
    assert "EX01" in json.dumps(bot.slack.responses()[-1].body)
    (audit,) = bot.command("audit")
    assert audit == "Audit trail: the latest events: 1 event"
    assert "chain verified" in json.dumps(bot.slack.responses()[-1].body)

    assert bot.press(card, APPROVE_ACTION) == []
    assert bot.state(card) is State.SUCCEEDED
    assert bot.calls("Set-SendConnector") == 1
    types = [e.event_type for e in bot.events()]
    assert types[:3] == ["request_created", "approved", "execution_started"]
    assert types[-1] == "execution_finished"
    assert bot.remediation.audit.verify().ok
    reports = sum(text.startswith("Exchange TLS check") for text in bot.channel())
    assert bot.command("check EX01") == []
    assert sum(text.startswith("Exchange TLS check") for text in bot.channel()) == reports + 1


@ON_POSTGRESQL
def test_an_approval_whose_audit_event_cannot_be_written_does_not_happen(bot: Bot) -> None:
    card = check_card(bot)
    trail = bot.events()
    proxy = bot.outage
    assert isinstance(proxy, CuttableProxy)

    proxy.cut_before(b"INSERT INTO audit_events")
    told = bot.press(card, APPROVE_ACTION)
    assert proxy.triggered.is_set()
    assert told == [f"Error: Your approve of {request_id_of(card)} {UNAVAILABLE}"]
    assert bot.calls("Set-SendConnector") == 0

    proxy.restore()
    request = bot.remediation.repository.get_request(request_id_of(card))
    assert request is not None
    assert (request.state, request.approvals) == (State.PENDING, ())
    assert bot.events() == trail
    assert bot.remediation.audit.verify().ok
    assert bot.press(card, APPROVE_ACTION) == []
    assert bot.state(card) is State.SUCCEEDED
    assert bot.calls("Set-SendConnector") == 1


@ON_POSTGRESQL
def test_an_approval_committed_without_the_bot_hearing_so_is_not_called_undone(
        bot: Bot) -> None:
    """The database commits the approval and its audit event, the answer is lost: the clicker
    is told the bot cannot tell; nothing runs; the trail has the approval, whole; the request
    starts when a replica next starts (what a restart's recovery does)."""
    card = check_card(bot)
    proxy = bot.outage
    assert isinstance(proxy, CuttableProxy)

    proxy.cut_after_reply_to(b"COMMIT")
    told = bot.press(card, APPROVE_ACTION)
    assert proxy.triggered.is_set()
    assert told == [
        f"Error: The bot's database went away while your approve of {request_id_of(card)} "
        "was being saved, so I cannot tell whether it was recorded; nothing else was done. "
        "Once the database is back, /exchange-tls audit shows whether it was."]
    assert bot.calls("Set-SendConnector") == 0

    proxy.restore()
    assert bot.state(card) is State.APPROVED
    assert [e.event_type for e in bot.events()] == ["request_created", "approved"]
    assert bot.remediation.audit.verify().ok
    bot.remediation.recover()
    bot.idle()
    assert bot.state(card) is State.SUCCEEDED
    assert bot.calls("Set-SendConnector") == 1
    assert bot.remediation.audit.verify().ok


@ON_POSTGRESQL
def test_a_step_whose_start_cannot_be_audited_is_not_run(bot: Bot) -> None:
    card = check_card(bot)
    proxy = bot.outage
    assert isinstance(proxy, CuttableProxy)

    proxy.cut_before(b"step_started")
    assert bot.press(card, APPROVE_ACTION) == []
    assert proxy.triggered.is_set()
    assert bot.calls("Set-SendConnector") == 0
    assert "database became unavailable during the run" in bot.lines(card)[-1]
    assert "nothing more runs" in bot.lines(card)[-1]

    proxy.restore()
    assert bot.state(card) is State.RUNNING
    assert [e.event_type for e in bot.events()] == [
        "request_created", "approved", "execution_started"]
    assert bot.remediation.audit.verify().ok
    bot.remediation.recover()  # what the next start (or the stale-run look) does
    assert bot.state(card) is State.INTERRUPTED
    assert bot.events()[-1].event_type == "execution_interrupted"
    assert bot.remediation.audit.verify().ok
    assert bot.calls("Set-SendConnector") == 0


# --------------------------------------------------------------------------- scheduled posts


def health_posts(bot: Bot) -> list[StoredMessage]:
    return bot.slack.messages(HEALTH)


def schedule_runner(bot: Bot, repository: Repository, owner: str, *,
                    post: PostMessage | None = None,
                    now: datetime = FIRE_TIME + timedelta(seconds=30)) -> ScheduleRunner:
    """A replica's scheduler, as the bot builds it (its checks, its Web API client), posting
    ``LEAP_DAY`` to ``HEALTH``; its clock stands at ``now`` (just after ``FIRE_TIME``). While
    the database is unavailable it tries again every 50 ms (real time, on its scheduler)."""
    settings = Settings(servers=bot.runtime.settings.servers, schedules=(
        ScheduleSettings(channel=HEALTH, cron=LEAP_DAY, timezone="UTC"),))
    return ScheduleRunner(
        settings, repository, run_check=bot.runtime.service.check_servers,
        post=post or web_client_poster(bot.runtime.client), owner=owner,
        clock=ManualClock(now), catch_up_on_start=False,
        database_retry=timedelta(milliseconds=50))


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many records so far contain ``text``."""
    return sum(text in record.getMessage() for record in caplog.records)


def fire_rows(engine: Engine) -> list[tuple[str, datetime | None]]:
    with engine.connect() as connection:
        return [(row.claimed_by, row.completed_at)
                for row in connection.execute(select(schedule_fires))]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def direct(bot: Bot) -> Iterator[Repository]:
    """Another replica's repository, on the database itself (not through the proxy)."""
    engine = create_engine_from_url(bot.db_url)
    yield Repository(engine)
    engine.dispose()


@ON_POSTGRESQL
def test_a_post_due_during_the_outage_is_claimed_once_the_database_is_back_and_posted_once(
        bot: Bot, direct: Repository, caplog: pytest.LogCaptureFixture) -> None:
    runner = schedule_runner(bot, bot.remediation.repository, "replica-1")
    schedule = runner.schedules[0].id
    bot.outage.cut()
    runner.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bot.schedule"):
            outcome = runner.run_due(schedule)
            assert outcome is not None
            assert not outcome.posted
            assert outcome.reason.startswith("database unavailable: ")
            wait_until(lambda: logged(caplog, "not claimed: the database is unavailable") >= 3)
        assert health_posts(bot) == []
        bot.outage.restore()
        bot.slack.wait_for_message(HEALTH, lambda m: True, timeout=10)
        wait_until(lambda: fire_rows(direct.engine)[0][1] is not None)
        assert runner.run_due(schedule) == FireOutcome(
            schedule, FIRE_TIME, posted=False,
            reason="claimed by another replica (or already posted)")
    finally:
        runner.shutdown(wait=True)
    assert len(health_posts(bot)) == 1
    assert health_posts(bot)[0].text.startswith("Exchange TLS health")
    assert fire_rows(direct.engine)[0][0] == "replica-1"


@ON_POSTGRESQL
def test_a_post_made_as_the_database_went_away_is_completed_later_and_not_repeated(
        bot: Bot, direct: Repository, caplog: pytest.LogCaptureFixture) -> None:
    proxy = bot.outage
    posted = web_client_poster(bot.runtime.client)

    def post_then_lose_the_database(channel: str, message: SlackMessage,
                                    thread_ts: str | None) -> str:
        ts = posted(channel, message, thread_ts)
        if thread_ts is None:
            proxy.cut()
        return ts

    runner = schedule_runner(bot, bot.remediation.repository, "replica-1",
                             post=post_then_lose_the_database)
    schedule = runner.schedules[0].id
    runner.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bot.schedule"):
            outcome = runner.run_due(schedule)
            assert outcome is not None
            assert outcome.posted
            assert len(bot.slack.thread(HEALTH, outcome.ts or "")) > 1, "the thread is posted"
            assert fire_rows(direct.engine) == [("replica-1", None)]
            wait_until(lambda: logged(caplog, "its completion cannot be stored") >= 3)
        proxy.restore()
        wait_until(lambda: fire_rows(direct.engine)[0][1] is not None)
    finally:
        runner.shutdown(wait=True)
    after_the_lease = FIRE_TIME + timedelta(minutes=16)
    other = schedule_runner(bot, direct, "replica-2", now=after_the_lease)
    assert other.fire(schedule, FIRE_TIME, retry_later=False) == FireOutcome(
        schedule, FIRE_TIME, posted=False,
        reason="claimed by another replica (or already posted)")
    assert len(health_posts(bot)) == 1


# --------------------------------------------------------------------------- start-up


@ON_POSTGRESQL
def test_the_bot_does_not_start_without_its_database_and_says_why(
        db_url: str, tmp_path: Path) -> None:
    parsed = make_url(db_url)
    with CuttableProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy, \
            SlackStandIn(socket_mode=False) as slack:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[slack]\napi_url = "{slack.api_url}"\n\n'
            '[[servers]]\nname = "EX01"\nurl = "http://127.0.0.1:1/PowerShell/"\n'
            'auth = "kerberos"\n\n'
            f"[storage]\nurl = {json.dumps(proxied(db_url, proxy))}\n", encoding="utf-8")
        environ = {"SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
                   "SLACK_SIGNING_SECRET": DEFAULT_SIGNING_SECRET}

        def run(out: io.StringIO, err: io.StringIO, stop: threading.Event) -> int:
            return run_bot(config_path=str(config), mode="http", host="127.0.0.1", port=0,
                           out=out, err=err, environ=environ, stop=stop, freeze_heap=False)

        proxy.cut()
        out, err = io.StringIO(), io.StringIO()
        assert run(out, err, threading.Event()) == 3
        assert out.getvalue() == ""
        assert err.getvalue().startswith(
            f"exchange-tls bot: cannot open the storage at postgresql+psycopg://"
            f"{parsed.username}@127.0.0.1:{proxy.port}/")
        assert "Connection refused" in err.getvalue()
        assert "Traceback" not in err.getvalue()

        proxy.restore()
        out, err = io.StringIO(), io.StringIO()
        stop = threading.Event()
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(run(out, err, stop)))
        thread.start()
        try:
            wait_until(lambda: "listening on " in out.getvalue() or not thread.is_alive())
            events_url = out.getvalue().split("listening on ", 1)[1].split()[0]
            status, _ = post(events_url, slash_command(
                signing_secret=DEFAULT_SIGNING_SECRET, text="status", channel_id=CHANNEL,
                response_url=slack.response_url(channel_id=CHANNEL, user_id=REQUESTER)))
            assert status == 200
            slack.wait_for(lambda: slack.responses() or None)
            assert "EX01" in str(slack.responses()[0].body)
        finally:
            stop.set()
            thread.join(30)
        assert codes == [0], err.getvalue()


# --------------------------------------------------------------------------- what is an outage


def test_outages_are_told_from_other_errors() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    refused = OperationalError("SELECT 1", {}, Exception("connection refused\nmore"))
    assert unavailable_reason(refused) == "connection refused"
    assert not outcome_unknown(refused)
    unknown = CommitOutcomeUnknown("lost while committing")
    unknown.__cause__ = refused
    assert outcome_unknown(unknown)
    assert unavailable_reason(unknown) == "lost while committing"
    assert unavailable_reason(IntegrityError("INSERT", {}, Exception("duplicate"))) is None
    assert unavailable_reason(ValueError("no")) is None


# --------------------------------------------------------------------------- recorded, then lost

RECORDED = ("was recorded, but the bot's database became unavailable before the bot had "
            "finished: request cards may show the earlier state until the database is back, "
            "and what follows (such as the run of an approved request) goes on by itself then.")


def lose_the_database_after(bot: Bot, monkeypatch: pytest.MonkeyPatch, target: object,
                            name: str) -> None:
    """``target.name`` cuts the database once it has returned (what it did is committed)."""
    original = getattr(target, name)

    def then_cut(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        bot.outage.cut()
        return result

    monkeypatch.setattr(target, name, then_cut)


def after_the_lease(bot: Bot) -> None:
    """The bot's clock moves past the execution lease (a replica's recovery look is due)."""
    clock = bot.remediation.clock
    assert isinstance(clock, TickingClock)
    clock.advance(bot.remediation.execution_lease + timedelta(minutes=1))


@ON_POSTGRESQL
def test_an_approval_recorded_before_the_database_went_away_is_not_called_undone_and_runs_later(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    card = check_card(bot)
    request_id = request_id_of(card)
    lose_the_database_after(bot, monkeypatch, bot.remediation.repository, "approve")
    told = bot.press(card, APPROVE_ACTION)
    assert told == [f"Error: Your approve of {request_id} {RECORDED}"]
    assert_readable(told)
    assert bot.calls("Set-SendConnector") == 0
    assert bot.buttons(card) == ["Approve", "Deny"], "the card missed the approval"
    assert bot.remediation.cards_behind == {request_id}

    monkeypatch.undo()
    bot.outage.restore()
    assert bot.state(card) is State.APPROVED
    bot.remediation.recover_abandoned()
    bot.idle()
    assert bot.remediation.cards_behind == frozenset()
    assert bot.current(card).text.startswith(f"Remediation request {request_id} on EX01: "
                                             "approved")
    assert bot.calls("Set-SendConnector") == 0, "not yet: its replica may still start it"
    after_the_lease(bot)
    bot.remediation.recover_abandoned()
    bot.idle()
    assert bot.state(card) is State.SUCCEEDED
    assert bot.calls("Set-SendConnector") == 1
    assert bot.current(card).text.startswith(f"Remediation request {request_id} on EX01: "
                                             "succeeded")
    assert bot.remediation.audit.verify().ok


@ON_POSTGRESQL
def test_a_run_that_finished_before_the_database_went_away_is_not_called_undone(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    card = check_card(bot)
    lose_the_database_after(bot, monkeypatch, bot.remediation.executor, "run")
    assert bot.press(card, APPROVE_ACTION) == [], "the thread tells how the run ended"
    assert bot.calls("Set-SendConnector") == 1
    assert "request *succeeded*" in bot.lines(card)[-1]
    bot.outage.restore()
    assert bot.state(card) is State.SUCCEEDED


@ON_POSTGRESQL
def test_a_freeze_recorded_before_the_database_went_away_is_said_and_cards_catch_up(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    card = check_card(bot)
    unfrozen = bot.current(card).blocks
    lose_the_database_after(bot, monkeypatch, bot.remediation.repository, "set_freeze")
    assert bot.command("freeze") == [f"Error: Your freeze {RECORDED}"]
    assert "*froze remediation*" in bot.channel()[-1]
    assert bot.current(card).blocks == unfrozen, "the card missed the freeze"

    monkeypatch.undo()
    bot.outage.restore()
    assert bot.remediation.repository.get_freeze().frozen
    bot.remediation.recover_abandoned()
    assert bot.current(card).blocks != unfrozen
    assert "frozen" in json.dumps(bot.current(card).blocks).casefold()
    assert bot.remediation.cards_behind == frozenset()


@ON_POSTGRESQL
def test_a_run_whose_final_commit_is_lost_says_its_end_may_be_recorded_and_catches_up(
        bot: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from bot.remediation import executor

    card = check_card(bot)
    request_id = request_id_of(card)
    proxy = bot.outage
    assert isinstance(proxy, CuttableProxy)
    conclude = executor._Run.conclude

    def lose_the_answer_to_the_end(run: executor._Run, plan: RemediationPlan,
                                   stopped: str | None) -> executor.ExecutionResult:
        proxy.cut_after_reply_to(b"COMMIT")
        return conclude(run, plan, stopped)

    monkeypatch.setattr(executor._Run, "conclude", lose_the_answer_to_the_end)
    with caplog.at_level(logging.WARNING):
        assert bot.press(card, APPROVE_ACTION) == []
    assert proxy.triggered.is_set()
    last = bot.lines(card)[-1]
    assert "the end of the run may have been recorded" in last
    assert "stopped before its next step" not in last
    assert bot.current(card).text.startswith(f"Remediation request {request_id} on EX01: "
                                             "running")
    assert not [r for r in caplog.records if r.exc_info], "outages are one-line warnings"

    monkeypatch.undo()
    proxy.restore()
    assert bot.state(card) is State.SUCCEEDED, "the database had committed it"
    bot.remediation.recover_abandoned()
    assert bot.current(card).text.startswith(f"Remediation request {request_id} on EX01: "
                                             "succeeded")
    assert "the database is back: the end of the run was recorded" in bot.lines(card)[-1]
    assert bot.remediation.cards_behind == frozenset()
    lines = len(bot.lines(card))
    bot.remediation.recover_abandoned()
    assert len(bot.lines(card)) == lines, "said once"


@ON_POSTGRESQL
def test_a_card_whose_message_cannot_be_stored_is_withdrawn_and_its_buttons_refused(
        bot: Bot) -> None:
    proxy = bot.outage
    assert isinstance(proxy, CuttableProxy)
    proxy.cut_before(b"UPDATE requests SET channel")
    told = bot.command("check EX01")
    assert proxy.triggered.is_set()
    assert bot.cards() == [], "no card with buttons is left in the channel"
    (withdrawn,) = [m for m in bot.slack.messages(CHANNEL) if "could not be recorded" in m.text]
    assert buttons_of(withdrawn.blocks) == []
    request_id = withdrawn.text.split("request ", 1)[1].split()[0]
    notice = (f"Error: The remediation request {request_id} for EX01 could not be recorded: "
              "the bot's database became unavailable, so it cannot be approved. "
              "Run the check again.")
    assert withdrawn.text == notice
    assert told == [notice]

    proxy.restore()
    request = bot.remediation.repository.get_request(request_id)
    assert request is not None
    assert request.message_ts is None
    (refused,) = bot.click(withdrawn, APPROVE_ACTION, request_id)
    assert refused.startswith(f"Error: Refused: the card of {request_id} is not recorded")
    assert bot.calls("Set-SendConnector") == 0
    stored = bot.remediation.repository.get_request(request_id)
    assert stored is not None
    assert (stored.state, stored.approvals) == (State.PENDING, ())
    last = bot.events()[-1]
    assert (last.event_type, last.request_id) == ("refused_click", request_id)
    assert last.details_object["code"] == "card_not_recorded"
    assert bot.remediation.audit.verify().ok
