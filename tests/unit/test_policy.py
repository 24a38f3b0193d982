"""The approval policy, decided at click time from the request, the actor and the settings."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.config import ApprovalSettings, SlackSettings
from bot.remediation.model import Approval, RemediationRequest, new_request, new_request_id
from bot.remediation.policy import (
    Actor,
    DecisionCode,
    decide_approval,
    decide_denial,
    may_freeze,
    may_run_check,
)
from bot.remediation.states import State

NOW = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
TEAM = "T0TEAM"
REQUESTER = "U0REQUESTER"
ALICE = Actor("U0ALICE", TEAM)
BOB = Actor("U0BOB", TEAM)
CAROL_IN_GROUP = Actor("U0CAROL", TEAM, frozenset({"S0APPROVERS"}))
MALLORY = Actor("U0MALLORY", TEAM, frozenset({"S0OTHERS"}))
SETTINGS = ApprovalSettings(approvers=("U0ALICE", "U0BOB", REQUESTER, "S0APPROVERS"),
                            admins=("U0ALICE", "S0ADMINS"), required=1)


def pending(**changes: Any) -> RemediationRequest:
    request = new_request(kind="remediation", server="EX01", plan_hash="ab" * 32,
                          plan_json="{}", requested_by=REQUESTER, team_id=TEAM,
                          channel="C0OPS", now=NOW, expires_after=timedelta(minutes=30),
                          request_id="R-AAAAAAAAAA")
    return replace(request, **changes)


def approved_by(*actors: Actor) -> tuple[Approval, ...]:
    return tuple(Approval(a.user_id, a.team_id, NOW) for a in actors)


def test_listed_approver_gives_the_final_approval_when_one_is_required() -> None:
    decision = decide_approval(pending(), ALICE, SETTINGS, NOW, frozen=False)
    assert decision.allowed
    assert decision.final
    assert decision.code is DecisionCode.ALLOWED


def test_member_of_an_approver_group_may_approve() -> None:
    assert decide_approval(pending(), CAROL_IN_GROUP, SETTINGS, NOW, frozen=False).allowed


def test_someone_neither_listed_nor_in_a_group_is_refused() -> None:
    decision = decide_approval(pending(), MALLORY, SETTINGS, NOW, frozen=False)
    assert not decision.allowed
    assert decision.code is DecisionCode.NOT_APPROVER
    assert "U0MALLORY" in decision.reason


def test_nobody_may_approve_when_no_approvers_are_configured() -> None:
    decision = decide_approval(pending(), ALICE, ApprovalSettings(), NOW, frozen=False)
    assert (decision.allowed, decision.code) == (False, DecisionCode.NO_APPROVERS)


def test_two_of_n_first_approval_is_partial_second_final() -> None:
    settings = replace(SETTINGS, required=2)
    first = decide_approval(pending(), ALICE, settings, NOW, frozen=False)
    assert first.allowed
    assert not first.final
    assert "1 of 2" in first.reason
    second = decide_approval(pending(approvals=approved_by(ALICE)), BOB, settings, NOW,
                             frozen=False)
    assert second.allowed
    assert second.final


def test_same_approver_twice_does_not_count_twice() -> None:
    settings = replace(SETTINGS, required=2)
    decision = decide_approval(pending(approvals=approved_by(ALICE)), ALICE, settings, NOW,
                               frozen=False)
    assert not decision.allowed
    assert decision.reason == "already approved"
    assert decision.code is DecisionCode.ALREADY_APPROVED


def test_double_click_after_final_approval_is_already_approved() -> None:
    request = pending(state=State.APPROVED, approvals=approved_by(ALICE))
    decision = decide_approval(request, ALICE, SETTINGS, NOW, frozen=False)
    assert decision.reason == "already approved"


def test_requester_cannot_approve_own_request() -> None:
    requester = Actor(REQUESTER, TEAM)
    decision = decide_approval(pending(), requester, SETTINGS, NOW, frozen=False)
    assert (decision.allowed, decision.code) == (False, DecisionCode.SELF_APPROVAL)


def test_requester_may_approve_own_request_when_configured() -> None:
    settings = replace(SETTINGS, allow_self_approval=True)
    assert decide_approval(pending(), Actor(REQUESTER, TEAM), settings, NOW, frozen=False).allowed


def test_expired_request_can_be_neither_approved_nor_denied() -> None:
    at_expiry = NOW + timedelta(minutes=30)
    approval = decide_approval(pending(), ALICE, SETTINGS, at_expiry, frozen=False)
    denial = decide_denial(pending(), ALICE, SETTINGS, at_expiry)
    assert (approval.allowed, approval.code) == (False, DecisionCode.EXPIRED)
    assert (denial.allowed, denial.code) == (False, DecisionCode.EXPIRED)
    assert "expired at 2025-03-30T01:00:00+00:00" in approval.reason
    just_before = at_expiry - timedelta(microseconds=1)
    assert decide_approval(pending(), ALICE, SETTINGS, just_before, frozen=False).allowed


def test_frozen_refuses_approval_but_not_denial() -> None:
    approval = decide_approval(pending(), ALICE, SETTINGS, NOW, frozen=True)
    assert (approval.allowed, approval.code) == (False, DecisionCode.FROZEN)
    assert decide_denial(pending(), ALICE, SETTINGS, NOW).allowed


@pytest.mark.parametrize("state", [s for s in State if s is not State.PENDING])
def test_only_pending_requests_can_be_approved_or_denied(state: State) -> None:
    approval = decide_approval(pending(state=state), ALICE, SETTINGS, NOW, frozen=False)
    denial = decide_denial(pending(state=state), ALICE, SETTINGS, NOW)
    assert approval.code is DecisionCode.NOT_PENDING
    assert denial.code is DecisionCode.NOT_PENDING
    assert state.value in approval.reason


def test_any_approver_may_deny_others_may_not() -> None:
    for actor in (ALICE, BOB, CAROL_IN_GROUP, Actor(REQUESTER, TEAM)):
        assert decide_denial(pending(), actor, SETTINGS, NOW).allowed
    assert decide_denial(pending(), MALLORY, SETTINGS, NOW).code is DecisionCode.NOT_APPROVER


def test_only_admins_by_id_or_group_may_freeze() -> None:
    assert may_freeze(ALICE, SETTINGS).allowed
    assert may_freeze(Actor("U0DAVE", TEAM, frozenset({"S0ADMINS"})), SETTINGS).allowed
    refused = may_freeze(BOB, SETTINGS)
    assert (refused.allowed, refused.code) == (False, DecisionCode.NOT_ADMIN)


def test_run_check_open_to_everyone_when_nothing_is_restricted() -> None:
    assert may_run_check(MALLORY, "C0ANY", SlackSettings()).allowed


def test_run_check_restricted_by_channel_and_by_user() -> None:
    settings = SlackSettings(allowed_channels=("C0OPS",), allowed_users=("U0ALICE",))
    assert may_run_check(ALICE, "C0OPS", settings).allowed
    assert may_run_check(ALICE, "C0RANDOM", settings).code is DecisionCode.CHANNEL_NOT_ALLOWED
    assert may_run_check(BOB, "C0OPS", settings).code is DecisionCode.USER_NOT_ALLOWED


def test_request_ids_are_short_url_safe_and_random() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        assert len(request_id) == 12
        assert request_id.startswith("R-")
        assert set(request_id[2:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_new_request_refuses_inconsistent_rollbacks_and_naive_times() -> None:
    common: dict[str, Any] = {
        "server": "EX01", "plan_hash": "h", "plan_json": "{}", "requested_by": REQUESTER,
        "team_id": TEAM, "channel": "C0OPS", "expires_after": timedelta(minutes=5)}
    with pytest.raises(ValueError, match="rollback"):
        new_request(kind="rollback", now=NOW, **common)
    with pytest.raises(ValueError, match="timezone-aware"):
        new_request(kind="remediation", now=NOW.replace(tzinfo=None), **common)
    rollback = new_request(kind="rollback", now=NOW, rollback_of="R-AAAAAAAAAA",
                           previous_tls_certificate_name="<I>CN=ca<S>CN=mail",
                           **common)
    assert rollback.state is State.PENDING
    assert rollback.expires_at == NOW + timedelta(minutes=5)
