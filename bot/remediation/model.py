"""Remediation requests as immutable values: what was asked, by whom, and where it stands."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from bot.remediation.states import State, is_terminal

RequestKind = Literal["remediation", "rollback"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("remediation", "rollback")
REQUEST_ID_PREFIX = "R-"
REQUEST_ID_LENGTH = len(REQUEST_ID_PREFIX) + 10


@dataclass(frozen=True)
class Approval:
    """One approver's click, as recorded."""

    user_id: str
    team_id: str
    at: datetime


@dataclass(frozen=True)
class RemediationRequest:
    """A plan waiting for, or past, approval and execution.

    ``plan_json`` is the plan exactly as approved (opaque text here); ``plan_hash`` identifies
    it. ``version`` grows by one at every change and is what compare-and-set compares.
    """

    id: str
    kind: RequestKind
    server: str
    plan_hash: str
    plan_json: str
    requested_by: str
    team_id: str
    channel: str
    message_ts: str | None
    state: State
    approvals: tuple[Approval, ...]
    created_at: datetime
    expires_at: datetime
    version: int
    updated_at: datetime
    rollback_of: str | None = None
    previous_tls_certificate_name: str | None = None
    state_reason: str | None = None
    execution_claimed_by: str | None = None
    execution_heartbeat_at: datetime | None = field(default=None)

    @property
    def approver_ids(self) -> frozenset[str]:
        """The distinct users who approved so far."""
        return frozenset(a.user_id for a in self.approvals)

    @property
    def short_plan_hash(self) -> str:
        """The first 12 characters of the plan hash, as shown on cards."""
        return self.plan_hash[:12]

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.state)

    def is_expired(self, now: datetime) -> bool:
        """True when the approval window has closed at ``now``."""
        return now >= self.expires_at


def new_request_id(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A short, URL-safe, unguessable id: ``R-`` and 10 base32 characters (50 random bits)."""
    return REQUEST_ID_PREFIX + base64.b32encode(random_bytes(10)).decode("ascii")[:10]


def new_request(
    *,
    kind: RequestKind,
    server: str,
    plan_hash: str,
    plan_json: str,
    requested_by: str,
    team_id: str,
    channel: str,
    now: datetime,
    expires_after: timedelta,
    message_ts: str | None = None,
    rollback_of: str | None = None,
    previous_tls_certificate_name: str | None = None,
    request_id: str | None = None,
) -> RemediationRequest:
    """A fresh pending request, expiring ``expires_after`` from ``now`` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if kind not in REQUEST_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REQUEST_KINDS)} (got {kind!r})")
    if (kind == "rollback") != (rollback_of is not None):
        raise ValueError("a rollback request, and only one, names the request it rolls back")
    if expires_after <= timedelta(0):
        raise ValueError("expires_after must be positive")
    return RemediationRequest(
        id=request_id if request_id is not None else new_request_id(),
        kind=kind,
        server=server,
        plan_hash=plan_hash,
        plan_json=plan_json,
        requested_by=requested_by,
        team_id=team_id,
        channel=channel,
        message_ts=message_ts,
        state=State.PENDING,
        approvals=(),
        created_at=now,
        expires_at=now + expires_after,
        version=1,
        updated_at=now,
        rollback_of=rollback_of,
        previous_tls_certificate_name=previous_tls_certificate_name,
    )
