"""Requests, approvals, freeze, check results and schedule fires in the database.

Every state change is a compare-and-set: ``UPDATE ... WHERE id = ? AND state = ? AND
version = ?`` and the row count decides, so a double click, ten clicks at once or two replicas
change a request once. Decisions that read before they write (approvals, execution claims) also
lock what they read first (PostgreSQL row and advisory locks; SQLite ``BEGIN IMMEDIATE``).
With an :class:`~bot.audit.AuditLog`, each change and each refused click is audited in the same
transaction: the trail never shows what did not happen, nor misses what did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Engine, Select, Table, and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bot.audit import AuditEventType, AuditLog
from bot.config import ApprovalSettings
from bot.remediation.model import Approval, RemediationRequest, RequestKind
from bot.remediation.policy import Actor, Decision, decide_approval, decide_denial
from bot.remediation.states import Event, State, approval_event, next_state
from bot.storage import schema
from bot.storage.outage import transaction
from bot.storage.schema import advisory_xact_lock, configure_engine

_requests = schema.requests
_approvals = schema.approvals


class RefusalCode(StrEnum):
    """Why the repository did not change anything."""

    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    """The request was not in the expected state or version: someone else changed it first."""
    POLICY = "policy"
    """The approval policy refused; see ``Refusal.decision``."""
    ALREADY_APPROVED = "already_approved"
    FROZEN = "frozen"
    SERVER_BUSY = "server_busy"
    """Another remediation is running on the same server."""


@dataclass(frozen=True)
class Refusal:
    """Nothing was changed, and why. ``request`` is the request as it stands now, if any."""

    code: RefusalCode
    reason: str
    request: RemediationRequest | None = None
    decision: Decision | None = None


@dataclass(frozen=True)
class Applied:
    """A change that took place: the request after it, the state before it, and the event."""

    request: RemediationRequest
    previous_state: State
    event: Event

    @property
    def transitioned(self) -> bool:
        """True when the state changed (a partial approval leaves it pending)."""
        return self.previous_state is not self.request.state


@dataclass(frozen=True)
class FreezeState:
    frozen: bool
    changed_by: str | None = None
    changed_team: str | None = None
    changed_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class FreezeChange:
    before: FreezeState
    after: FreezeState

    @property
    def changed(self) -> bool:
        return self.before.frozen != self.after.frozen


@dataclass(frozen=True)
class CheckResult:
    """One server's result of one check run, kept for "new since the last post"."""

    id: int
    server: str
    checked_at: datetime
    verdict: str
    findings_json: str
    source: str | None


_AUDIT_EVENT_FOR: dict[Event, AuditEventType] = {
    Event.APPROVE: AuditEventType.APPROVED,
    Event.APPROVE_FINAL: AuditEventType.APPROVED,
    Event.DENY: AuditEventType.DENIED,
    Event.EXPIRE: AuditEventType.EXPIRED,
    Event.START: AuditEventType.EXECUTION_STARTED,
    Event.STEP_FAILED: AuditEventType.EXECUTION_FAILED,
    Event.FINISH: AuditEventType.EXECUTION_FINISHED,
    Event.ABORT: AuditEventType.ABORTED,
    Event.INTERRUPT: AuditEventType.EXECUTION_INTERRUPTED,
}


class _Conflict(Exception):
    """Raised inside a transaction to roll it back when a compare-and-set matched no row."""


def _row_to_request(row: Any, approvals: tuple[Approval, ...]) -> RemediationRequest:
    return RemediationRequest(
        id=row.id,
        kind=cast(RequestKind, row.kind),
        server=row.server,
        plan_hash=row.plan_hash,
        plan_json=row.plan_json,
        requested_by=row.requested_by,
        team_id=row.team_id,
        channel=row.channel,
        message_ts=row.message_ts,
        state=State(row.state),
        approvals=approvals,
        created_at=row.created_at,
        expires_at=row.expires_at,
        version=int(row.version),
        updated_at=row.updated_at if row.updated_at is not None else row.created_at,
        rollback_of=row.rollback_of,
        previous_tls_certificate_name=row.previous_tls_certificate_name,
        state_reason=row.state_reason,
        execution_claimed_by=row.execution_claimed_by,
        execution_heartbeat_at=row.execution_heartbeat_at,
    )


class Repository:
    """The bot's persistent state. The schema must exist (:func:`~bot.storage.upgrade`).

    Times are passed in (``now``): the repository never reads the clock.
    """

    def __init__(self, engine: Engine, *, audit: AuditLog | None = None) -> None:
        self._engine = configure_engine(engine)
        self._audit = audit

    @property
    def engine(self) -> Engine:
        return self._engine

    # -- reading -----------------------------------------------------------------------------

    def _load(self, connection: Connection, request_id: str, *,
              lock: bool = False) -> RemediationRequest | None:
        query = select(_requests).where(_requests.c.id == request_id)
        if lock:
            query = query.with_for_update()
        row = connection.execute(query).one_or_none()
        if row is None:
            return None
        approval_rows = connection.execute(
            select(_approvals).where(_approvals.c.request_id == request_id)
            .order_by(_approvals.c.approved_at, _approvals.c.user_id)
        ).all()
        approvals = tuple(Approval(user_id=a.user_id, team_id=a.team_id, at=a.approved_at)
                          for a in approval_rows)
        return _row_to_request(row, approvals)

    def _load_many(self, connection: Connection, query: Select[Any]) -> list[RemediationRequest]:
        rows = connection.execute(query).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        by_request: dict[str, list[Approval]] = {i: [] for i in ids}
        for a in connection.execute(
            select(_approvals).where(_approvals.c.request_id.in_(ids))
            .order_by(_approvals.c.approved_at, _approvals.c.user_id)
        ):
            by_request[a.request_id].append(Approval(a.user_id, a.team_id, a.approved_at))
        return [_row_to_request(row, tuple(by_request[row.id])) for row in rows]

    def get_request(self, request_id: str) -> RemediationRequest | None:
        """The request with that id, or None."""
        with self._engine.connect() as connection:
            return self._load(connection, request_id)

    def list_requests(self, *, states: tuple[State, ...] | None = None,
                      server: str | None = None, limit: int = 100) -> list[RemediationRequest]:
        """Requests, newest first, optionally of some states and one server."""
        query = select(_requests)
        if states is not None:
            query = query.where(_requests.c.state.in_([s.value for s in states]))
        if server is not None:
            query = query.where(func.lower(_requests.c.server) == server.casefold())
        query = query.order_by(_requests.c.created_at.desc(), _requests.c.id).limit(limit)
        with self._engine.connect() as connection:
            return self._load_many(connection, query)

    def list_pending(self, *, server: str | None = None) -> list[RemediationRequest]:
        """Pending requests, oldest first."""
        query = select(_requests).where(_requests.c.state == State.PENDING.value)
        if server is not None:
            query = query.where(func.lower(_requests.c.server) == server.casefold())
        query = query.order_by(_requests.c.created_at, _requests.c.id)
        with self._engine.connect() as connection:
            return self._load_many(connection, query)

    def rollbacks_of(self, request_id: str) -> list[RemediationRequest]:
        """Rollback requests made for ``request_id``, oldest first."""
        query = (select(_requests).where(_requests.c.rollback_of == request_id)
                 .order_by(_requests.c.created_at, _requests.c.id))
        with self._engine.connect() as connection:
            return self._load_many(connection, query)

    # -- creating ----------------------------------------------------------------------------

    def create_request(self, request: RemediationRequest) -> RemediationRequest:
        """Store a new request (see :func:`bot.remediation.model.new_request`); audited as
        ``request_created`` by its requester."""
        if request.state is not State.PENDING or request.approvals:
            raise ValueError("a new request is pending and has no approvals")
        with transaction(self._engine) as connection:
            connection.execute(insert(_requests).values(
                id=request.id, kind=request.kind, server=request.server,
                plan_hash=request.plan_hash, plan_json=request.plan_json,
                requested_by=request.requested_by, team_id=request.team_id,
                channel=request.channel, message_ts=request.message_ts,
                state=request.state.value, version=request.version,
                created_at=request.created_at, expires_at=request.expires_at,
                updated_at=request.updated_at, rollback_of=request.rollback_of,
                previous_tls_certificate_name=request.previous_tls_certificate_name,
                state_reason=request.state_reason,
            ))
            if self._audit is not None:
                self._audit.append(
                    AuditEventType.REQUEST_CREATED, request=request,
                    actor_user=request.requested_by, actor_team=request.team_id,
                    after_state=request.state.value, at=request.created_at,
                    details={"kind": request.kind, "expires_at": request.expires_at.isoformat(),
                             "rollback_of": request.rollback_of},
                    connection=connection)
        return request

    def set_message_ref(self, request_id: str, channel: str,
                        message_ts: str) -> RemediationRequest | None:
        """Remember the card's Slack message (not a state change: the version stays)."""
        with transaction(self._engine) as connection:
            connection.execute(update(_requests).where(_requests.c.id == request_id)
                               .values(channel=channel, message_ts=message_ts))
            return self._load(connection, request_id)

    # -- approving and denying ---------------------------------------------------------------

    def _cas_state(self, connection: Connection, request: RemediationRequest, event: Event,
                   now: datetime, reason: str | None, **extra: Any) -> RemediationRequest:
        target = next_state(request.state, event)
        changed = connection.execute(
            update(_requests)
            .where(_requests.c.id == request.id, _requests.c.state == request.state.value,
                   _requests.c.version == request.version)
            .values(state=target.value, version=request.version + 1, updated_at=now,
                    state_reason=reason, **extra)
        )
        if changed.rowcount != 1:
            raise _Conflict
        after = self._load(connection, request.id)
        assert after is not None
        return after

    def _audit_change(self, connection: Connection, applied: Applied, at: datetime, *,
                      actor_user: str | None, actor_team: str | None,
                      result: str | None = None, error: str | None = None,
                      details: dict[str, Any] | None = None) -> None:
        if self._audit is None:
            return
        self._audit.append(
            _AUDIT_EVENT_FOR[applied.event], request=applied.request,
            actor_user=actor_user, actor_team=actor_team,
            before_state=applied.previous_state.value, after_state=applied.request.state.value,
            result=result, error=error,
            details={"event": applied.event.value, **(details or {})},
            at=at, connection=connection)

    def _audit_refusal(self, connection: Connection, request: RemediationRequest, actor: Actor,
                       action: str, decision: Decision, at: datetime) -> None:
        if self._audit is None:
            return
        self._audit.append(
            AuditEventType.REFUSED_CLICK, request=request, actor_user=actor.user_id,
            actor_team=actor.team_id, before_state=request.state.value,
            after_state=request.state.value, result=decision.reason,
            details={"action": action, "code": decision.code.value}, at=at,
            connection=connection)

    def approve(self, request_id: str, actor: Actor, settings: ApprovalSettings,
                now: datetime) -> Applied | Refusal:
        """Decide (with the approval policy, against the current stored state and freeze) and
        record ``actor``'s approval. The approval that reaches ``settings.required`` moves the
        request to approved, exactly once however many clicks arrive together. Refused clicks
        are audited with their reason."""
        try:
            return self._approve(request_id, actor, settings, now)
        except _Conflict:
            return self._conflict(request_id, "changed while approving")

    def _conflict(self, request_id: str, what: str) -> Refusal:
        current = self.get_request(request_id)
        state = current.state.value if current else "gone"
        return Refusal(RefusalCode.CONFLICT, f"request {request_id} {what} (now {state})",
                       current)

    def _approve(self, request_id: str, actor: Actor, settings: ApprovalSettings,
                 now: datetime) -> Applied | Refusal:
        with transaction(self._engine) as connection:
            request = self._load(connection, request_id, lock=True)
            if request is None:
                return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
            decision = decide_approval(request, actor, settings, now,
                                       frozen=self._frozen(connection))
            if not decision.allowed:
                self._audit_refusal(connection, request, actor, "approve", decision, now)
                return Refusal(RefusalCode.POLICY, decision.reason, request, decision)
            applied = self._add_approval_in(connection, request, actor.user_id, actor.team_id,
                                            now, settings.required)
            self._audit_change(connection, applied, now, actor_user=actor.user_id,
                               actor_team=actor.team_id, result=decision.reason,
                               details={"approvals": len(applied.request.approvals),
                                        "required": settings.required})
            return applied

    def _add_approval_in(self, connection: Connection, request: RemediationRequest,
                         user_id: str, team_id: str, at: datetime, required: int) -> Applied:
        connection.execute(insert(_approvals).values(
            request_id=request.id, user_id=user_id, team_id=team_id, approved_at=at))
        given = len(request.approver_ids | {user_id})
        event = approval_event(final=given >= required)
        reason = "approved" if event is Event.APPROVE_FINAL else None
        after = self._cas_state(connection, request, event, at, reason)
        return Applied(after, request.state, event)

    def add_approval(self, request_id: str, *, user_id: str, team_id: str, at: datetime,
                     expected_version: int, required: int) -> Applied | Refusal:
        """Compare-and-set an approval the caller already decided on at ``expected_version``.

        Refused with CONFLICT when the request changed since (re-read, re-decide, retry), and
        with ALREADY_APPROVED when this user's approval is already recorded. Not audited:
        prefer :meth:`approve`, which decides and audits in the same transaction.
        """
        try:
            with transaction(self._engine) as connection:
                request = self._load(connection, request_id)
                if request is None:
                    return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
                if user_id in request.approver_ids:
                    return Refusal(RefusalCode.ALREADY_APPROVED, "already approved", request)
                if request.version != expected_version or request.state is not State.PENDING:
                    raise _Conflict
                return self._add_approval_in(connection, request, user_id, team_id, at,
                                             required)
        except IntegrityError:
            return Refusal(RefusalCode.ALREADY_APPROVED, "already approved",
                           self.get_request(request_id))
        except _Conflict:
            current = self.get_request(request_id)
            state = current.state.value if current else "gone"
            return Refusal(RefusalCode.CONFLICT,
                           f"request {request_id} changed (now {state}, version "
                           f"{current.version if current else '-'}), expected version "
                           f"{expected_version}", current)

    def deny(self, request_id: str, actor: Actor, settings: ApprovalSettings,
             now: datetime, *, reason: str | None = None) -> Applied | Refusal:
        """Decide with the policy and deny; refused clicks are audited with their reason."""
        try:
            return self._deny(request_id, actor, settings, now, reason)
        except _Conflict:
            return self._conflict(request_id, "changed while denying")

    def _deny(self, request_id: str, actor: Actor, settings: ApprovalSettings,
              now: datetime, reason: str | None) -> Applied | Refusal:
        with transaction(self._engine) as connection:
            request = self._load(connection, request_id, lock=True)
            if request is None:
                return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
            decision = decide_denial(request, actor, settings, now)
            if not decision.allowed:
                self._audit_refusal(connection, request, actor, "deny", decision, now)
                return Refusal(RefusalCode.POLICY, decision.reason, request, decision)
            text = reason or f"denied by <@{actor.user_id}>"
            after = self._cas_state(connection, request, Event.DENY, now, text)
            applied = Applied(after, request.state, Event.DENY)
            self._audit_change(connection, applied, now, actor_user=actor.user_id,
                               actor_team=actor.team_id, result=text)
            return applied

    # -- other transitions -------------------------------------------------------------------

    def transition(self, request_id: str, expected_state: State, event: Event, *,
                   now: datetime, reason: str | None = None,
                   expected_version: int | None = None,
                   actor_user: str | None = None, actor_team: str | None = None,
                   result: str | None = None, error: str | None = None,
                   details: dict[str, Any] | None = None) -> Applied | Refusal:
        """Compare-and-set ``expected_state --event--> next_state`` (and ``expected_version``
        when given). An event the table does not allow from ``expected_state`` raises
        :class:`~bot.remediation.states.InvalidTransition`; approvals go through
        :meth:`approve`, starting through :meth:`claim_execution`."""
        if event in (Event.APPROVE, Event.APPROVE_FINAL, Event.DENY, Event.START):
            raise ValueError(f"{event.value!r} goes through approve(), deny() or "
                             "claim_execution(), which check more than the state")
        expected_state = State(expected_state)
        next_state(expected_state, event)
        try:
            with transaction(self._engine) as connection:
                request = self._load(connection, request_id)
                if request is None:
                    return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
                if request.state is not expected_state or (
                        expected_version is not None and request.version != expected_version):
                    raise _Conflict
                after = self._cas_state(connection, request, event, now, reason)
                applied = Applied(after, request.state, event)
                self._audit_change(connection, applied, now, actor_user=actor_user,
                                   actor_team=actor_team, result=result or reason, error=error,
                                   details=details)
                return applied
        except _Conflict:
            current = self.get_request(request_id)
            return Refusal(RefusalCode.CONFLICT,
                           f"request {request_id} is "
                           f"{current.state.value if current else 'gone'}, not "
                           f"{expected_state.value}"
                           + (f" at version {expected_version}" if expected_version else ""),
                           current)

    def claim_execution(self, request_id: str, *, owner: str, now: datetime) -> Applied | Refusal:
        """Move an approved request to running for ``owner``; exactly one caller, across
        threads and processes, ever gets :class:`Applied`.

        Refused while frozen (the request stays approved), while another remediation runs on
        the same server (stays approved: try later), and when not approved (CONFLICT).
        """
        try:
            with transaction(self._engine) as connection:
                request = self._load(connection, request_id, lock=True)
                if request is None:
                    return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
                advisory_xact_lock(connection, f"server:{request.server.casefold()}")
                if request.state is not State.APPROVED:
                    claimed = (f" (claimed by {request.execution_claimed_by})"
                               if request.execution_claimed_by else "")
                    return Refusal(RefusalCode.CONFLICT, f"request {request_id} is "
                                   f"{request.state.value}, not approved{claimed}", request)
                if self._frozen(connection):
                    return Refusal(RefusalCode.FROZEN, "remediation is frozen", request)
                busy = connection.execute(
                    select(_requests.c.id).where(
                        func.lower(_requests.c.server) == request.server.casefold(),
                        _requests.c.state == State.RUNNING.value,
                        _requests.c.id != request.id)
                ).first()
                if busy is not None:
                    return Refusal(RefusalCode.SERVER_BUSY,
                                   f"{busy.id} is already running on {request.server}", request)
                after = self._cas_state(connection, request, Event.START, now,
                                        f"started by {owner}", execution_claimed_by=owner,
                                        execution_heartbeat_at=now)
                applied = Applied(after, request.state, Event.START)
                self._audit_change(connection, applied, now, actor_user=None, actor_team=None,
                                   details={"owner": owner})
                return applied
        except _Conflict:
            return Refusal(RefusalCode.CONFLICT, f"request {request_id} changed while claiming",
                           self.get_request(request_id))

    def heartbeat(self, request_id: str, *, owner: str, now: datetime) -> bool:
        """Record that ``owner`` is still running the request; False if it no longer is."""
        with transaction(self._engine) as connection:
            changed = connection.execute(
                update(_requests).where(_requests.c.id == request_id,
                                        _requests.c.state == State.RUNNING.value,
                                        _requests.c.execution_claimed_by == owner)
                .values(execution_heartbeat_at=now))
            return changed.rowcount == 1

    def interrupt_running(self, now: datetime, *, owner: str | None = None,
                          heartbeat_before: datetime | None = None) -> list[Applied]:
        """Mark running requests whose runner died as interrupted (nothing is retried).

        Those claimed by ``owner`` (a restarted replica's stable id), and/or those whose last
        heartbeat is older than ``heartbeat_before`` (a replica that disappeared).
        """
        if owner is None and heartbeat_before is None:
            raise ValueError("give owner, heartbeat_before or both")
        conditions = []
        if owner is not None:
            conditions.append(_requests.c.execution_claimed_by == owner)
        if heartbeat_before is not None:
            conditions.append(or_(_requests.c.execution_heartbeat_at.is_(None),
                                  _requests.c.execution_heartbeat_at < heartbeat_before))
        query = (select(_requests).where(_requests.c.state == State.RUNNING.value,
                                         or_(*conditions)).order_by(_requests.c.id))
        return self._sweep(query, Event.INTERRUPT, now,
                           "the process running it stopped before it finished; nothing was "
                           "retried: check the server")

    def interrupt_execution(self, request_id: str, *, version: int, claimed_by: str | None,
                            heartbeat_before: datetime | None, now: datetime, reason: str,
                            details: dict[str, Any] | None = None) -> Applied | Refusal:
        """Mark a run found dead as interrupted, audited in the same transaction, only if it
        is still the run that was judged dead: running at ``version``, claimed by
        ``claimed_by`` and, with ``heartbeat_before``, with no heartbeat since then (a runner
        that was only slow wins: CONFLICT, nothing changes)."""
        try:
            with transaction(self._engine) as connection:
                request = self._load(connection, request_id, lock=True)
                if request is None:
                    return Refusal(RefusalCode.NOT_FOUND, f"no request {request_id}")
                if request.state is not State.RUNNING or request.version != version \
                        or request.execution_claimed_by != claimed_by:
                    raise _Conflict
                beat = request.execution_heartbeat_at
                if heartbeat_before is not None and beat is not None and beat >= heartbeat_before:
                    return Refusal(RefusalCode.CONFLICT,
                                   f"request {request_id} has a heartbeat from "
                                   f"{request.execution_claimed_by} since: it is alive", request)
                after = self._cas_state(connection, request, Event.INTERRUPT, now, reason)
                applied = Applied(after, request.state, Event.INTERRUPT)
                self._audit_change(connection, applied, now, actor_user=None, actor_team=None,
                                   result=reason, details=details)
                return applied
        except _Conflict:
            current = self.get_request(request_id)
            return Refusal(RefusalCode.CONFLICT,
                           f"request {request_id} changed since it was found dead (now "
                           f"{current.state.value if current else 'gone'})", current)

    def expire_due(self, now: datetime) -> list[RemediationRequest]:
        """Expire pending requests whose time is up; returns those this call expired."""
        query = (select(_requests).where(_requests.c.state == State.PENDING.value,
                                         _requests.c.expires_at <= now)
                 .order_by(_requests.c.id))
        return [a.request for a in self._sweep(query, Event.EXPIRE, now,
                                               "not approved in time")]

    def _sweep(self, query: Select[Any], event: Event, now: datetime, reason: str) -> list[Applied]:
        with transaction(self._engine) as connection:
            applied: list[Applied] = []
            for request in self._load_many(connection, query):
                try:
                    with connection.begin_nested():
                        after = self._cas_state(connection, request, event, now, reason)
                except _Conflict:
                    continue
                applied.append(Applied(after, request.state, event))
            # Audit last: the chain head is locked only after every request row.
            for change in applied:
                self._audit_change(connection, change, now, actor_user=None, actor_team=None,
                                   result=reason)
            return applied

    # -- freeze ------------------------------------------------------------------------------

    def _frozen(self, connection: Connection) -> bool:
        return bool(connection.execute(
            select(schema.freeze_state.c.frozen).where(schema.freeze_state.c.id == 1)
        ).scalar())

    def _freeze_state(self, connection: Connection, *, lock: bool = False) -> FreezeState:
        query = select(schema.freeze_state).where(schema.freeze_state.c.id == 1)
        if lock:
            query = query.with_for_update()
        row = connection.execute(query).one()
        return FreezeState(frozen=bool(row.frozen), changed_by=row.changed_by,
                           changed_team=row.changed_team, changed_at=row.changed_at,
                           reason=row.reason)

    def get_freeze(self) -> FreezeState:
        """Whether remediation is frozen, and who changed that last, when and why."""
        with self._engine.connect() as connection:
            return self._freeze_state(connection)

    def set_freeze(self, frozen: bool, *, actor_user: str, actor_team: str, now: datetime,
                   reason: str | None = None) -> FreezeChange:
        """Freeze or unfreeze (the caller checked :func:`~bot.remediation.policy.may_freeze`);
        audited as ``freeze`` / ``unfreeze`` when it changes anything."""
        with transaction(self._engine) as connection:
            before = self._freeze_state(connection, lock=True)
            if before.frozen == frozen:
                return FreezeChange(before, before)
            connection.execute(update(schema.freeze_state).where(schema.freeze_state.c.id == 1)
                               .values(frozen=frozen, changed_by=actor_user,
                                       changed_team=actor_team, changed_at=now, reason=reason))
            after = FreezeState(frozen, actor_user, actor_team, now, reason)
            if self._audit is not None:
                self._audit.append(
                    AuditEventType.FREEZE if frozen else AuditEventType.UNFREEZE,
                    actor_user=actor_user, actor_team=actor_team,
                    before_state="frozen" if before.frozen else "unfrozen",
                    after_state="frozen" if frozen else "unfrozen",
                    result=reason, at=now, connection=connection)
            return FreezeChange(before, after)

    # -- check results -----------------------------------------------------------------------

    def record_check_result(self, server: str, *, checked_at: datetime, verdict: str,
                            findings_json: str, source: str | None = None) -> CheckResult:
        """Keep one server's result of a check run (``findings_json``: opaque JSON text)."""
        with transaction(self._engine) as connection:
            inserted = connection.execute(insert(schema.check_results).values(
                server=server, checked_at=checked_at, verdict=verdict,
                findings_json=findings_json, source=source))
            key = inserted.inserted_primary_key
            assert key is not None
            result_id = int(key[0])
        return CheckResult(result_id, server, checked_at, verdict, findings_json, source)

    def previous_check_result(self, server: str, *, before: datetime | None = None,
                              source: str | None = None) -> CheckResult | None:
        """The latest result for ``server`` (strictly before ``before``; of ``source``)."""
        table = schema.check_results
        query = select(table).where(func.lower(table.c.server) == server.casefold())
        if before is not None:
            query = query.where(table.c.checked_at < before)
        if source is not None:
            query = query.where(table.c.source == source)
        query = query.order_by(table.c.checked_at.desc(), table.c.id.desc()).limit(1)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        return CheckResult(int(row.id), row.server, row.checked_at, row.verdict,
                           row.findings_json, row.source)

    # -- schedule fires ----------------------------------------------------------------------

    def claim_schedule_fire(self, schedule_id: str, fire_time: datetime, *, owner: str,
                            now: datetime, lease: timedelta | None = None) -> bool:
        """Claim the post for one scheduled time: exactly one claimant gets True, whichever
        replica and however many.

        With ``lease``, a claim not completed (:meth:`complete_schedule_fire`) within ``lease``
        of being taken may be taken over, so a replica that died mid-post does not lose the
        post; choose it longer than a post can take, or a slow replica's post is duplicated.
        """
        fires = schema.schedule_fires
        claim = _insert_ignoring_duplicates(self._engine, fires).values(
            schedule_id=schedule_id, fire_time=fire_time, claimed_by=owner,
            claimed_at=now, attempts=1).returning(fires.c.schedule_id)
        with transaction(self._engine) as connection:
            if connection.execute(claim).first() is not None:
                return True
        if lease is None:
            return False
        with transaction(self._engine) as connection:
            taken = connection.execute(
                update(fires).where(and_(fires.c.schedule_id == schedule_id,
                                         fires.c.fire_time == fire_time,
                                         fires.c.completed_at.is_(None),
                                         fires.c.claimed_at <= now - lease))
                .values(claimed_by=owner, claimed_at=now,
                        attempts=func.coalesce(fires.c.attempts, 1) + 1))
            return taken.rowcount == 1

    def complete_schedule_fire(self, schedule_id: str, fire_time: datetime, *, owner: str,
                               now: datetime) -> bool:
        """Mark the claimed post as done; False if ``owner`` no longer holds the claim."""
        fires = schema.schedule_fires
        with transaction(self._engine) as connection:
            done = connection.execute(
                update(fires).where(fires.c.schedule_id == schedule_id,
                                    fires.c.fire_time == fire_time,
                                    fires.c.claimed_by == owner,
                                    fires.c.completed_at.is_(None))
                .values(completed_at=now))
            return done.rowcount == 1


def _insert_ignoring_duplicates(engine: Engine, table: Table) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING``: a lost race is a zero row count, not an error
    (a failed INSERT would also be logged by PostgreSQL on every lost claim)."""
    if engine.dialect.name == "postgresql":
        return postgresql_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()
