"""Scheduled health posts on real databases (SQLite and PostgreSQL, tests/conftest_db.py) and the
Slack stand-in over HTTP: one post per fire time across replicas, missed runs coalesced into one,
results stored for the next post's comparison, lease takeover, the expiry sweep."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import pytest
from slack_sdk import WebClient
from sqlalchemy import Engine, select

from bot.analysis.model import Finding, FindingCode, FleetReport, ServerAnalysis
from bot.analysis.verdict import build_report
from bot.config import ScheduleSettings, ServerSettings, Settings
from bot.health import decode_stored_result
from bot.remediation.model import RemediationRequest, new_request
from bot.remediation.states import State
from bot.schedule import FireOutcome, NextRun, PostMessage, ScheduleRunner, web_client_poster
from bot.slack_standin import DEFAULT_BOT_TOKEN, SlackStandIn, StoredMessage
from bot.storage import upgrade
from bot.storage.repository import Repository
from bot.storage.schema import schedule_fires
from tests.clocks import ManualClock

pytest_plugins = ("tests.conftest_db",)

T = TypeVar("T")
CHANNEL = "C0HEALTH"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SERVERS = (
    ServerSettings(name="EX01", url="http://ex01.contoso.com/PowerShell/", auth="kerberos"),
    ServerSettings(name="EX02", url="http://ex02.contoso.com/PowerShell/", auth="kerberos"),
)
PUBLIC_TP = "59" + "AB" * 19
INTERNAL_TP = "88" + "CD" * 19
MIXED = Finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "critical",
                "SMTP is bound to a public and an internal certificate for ex01.contoso.com.",
                (PUBLIC_TP, INTERNAL_TP),
                "Set-SendConnector -Identity 'Outbound' -TlsCertificateName x")
WEAK = Finding(FindingCode.CERT_WEAK_SIGNATURE, "warning", "SHA-1 signature.", (INTERNAL_TP,),
               "Renew the certificate.")


def real_clock() -> datetime:
    return datetime.now(UTC)


def analysis(name: str, *findings: Finding) -> ServerAnalysis:
    return ServerAnalysis(name=name, fqdn=f"{name.lower()}.contoso.com", reachable=True,
                          error=None, certificates=(), send_connectors=(), outbound=(),
                          queues=(), findings=findings, plan=None)


@dataclass
class FakeCheck:
    """Stands in for check_fleet: each call returns the next round's findings per server (the
    last round repeats) and remembers which servers it was asked for."""

    rounds: list[dict[str, tuple[Finding, ...]]]
    clock: Callable[[], datetime] = real_clock
    calls: list[tuple[str, ...]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, servers: tuple[ServerSettings, ...]) -> FleetReport:
        with self.lock:
            round_ = self.rounds[min(len(self.calls), len(self.rounds) - 1)]
            self.calls.append(tuple(s.name for s in servers))
        return build_report([analysis(s.name, *round_.get(s.name, ())) for s in servers],
                            self.clock())


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(socket_mode=False) as standin:
        yield standin


@pytest.fixture
def post(slack: SlackStandIn) -> PostMessage:
    return web_client_poster(WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url))


@pytest.fixture
def new_repository(make_engine: Callable[[], Engine]) -> Callable[[], Repository]:
    """Each call: a repository on its own engine (a replica) on the migrated test database."""
    upgrade(make_engine())
    return lambda: Repository(make_engine())


def settings(*, every_seconds: int | None = None, cron: str | None = None,
             mention: str | None = "S0ONCALL", servers: tuple[str, ...] = ()) -> Settings:
    return Settings(servers=SERVERS, schedules=(ScheduleSettings(
        channel=CHANNEL, cron=cron, every_seconds=every_seconds, timezone="Europe/Amsterdam",
        mention=mention, servers=servers),))


def runner(config: Settings, repository: Repository, check: FakeCheck, post: PostMessage,
           owner: str, clock: Callable[[], datetime], **options: object) -> ScheduleRunner:
    return ScheduleRunner(config, repository, run_check=check, post=post, owner=owner,
                          clock=clock, **options)  # type: ignore[arg-type]


def run_together(calls: list[Callable[[], T]]) -> list[T]:
    barrier = threading.Barrier(len(calls))
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(call: Callable[[], T]) -> None:
        try:
            barrier.wait()
            result = call()
            with lock:
                results.append(result)
        except BaseException as error:  # handed to the test thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def fires(engine: Engine) -> list[tuple[datetime, str, datetime | None]]:
    with engine.connect() as connection:
        rows = connection.execute(select(schedule_fires).order_by(schedule_fires.c.fire_time))
        return [(r.fire_time, r.claimed_by, r.completed_at) for r in rows]


def posts(slack: SlackStandIn) -> list[StoredMessage]:
    return slack.messages(CHANNEL)


def blocks_text(message: StoredMessage) -> str:
    return json.dumps(message.blocks)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)


# --- replicas -----------------------------------------------------------------------------


def test_two_replicas_post_once_per_fire(new_repository: Callable[[], Repository],
                                         slack: SlackStandIn, post: PostMessage) -> None:
    clock = ManualClock(T0)
    check = FakeCheck([{"EX01": (MIXED,)}], clock)
    repositories = [new_repository() for _ in range(2)]
    replicas = [runner(settings(every_seconds=1), repository, check, post, f"replica-{n}", clock)
                for n, repository in enumerate(repositories)]
    schedule = replicas[0].schedules[0].id
    assert schedule == replicas[1].schedules[0].id
    for second in range(6):
        clock.set(T0 + timedelta(seconds=second, milliseconds=300))
        outcomes = run_together([partial(r.run_due, schedule) for r in replicas])
        posted = [o for o in outcomes if o is not None and o.posted]
        assert len(posted) == 1, outcomes
        assert posted[0].fire_time == T0 + timedelta(seconds=second)
    assert len(posts(slack)) == 6
    assert len(check.calls) == 6, "only the winner checks"
    rows = fires(repositories[0].engine)
    assert [r[0] for r in rows] == [T0 + timedelta(seconds=s) for s in range(6)]
    assert all(r[2] is not None for r in rows)
    for message in posts(slack):
        assert len(slack.thread(CHANNEL, message.ts)) >= 2, "details are in the thread"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_two_replicas_on_the_real_scheduler_post_once_per_fire(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    check = FakeCheck([{"EX01": (WEAK,)}])
    repositories = [new_repository() for _ in range(2)]
    replicas = [runner(settings(every_seconds=1), repository, check, post, f"replica-{n}",
                       real_clock) for n, repository in enumerate(repositories)]
    engine = repositories[1].engine
    try:
        for replica in replicas:
            replica.start()
        wait_until(lambda: sum(1 for r in fires(engine) if r[2] is not None) >= 5, timeout=9)
    finally:
        for replica in replicas:
            replica.shutdown(wait=True)
    rows = fires(engine)
    assert len(rows) >= 5
    assert all(completed is not None for _, _, completed in rows), rows
    assert len(posts(slack)) == len(rows), "exactly one post per fire time"
    assert len(check.calls) == len(rows), "only the winner of each fire checks"
    assert len({fire_time for fire_time, _, _ in rows}) == len(rows)
    assert all(f.microsecond == 0 for f, _, _ in rows)


# --- missed runs --------------------------------------------------------------------------


def test_missed_runs_after_downtime_coalesce_into_one_post(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    clock = ManualClock(T0 + timedelta(seconds=20))
    config = settings(cron="*/5 * * * *")
    check = FakeCheck([{"EX01": (MIXED,)}], clock)
    before = runner(config, new_repository(), check, post, "replica-a", clock)
    first = before.run_due(before.schedules[0].id)
    assert first is not None
    assert first.posted
    assert first.fire_time == T0

    # Down from 10:00:20 to 10:17:30: 10:05, 10:10 and 10:15 were missed.
    clock.set(T0 + timedelta(minutes=17, seconds=30))
    repository = new_repository()
    after = runner(config, repository, check, post, "replica-a", clock)
    outcomes = after.catch_up()
    assert [(o.fire_time, o.posted) for o in outcomes] == [(T0 + timedelta(minutes=15), True)]
    assert after.catch_up()[0].posted is False
    assert len(posts(slack)) == 2
    assert [r[0] for r in fires(repository.engine)] == [T0, T0 + timedelta(minutes=15)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_start_after_downtime_posts_once_then_keeps_quiet(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    """The real scheduler, a clock frozen 5.5 s after the last post: the catch-up at start
    posts the latest missed second once; the interval jobs that follow find it claimed."""
    clock = ManualClock(T0 + timedelta(seconds=5, milliseconds=500))
    check = FakeCheck([{"EX01": (MIXED,)}], clock)
    repository = new_repository()
    assert repository.claim_schedule_fire(
        runner(settings(every_seconds=1), repository, check, post, "x", clock).schedules[0].id,
        T0, owner="replica-a", now=T0)
    restarted = runner(settings(every_seconds=1), repository, check, post, "replica-a", clock)
    try:
        restarted.start()
        wait_until(lambda: len(posts(slack)) >= 1, timeout=5)
        time.sleep(1.1)
    finally:
        restarted.shutdown(wait=True)
    assert len(posts(slack)) == 1
    assert [r[0] for r in fires(repository.engine)] == [T0, T0 + timedelta(seconds=5)]


def test_a_post_later_than_the_misfire_grace_is_skipped(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    clock = ManualClock(T0 + timedelta(hours=7))
    config = settings(cron="0 8 * * *")  # 08:00 Amsterdam is 07:00 UTC on 2026-03-02
    replica = runner(config, new_repository(), FakeCheck([{}], clock), post, "a", clock,
                     misfire_grace=timedelta(hours=6))
    assert replica.catch_up() == []
    clock.set(T0 + timedelta(hours=2))
    assert [o.fire_time for o in replica.catch_up()] == [datetime(2026, 3, 2, 7, tzinfo=UTC)]
    assert len(posts(slack)) == 1


# --- lease takeover -----------------------------------------------------------------------


def test_a_failed_post_is_taken_over_after_the_lease(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    clock = ManualClock(T0 + timedelta(milliseconds=200))
    check = FakeCheck([{"EX01": (MIXED,)}], clock)

    def slack_down(channel: str, message: object, thread_ts: str | None) -> str:
        raise ConnectionError("slack is down")

    lease = timedelta(minutes=10)
    dying = runner(settings(every_seconds=60), new_repository(), check, slack_down, "a", clock,
                   claim_lease=lease)
    repository = new_repository()
    other = runner(settings(every_seconds=60), repository, check, post, "b", clock,
                   claim_lease=lease)
    schedule = dying.schedules[0].id
    failed = dying.run_due(schedule)
    assert failed is not None
    assert (failed.posted, failed.reason) == (False, "failed: ConnectionError")
    assert other.run_due(schedule) == FireOutcome(
        schedule, T0, posted=False, reason="claimed by another replica (or already posted)")
    assert repository.previous_check_result("EX01") is None, "nothing stored unposted"

    clock.set(T0 + lease + timedelta(seconds=1))
    taken = other.fire(schedule, T0, retry_later=False)
    assert taken.posted
    assert len(posts(slack)) == 1
    assert fires(repository.engine)[0][1:] == ("b", T0 + lease + timedelta(seconds=1))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_scheduler_takes_over_a_claim_left_unfinished(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    """A replica claims and dies before posting; the one that lost the claim looks again on
    its scheduler when the lease has passed, and posts."""

    def dies(channel: str, message: object, thread_ts: str | None) -> str:
        raise ConnectionError("killed")

    lease = timedelta(seconds=1)
    config = settings(every_seconds=3600)
    dead = runner(config, new_repository(), FakeCheck([{}]), dies, "a", real_clock,
                  claim_lease=lease)
    survivor = runner(config, new_repository(), FakeCheck([{"EX01": (MIXED,)}]), post, "b",
                      real_clock, claim_lease=lease, catch_up_on_start=False)
    schedule = dead.schedules[0].id
    assert dead.run_due(schedule) is not None
    try:
        survivor.start()
        lost = survivor.run_due(schedule)
        assert lost is not None
        assert not lost.posted
        wait_until(lambda: len(posts(slack)) == 1, timeout=5)
    finally:
        survivor.shutdown(wait=True)
    assert len(posts(slack)) == 1


# --- what is posted and stored ------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_single_process_posts_and_compares_with_the_previous_post(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    check = FakeCheck([{"EX01": (MIXED,)}, {"EX01": (WEAK,)}])
    repository = new_repository()
    replica = runner(settings(every_seconds=1, servers=("EX01",)), repository, check, post,
                     "only", real_clock, catch_up_on_start=False)
    try:
        replica.start()
        wait_until(lambda: len(posts(slack)) >= 2, timeout=5)
    finally:
        replica.shutdown(wait=True)
    first, second = posts(slack)[:2]
    assert check.calls[:2] == [("EX01",), ("EX01",)], "only the schedule's servers"
    assert first.text.startswith("<!subteam^S0ONCALL> ")
    assert "First scheduled check" in blocks_text(first)
    assert "<!subteam^" not in blocks_text(second) + second.text
    assert "Resolved since the last post* (1)" in blocks_text(second)
    assert "SMTP_MIXED_TRUST_BINDING" in blocks_text(second)
    assert "New since the last post* (1)" in blocks_text(second)
    assert "CERT_WEAK_SIGNATURE" in blocks_text(second)
    assert len(slack.thread(CHANNEL, second.ts)) >= 2
    stored = repository.previous_check_result(
        "EX01", source=f"schedule:{replica.schedules[0].id}")
    assert stored is not None
    result = decode_stored_result(stored.findings_json)
    assert result is not None
    assert [f.code for f in result.findings] == ["CERT_WEAK_SIGNATURE"]
    assert stored.verdict == "warning"


def test_next_runs_for_status(new_repository: Callable[[], Repository],
                              post: PostMessage) -> None:
    clock = ManualClock(datetime(2026, 3, 28, 12, tzinfo=UTC))  # a Saturday
    config = Settings(servers=SERVERS, schedules=(
        ScheduleSettings(channel=CHANNEL, cron="0 8 * * 1-5", timezone="Europe/Amsterdam"),
        ScheduleSettings(channel="C0OTHER", every_seconds=30, servers=("EX02",)),
    ))
    replica = runner(config, new_repository(), FakeCheck([{}]), post, "a", clock)
    runs = replica.next_runs()
    assert runs[0] == NextRun("0 8 * * 1-5 (Europe/Amsterdam) · all servers", CHANNEL,
                              datetime(2026, 3, 30, 8, tzinfo=replica.schedules[0].timezone))
    assert runs[0].next_fire_time is not None
    assert runs[0].next_fire_time.utcoffset() == timedelta(hours=2), "after the DST change"
    assert runs[1] == NextRun("every 30 s · EX02", "C0OTHER",
                              datetime(2026, 3, 28, 12, 0, 0, tzinfo=UTC))


# --- the expiry sweep ---------------------------------------------------------------------


def pending_request(repository: Repository, *, expires_after: timedelta) -> RemediationRequest:
    return repository.create_request(new_request(
        kind="remediation", server="EX01", plan_hash="c0ffee" * 10 + "abcd",
        plan_json="{}", requested_by="U0REQUESTER", team_id="T0TEAM", channel="C0OPS",
        now=T0, expires_after=expires_after))


def test_expiry_sweep_expires_requests_past_their_expiry_once(
        new_repository: Callable[[], Repository], post: PostMessage) -> None:
    repository = new_repository()
    due = pending_request(repository, expires_after=timedelta(minutes=30))
    later = pending_request(repository, expires_after=timedelta(hours=2))
    clock = ManualClock(T0 + timedelta(minutes=31))
    reported: list[list[str]] = []
    replicas = [runner(settings(every_seconds=60), new_repository(), FakeCheck([{}]), post,
                       f"r{n}", clock, on_expired=lambda rs: reported.append([r.id for r in rs]))
                for n in range(2)]
    results = run_together([r.sweep_expired for r in replicas])
    assert sorted(len(batch) for batch in results) == [0, 1]
    assert reported == [[due.id]], "reported once, by the replica that expired it"
    stored_due, stored_later = repository.get_request(due.id), repository.get_request(later.id)
    assert stored_due is not None
    assert stored_due.state is State.EXPIRED
    assert stored_later is not None
    assert stored_later.state is State.PENDING


def test_expiry_sweep_runs_on_the_scheduler(new_repository: Callable[[], Repository],
                                            post: PostMessage) -> None:
    repository = new_repository()
    due = pending_request(repository, expires_after=timedelta(minutes=1))
    swept = threading.Event()
    reported: list[str] = []

    def on_expired(requests: object) -> None:
        reported.extend(r.id for r in requests)  # type: ignore[attr-defined]
        swept.set()

    replica = runner(Settings(servers=SERVERS), repository, FakeCheck([{}]), post, "a",
                     ManualClock(T0 + timedelta(minutes=2)), on_expired=on_expired,
                     sweep_interval=timedelta(milliseconds=200))
    try:
        replica.start()
        assert swept.wait(timeout=5)
    finally:
        replica.shutdown(wait=True)
    assert reported == [due.id]


def test_a_late_post_is_still_what_the_next_fire_compares_with(
        new_repository: Callable[[], Repository], slack: SlackStandIn,
        post: PostMessage) -> None:
    """Results are filed under their fire time: a post made late (here after the next fire time
    had already passed) is still the one the next fire compares with."""
    clock = ManualClock(T0 + timedelta(seconds=90))
    check = FakeCheck([{"EX01": (MIXED,)}, {"EX01": (MIXED,)}], clock=clock)
    replica = runner(settings(every_seconds=60, servers=("EX01",)), new_repository(), check,
                     post, "only", clock, catch_up_on_start=False)
    schedule_id = replica.schedules[0].id
    first = replica.fire(schedule_id, T0)
    clock.set(T0 + timedelta(seconds=95))
    second = replica.fire(schedule_id, T0 + timedelta(seconds=60))
    assert first.posted
    assert second.posted
    late, next_ = posts(slack)[:2]
    assert "First scheduled check" in blocks_text(late)
    assert "First scheduled check" not in blocks_text(next_)
