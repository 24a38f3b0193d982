"""The scheduler inside the bot: storage and replica settings, results any replica can show,
``/exchange-tls status`` with the scheduled posts, and fire times across daylight-saving
changes and downtime with an injected clock (two replicas on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from sqlalchemy import Engine, select, text

from bot.analysis.analyse import unreachable_server
from bot.analysis.model import Finding, FindingCode, FleetReport, ServerAnalysis
from bot.analysis.verdict import build_report
from bot.app import BotStartError, SlackSecrets, build_runtime
from bot.config import (
    ScheduleSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    StorageSettings,
    TrustSettings,
)
from bot.health import findings_json
from bot.http_server import BotHTTPServer
from bot.remediation.model import RemediationRequest, new_request
from bot.render.blocks import ScheduleStatus, ServerStatus, render_status
from bot.replicas import (
    CLAIM_LEASE_ENV,
    REPLICA_ID_ENV,
    ReplicaSettingError,
    Storage,
    StorageError,
    claim_lease,
    open_storage,
    replica_id,
    secret_values,
)
from bot.runner import trust_store_for
from bot.schedule import DEFAULT_CLAIM_LEASE, PostMessage, ScheduleRunner, web_client_poster
from bot.service import LastResult, RepositoryResultStore
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_USER_ID,
    SlackStandIn,
    post,
    slash_command,
    validate_message,
)
from bot.storage import upgrade
from bot.storage.repository import Repository
from bot.storage.schema import schedule_fires
from tests.clocks import ManualClock

pytest_plugins = ("tests.conftest_db",)

CHANNEL = "C0HEALTH"
LEAP_DAY = "0 8 29 2 *"
"""Not due around any test run (no catch-up post at start); next: 2028-02-29."""
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
SERVERS = (  # nothing listens there: nothing is contacted if a check ever ran
    ServerSettings(name="EX01", url="http://127.0.0.1:1/PowerShell/", auth="kerberos"),
    ServerSettings(name="EX02", url="http://127.0.0.1:1/PowerShell/", auth="kerberos"),
)
MIXED = Finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "critical", "Mixed trust on SMTP.",
                ("59" + "AB" * 19, "88" + "CD" * 19), "Set-SendConnector ...")
WEAK = Finding(FindingCode.CERT_WEAK_SIGNATURE, "warning", "SHA-1 signature.", ("88" + "CD" * 19,),
               "Renew the certificate.")


def analysis(name: str, *findings: Finding) -> ServerAnalysis:
    return ServerAnalysis(name=name, fqdn=f"{name.lower()}.contoso.com", reachable=True,
                          error=None, certificates=(), send_connectors=(), outbound=(),
                          queues=(), findings=findings, plan=None)


class CountingCheck:
    """Stands in for the fleet check: every server has MIXED; counts the calls."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, servers: tuple[ServerSettings, ...]) -> FleetReport:
        with self._lock:
            self.calls += 1
        return build_report([analysis(s.name, MIXED) for s in servers], self.clock())


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(socket_mode=False) as standin:
        yield standin


@pytest.fixture
def poster(slack: SlackStandIn) -> PostMessage:
    return web_client_poster(WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url))


@pytest.fixture
def new_repository(make_engine: Callable[[], Engine]) -> Callable[[], Repository]:
    """Each call: a repository on an engine of its own (a replica) on the migrated database."""
    upgrade(make_engine())
    return lambda: Repository(make_engine())


def cron_settings(cron: str) -> Settings:
    return Settings(servers=SERVERS, schedules=(ScheduleSettings(
        channel=CHANNEL, cron=cron, timezone="Europe/Amsterdam", mention="S0ONCALL"),))


def replicas(config: Settings, new_repository: Callable[[], Repository], poster: PostMessage,
             clock: ManualClock, check: CountingCheck) -> tuple[list[ScheduleRunner], Engine]:
    """Two replicas, each on its own engine; and an engine to look at the database with."""
    repositories = [new_repository() for _ in range(2)]
    runners = [ScheduleRunner(config, repository, run_check=check, post=poster,
                              owner=f"replica-{n}", clock=clock)
               for n, repository in enumerate(repositories)]
    return runners, repositories[0].engine


def fired(engine: Engine) -> list[datetime]:
    with engine.connect() as connection:
        return [row.fire_time for row in connection.execute(
            select(schedule_fires).order_by(schedule_fires.c.fire_time))]


def step_through(runners: list[ScheduleRunner], clock: ManualClock, start: datetime,
                 end: datetime, step: timedelta) -> None:
    """Move the clock from ``start`` to ``end`` and run every replica's job at each step
    (far more often than the scheduler would: a fire time must still post once)."""
    schedule = runners[0].schedules[0].id
    moment = start
    while moment <= end:
        clock.set(moment)
        for runner in runners:
            runner.run_due(schedule)
        moment += step


# --- daylight saving and downtime, through the runner ---------------------------------------


def test_autumn_repeated_hour_posts_once_at_the_first_two_oclock(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        poster: PostMessage) -> None:
    # 2025-10-26: Amsterdam goes from 03:00 CEST back to 02:00 CET; 02:00 happens twice.
    clock = ManualClock(datetime(2025, 10, 25, 22, 0, tzinfo=UTC))
    check = CountingCheck(clock)
    runners, engine = replicas(cron_settings("0 2 * * *"), new_repository, poster, clock,
                               check)
    step_through(runners, clock, datetime(2025, 10, 25, 22, 0, tzinfo=UTC),
                 datetime(2025, 10, 26, 3, 0, tzinfo=UTC), timedelta(minutes=5))

    assert fired(engine) == [datetime(2025, 10, 26, 0, 0, tzinfo=UTC)], "02:00 CEST only"
    assert len(slack.messages(CHANNEL)) == 1
    assert check.calls == 1


def test_spring_gap_posts_once_just_after_it(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        poster: PostMessage) -> None:
    # 2025-03-30: Amsterdam jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    clock = ManualClock(datetime(2025, 3, 29, 23, 0, tzinfo=UTC))
    check = CountingCheck(clock)
    runners, engine = replicas(cron_settings("30 2 * * *"), new_repository, poster, clock,
                               check)
    step_through(runners, clock, datetime(2025, 3, 29, 23, 0, tzinfo=UTC),
                 datetime(2025, 3, 30, 4, 0, tzinfo=UTC), timedelta(minutes=5))

    (only,) = fired(engine)
    assert only == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert only.astimezone(AMSTERDAM).strftime("%H:%M %Z") == "03:30 CEST"
    assert len(slack.messages(CHANNEL)) == 1


def test_downtime_across_the_autumn_change_posts_the_latest_missed_morning_once(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        poster: PostMessage) -> None:
    """Posted Saturday 08:00 CEST; down from Saturday 09:00 until Sunday 10:30 CET, over the
    change; both replicas come back: Sunday 08:00 CET (07:00 UTC) is posted once."""
    clock = ManualClock(datetime(2025, 10, 25, 6, 0, 30, tzinfo=UTC))
    check = CountingCheck(clock)
    config = cron_settings("0 8 * * *")
    before = ScheduleRunner(config, new_repository(), run_check=check, post=poster,
                            owner="replica-0", clock=clock)
    outcome = before.run_due(before.schedules[0].id)
    assert outcome is not None
    assert outcome.posted

    clock.set(datetime(2025, 10, 26, 9, 30, tzinfo=UTC))  # 10:30 CET
    runners, engine = replicas(config, new_repository, poster, clock, check)
    outcomes = [o for runner in runners for o in runner.catch_up()]

    assert [(o.fire_time, o.posted) for o in outcomes if o.posted] == [
        (datetime(2025, 10, 26, 7, 0, tzinfo=UTC), True)]
    assert fired(engine) == [
        datetime(2025, 10, 25, 6, 0, tzinfo=UTC), datetime(2025, 10, 26, 7, 0, tzinfo=UTC)]
    assert len(slack.messages(CHANNEL)) == 2
    (after_restart,) = runners[0].next_runs()
    assert after_restart.next_fire_time == datetime(2025, 10, 27, 8, 0, tzinfo=AMSTERDAM)
    assert after_restart.next_fire_time.utcoffset() == timedelta(hours=1)


# --- results any replica can show ------------------------------------------------------------


def test_each_replica_shows_the_latest_result_of_any_replica(
        new_repository: Callable[[], Repository]) -> None:
    one, other = RepositoryResultStore(new_repository()), RepositoryResultStore(new_repository())
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    weak = analysis("EX01", WEAK)
    one.record(LastResult("EX01", "warning", at, "ignored: derived from the findings",
                          findings_json(weak, checked_at=at, previous=None)))
    shown = other.last("ex01")
    assert shown is not None
    assert (shown.server, shown.verdict, shown.checked_at) == ("EX01", "warning", at)
    assert shown.summary == "1 warning (CERT_WEAK_SIGNATURE)"
    assert other.last("EX02") is None

    repository = new_repository()  # a scheduled post, stored by a third replica, later
    down = unreachable_server("EX01", None, "connection refused")
    repository.record_check_result(
        "EX01", checked_at=at + timedelta(hours=1), verdict="unknown",
        findings_json=findings_json(down, checked_at=at, previous=None),
        source="schedule:health-0123456789abcdef")
    latest = one.last("EX01")
    assert latest is not None
    assert (latest.verdict, latest.summary) == ("unknown", "unreachable: connection refused")


def test_an_unreadable_stored_result_shows_without_a_summary(
        new_repository: Callable[[], Repository]) -> None:
    repository = new_repository()
    repository.record_check_result("EX01", checked_at=datetime(2026, 3, 2, tzinfo=UTC),
                                   verdict="sideways", findings_json="{not json", source=None)
    shown = RepositoryResultStore(repository).last("EX01")
    assert shown is not None
    assert (shown.verdict, shown.summary) == ("unknown", "")


# --- /exchange-tls status ---------------------------------------------------------------------


def test_status_lists_the_schedules_before_a_long_server_list() -> None:
    next_run = datetime(2026, 3, 30, 8, 0, tzinfo=AMSTERDAM)
    schedules = [ScheduleStatus("0 8 * * 1-5 (Europe/Amsterdam) · all servers", CHANNEL,
                                next_run),
                 ScheduleStatus("every 30 s · <!channel>", "not-a-channel", None)]
    servers = [ServerStatus(f"EX{i:03d}", "ok", next_run, "fine " * 50) for i in range(500)]
    message = render_status(servers, [], frozen=False, schedules=schedules)
    shown = json.dumps(message.blocks)
    assert validate_message(message.text, message.blocks) == []
    assert f"<#{CHANNEL}>" in shown
    assert f"<!date^{int(next_run.timestamp())}^" in shown
    assert "(Mon 08:00 CEST)" in shown
    assert "no further runs" in shown
    assert "<!channel>" not in shown
    assert "&lt;!channel&gt;" in shown
    assert message.text.endswith(", 2 scheduled posts")
    assert "None are configured." in json.dumps(
        render_status([], [], frozen=False, schedules=[]).blocks)


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    opened = open_storage(Settings(storage=StorageSettings(url=db_url)))
    yield opened
    opened.close()


def test_the_bot_with_storage_answers_status_with_schedules_and_stored_results(
        storage: Storage, db_url: str, slack: SlackStandIn) -> None:
    settings = Settings(
        servers=SERVERS,
        slack=SlackSettings(api_url=slack.api_url),
        storage=StorageSettings(url=db_url),
        schedules=(ScheduleSettings(channel=CHANNEL, cron=LEAP_DAY,
                                    timezone="Europe/Amsterdam"),),
    )
    at = datetime.now(UTC) - timedelta(minutes=5)
    elsewhere = Repository(storage.engine)  # another replica's scheduled post
    elsewhere.record_check_result("EX02", checked_at=at, verdict="critical",
                                  findings_json=findings_json(analysis("EX02", MIXED),
                                                              checked_at=at, previous=None),
                                  source="schedule:health-0123456789abcdef")
    expired: list[RemediationRequest] = []
    runtime = build_runtime(
        settings, mode="http", environ={},
        secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
        trust=trust_store_for(TrustSettings(include_certifi=False), ()),
        storage=storage, replica="replica-test", on_expired=expired.extend)
    assert runtime.schedules is not None
    assert runtime.schedules.owner == "replica-test"
    assert isinstance(runtime.service.results, RepositoryResultStore)
    runtime.start_schedules()
    try:
        with BotHTTPServer(runtime.app, port=0) as server:
            status, _ = post(server.events_url, slash_command(
                signing_secret=DEFAULT_SIGNING_SECRET, text="status",
                response_url=slack.response_url(channel_id=DEFAULT_CHANNEL_ID,
                                                user_id=DEFAULT_USER_ID)))
            assert status == 200
            assert runtime.service.wait_until_idle(10)
        assert runtime.schedules.running
        pending = elsewhere.create_request(new_request(
            kind="remediation", server="EX01", plan_hash="c0ffee" * 10 + "abcd",
            plan_json="{}", requested_by="U0REQUESTER", team_id="T0TEAM", channel="C0OPS",
            now=datetime.now(UTC) - timedelta(hours=1), expires_after=timedelta(minutes=30)))
        assert runtime.schedules.sweep_expired()[0].id == pending.id
    finally:
        runtime.close(5)
    (answer,) = slack.responses()
    shown = json.dumps(answer.body["blocks"], ensure_ascii=False)
    assert validate_message(answer.body["text"], answer.body["blocks"]) == []
    assert "*Scheduled posts*" in shown
    leap_day = int(datetime(2028, 2, 29, 7, 0, tzinfo=UTC).timestamp())
    assert (f"<#{CHANNEL}>: {LEAP_DAY} (Europe/Amsterdam) · all servers · next "
            f"<!date^{leap_day}^") in shown
    assert "(Tue 08:00 CET)" in shown
    assert "*EX01*: never checked" in shown
    assert "*EX02*: critical" in shown
    assert "1 critical (SMTP_MIXED_TRUST_BINDING)" in shown
    assert [r.id for r in expired] == [pending.id], "the sweep's requests reach the hook"
    assert not runtime.schedules.running


def test_without_storage_the_bot_runs_no_scheduler(slack: SlackStandIn) -> None:
    runtime = build_runtime(
        Settings(servers=SERVERS, slack=SlackSettings(api_url=slack.api_url)), mode="http",
        environ={}, secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
        trust=trust_store_for(TrustSettings(include_certifi=False), ()))
    try:
        assert runtime.schedules is None
        assert "Scheduled posts" not in json.dumps(runtime.service.status_message().blocks)
    finally:
        runtime.close(5)


# --- replica settings and storage errors ----------------------------------------------------


def test_replica_id_and_lease_from_the_environment() -> None:
    assert replica_id({REPLICA_ID_ENV: " bot-1 "}) == "bot-1"
    default = replica_id({})
    assert default.endswith(f":{os.getpid()}")
    assert len(replica_id({})) <= 128
    with pytest.raises(ReplicaSettingError, match=REPLICA_ID_ENV):
        replica_id({REPLICA_ID_ENV: "x" * 129})
    assert claim_lease({}) == DEFAULT_CLAIM_LEASE
    assert claim_lease({CLAIM_LEASE_ENV: "45"}) == timedelta(seconds=45)
    for bad in ("soon", "0", "-3", "nan", "1e9"):
        with pytest.raises(ReplicaSettingError, match=CLAIM_LEASE_ENV):
            claim_lease({CLAIM_LEASE_ENV: bad})


def test_a_bad_lease_stops_the_bot_from_starting(storage: Storage, slack: SlackStandIn) -> None:
    with pytest.raises(BotStartError, match=CLAIM_LEASE_ENV):
        build_runtime(
            Settings(servers=SERVERS, slack=SlackSettings(api_url=slack.api_url)),
            mode="http", environ={CLAIM_LEASE_ENV: "never"},
            secrets=SlackSecrets(DEFAULT_BOT_TOKEN, None, DEFAULT_SIGNING_SECRET),
            trust=trust_store_for(TrustSettings(include_certifi=False), ()), storage=storage)


def test_secret_values_are_the_slack_secrets_and_server_passwords() -> None:
    settings = Settings(servers=(ServerSettings(
        name="EX01", url="http://ex01/PowerShell/", auth="basic", username_env="EX_USER",
        password_env="EX_PASSWORD"),))
    environ = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": " ", "EX_USER": "admin",
               "EX_PASSWORD": "hunter2"}
    assert secret_values(settings, environ) == ("xoxb-1", "hunter2")


def test_an_unreachable_database_is_a_clear_start_error_without_the_password() -> None:
    url = "postgresql+psycopg://bot:s3cret@127.0.0.1:1/exchange_tls?connect_timeout=2"
    with pytest.raises(StorageError) as raised:
        open_storage(Settings(storage=StorageSettings(url=url)))
    assert "cannot open the storage at postgresql+psycopg://bot:***@127.0.0.1:1" in str(
        raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_database_newer_than_the_bot_is_refused(db_url: str, db_engine: Engine) -> None:
    upgrade(db_engine)
    with db_engine.begin() as connection:
        connection.execute(text("INSERT INTO schema_version (version, description, applied_at) "
                                "VALUES (999, 'future', '2030-01-01T00:00:00+00:00')"))
    with pytest.raises(StorageError, match="upgrade exchange-tls"):
        open_storage(Settings(storage=StorageSettings(url=db_url)))
