"""Who may do what, decided at the moment of each click. Pure: no I/O, no clock.

The caller resolves the clicking user's Slack user groups (``usergroups.users.list``) and passes
them in :class:`Actor`; configured approvers and admins may be user IDs or user-group IDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.config import ApprovalSettings, SlackSettings
from bot.remediation.model import RemediationRequest
from bot.remediation.states import State


@dataclass(frozen=True)
class Actor:
    """The Slack user behind a click or command, with the user groups they belong to."""

    user_id: str
    team_id: str
    group_ids: frozenset[str] = frozenset()

    def is_one_of(self, principals: tuple[str, ...] | frozenset[str]) -> bool:
        """True when the user, or one of their groups, is among ``principals``."""
        return self.user_id in principals or not self.group_ids.isdisjoint(principals)


class DecisionCode(StrEnum):
    """Why a decision came out as it did; stable for audit records and tests."""

    ALLOWED = "allowed"
    ALREADY_APPROVED = "already_approved"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    FROZEN = "frozen"
    NO_APPROVERS = "no_approvers"
    NOT_APPROVER = "not_approver"
    SELF_APPROVAL = "self_approval"
    NOT_ADMIN = "not_admin"
    CHANNEL_NOT_ALLOWED = "channel_not_allowed"
    USER_NOT_ALLOWED = "user_not_allowed"


@dataclass(frozen=True)
class Decision:
    """The answer to "may this actor do this now?", with a reason fit for people.

    ``final`` is true for an allowed approval that reaches the number of approvals required.
    """

    allowed: bool
    reason: str
    final: bool = False
    code: DecisionCode = DecisionCode.ALLOWED


def _refuse(code: DecisionCode, reason: str) -> Decision:
    return Decision(allowed=False, reason=reason, final=False, code=code)


def _closed_reason(request: RemediationRequest, now: datetime) -> Decision | None:
    if request.state is not State.PENDING:
        return _refuse(DecisionCode.NOT_PENDING,
                       f"request {request.id} is {request.state.value}, no longer pending")
    if request.is_expired(now):
        return _refuse(DecisionCode.EXPIRED, f"request {request.id} expired at "
                                             f"{request.expires_at.isoformat(timespec='seconds')}")
    return None


def _approver_refusal(actor: Actor, settings: ApprovalSettings) -> Decision | None:
    if not settings.approvers:
        return _refuse(DecisionCode.NO_APPROVERS, "no approvers are configured")
    if not actor.is_one_of(settings.approvers):
        return _refuse(DecisionCode.NOT_APPROVER,
                       f"<@{actor.user_id}> is not an approver (neither listed nor in an "
                       "approver group)")
    return None


def decide_approval(request: RemediationRequest, actor: Actor, settings: ApprovalSettings,
                    now: datetime, *, frozen: bool) -> Decision:
    """May ``actor`` approve ``request`` at ``now``? And would theirs be the final approval?

    A second click by the same approver is refused with the reason "already approved", so a
    double click never counts twice.
    """
    if actor.user_id in request.approver_ids:
        return _refuse(DecisionCode.ALREADY_APPROVED, "already approved")
    closed = _closed_reason(request, now)
    if closed is not None:
        return closed
    if frozen:
        return _refuse(DecisionCode.FROZEN, "remediation is frozen: no request can be approved "
                                            "until an admin unfreezes")
    refusal = _approver_refusal(actor, settings)
    if refusal is not None:
        return refusal
    if actor.user_id == request.requested_by and not settings.allow_self_approval:
        return _refuse(DecisionCode.SELF_APPROVAL, "the requester cannot approve their own request")
    given = len(request.approver_ids) + 1
    final = given >= settings.required
    reason = ("approved" if final
              else f"approval {given} of {settings.required} recorded")
    return Decision(allowed=True, reason=reason, final=final, code=DecisionCode.ALLOWED)


def decide_denial(request: RemediationRequest, actor: Actor, settings: ApprovalSettings,
                  now: datetime) -> Decision:
    """May ``actor`` deny ``request`` at ``now``? Any approver may, including the requester
    when they are an approver; a freeze does not prevent denying."""
    closed = _closed_reason(request, now)
    if closed is not None:
        return closed
    refusal = _approver_refusal(actor, settings)
    if refusal is not None:
        return refusal
    return Decision(allowed=True, reason="denied", final=True, code=DecisionCode.ALLOWED)


def may_freeze(actor: Actor, settings: ApprovalSettings) -> Decision:
    """May ``actor`` freeze or unfreeze remediation? Only configured admins (users or groups)."""
    if actor.is_one_of(settings.admins):
        return Decision(allowed=True, reason="admin", code=DecisionCode.ALLOWED)
    return _refuse(DecisionCode.NOT_ADMIN,
                   f"<@{actor.user_id}> is not an admin: only admins may freeze or unfreeze")


def may_run_check(actor: Actor, channel: str, settings: SlackSettings) -> Decision:
    """May ``actor`` run commands in ``channel``? Empty allow-lists allow everyone."""
    if settings.allowed_channels and channel not in settings.allowed_channels:
        return _refuse(DecisionCode.CHANNEL_NOT_ALLOWED,
                       f"exchange-tls is not enabled in <#{channel}>")
    if settings.allowed_users and actor.user_id not in settings.allowed_users:
        return _refuse(DecisionCode.USER_NOT_ALLOWED,
                       f"<@{actor.user_id}> is not allowed to use exchange-tls")
    return Decision(allowed=True, reason="allowed", code=DecisionCode.ALLOWED)
