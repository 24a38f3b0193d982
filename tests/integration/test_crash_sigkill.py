"""A bot process SIGKILLed in the middle of a remediation, for real (issue 7, crash safety).

Each bot is a real process (``python -m bot.cli bot --http``, as in ``test_replicas.py``)
against the lab over WinRM/PSRP and the Slack stand-in over HTTP. A check is requested, the
plan approved by two approvers (``required = 2``), and the lab answers ``Set-SendConnector``
slowly (it applies the change at once and answers late, as a slow Exchange would), so the kill
lands while step 1 is in flight. The tests wait on what the lab and the database show, each
wait with a deadline; nothing sleeps to synchronise.

- **Restart:** the same replica (same ``EXCHANGE_TLS_REPLICA_ID``) started again on the same
  database marks the run interrupted at once, re-reads the server, says what it found in the
  card and its thread, runs no step again, and needs a new approval to go on. SQLite and
  PostgreSQL.
- **Survivor:** of two replicas on PostgreSQL, the one running the remediation is killed; the
  other, still running, marks the run interrupted once its heartbeat is older than the
  execution lease (``EXCHANGE_TLS_EXECUTION_LEASE_SECONDS``, 3 s here), with the same report.
  Before the kill, the run outlives the lease by its heartbeats: a slow step is not taken
  for dead.

In both, ``exchange-tls audit verify`` passes afterwards. Two quick in-process tests pin the
guard the recovery relies on: a run that renewed its heartbeat after it was judged dead, or
that this process itself is running, is left alone; and one (the bot in process, clock
injected) that a request approved but never started by its replica is started by another
after a lease, once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.analysis.trust import TrustStore
from bot.audit import AuditEvent, AuditLog
from bot.config import ApprovalSettings
from bot.exchange.session import SessionCache
from bot.lab.records import CallLogEntry
from bot.lab.state import LabFaults
from bot.remediation.executor import recover_interrupted
from bot.remediation.model import RemediationRequest, new_request
from bot.remediation.policy import Actor
from bot.remediation.states import State
from bot.render.card import APPROVE_ACTION
from bot.replicas import EXECUTION_LEASE_ENV
from bot.slack_standin import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_TEAM_ID,
    DEFAULT_USER_ID,
    StandInUser,
    StoredMessage,
    block_actions,
    post,
    slash_command,
)
from bot.storage import create_engine_from_url
from bot.storage.repository import Applied, Refusal, RefusalCode, Repository
from bot.transcript import buttons_of
from tests.bot_processes import BotProcess, Fleet, running_fleet, wait_until
from tests.slack_bots import APPROVER, bot_factory, request_id_of

pytest_plugins = ("tests.conftest_db",)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHANNEL = DEFAULT_CHANNEL_ID
REQUESTER = DEFAULT_USER_ID
APPROVERS = ("U0APPROVER1", "U0APPROVER2")
SLOW_STEP = "Set-SendConnector"
SLOW_SECONDS = 25.0
"""Longer than any test waits after the step started: the kill always lands inside it."""
LEASE_SECONDS = 3.0
ON_POSTGRESQL = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


# --------------------------------------------------------------------------- set-up


def write_config(path: Path, fleet: Fleet, db_url: str) -> Path:
    """One lab server, two approvers of whom both must approve, no schedule."""
    server = fleet.lab.server_names[0]
    path.write_text(
        f'[slack]\napi_url = "{fleet.slack.api_url}"\n\n'
        f'[[servers]]\nname = "{server}"\nurl = "{fleet.lab.url_for(server)}"\nauth = "ntlm"\n'
        'username_env = "LAB_USER"\npassword_env = "LAB_PASSWORD"\n'
        "connect_timeout = 5\noperation_timeout = 60\n\n"
        f'[trust]\nextra_public_roots = ["{fleet.roots}"]\n\n'
        f"[storage]\nurl = {json.dumps(db_url)}\n\n"
        f"[approval]\napprovers = {json.dumps(list(APPROVERS))}\nadmins = "
        f'["{REQUESTER}"]\nrequired = 2\n',
        encoding="utf-8")
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A lab and a Slack stand-in of its own (the test changes the lab)."""
    people = [StandInUser(REQUESTER, "alex", "Alex Admin", is_admin=True),
              *(StandInUser(user, user.lower()) for user in APPROVERS)]
    with running_fleet(tmp_path, people) as own:
        yield own


@pytest.fixture
def start_bot(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Callable[..., BotProcess]]:
    """Starts bot processes (execution lease ``LEASE_SECONDS``); kills what is left."""
    monkeypatch.setenv(EXECUTION_LEASE_ENV, str(LEASE_SECONDS))
    started: list[BotProcess] = []

    def start(name: str, config: Path) -> BotProcess:
        workdir = tmp_path / f"run-{len(started)}"
        workdir.mkdir()
        bot = BotProcess(name, config, fleet, workdir)
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


# --------------------------------------------------------------------------- driving


def is_card(message: StoredMessage) -> bool:
    return message.text.startswith("Remediation request")


def request_check(fleet: Fleet, bot: BotProcess) -> StoredMessage:
    """``/exchange-tls check EX01`` sent to ``bot``; the new request card it brings."""
    before = {m.ts for m in fleet.slack.messages(CHANNEL) if is_card(m)}
    status, _ = post(bot.events_url, slash_command(
        signing_secret=DEFAULT_SIGNING_SECRET, text=f"check {fleet.lab.server_names[0]}",
        user_id=REQUESTER, channel_id=CHANNEL,
        response_url=fleet.slack.response_url(channel_id=CHANNEL, user_id=REQUESTER)))
    assert status == 200
    return fleet.slack.wait_for_message(
        CHANNEL, lambda m: is_card(m) and m.ts not in before, timeout=30)


def approve_value(card: StoredMessage) -> str:
    (value,) = [b.value for b in buttons_of(card.blocks) if b.action_id == APPROVE_ACTION]
    assert value is not None
    return value


def click_approve(fleet: Fleet, bot: BotProcess, card: StoredMessage, request_id: str,
                  user: str) -> None:
    """``user`` clicks Approve on ``card`` (as it stands in the stand-in) at ``bot``."""
    current = fleet.slack.message(CHANNEL, card.ts)
    assert current is not None
    status, _ = post(bot.events_url, block_actions(
        signing_secret=DEFAULT_SIGNING_SECRET, action_id=APPROVE_ACTION, value=request_id,
        user_id=user, channel_id=CHANNEL, message_ts=card.ts, message=current.to_slack(),
        response_url=fleet.slack.response_url(channel_id=CHANNEL, user_id=user,
                                              message_ts=card.ts)))
    assert status == 200


def changes(entries: tuple[CallLogEntry, ...] | list[CallLogEntry]) -> list[str]:
    """The cmdlets that change the server (every one but ``Get-*`` and ``Select-Object``)."""
    return [e.cmdlet for e in entries
            if not e.cmdlet.startswith("Get-") and e.cmdlet != "Select-Object"]


def stored(engine: Engine, request_id: str) -> RemediationRequest:
    found = Repository(engine).get_request(request_id)
    assert found is not None
    return found


def in_state(engine: Engine, request_id: str, state: State) -> Callable[[], bool]:
    return lambda: stored(engine, request_id).state is state


def approve_twice_and_wait_for_the_slow_step(
        fleet: Fleet, engine: Engine, card: StoredMessage, request_id: str,
        first: BotProcess, final: BotProcess) -> CallLogEntry:
    """Both approvers approve (the first click at ``first``, the final one at ``final``);
    returns the lab's entry of the slow step once the run is inside it."""
    click_approve(fleet, first, card, request_id, APPROVERS[0])
    wait_until("the first approval stored",
               lambda: len(stored(engine, request_id).approvals) == 1, 20, first)
    click_approve(fleet, final, card, request_id, APPROVERS[1])
    found: list[CallLogEntry] = []

    def step_in_flight() -> bool:
        found[:] = [e for e in fleet.organisation.call_log() if e.cmdlet == SLOW_STEP]
        return bool(found)

    wait_until(f"{SLOW_STEP} received by the lab", step_in_flight, 30, first, final)
    request = stored(engine, request_id)
    assert request.state is State.RUNNING
    assert [a.user_id for a in request.approvals] == list(APPROVERS)
    return found[0]


def interrupted_line(fleet: Fleet, card: StoredMessage) -> Callable[[], StoredMessage | None]:
    return lambda: next((m for m in fleet.slack.thread(CHANNEL, card.ts)[1:]
                         if "request *interrupted*" in m.text), None)


def events_of(engine: Engine, request_id: str) -> list[AuditEvent]:
    return AuditLog(engine).events(request_id=request_id)


def audit_verify(config: Path) -> subprocess.CompletedProcess[str]:
    """``exchange-tls audit verify --config FILE`` as a command."""
    environ = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "audit", "verify", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT, check=False)


def assert_reported_and_not_rerun(fleet: Fleet, engine: Engine, card: StoredMessage,
                                  request_id: str, *, killed: str, calls_at_kill: int,
                                  found_by: str) -> AuditEvent:
    """The request is interrupted, the server was read again and what was found is in the
    audit trail, the card and its thread; nothing changed the server since the kill."""
    request = stored(engine, request_id)
    assert request.state is State.INTERRUPTED
    assert request.execution_claimed_by == killed

    event = events_of(engine, request_id)[-1]
    assert event.event_type == "execution_interrupted"
    details: dict[str, Any] = event.details_object
    assert details["claimed_by"] == killed
    assert details["found_by"] == found_by
    assert any(line.startswith(f"step 1 ({SLOW_STEP}") and "never finished" in line
               for line in details["audited_steps"]), details["audited_steps"]
    observed = details["observed"]
    assert observed["reachable"] is True
    # The lab applied the pin before it answered: what is found now says so.
    assert observed["outbound_publicly_trusted"] is True
    assert "Found now" in (event.result or "")

    after_kill = fleet.organisation.call_log()[calls_at_kill:]
    read_again = {e.cmdlet for e in after_kill}
    assert {"Get-SendConnector", "Get-ExchangeCertificate"} <= read_again, "the server re-read"
    assert changes(after_kill) == [], "no step ran again"
    assert changes(fleet.organisation.call_log()) == [SLOW_STEP]

    line = fleet.slack.wait_for(interrupted_line(fleet, card), timeout=20)
    assert "Found now" in line.text
    assert "publicly trusted" in line.text
    assert "never finished" in line.text
    assert "Nothing is re-run without a new approval" in line.text
    current = fleet.slack.wait_for(
        lambda: next((m for m in [fleet.slack.message(CHANNEL, card.ts)]
                      if m is not None and "found after the interruption" in json.dumps(m.blocks)),
                     None), timeout=20)
    shown = json.dumps(current.blocks)
    assert "Interrupted" in shown
    assert "predicted outbound certificate is publicly trusted" in shown
    assert buttons_of(current.blocks) == [], "nothing to approve or run on this card any more"
    return event


def assert_a_new_approval_is_needed(fleet: Fleet, engine: Engine, bot: BotProcess,
                                    card: StoredMessage, request_id: str) -> None:
    """Approving the interrupted request again is refused; the way on is a new check, whose
    new request waits for two new approvals. Nothing changes the server meanwhile."""
    refused_before = sum(e.event_type == "refused_click" for e in events_of(engine, request_id))
    click_approve(fleet, bot, card, request_id, APPROVERS[0])
    wait_until("the late approval refused", lambda: sum(
        e.event_type == "refused_click" for e in events_of(engine, request_id))
        == refused_before + 1, 20, bot)
    assert stored(engine, request_id).state is State.INTERRUPTED

    fleet.lab.faults = LabFaults()
    new_card = request_check(fleet, bot)
    new_id = approve_value(new_card)
    assert new_id != request_id
    fresh = stored(engine, new_id)
    assert (fresh.state, fresh.approvals) == (State.PENDING, ())
    assert changes(fleet.organisation.call_log()) == [SLOW_STEP]


def assert_audit_intact(engine: Engine, config: Path) -> None:
    assert AuditLog(engine).verify().ok
    verified = audit_verify(config)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --------------------------------------------------------------------------- the tests


def test_a_bot_killed_mid_remediation_reports_it_interrupted_at_restart(
        fleet: Fleet, db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    config = write_config(tmp_path / "exchange-tls.toml", fleet, db_url)
    bot = start_bot("bot-a", config)
    bot.wait_started()
    card = request_check(fleet, bot)
    request_id = approve_value(card)
    fleet.lab.faults = LabFaults(slow_cmdlets={SLOW_STEP: SLOW_SECONDS})

    approve_twice_and_wait_for_the_slow_step(fleet, engine, card, request_id, bot, bot)
    bot.kill()
    calls_at_kill = len(fleet.organisation.call_log())
    assert stored(engine, request_id).state is State.RUNNING, "killed while running"

    restarted = start_bot("bot-a", config)
    restarted.wait_started()
    wait_until("the run marked interrupted at restart",
               in_state(engine, request_id, State.INTERRUPTED), 30, restarted)

    event = assert_reported_and_not_rerun(fleet, engine, card, request_id, killed="bot-a",
                                          calls_at_kill=calls_at_kill, found_by="bot-a")
    assert event.details_object["found"] == "own replica id at start-up"
    assert_a_new_approval_is_needed(fleet, engine, restarted, card, request_id)
    assert restarted.stop() == 0, restarted.stderr()
    assert bot.process.returncode == -9
    assert_audit_intact(engine, config)


@ON_POSTGRESQL
def test_a_surviving_replica_interrupts_the_run_of_a_killed_one_after_the_lease(
        fleet: Fleet, db_url: str, engine: Engine, tmp_path: Path,
        start_bot: Callable[..., BotProcess]) -> None:
    config = write_config(tmp_path / "exchange-tls.toml", fleet, db_url)
    bots = {name: start_bot(name, config) for name in ("replica-a", "replica-b")}
    for bot in bots.values():
        bot.wait_started()
    card = request_check(fleet, bots["replica-a"])
    request_id = approve_value(card)
    fleet.lab.faults = LabFaults(slow_cmdlets={SLOW_STEP: SLOW_SECONDS})

    slow_step = approve_twice_and_wait_for_the_slow_step(
        fleet, engine, card, request_id, bots["replica-b"], bots["replica-a"])
    running = stored(engine, request_id)
    victim = bots[str(running.execution_claimed_by)]
    survivor = next(bot for bot in bots.values() if bot is not victim)

    # Alive but inside a step slower than the lease: its heartbeats keep it its own.
    outlived = slow_step.time + timedelta(seconds=LEASE_SECONDS)

    def heartbeat_after_a_lease() -> bool:
        beat = stored(engine, request_id).execution_heartbeat_at
        return beat is not None and beat > outlived

    wait_until("a heartbeat a lease after the step started", heartbeat_after_a_lease,
               LEASE_SECONDS * 4, *bots.values())
    assert datetime.now(UTC) > outlived
    still = stored(engine, request_id)
    assert still.state is State.RUNNING
    assert still.execution_claimed_by == running.execution_claimed_by

    victim.kill()
    killed_at = time.monotonic()
    calls_at_kill = len(fleet.organisation.call_log())
    wait_until("the survivor marks the run interrupted",
               in_state(engine, request_id, State.INTERRUPTED), LEASE_SECONDS + 15, survivor)
    took = time.monotonic() - killed_at

    event = assert_reported_and_not_rerun(fleet, engine, card, request_id, killed=victim.name,
                                          calls_at_kill=calls_at_kill, found_by=survivor.name)
    details = event.details_object
    assert details["found"] == "heartbeat stale"
    marked = datetime.strptime(event.occurred_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    last_beat = datetime.fromisoformat(details["last_heartbeat"])
    assert marked - last_beat >= timedelta(seconds=LEASE_SECONDS), "not before the lease"
    assert took < LEASE_SECONDS + 10
    assert survivor.process.poll() is None, "found while the survivor kept running"
    assert_a_new_approval_is_needed(fleet, engine, survivor, card, request_id)
    assert survivor.stop() == 0, survivor.stderr()
    assert victim.process.returncode == -9
    assert_audit_intact(engine, config)


# --------------------------------------------------------------------------- the guard, in process

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def running_request(repository: Repository, owner: str) -> RemediationRequest:
    """A request approved and claimed by ``owner`` at ``NOW`` (its heartbeat)."""
    request = repository.create_request(new_request(
        kind="remediation", server="EX01", plan_hash="c0ffee" * 10 + "abcd",
        plan_json="{}", requested_by="U0REQUESTER", team_id="T0TEAM", channel=CHANNEL,
        now=NOW, expires_after=timedelta(minutes=30)))
    approved = repository.approve(request.id, Actor(APPROVERS[0], "T0TEAM"),
                                  ApprovalSettings(approvers=APPROVERS, required=1), NOW)
    assert isinstance(approved, Applied)
    claimed = repository.claim_execution(request.id, owner=owner, now=NOW)
    assert isinstance(claimed, Applied)
    return claimed.request


def test_a_run_that_beat_after_it_was_found_dead_is_not_interrupted(
        migrated_engine: Engine) -> None:
    audit = AuditLog(migrated_engine, bot_version="test")
    repository = Repository(migrated_engine, audit=audit)
    request = running_request(repository, "replica-a")
    # Judged dead with the lease ending at NOW + 5 s; the runner beat at NOW + 10 s meanwhile.
    assert repository.heartbeat(request.id, owner="replica-a", now=NOW + timedelta(seconds=10))

    def interrupt(claimed_by: str, heartbeat_before: datetime) -> Applied | Refusal:
        return repository.interrupt_execution(
            request.id, version=request.version, claimed_by=claimed_by,
            heartbeat_before=heartbeat_before, now=NOW + timedelta(seconds=20),
            reason="interrupted: test", details={"found_by": "replica-b"})

    alive = interrupt("replica-a", NOW + timedelta(seconds=5))
    assert isinstance(alive, Refusal)
    assert alive.code is RefusalCode.CONFLICT
    assert "it is alive" in alive.reason
    other = interrupt("replica-x", NOW + timedelta(seconds=15))
    assert isinstance(other, Refusal)
    assert stored(migrated_engine, request.id).state is State.RUNNING
    assert events_of(migrated_engine, request.id)[-1].event_type == "execution_started"

    dead = interrupt("replica-a", NOW + timedelta(seconds=15))
    assert isinstance(dead, Applied)
    assert dead.request.state is State.INTERRUPTED
    event = events_of(migrated_engine, request.id)[-1]
    assert (event.event_type, event.details_object["found_by"]) == (
        "execution_interrupted", "replica-b")
    assert isinstance(interrupt("replica-a", NOW + timedelta(seconds=15)), Refusal)
    assert audit.verify().ok


def test_recovery_leaves_the_runs_of_its_own_process_alone(migrated_engine: Engine) -> None:
    audit = AuditLog(migrated_engine, bot_version="test")
    repository = Repository(migrated_engine, audit=audit)
    request = running_request(repository, "replica-a")
    sessions = SessionCache()
    trust = TrustStore((), (), (), "none")

    def recover(skip: frozenset[str]) -> list[Any]:
        return recover_interrupted(repository, audit, sessions, lambda _name: None, trust,
                                   now=NOW + timedelta(hours=1), owner="replica-a",
                                   skip=skip)

    assert recover(frozenset({request.id})) == []
    assert stored(migrated_engine, request.id).state is State.RUNNING
    (report,) = recover(frozenset())
    assert report.interrupted
    assert report.observation is not None
    assert report.observation.error == "the server is no longer configured"
    assert stored(migrated_engine, request.id).state is State.INTERRUPTED


def test_an_approved_request_its_replica_never_started_is_started_by_another_once(
        tmp_path: Path) -> None:
    with ExitStack() as stack:
        bot = bot_factory(stack, f"sqlite:///{tmp_path / 'bot.db'}")()
        card = bot.check()
        request_id = request_id_of(card)
        remediation = bot.remediation
        approver = remediation.actor(APPROVER, DEFAULT_TEAM_ID).actor
        # The final approval is stored; the replica that took it dies before starting the run.
        approved = remediation.repository.approve(request_id, approver, remediation.approval,
                                                  bot.clock())
        assert isinstance(approved, Applied)
        assert approved.request.state is State.APPROVED

        assert remediation.recover_abandoned() == []
        bot.idle()
        assert bot.request(card).state is State.APPROVED, "within the lease: left to its replica"

        bot.clock.advance(remediation.execution_lease + timedelta(seconds=1))
        remediation.recover_abandoned()
        bot.idle()
        assert bot.request(card).state is State.SUCCEEDED
        remediation.recover_abandoned()
        bot.idle()
        assert len(bot.calls("Set-SendConnector")) == 1
        assert "request *succeeded*" in bot.lines(card)[-1]
