"""Storage on real databases: SQLite files and PostgreSQL (see tests/conftest_db.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, insert, inspect, select, text

from bot.audit import AuditLog
from bot.config import ApprovalSettings
from bot.remediation.model import RemediationRequest, new_request
from bot.remediation.policy import Actor, DecisionCode
from bot.remediation.states import Event, InvalidTransition, State
from bot.storage import LATEST_VERSION, SchemaTooNew, current_version, metadata, upgrade
from bot.storage.migrations import _v1_metadata
from bot.storage.repository import Applied, Refusal, RefusalCode, Repository

pytest_plugins = ("tests.conftest_db",)

T = TypeVar("T")
NOW = datetime(2025, 10, 26, 0, 45, tzinfo=UTC)
TEAM = "T0TEAM"
APPROVERS = tuple(f"U0APPROVER{i}" for i in range(10))
SETTINGS = ApprovalSettings(approvers=(*APPROVERS, "S0APPROVERS"), required=1)


def actor(user_id: str) -> Actor:
    return Actor(user_id, TEAM)


def make_request(server: str = "EX01", *, minutes: int = 30,
                 **changes: Any) -> RemediationRequest:
    request = new_request(kind="remediation", server=server, plan_hash="c0ffee" * 10 + "abcd",
                          plan_json='{"steps": [{"cmdlet": "Set-SendConnector"}]}',
                          requested_by="U0REQUESTER", team_id=TEAM, channel="C0OPS", now=NOW,
                          expires_after=timedelta(minutes=minutes))
    return replace(request, **changes)


def run_together(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released at the same moment; re-raise the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except BaseException as error:  # handed to the test thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    assert all(not t.is_alive() for t in threads), "a worker hung"
    return [r for r in results if r is not None]


@pytest.fixture
def repo(migrated_engine: Engine) -> Repository:
    return Repository(migrated_engine, audit=AuditLog(migrated_engine, bot_version="test"))


def approved_request(repo: Repository, server: str = "EX01") -> RemediationRequest:
    request = repo.create_request(make_request(server))
    applied = repo.approve(request.id, actor(APPROVERS[0]), SETTINGS, NOW)
    assert isinstance(applied, Applied)
    return applied.request


# -- requests ----------------------------------------------------------------------------------

def test_request_round_trips_with_aware_utc_times(repo: Repository) -> None:
    created = repo.create_request(make_request(
        message_ts="1712345678.000100",
        created_at=NOW.astimezone(datetime.now().astimezone().tzinfo)))
    loaded = repo.get_request(created.id)
    assert loaded == replace(created, created_at=NOW)
    assert loaded is not None
    assert loaded.expires_at.tzinfo is not None
    assert loaded.expires_at.utcoffset() == timedelta(0)
    assert repo.get_request("R-NOSUCHREQ0") is None


def test_naive_datetimes_are_refused(repo: Repository) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        repo.create_request(make_request(expires_at=NOW.replace(tzinfo=None)))


def test_list_pending_and_by_state(repo: Repository) -> None:
    first = repo.create_request(make_request("EX01"))
    second = repo.create_request(make_request("EX02", created_at=NOW + timedelta(seconds=1)))
    done = approved_request(repo, "EX03")
    assert [r.id for r in repo.list_pending()] == [first.id, second.id]
    assert [r.id for r in repo.list_pending(server="ex02")] == [second.id]
    assert [r.id for r in repo.list_requests(states=(State.APPROVED,))] == [done.id]
    assert repo.list_requests(states=(State.APPROVED,))[0].approver_ids == {APPROVERS[0]}


def test_message_reference_is_kept_without_a_version_change(repo: Repository) -> None:
    request = repo.create_request(make_request())
    updated = repo.set_message_ref(request.id, "C0OTHER", "1712345678.000200")
    assert updated is not None
    assert (updated.channel, updated.message_ts, updated.version) == (
        "C0OTHER", "1712345678.000200", request.version)


def test_rollback_request_links_to_the_original(repo: Repository) -> None:
    original = approved_request(repo)
    rollback = repo.create_request(replace(
        make_request(), kind="rollback", rollback_of=original.id,
        previous_tls_certificate_name="<I>CN=Corp CA<S>CN=mail.contoso.com"))
    assert [r.id for r in repo.rollbacks_of(original.id)] == [rollback.id]
    stored = repo.get_request(rollback.id)
    assert stored is not None
    assert stored.previous_tls_certificate_name == "<I>CN=Corp CA<S>CN=mail.contoso.com"


# -- approvals ---------------------------------------------------------------------------------

def test_two_of_n_approvals(repo: Repository) -> None:
    settings = replace(SETTINGS, required=2)
    request = repo.create_request(make_request())
    first = repo.approve(request.id, actor(APPROVERS[0]), settings, NOW)
    assert isinstance(first, Applied)
    assert (first.event, first.request.state, first.transitioned) == (
        Event.APPROVE, State.PENDING, False)
    second = repo.approve(request.id, actor(APPROVERS[1]), settings, NOW + timedelta(seconds=1))
    assert isinstance(second, Applied)
    assert (second.event, second.request.state) == (Event.APPROVE_FINAL, State.APPROVED)
    assert [a.user_id for a in second.request.approvals] == list(APPROVERS[:2])
    assert second.request.version == request.version + 2


def test_policy_refusals_change_nothing(repo: Repository) -> None:
    request = repo.create_request(make_request())
    refused = repo.approve(request.id, actor("U0REQUESTER"),
                           replace(SETTINGS, approvers=("U0REQUESTER",)), NOW)
    assert isinstance(refused, Refusal)
    assert refused.code is RefusalCode.POLICY
    assert refused.decision is not None
    assert refused.decision.code is DecisionCode.SELF_APPROVAL
    outsider = repo.approve(request.id, actor("U0OUTSIDER"), SETTINGS, NOW)
    assert isinstance(outsider, Refusal)
    assert outsider.decision is not None
    assert outsider.decision.code is DecisionCode.NOT_APPROVER
    assert repo.get_request(request.id) == request


def test_group_member_approves(repo: Repository) -> None:
    request = repo.create_request(make_request())
    applied = repo.approve(request.id, Actor("U0CAROL", TEAM, frozenset({"S0APPROVERS"})),
                           SETTINGS, NOW)
    assert isinstance(applied, Applied)
    assert applied.request.state is State.APPROVED


def test_double_click_counts_once(repo: Repository) -> None:
    settings = replace(SETTINGS, required=2)
    request = repo.create_request(make_request())
    results = [repo.approve(request.id, actor(APPROVERS[0]), settings, NOW) for _ in range(2)]
    assert isinstance(results[0], Applied)
    assert isinstance(results[1], Refusal)
    assert results[1].reason == "already approved"
    stored = repo.get_request(request.id)
    assert stored is not None
    assert (stored.state, len(stored.approvals)) == (State.PENDING, 1)


def test_ten_approvers_at_once_make_one_final_transition(repo: Repository) -> None:
    settings = replace(SETTINGS, required=3)
    request = repo.create_request(make_request())
    results = run_together([partial(repo.approve, request.id, actor(who), settings, NOW)
                            for who in APPROVERS])
    finals = [r for r in results if isinstance(r, Applied) and r.event is Event.APPROVE_FINAL]
    partials = [r for r in results if isinstance(r, Applied) and r.event is Event.APPROVE]
    refused = [r for r in results if isinstance(r, Refusal)]
    assert (len(finals), len(partials), len(refused)) == (1, 2, 7)
    assert all(r.decision is not None and r.decision.code is DecisionCode.NOT_PENDING
               for r in refused)
    stored = repo.get_request(request.id)
    assert stored is not None
    assert (stored.state, len(stored.approvals), stored.version) == (State.APPROVED, 3, 4)


def test_same_user_clicking_ten_times_at_once_counts_once(repo: Repository) -> None:
    settings = replace(SETTINGS, required=2)
    request = repo.create_request(make_request())
    results = run_together([lambda: repo.approve(request.id, actor(APPROVERS[0]), settings, NOW)
                            for _ in range(10)])
    assert sum(isinstance(r, Applied) for r in results) == 1
    stored = repo.get_request(request.id)
    assert stored is not None
    assert len(stored.approvals) == 1


def test_low_level_add_approval_is_compare_and_set(repo: Repository) -> None:
    request = repo.create_request(make_request())
    stale = repo.add_approval(request.id, user_id=APPROVERS[0], team_id=TEAM, at=NOW,
                              expected_version=request.version + 5, required=2)
    assert isinstance(stale, Refusal)
    assert stale.code is RefusalCode.CONFLICT
    first = repo.add_approval(request.id, user_id=APPROVERS[0], team_id=TEAM, at=NOW,
                              expected_version=request.version, required=2)
    assert isinstance(first, Applied)
    again = repo.add_approval(request.id, user_id=APPROVERS[0], team_id=TEAM, at=NOW,
                              expected_version=first.request.version, required=2)
    assert isinstance(again, Refusal)
    assert again.code is RefusalCode.ALREADY_APPROVED
    final = repo.add_approval(request.id, user_id=APPROVERS[1], team_id=TEAM, at=NOW,
                              expected_version=first.request.version, required=2)
    assert isinstance(final, Applied)
    assert final.request.state is State.APPROVED


def test_deny_and_nothing_after(repo: Repository) -> None:
    request = repo.create_request(make_request())
    denied = repo.deny(request.id, actor(APPROVERS[2]), SETTINGS, NOW)
    assert isinstance(denied, Applied)
    assert denied.request.state is State.DENIED
    assert denied.request.state_reason == f"denied by <@{APPROVERS[2]}>"
    late = repo.approve(request.id, actor(APPROVERS[0]), SETTINGS, NOW)
    assert isinstance(late, Refusal)


def test_frozen_refuses_approval_and_execution(repo: Repository) -> None:
    request = approved_request(repo)
    pending = repo.create_request(make_request("EX02"))
    change = repo.set_freeze(True, actor_user="U0ADMIN", actor_team=TEAM, now=NOW,
                             reason="change window")
    assert change.changed
    assert repo.get_freeze().frozen
    assert repo.get_freeze().changed_by == "U0ADMIN"
    assert repo.get_freeze().changed_at == NOW
    refused = repo.approve(pending.id, actor(APPROVERS[0]), SETTINGS, NOW)
    assert isinstance(refused, Refusal)
    assert refused.decision is not None
    assert refused.decision.code is DecisionCode.FROZEN
    claim = repo.claim_execution(request.id, owner="replica-a", now=NOW)
    assert isinstance(claim, Refusal)
    assert claim.code is RefusalCode.FROZEN
    assert not repo.set_freeze(True, actor_user="U0ADMIN", actor_team=TEAM, now=NOW).changed
    repo.set_freeze(False, actor_user="U0ADMIN", actor_team=TEAM, now=NOW)
    assert isinstance(repo.claim_execution(request.id, owner="replica-a", now=NOW), Applied)


# -- execution ---------------------------------------------------------------------------------

def test_ten_threads_claim_execution_one_wins(repo: Repository) -> None:
    request = approved_request(repo)
    results = run_together([partial(repo.claim_execution, request.id, owner=f"worker-{n}", now=NOW)
                            for n in range(10)])
    winners = [r for r in results if isinstance(r, Applied)]
    assert len(winners) == 1
    assert winners[0].request.state is State.RUNNING
    assert all(isinstance(r, Refusal) and r.code is RefusalCode.CONFLICT
               for r in results if r is not winners[0])
    stored = repo.get_request(request.id)
    assert stored is not None
    assert stored.execution_claimed_by == winners[0].request.execution_claimed_by


def test_two_replicas_claim_execution_one_wins(make_engine: Callable[[], Engine],
                                               repo: Repository) -> None:
    request = approved_request(repo)
    replicas = [Repository(make_engine()) for _ in range(2)]
    results = run_together([partial(r.claim_execution, request.id, owner=f"replica-{n}", now=NOW)
                            for n, r in enumerate(replicas * 3)])
    assert sum(isinstance(r, Applied) for r in results) == 1


def test_one_remediation_per_server_at_a_time(repo: Repository) -> None:
    first = approved_request(repo, "EX01")
    second = approved_request(repo, "ex01")
    other = approved_request(repo, "EX02")
    results = run_together([
        lambda: repo.claim_execution(first.id, owner="a", now=NOW),
        lambda: repo.claim_execution(second.id, owner="b", now=NOW),
        lambda: repo.claim_execution(other.id, owner="c", now=NOW)])
    on_ex01 = results[:2]
    assert sum(isinstance(r, Applied) for r in on_ex01) == 1
    busy = next(r for r in on_ex01 if isinstance(r, Refusal))
    assert busy.code is RefusalCode.SERVER_BUSY
    assert isinstance(results[2], Applied)
    winner = next(r for r in on_ex01 if isinstance(r, Applied))
    done = repo.transition(winner.request.id, State.RUNNING, Event.FINISH, now=NOW)
    assert isinstance(done, Applied)
    loser_id = second.id if winner.request.id == first.id else first.id
    assert isinstance(repo.claim_execution(loser_id, owner="b", now=NOW), Applied)


def test_transition_is_compare_and_set(repo: Repository) -> None:
    request = approved_request(repo)
    wrong = repo.transition(request.id, State.RUNNING, Event.FINISH, now=NOW)
    assert isinstance(wrong, Refusal)
    assert wrong.code is RefusalCode.CONFLICT
    assert "approved, not running" in wrong.reason
    stale = repo.transition(request.id, State.APPROVED, Event.ABORT, now=NOW,
                            expected_version=request.version - 1)
    assert isinstance(stale, Refusal)
    aborted = repo.transition(request.id, State.APPROVED, Event.ABORT, now=NOW,
                              expected_version=request.version,
                              reason="plan changed: 0123abcd != c0ffeec0")
    assert isinstance(aborted, Applied)
    assert aborted.request.state is State.ABORTED
    assert aborted.request.state_reason == "plan changed: 0123abcd != c0ffeec0"
    with pytest.raises(InvalidTransition):
        repo.transition(request.id, State.ABORTED, Event.FINISH, now=NOW)
    with pytest.raises(ValueError, match="claim_execution"):
        repo.transition(request.id, State.APPROVED, Event.START, now=NOW)


def test_interrupted_runs_found_by_owner_and_by_stale_heartbeat(repo: Repository) -> None:
    mine = approved_request(repo, "EX01")
    theirs = approved_request(repo, "EX02")
    alive = approved_request(repo, "EX03")
    for request, owner in ((mine, "replica-a"), (theirs, "replica-b"), (alive, "replica-c")):
        assert isinstance(repo.claim_execution(request.id, owner=owner, now=NOW), Applied)
    later = NOW + timedelta(minutes=10)
    assert repo.heartbeat(alive.id, owner="replica-c", now=later)
    assert not repo.heartbeat(alive.id, owner="replica-x", now=later)
    by_owner = repo.interrupt_running(later, owner="replica-a")
    assert [a.request.id for a in by_owner] == [mine.id]
    stale = repo.interrupt_running(later, heartbeat_before=later - timedelta(minutes=5))
    assert [a.request.id for a in stale] == [theirs.id]
    stored = repo.get_request(alive.id)
    assert stored is not None
    assert stored.state is State.RUNNING
    assert all(a.request.state is State.INTERRUPTED for a in by_owner + stale)


def test_expire_due_expires_each_request_once_across_replicas(
        make_engine: Callable[[], Engine], repo: Repository) -> None:
    due = [repo.create_request(make_request(f"EX{i:02d}", minutes=5)) for i in range(6)]
    not_due = repo.create_request(make_request("EX99", minutes=60))
    sweepers = [Repository(make_engine()) for _ in range(3)]
    at = NOW + timedelta(minutes=5)
    results = run_together([partial(s.expire_due, at) for s in sweepers])
    expired_ids = [r.id for batch in results for r in batch]
    assert sorted(expired_ids) == sorted(r.id for r in due)
    assert all(r.state is State.EXPIRED for batch in results for r in batch)
    stored = repo.get_request(not_due.id)
    assert stored is not None
    assert stored.state is State.PENDING
    assert repo.expire_due(at) == []


# -- check results and schedule fires ----------------------------------------------------------

def test_previous_check_result(repo: Repository) -> None:
    assert repo.previous_check_result("EX01") is None
    repo.record_check_result("EX01", checked_at=NOW, verdict="critical",
                             findings_json='[{"code": "SMTP_MIXED_TRUST_BINDING"}]',
                             source="schedule:morning")
    later = repo.record_check_result("EX01", checked_at=NOW + timedelta(hours=1),
                                     verdict="ok", findings_json="[]", source="command")
    repo.record_check_result("EX02", checked_at=NOW + timedelta(hours=2), verdict="warning",
                             findings_json="[]")
    assert repo.previous_check_result("ex01") == later
    earlier = repo.previous_check_result("EX01", before=later.checked_at)
    assert earlier is not None
    assert (earlier.verdict, earlier.source) == ("critical", "schedule:morning")
    by_source = repo.previous_check_result("EX01", source="schedule:morning")
    assert by_source == earlier


def test_schedule_fire_claimed_once_from_two_engines(make_engine: Callable[[], Engine],
                                                     migrated_engine: Engine) -> None:
    replicas = [Repository(make_engine()) for _ in range(2)]
    for fire in range(5):
        fire_time = NOW + timedelta(minutes=fire)
        results = run_together([
            partial(r.claim_schedule_fire, "morning", fire_time, owner=f"replica-{n}",
                    now=fire_time)
            for n, r in enumerate(replicas * 4)])
        assert results.count(True) == 1, f"fire {fire}: {results}"


def test_schedule_fire_lease_takeover_after_a_replica_died(repo: Repository) -> None:
    fire_time = NOW
    assert repo.claim_schedule_fire("s", fire_time, owner="a", now=NOW)
    assert not repo.claim_schedule_fire("s", fire_time, owner="b", now=NOW)
    lease = timedelta(minutes=5)
    assert not repo.claim_schedule_fire("s", fire_time, owner="b", now=NOW + timedelta(minutes=4),
                                        lease=lease)
    assert repo.claim_schedule_fire("s", fire_time, owner="b", now=NOW + timedelta(minutes=6),
                                    lease=lease)
    assert not repo.complete_schedule_fire("s", fire_time, owner="a", now=NOW)
    assert repo.complete_schedule_fire("s", fire_time, owner="b", now=NOW + timedelta(minutes=7))
    assert not repo.claim_schedule_fire("s", fire_time, owner="c", now=NOW + timedelta(hours=1),
                                        lease=lease)


# -- migrations --------------------------------------------------------------------------------

def test_fresh_database_upgrades_to_latest_idempotently(db_engine: Engine) -> None:
    assert current_version(db_engine) == 0
    assert upgrade(db_engine) == LATEST_VERSION
    assert upgrade(db_engine) == LATEST_VERSION
    assert current_version(db_engine) == LATEST_VERSION


def test_upgraded_schema_matches_the_declared_tables(db_engine: Engine) -> None:
    upgrade(db_engine)
    inspector = inspect(db_engine)
    for table in metadata.sorted_tables:
        stored = {c["name"] for c in inspector.get_columns(table.name)}
        assert stored == set(table.columns.keys()), table.name
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= indexes, table.name


def test_v1_database_with_data_upgrades_with_data_intact(db_engine: Engine) -> None:
    assert upgrade(db_engine, target=1) == 1
    v1 = _v1_metadata().tables
    with db_engine.begin() as connection:
        connection.execute(insert(v1["requests"]).values(
            id="R-OLDREQUEST", kind="remediation", server="EX01", plan_hash="ab" * 32,
            plan_json='{"steps": []}', requested_by="U0REQ", team_id=TEAM, channel="C0OPS",
            message_ts="1.2", state="approved", version=3, created_at=NOW,
            expires_at=NOW + timedelta(minutes=30)))
        connection.execute(insert(v1["approvals"]).values(
            request_id="R-OLDREQUEST", user_id="U0APPROVER0", team_id=TEAM, approved_at=NOW))
        connection.execute(insert(v1["schedule_fires"]).values(
            schedule_id="morning", fire_time=NOW, claimed_by="replica-a", claimed_at=NOW))
        connection.execute(insert(v1["check_results"]).values(
            server="EX01", checked_at=NOW, verdict="critical", findings_json="[]"))
    assert current_version(db_engine) == 1

    assert upgrade(db_engine) == LATEST_VERSION
    repo = Repository(db_engine)
    old = repo.get_request("R-OLDREQUEST")
    assert old is not None
    assert (old.state, old.version, old.message_ts, old.updated_at) == (
        State.APPROVED, 3, "1.2", NOW)
    assert [a.user_id for a in old.approvals] == ["U0APPROVER0"]
    previous = repo.previous_check_result("EX01")
    assert previous is not None
    assert previous.verdict == "critical"
    # The v1 fire counts as completed: never taken over, however old.
    assert not repo.claim_schedule_fire("morning", NOW, owner="b", now=NOW + timedelta(days=1),
                                        lease=timedelta(minutes=1))
    # New columns work on old rows.
    claimed = repo.claim_execution("R-OLDREQUEST", owner="replica-a", now=NOW)
    assert isinstance(claimed, Applied)
    assert claimed.request.execution_heartbeat_at == NOW
    with db_engine.connect() as connection:
        versions = connection.execute(text("SELECT version FROM schema_version "
                                           "ORDER BY version")).scalars().all()
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_concurrent_upgrades_apply_each_version_once(make_engine: Callable[[], Engine]) -> None:
    engines = [make_engine() for _ in range(4)]
    results = run_together([partial(upgrade, e) for e in engines])
    assert results == [LATEST_VERSION] * 4
    with engines[0].connect() as connection:
        rows = connection.execute(select(metadata.tables["schema_version"].c.version)).all()
    assert sorted(r.version for r in rows) == list(range(1, LATEST_VERSION + 1))


def test_database_newer_than_the_code_is_refused(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as connection:
        connection.execute(insert(metadata.tables["schema_version"]).values(
            version=LATEST_VERSION + 1, description="from the future", applied_at=NOW))
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST_VERSION + 1}"):
        upgrade(migrated_engine)
