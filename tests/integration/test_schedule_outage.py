"""Scheduled posts when the bot's database goes away in the middle of one: the post is neither
lost nor doubled.

PostgreSQL through a TCP proxy the test cuts and restores (:class:`tests.tcp_proxy.CuttableProxy`);
two replicas (each a :class:`ScheduleRunner` with its own engine through the proxy) share the
outage. The claim lease is 1 s of real time (the scheduler's retries run in real time); the
replicas' clock is a :class:`tests.clocks.ManualClock` the test moves past the lease.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from bot.analysis.model import FleetReport, ServerAnalysis
from bot.analysis.verdict import build_report
from bot.config import ScheduleSettings, ServerSettings, Settings
from bot.health import findings_json, summarise
from bot.render.blocks import SlackMessage
from bot.render.health import NO_COMPARISON, render_health_summary
from bot.schedule import FireOutcome, ScheduleRunner
from bot.storage import create_engine_from_url, upgrade
from bot.storage.repository import Repository
from bot.storage.schema import schedule_fires
from tests.clocks import ManualClock
from tests.tcp_proxy import CuttableProxy

pytest_plugins = ("tests.conftest_db",)

ON_POSTGRESQL = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
CHANNEL = "C0HEALTH"
LEAP_DAY = "0 8 29 2 *"
"""Not due in real time while the tests run; every fire here is started by the test."""
FIRE_TIME = datetime(2024, 2, 29, 8, tzinfo=UTC)
CLAIMED_AT = FIRE_TIME + timedelta(seconds=30)
LEASE = timedelta(seconds=1)
AFTER_THE_LEASE = CLAIMED_AT + 2 * LEASE
SERVERS = (ServerSettings(name="EX01", url="http://ex01.contoso.com/PowerShell/",
                          auth="kerberos"),)
SETTINGS = Settings(servers=SERVERS, schedules=(
    ScheduleSettings(channel=CHANNEL, cron=LEAP_DAY, timezone="UTC"),))


def analysis(name: str) -> ServerAnalysis:
    return ServerAnalysis(name=name, fqdn=f"{name.lower()}.contoso.com", reachable=True,
                          error=None, certificates=(), send_connectors=(), outbound=(),
                          queues=(), findings=(), plan=None)


def fleet(servers: tuple[ServerSettings, ...]) -> FleetReport:
    return build_report([analysis(s.name) for s in servers], CLAIMED_AT)


def text_of(message: SlackMessage) -> str:
    return message.text + json.dumps(list(message.blocks))


@dataclass
class Posts:
    """A :class:`bot.schedule.PostMessage` that keeps what was posted."""

    made: list[tuple[str, SlackMessage, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, channel: str, message: SlackMessage, thread_ts: str | None) -> str:
        with self.lock:
            self.made.append((channel, message, thread_ts))
            return f"1700000000.{len(self.made):06d}"

    @property
    def channel_messages(self) -> list[SlackMessage]:
        with self.lock:
            return [message for _, message, thread in self.made if thread is None]


class ClaimSpy(Repository):
    """A replica's repository that notes each claim: its lease and its result, or "error"."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.claims: list[tuple[timedelta | None, bool | str]] = []

    def claim_schedule_fire(self, schedule_id: str, fire_time: datetime, *, owner: str,
                            now: datetime, lease: timedelta | None = None) -> bool:
        try:
            claimed = super().claim_schedule_fire(schedule_id, fire_time, owner=owner, now=now,
                                                  lease=lease)
        except Exception:
            self.claims.append((lease, "error"))
            raise
        self.claims.append((lease, claimed))
        return claimed

    def failed_claims(self) -> int:
        return sum(result == "error" for _, result in self.claims)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@dataclass
class Database:
    proxy: CuttableProxy
    direct: Repository
    """On the database itself, not through the proxy (another process looking)."""
    replica_repository: Callable[[], ClaimSpy]
    """Each call: a repository on an engine of its own, through the proxy."""

    def fire_rows(self) -> list[tuple[str, datetime | None]]:
        with self.direct.engine.connect() as connection:
            return [(row.claimed_by, row.completed_at)
                    for row in connection.execute(select(schedule_fires))]


@pytest.fixture
def database(db_url: str, make_engine: Callable[[], Engine]) -> Iterator[Database]:
    direct = make_engine()
    upgrade(direct)
    parsed = make_url(db_url)
    engines: list[Engine] = []
    with CuttableProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy:
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)

        def replica_repository() -> ClaimSpy:
            engines.append(create_engine_from_url(proxied))
            return ClaimSpy(engines[-1])

        yield Database(proxy, Repository(direct), replica_repository)
        for engine in engines:
            engine.dispose()


def replica(repository: Repository, owner: str, clock: ManualClock, posts: Posts, *,
            run_check: Callable[[tuple[ServerSettings, ...]], FleetReport] = fleet,
            database_retry: timedelta = timedelta(milliseconds=50)) -> ScheduleRunner:
    return ScheduleRunner(SETTINGS, repository, run_check=run_check, post=posts, owner=owner,
                          clock=clock, catch_up_on_start=False, database_retry=database_retry,
                          claim_lease=LEASE)


@ON_POSTGRESQL
def test_a_post_whose_database_goes_away_during_its_check_is_made_once_without_comparison(
        database: Database) -> None:
    clock = ManualClock(CLAIMED_AT)
    posts = Posts()
    first_repository, second_repository = (database.replica_repository(),
                                           database.replica_repository())
    second = replica(second_repository, "replica-2", clock, posts)
    schedule = second.schedules[0]
    database.direct.record_check_result(
        "EX01", checked_at=FIRE_TIME - timedelta(days=1), verdict="ok",
        findings_json=findings_json(analysis("EX01"), checked_at=FIRE_TIME - timedelta(days=1),
                                    previous=None), source=schedule.source)

    def the_other_replica_loses_then_the_database_goes(
            servers: tuple[ServerSettings, ...]) -> FleetReport:
        assert second.run_due(schedule.id) == FireOutcome(
            schedule.id, FIRE_TIME, posted=False,
            reason="claimed by another replica (or already posted)")
        report = fleet(servers)
        database.proxy.cut()
        return report

    # replica-1 completes its post more slowly than replica-2 tries to take it over, so a
    # takeover made as soon as the database is back would post it a second time
    first = replica(first_repository, "replica-1", clock, posts,
                    run_check=the_other_replica_loses_then_the_database_goes,
                    database_retry=timedelta(milliseconds=400))
    first.start()
    second.start()
    try:
        outcome = first.run_due(schedule.id)
        assert outcome is not None
        assert outcome.posted
        [posted] = posts.channel_messages
        assert NO_COMPARISON in text_of(posted)
        assert "no comparison with the previous check" in posted.text
        assert "First scheduled check" not in text_of(posted)

        clock.set(AFTER_THE_LEASE)
        wait_until(lambda: second_repository.failed_claims() >= 3)  # its takeover, tried again
        assert database.fire_rows() == [("replica-1", None)]

        database.proxy.restore()
        wait_until(lambda: database.fire_rows()[0][1] is not None)
        wait_until(lambda: second_repository.claims[-1] == (LEASE, False), timeout=5)
    finally:
        first.shutdown(wait=True)
        second.shutdown(wait=True)
    assert len(posts.channel_messages) == 1
    assert database.fire_rows()[0][0] == "replica-1"
    after_the_outage = [claim for claim in second_repository.claims if claim[1] != "error"]
    assert after_the_outage[-2:] == [(None, False), (LEASE, False)], (
        "once the database is back the claim is not taken over at once, but after a lease")


@ON_POSTGRESQL
def test_a_takeover_that_finds_the_database_unavailable_is_tried_again_and_posted_once(
        database: Database) -> None:
    clock = ManualClock(CLAIMED_AT)
    posts = Posts()
    repository = database.replica_repository()
    second = replica(repository, "replica-2", clock, posts)
    schedule = second.schedules[0].id
    assert database.direct.claim_schedule_fire(schedule, FIRE_TIME, owner="replica-1",
                                               now=CLAIMED_AT, lease=LEASE)  # then it dies
    second.start()
    try:
        assert second.run_due(schedule) == FireOutcome(
            schedule, FIRE_TIME, posted=False,
            reason="claimed by another replica (or already posted)")
        database.proxy.cut()
        clock.set(AFTER_THE_LEASE)
        wait_until(lambda: repository.failed_claims() >= 3)
        assert posts.channel_messages == []

        database.proxy.restore()
        wait_until(lambda: database.fire_rows()[0][1] is not None)
    finally:
        second.shutdown(wait=True)
    assert len(posts.channel_messages) == 1
    assert NO_COMPARISON not in text_of(posts.channel_messages[0])
    assert database.fire_rows()[0][0] == "replica-2"
    assert [claim for claim in repository.claims if claim[1] != "error"][-2:] == [
        (None, False), (LEASE, True)]


def test_a_summary_without_the_previous_results_says_the_comparison_is_missing() -> None:
    stored = findings_json(analysis("EX01"), checked_at=FIRE_TIME, previous=None)
    summary = summarise(fleet(SERVERS), {"EX01": stored}, CLAIMED_AT,
                        previous_unavailable=True)
    assert not summary.compared_any
    assert summary.first_checks == ()
    channel, *_ = render_health_summary(summary, schedule_label="label")
    assert NO_COMPARISON in text_of(channel)
    assert "First scheduled check" not in text_of(channel)
    compared, *_ = render_health_summary(summarise(fleet(SERVERS), {"EX01": stored}, CLAIMED_AT),
                                         schedule_label="label")
    assert NO_COMPARISON not in text_of(compared)
