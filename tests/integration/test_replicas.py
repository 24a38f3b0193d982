"""`exchange-tls bot` processes as deployed: two replicas on one PostgreSQL (and one on SQLite),
against the Slack stand-in and the lab, with a schedule every 2 s.

Each bot is a real process (``python -m bot.cli bot --http``) so that it can be killed with
SIGKILL. Posts are matched to fire times through the ``schedule_fires`` rows: a channel post
belongs to the fire whose final claim it happened within (claimed_at .. completed_at); every fire
must have exactly one post and every post a fire.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Engine, select

from bot.audit import AuditLog
from bot.lab.state import LabFaults
from bot.remediation.states import State
from bot.render.card import APPROVE_ACTION
from bot.slack_standin import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_USER_ID,
    SlackStandIn,
    StandInUser,
    StoredMessage,
    block_actions,
    post,
    slash_command,
)
from bot.storage import create_engine_from_url
from bot.storage.repository import Repository
from bot.storage.schema import check_results, schedule_fires
from bot.transcript import buttons_of
from tests.bot_processes import BotProcess, Fleet, running_fleet, wait_until

pytest_plugins = ("tests.conftest_db",)
pytestmark = pytest.mark.slow

CHANNEL = "C0HEALTH"
INTERVAL = 2
SLOW_CMDLET = "Get-ExchangeCertificate"
ON_POSTGRESQL = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Shared by the schedule tests (they do not change the lab)."""
    with running_fleet(tmp_path_factory.mktemp("trust")) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(fleet: Fleet) -> Iterator[None]:
    fleet.slack.reset()
    fleet.lab.faults = LabFaults()
    yield
    fleet.lab.faults = LabFaults()


def write_config(path: Path, fleet: Fleet, db_url: str, *, schedule: bool = True,
                 approvers: tuple[str, ...] = ()) -> Path:
    server = fleet.lab.server_names[0]
    schedules = (f'[[schedules]]\nevery_seconds = {INTERVAL}\nchannel = "{CHANNEL}"\n'
                 'mention = "S0ONCALL"\n') if schedule else ""
    approval = (f"[approval]\napprovers = {json.dumps(list(approvers))}\nrequired = 1\n\n"
                if approvers else "")
    path.write_text(
        f'[slack]\napi_url = "{fleet.slack.api_url}"\n\n'
        f'[[servers]]\nname = "{server}"\nurl = "{fleet.lab.url_for(server)}"\nauth = "ntlm"\n'
        'username_env = "LAB_USER"\npassword_env = "LAB_PASSWORD"\n'
        "connect_timeout = 5\noperation_timeout = 20\n\n"
        f'[trust]\nextra_public_roots = ["{fleet.roots}"]\n\n'
        f"[storage]\nurl = {json.dumps(db_url)}\n\n{approval}{schedules}",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def start_bot(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., BotProcess]]:
    """Starts bot processes; whatever is still running at the end is killed."""
    started: list[BotProcess] = []

    def start(name: str, config: Path, *, lease_seconds: float | None = None,
              fleet: Fleet = fleet) -> BotProcess:
        bot = BotProcess(name, config, fleet, tmp_path, lease_seconds=lease_seconds)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.ensure_dead()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = create_engine_from_url(db_url)
    yield made
    made.dispose()


class Fire(NamedTuple):
    fire_time: datetime
    claimed_by: str
    claimed_at: datetime
    completed_at: datetime | None
    attempts: int | None


def fires(engine: Engine) -> list[Fire]:
    """Every schedule fire row (an empty list before a bot has created the tables)."""
    with engine.connect() as connection:
        try:
            rows = connection.execute(
                select(schedule_fires).order_by(schedule_fires.c.fire_time)).all()
        except Exception:  # the schema is not there yet
            return []
    return [Fire(r.fire_time, r.claimed_by, r.claimed_at, r.completed_at, r.attempts)
            for r in rows]


def completed(engine: Engine, *, after: datetime | None = None) -> list[Fire]:
    return [f for f in fires(engine)
            if f.completed_at is not None and (after is None or f.fire_time > after)]


def channel_posts(slack: SlackStandIn) -> list[StoredMessage]:
    return slack.messages(CHANNEL)


CLOCK_SLACK = timedelta(milliseconds=50)


def within_claim(message: StoredMessage, row: Fire) -> bool:
    """The post happened while ``row``'s final claim was held (a channel post comes after the
    claim and before the completion)."""
    at = datetime.fromtimestamp(message.posted_at, UTC)
    return (row.completed_at is not None
            and row.claimed_at - CLOCK_SLACK <= at <= row.completed_at + CLOCK_SLACK)


def match_posts_to_fires(rows: list[Fire], posts: list[StoredMessage]) -> dict[int, int]:
    """A largest matching of posts (index) to fires (index) with each post within its fire's
    claim (augmenting paths; claims of different replicas may overlap in time)."""
    fire_of_post: dict[int, int] = {}
    post_of_fire: dict[int, int] = {}

    def assign(post_index: int, seen: set[int]) -> bool:
        for fire_index, row in enumerate(rows):
            if fire_index in seen or not within_claim(posts[post_index], row):
                continue
            seen.add(fire_index)
            holder = post_of_fire.get(fire_index)
            if holder is None or assign(holder, seen):
                post_of_fire[fire_index] = post_index
                fire_of_post[post_index] = fire_index
                return True
        return False

    for index in range(len(posts)):
        assign(index, set())
    return fire_of_post


def describe(rows: list[Fire], posts: list[StoredMessage]) -> str:
    return "\n".join(
        [f"post at {datetime.fromtimestamp(m.posted_at, UTC).time()}" for m in posts]
        + [f"fire {r.fire_time.time()} {r.claimed_by} claimed {r.claimed_at.time()} completed "
           f"{r.completed_at.time() if r.completed_at else None} attempts {r.attempts}"
           for r in rows])


def assert_one_post_per_fire(rows: list[Fire], slack: SlackStandIn) -> None:
    """As many channel posts as fires, each fire's post made while its claim was held."""
    posts = channel_posts(slack)
    assert len(posts) == len(rows), describe(rows, posts)
    assert len(match_posts_to_fires(rows, posts)) == len(rows), describe(rows, posts)
    assert not [c for c in slack.calls("chat.postMessage") if not c.ok], "refused posts"
    for message in posts:
        assert len(slack.thread(CHANNEL, message.ts)) >= 2, "the details are in the thread"


def assert_contiguous(rows: list[Fire]) -> None:
    times = [row.fire_time for row in rows]
    assert times == [times[0] + timedelta(seconds=INTERVAL * n) for n in range(len(times))], (
        "a fire time was skipped")


def status_reply(fleet: Fleet, bot: BotProcess) -> str:
    """``/exchange-tls status`` sent to ``bot``; the blocks of its ephemeral answer."""
    before = len(fleet.slack.responses())
    status, _ = post(bot.events_url, slash_command(
        signing_secret=DEFAULT_SIGNING_SECRET, text="status",
        response_url=fleet.slack.response_url(channel_id=DEFAULT_CHANNEL_ID,
                                               user_id=DEFAULT_USER_ID)))
    assert status == 200
    answer = fleet.slack.wait_for(
        lambda: next(iter(fleet.slack.responses()[before:]), None), timeout=10)
    return json.dumps(answer.body["blocks"])


# --- two replicas on PostgreSQL -------------------------------------------------------------


@ON_POSTGRESQL
def test_two_replicas_post_exactly_once_per_fire(
        fleet: Fleet, db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    config = write_config(tmp_path / "exchange-tls.toml", fleet, db_url)
    bots = [start_bot(name, config, lease_seconds=10) for name in ("replica-a", "replica-b")]
    for bot in bots:
        assert "1 scheduled post; replica " + bot.name in bot.wait_started()
    both_up = datetime.now(UTC)

    wait_until("5 fires after both replicas started",
               lambda: len(completed(engine, after=both_up)) >= 5, 20, *bots)
    answers = [status_reply(fleet, bot) for bot in bots]
    codes = [bot.stop() for bot in bots]

    assert codes == [0, 0], [bot.stderr() for bot in bots]
    rows = fires(engine)
    assert all(row.completed_at is not None for row in rows), "stopped after finishing"
    assert {row.claimed_by for row in rows} <= {"replica-a", "replica-b"}
    assert_one_post_per_fire(rows, fleet.slack)
    assert_contiguous([row for row in rows if row.fire_time > both_up])
    server = fleet.lab.server_names[0]
    with engine.connect() as connection:
        stored = connection.execute(select(check_results.c.server, check_results.c.source)).all()
    assert len(stored) == len(rows), "one stored result per post (one server)"
    for answer in answers:  # either replica shows the schedule and the last result
        assert "Scheduled posts" in answer
        assert f"every {INTERVAL} s" in answer
        assert f"*{server}*: critical" in answer


@ON_POSTGRESQL
def test_a_replica_killed_mid_post_is_taken_over_without_duplicate_or_loss(
        fleet: Fleet, db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    lease = 4.0
    config = write_config(tmp_path / "exchange-tls.toml", fleet, db_url)
    bots = {name: start_bot(name, config, lease_seconds=lease)
            for name in ("replica-a", "replica-b")}
    for bot in bots.values():
        bot.wait_started()
    wait_until("2 fires", lambda: len(completed(engine)) >= 2, 15, *bots.values())

    slowed_at = datetime.now(UTC)
    fleet.lab.faults = LabFaults(slow_cmdlets={SLOW_CMDLET: 3.0})
    in_progress: list[Fire] = []

    def claimed_while_slow() -> bool:
        in_progress[:] = [f for f in fires(engine)
                          if f.fire_time > slowed_at and f.completed_at is None]
        return bool(in_progress)

    wait_until("a fire claimed while the check is slow", claimed_while_slow, 10,
               *bots.values())
    killed_fire = in_progress[0]
    victim = bots[killed_fire.claimed_by]
    survivor = next(b for b in bots.values() if b is not victim)
    time.sleep(0.5)  # into the slow check
    still = next(f for f in fires(engine) if f.fire_time == killed_fire.fire_time)
    assert still.completed_at is None, "killed before it posted"
    victim.kill()
    killed_at = time.monotonic()
    fleet.lab.faults = LabFaults()

    def taken_over_and_carried_on() -> bool:
        rows = {f.fire_time: f for f in fires(engine)}
        later = [t for t, f in rows.items()
                 if t > killed_fire.fire_time and f.completed_at is not None]
        return rows[killed_fire.fire_time].completed_at is not None and len(later) >= 3

    wait_until("the killed fire taken over, and 3 more posts", taken_over_and_carried_on,
               lease + 12, survivor)
    took = time.monotonic() - killed_at
    assert survivor.stop() == 0, survivor.stderr()

    assert victim.process.returncode == -signal.SIGKILL
    rows = fires(engine)
    assert all(row.completed_at is not None for row in rows)
    taken = next(row for row in rows if row.fire_time == killed_fire.fire_time)
    assert (taken.claimed_by, taken.attempts) == (survivor.name, 2)
    assert all(row.claimed_by == survivor.name for row in rows
               if row.fire_time > killed_fire.fire_time + timedelta(seconds=INTERVAL))
    assert_one_post_per_fire(rows, fleet.slack)
    assert took < lease + 8


APPROVERS = tuple(f"U0APPROVER{n}" for n in range(6))


@ON_POSTGRESQL
def test_approvals_clicked_at_both_replicas_at_once_run_the_request_once(
        db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    people = [StandInUser(DEFAULT_USER_ID, "alex", "Alex Admin", is_admin=True),
              *(StandInUser(user, user.lower()) for user in APPROVERS)]
    with running_fleet(tmp_path, people) as own:
        config = write_config(tmp_path / "exchange-tls.toml", own, db_url, schedule=False,
                              approvers=APPROVERS)
        bots = [start_bot(name, config, fleet=own) for name in ("replica-a", "replica-b")]
        for bot in bots:
            bot.wait_started()
        server = own.lab.server_names[0]
        status, _ = post(bots[0].events_url, slash_command(
            signing_secret=DEFAULT_SIGNING_SECRET, text=f"check {server}",
            response_url=own.slack.response_url(channel_id=DEFAULT_CHANNEL_ID,
                                                user_id=DEFAULT_USER_ID)))
        assert status == 200
        card = own.slack.wait_for_message(
            DEFAULT_CHANNEL_ID, lambda m: m.text.startswith("Remediation request"), timeout=30)
        (approve,) = [b for b in buttons_of(card.blocks) if b.action_id == APPROVE_ACTION]
        assert approve.value is not None
        request_id = approve.value

        clicks = [block_actions(
            signing_secret=DEFAULT_SIGNING_SECRET, action_id=APPROVE_ACTION,
            value=request_id, user_id=user, channel_id=DEFAULT_CHANNEL_ID,
            message_ts=card.ts, message=card.to_slack(),
            response_url=own.slack.response_url(channel_id=DEFAULT_CHANNEL_ID, user_id=user,
                                                 message_ts=card.ts))
            for user in APPROVERS]
        together = threading.Barrier(len(clicks))
        statuses: list[int] = []

        def click(index: int) -> None:
            together.wait()
            statuses.append(post(bots[index % 2].events_url, clicks[index])[0])

        threads = [threading.Thread(target=click, args=(i,)) for i in range(len(clicks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert statuses == [200] * len(clicks)

        repository = Repository(engine)

        def finished() -> bool:
            request = repository.get_request(request_id)
            return request is not None and request.state in (
                State.SUCCEEDED, State.FAILED, State.ABORTED)

        wait_until("the approved request finished", finished, 30, *bots)
        codes = [bot.stop() for bot in bots]
        set_calls = [c for c in own.organisation.call_log() if c.cmdlet == "Set-SendConnector"]

    assert codes == [0, 0], [bot.stderr() for bot in bots]
    request = repository.get_request(request_id)
    assert request is not None
    assert request.state is State.SUCCEEDED
    assert request.execution_claimed_by in {"replica-a", "replica-b"}
    assert len(set_calls) == 1, "one execution"
    events = AuditLog(engine).events(request_id=request_id)
    types = [event.event_type for event in events]
    assert (types.count("approved"), types.count("execution_started")) == (1, 1)
    assert types.count("refused_click") == len(APPROVERS) - 1
    assert AuditLog(engine).verify().ok


# --- one process on SQLite -------------------------------------------------------------------


@ON_SQLITE
def test_a_single_process_on_sqlite_posts_its_schedule(
        fleet: Fleet, db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    config = write_config(tmp_path / "exchange-tls.toml", fleet, db_url)
    bot = start_bot("only", config)
    bot.wait_started()
    wait_until("3 posts", lambda: len(completed(engine)) >= 3, 15, bot)
    answer = status_reply(fleet, bot)
    assert bot.stop() == 0, bot.stderr()

    rows = fires(engine)
    assert_one_post_per_fire(rows, fleet.slack)
    assert_contiguous(rows)
    first, *later = channel_posts(fleet.slack)
    assert first.text.startswith("<!subteam^S0ONCALL> Exchange TLS health: CRITICAL")
    assert "First scheduled check" in json.dumps(first.blocks)
    assert any("First scheduled check" not in json.dumps(m.blocks) for m in later), (
        "later posts compare with the stored results of earlier ones")
    assert "Scheduled posts" in answer
    assert f"<#{CHANNEL}>" in answer
