"""The Slack side of remediation: request cards, clicks, runs, freeze, audit, recovery.

The shell between Slack and :mod:`bot.remediation` / :mod:`bot.storage`:

- after a check report (:meth:`RemediationService.report_posted`), each server's plan becomes
  a pending request (stored and audited ``request_created`` by the repository) and its card is
  posted in the report's channel, right after the report, as a message of its own so that its
  thread is the request's thread; the card's message is stored with the request, so any
  replica can update it. Cards are posted only when approvers are configured: nobody could
  approve them otherwise (the report still shows the plan);
- clicks are queued on the service's worker pool (:meth:`~RemediationService.click`) and
  decided there, at click time, by the repository (policy, compare-and-set and the audit
  event in one transaction) with the clicker's user groups read from
  ``usergroups.users.list`` (cached briefly, :class:`UserGroupCache`);
- every decision, every refused click and every moment of a run updates the card
  (``chat.update``) and adds a line to its thread. The card is always rendered from the
  database (the request, its approvals, the freeze, and the step and verification events of
  the audit trail), so whichever replica renders it tells the same story;
- the final approval queues :meth:`RemediationExecutor.run`; a run refused because another
  one is running on the same server starts when that one ends; a run refused because
  remediation was frozen after the approval is aborted (nothing ran);
- the Rollback button proposes a rollback request, approval-gated, with a card of its own;
- ``/exchange-tls freeze`` / ``unfreeze`` (admins, audited, announced in the channel) and
  ``/exchange-tls audit [REQUEST-ID]``;
- at start-up (:meth:`~RemediationService.start`) runs a dead process left are marked
  interrupted, and approved requests that never started are started; then, every quarter of
  the execution lease (:meth:`~RemediationService.recover_abandoned`), runs of any replica
  whose heartbeat is older than the lease are marked interrupted (the server re-read and
  reported, nothing re-run), and approved requests left unstarted for a lease are started.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from sqlalchemy import select

from bot.analysis.model import FleetReport, RemediationPlan, ServerAnalysis
from bot.audit import AuditEvent, AuditEventType, AuditLog, VerifyResult
from bot.commands import (
    REQUEST_ID_PATTERN,
    AuditCommand,
    FreezeCommand,
    clean_text,
    tokens,
)
from bot.config import Settings
from bot.remediation.executor import (
    DEFAULT_EXECUTION_LEASE,
    ExecutionResult,
    RecoveryReport,
    RemediationExecutor,
    recover_interrupted,
)
from bot.remediation.model import RemediationRequest
from bot.remediation.policy import Actor, Decision, DecisionCode, may_freeze, may_run_check
from bot.remediation.states import Event, State
from bot.remediation.workflow import (
    ExecutionUpdate,
    PlanFormatError,
    RollbackUnavailable,
    StepOutcome,
    plan_from_json,
    propose_remediation,
    propose_rollback,
    rollback_unavailable_reason,
)
from bot.render.blocks import (
    OpenRequest,
    SlackMessage,
    code,
    context,
    escape_mrkdwn,
    header,
    message,
    render_error,
    section,
    sections_from_lines,
    slack_date,
    truncate_text,
)
from bot.render.card import (
    ApprovalLine,
    DenialLine,
    RefusalLine,
    RequestCardView,
    StateLine,
    StepLine,
    ThreadEvent,
    VerificationLine,
    approvers_mrkdwn,
    render_request_card,
    render_thread_line,
)
from bot.replies import DATABASE_UNAVAILABLE, RemediationCommand
from bot.replies import refusal as refusal_message
from bot.service import BotService, Origin, slack_error_code
from bot.storage.outage import unavailable_reason
from bot.storage.repository import Applied, Refusal, RefusalCode, Repository
from bot.storage.schema import audit_events

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ClickAction = Literal["approve", "deny", "rollback"]

GROUP_CACHE_SECONDS: Final = 60.0
"""How long a user group's members are taken as read (``usergroups.users.list``)."""
AUDIT_LINES: Final = 40
"""Events shown by ``/exchange-tls audit``; the rest are in ``exchange-tls audit export``."""
MAX_FREEZE_REASON: Final = 200
_OPEN_STATES: Final = (State.PENDING, State.APPROVED, State.RUNNING)
MAX_RECOVERY_INTERVAL: Final = 60.0
"""Seconds between two looks for runs whose replica died, at most (a quarter of the lease)."""
_SHOWN_RESULT: Final = 240
_CARD_LOCKS: Final = 64
_STALE_CARD_CODES: Final = frozenset({DecisionCode.NOT_PENDING, DecisionCode.EXPIRED,
                                      DecisionCode.FROZEN})
"""Refusals that mean the clicker saw an old card: it is updated again."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_request_id(value: object) -> str | None:
    """The request id a button carries, or None when it is not exactly ``R-`` and 10 base32
    characters (anything else is refused before the database is asked)."""
    if not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value):
        return None
    return value


@dataclass(frozen=True)
class Click:
    """A button press as Slack reported it (``value``: the raw button value)."""

    action: ClickAction
    value: str
    user_id: str
    team_id: str
    channel_id: str
    message_ts: str | None
    response_url: str | None = None

    @property
    def origin(self) -> Origin:
        """Where private answers to the clicker go."""
        return Origin(channel_id=self.channel_id, user_id=self.user_id, team_id=self.team_id,
                      response_url=self.response_url)


# --------------------------------------------------------------------------- user groups


@dataclass(frozen=True)
class ResolvedActor:
    """A Slack user with the configured user groups they belong to; ``unreadable`` names
    groups whose members could not be read (with Slack's error)."""

    actor: Actor
    unreadable: tuple[str, ...] = ()


class UserGroupCache:
    """Members of the configured user groups, from ``usergroups.users.list``, each list kept
    for ``ttl_seconds`` (``clock``: monotonic seconds). Failed reads are not cached."""

    def __init__(self, client: WebClient, groups: Iterable[str], *,
                 ttl_seconds: float = GROUP_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._groups = tuple(dict.fromkeys(groups))
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        return self._groups

    def members(self, group_id: str) -> frozenset[str]:
        """The group's members (cached); raises ``SlackClientError`` when Slack refuses."""
        now = self._clock()
        with self._lock:
            cached = self._members.get(group_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        response = self._client.usergroups_users_list(usergroup=group_id)
        users = response.get("users") or []
        members = frozenset(str(user) for user in users if isinstance(user, str))
        with self._lock:
            self._members[group_id] = (now, members)
        return members

    def resolve(self, user_id: str, team_id: str) -> ResolvedActor:
        """``user_id`` with the configured groups they are in, read now (or cached)."""
        groups: set[str] = set()
        unreadable: list[str] = []
        for group in self._groups:
            try:
                if user_id in self.members(group):
                    groups.add(group)
            except SlackClientError as error:
                reason = slack_error_code(error)
                log.warning("cannot read the members of user group %s: %s", group, reason)
                unreadable.append(f"{group} ({reason})")
        return ResolvedActor(Actor(user_id, team_id, frozenset(groups)), tuple(unreadable))


# --------------------------------------------------------------------------- pure helpers


def step_outcomes_from(plan: RemediationPlan, events: Sequence[AuditEvent]
                       ) -> tuple[tuple[int, str, bool], ...]:
    """``RequestCardView.step_outcomes`` from a request's ``step_finished`` events: what was
    read back from the server after each step, as the audit trail holds it."""
    outcomes: list[tuple[int, str, bool]] = []
    for event in events:
        if event.event_type != AuditEventType.STEP_FINISHED.value:
            continue
        details = event.details_object
        index, status = details.get("index"), details.get("status")
        if not isinstance(index, int) or not 0 <= index < len(plan.steps):
            continue
        if status not in ("succeeded", "differs", "failed"):
            continue
        outcome = StepOutcome(
            index, plan.steps[index], status,
            observed_before=_text_or_none(details.get("observed_before")),
            observed_after=_text_or_none(details.get("observed_after")),
            reason=_text_or_none(details.get("reason")))
        outcomes.append((index, outcome.text(), outcome.ok))
    return tuple(outcomes)


def verification_text_from(server: str, events: Sequence[AuditEvent]) -> str | None:
    """The last verification of a request as observed (None when there was none)."""
    found = [e for e in events if e.event_type in (AuditEventType.VERIFICATION.value,
                                                   AuditEventType.EXECUTION_INTERRUPTED.value)]
    if not found:
        return None
    last = found[-1]
    if last.event_type == AuditEventType.EXECUTION_INTERRUPTED.value:
        observed = last.details_object.get("observed")
        if not isinstance(observed, dict):
            return None
        return f"found after the interruption: {_observation_summary(observed)}"
    if last.result:
        return one_line(last.result)
    return f"could not read {server}: {last.error or 'unknown error'}"


def one_line(text: str) -> str:
    """Lines joined with ``; `` (the card and thread renderers fold whitespace)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _observation_summary(observed: Mapping[str, Any]) -> str:
    if not observed.get("reachable"):
        return f"the server could not be read ({observed.get('error') or 'unknown error'})"
    trusted = observed.get("outbound_publicly_trusted")
    return ("the predicted outbound certificate is publicly trusted" if trusted
            else "the predicted outbound certificate is NOT publicly trusted")


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def freeze_reason(command_text: str) -> str | None:
    """What an admin typed after ``freeze`` / ``unfreeze``, cleaned and cut, or None."""
    words = tokens(command_text)[1:]
    reason = " ".join(" ".join(clean_text(" ".join(words), 2000).split()).split())
    return truncate_text(reason, MAX_FREEZE_REASON) if reason else None


def _event_time(event: AuditEvent) -> str:
    try:
        moment = datetime.strptime(event.occurred_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return code(event.occurred_at)
    return slack_date(moment, "{date_short_pretty} {time_secs}")


def audit_event_line(event: AuditEvent) -> str:
    """One event as a compact mrkdwn line: sequence, time, event, actor, states, result."""
    details = event.details_object
    parts = [f"`#{event.sequence}` {_event_time(event)} *{escape_mrkdwn(event.event_type)}*"]
    if event.actor_user:
        parts.append(f"<@{escape_mrkdwn(event.actor_user)}>")
    if event.request_id:
        parts.append(f"`{escape_mrkdwn(event.request_id)}`")
    if event.event_type in (AuditEventType.STEP_STARTED.value,
                            AuditEventType.STEP_FINISHED.value):
        index = details.get("index")
        what = f"step {index + 1}" if isinstance(index, int) else "step"
        cmdlet, status = details.get("cmdlet"), details.get("status")
        parts.append(f"{what} {escape_mrkdwn(str(cmdlet or ''))}"
                     + (f": {escape_mrkdwn(str(status))}" if status else ""))
    elif event.event_type == AuditEventType.REFUSED_CLICK.value:
        parts.append(f"{escape_mrkdwn(str(details.get('action') or 'click'))} refused")
    if event.before_state and event.after_state and event.before_state != event.after_state:
        parts.append(f"{escape_mrkdwn(event.before_state)} → {escape_mrkdwn(event.after_state)}")
    shown = event.error or event.result
    if shown and event.event_type not in (AuditEventType.STEP_STARTED.value,):
        text = truncate_text(" ".join(shown.split()), _SHOWN_RESULT)
        parts.append(escape_mrkdwn(text, keep_mentions=True))
    return " · ".join(parts)


def render_audit(events: Sequence[AuditEvent], *, request: RemediationRequest | None,
                 verified: VerifyResult | None, total: int | None = None) -> SlackMessage:
    """``/exchange-tls audit``: the events of one request (or the latest), compactly, with
    the verification of the whole chain."""
    if request is not None:
        title = f":lock: Audit trail of {request.id}"
        what = "Rollback" if request.kind == "rollback" else "Remediation"
        intro = (f"{what} on *{escape_mrkdwn(request.server)}*, now *{request.state.value}*, "
                 f"plan `{escape_mrkdwn(request.short_plan_hash)}`, requested by "
                 f"<@{escape_mrkdwn(request.requested_by)}>")
        export = f"exchange-tls audit export --format jsonl --request {request.id}"
    else:
        title = ":lock: Audit trail: the latest events"
        intro = "The latest events of every request, freeze and refused click."
        export = "exchange-tls audit export --format jsonl"
    count = total if total is not None else len(events)
    lines = [audit_event_line(event) for event in events[-AUDIT_LINES:]]
    hidden = count - len(lines)
    if hidden > 0:
        lines.insert(0, f"_… {hidden} earlier event{'s' if hidden != 1 else ''} not shown_")
    if verified is None:
        chain = "chain not verified"
    elif verified.ok:
        chain = f":white_check_mark: chain verified: {escape_mrkdwn(verified.reason)}"
    else:
        chain = (f":warning: chain BROKEN at sequence {verified.first_broken_sequence}: "
                 f"{escape_mrkdwn(verified.reason)}")
    blocks = [header(title), section(intro),
              *sections_from_lines(lines or ["No events."]),
              context(f"{chain} · all of it: {code(export)}")]
    text = f"{title.removeprefix(':lock: ')}: {count} event{'s' if count != 1 else ''}"
    return message(text, blocks[:45])


def _line(text: str) -> SlackMessage:
    return message(text, [section(text)])


class CardNotRecorded(Exception):
    """A request's card was posted but its message could not be stored (the database became
    unavailable): the card was withdrawn and the requester told."""


def unrecorded_card_text(request: RemediationRequest) -> str:
    """What a card whose message could not be stored becomes (and what its requester reads)."""
    what, again = (("rollback", "Press Rollback on the original card again")
                   if request.kind == "rollback" else ("remediation", "Run the check again"))
    return (f"The {what} request {request.id} for {request.server} could not be recorded: "
            f"the bot's database became unavailable, so it cannot be approved. {again}.")


# --------------------------------------------------------------------------- the service


class RemediationService:
    """Remediation in Slack: proposes, decides, runs and reports (see the module docstring).

    ``service`` provides the worker pool, the session cache, the trust store and private
    notices; ``owner`` names this replica in execution claims; ``clock`` is the time of every
    decision, expiry and run; ``execution_lease``: a run without a heartbeat for this long is
    taken for dead (:func:`bot.replicas.execution_lease`).
    """

    def __init__(
        self,
        settings: Settings,
        client: WebClient,
        service: BotService,
        repository: Repository,
        audit: AuditLog,
        *,
        owner: str,
        clock: Clock = utc_now,
        groups: UserGroupCache | None = None,
        execution_lease: timedelta = DEFAULT_EXECUTION_LEASE,
    ) -> None:
        self.settings = settings
        self.approval = settings.approval
        self.client = client
        self.service = service
        self.repository = repository
        self.audit = audit
        self.owner = owner
        self.clock = clock
        principals = (*self.approval.approvers, *self.approval.admins)
        self.groups = groups if groups is not None else UserGroupCache(
            client, [p for p in principals if p.startswith("S")])
        self.executor = RemediationExecutor(
            repository, audit, service.cache, settings.server, service.trust, clock=clock,
            owner=owner, on_update=self.execution_update, plan_scope=settings.check.plan_scope,
            lease=execution_lease)
        self.execution_lease = execution_lease
        self._locks = tuple(threading.RLock() for _ in range(_CARD_LOCKS))
        self._started = threading.Event()
        self._stopping = threading.Event()
        self._recovery_thread: threading.Thread | None = None
        self._behind_lock = threading.Lock()
        self._cards_behind: dict[str, bool] = {}
        """Requests whose card could not be updated for a database outage (True: the thread
        also owes the outcome of a run whose end may or may not have been recorded)."""
        self._open_cards_behind = False
        """Every open card missed an update (a freeze whose cards could not be listed)."""

    @property
    def enabled(self) -> bool:
        """Request cards are posted only when someone may approve them."""
        return bool(self.approval.approvers)

    # -- RemediationStatus (for /exchange-tls status) -----------------------------------

    def open_requests(self) -> Sequence[OpenRequest]:
        """Requests still pending, approved or running, newest first."""
        return [OpenRequest(r.id, r.server, r.state,
                            r.expires_at if r.state is State.PENDING else None)
                for r in self.repository.list_requests(states=_OPEN_STATES, limit=50)]

    def is_frozen(self) -> bool:
        return self.repository.get_freeze().frozen

    # -- proposing --------------------------------------------------------------------------

    def report_posted(self, report: FleetReport, origin: Origin,
                      report_ts: str | None) -> list[RemediationRequest]:
        """After a check report: a request and a card for each server with a plan.

        Nothing when the report could not be posted (the requester was told) or when no
        approvers are configured. A plan that already waits for approval is not proposed again:
        the requester is pointed to its card.
        """
        if not self.enabled or report_ts is None:
            return []
        proposed: list[RemediationRequest] = []
        for analysis in report.servers:
            try:
                request = self.propose(analysis, origin)
            except CardNotRecorded:
                continue
            except Exception as error:
                unavailable = unavailable_reason(error)
                if unavailable is None:
                    log.exception("proposing the remediation of %s failed", analysis.name)
                    why = type(error).__name__
                else:
                    log.warning("no remediation request for %s: the database is unavailable "
                                "(%s)", analysis.name, unavailable)
                    why = f"{DATABASE_UNAVAILABLE}. Run the check again in a moment"
                self.service.notify(origin, render_error(
                    f"The remediation request for {analysis.name} could not be made: {why}"))
                continue
            if request is not None:
                proposed.append(request)
        return proposed

    def propose(self, analysis: ServerAnalysis, origin: Origin) -> RemediationRequest | None:
        """Store a pending request for the analysis's plan and post its card; None when there
        is nothing to run or the same plan already waits for approval."""
        now = self.clock()
        request = propose_remediation(analysis, requested_by=origin.user_id,
                                      team_id=origin.team_id, channel=origin.channel_id,
                                      now=now, settings=self.approval)
        if request is None:
            return None
        waiting = next((r for r in self.repository.list_pending(server=request.server)
                        if r.plan_hash == request.plan_hash and not r.is_expired(now)
                        and r.kind == "remediation"), None)
        if waiting is not None:
            where = f" in <#{waiting.channel}>" if waiting.channel else ""
            self.service.notify(origin, _line(
                f":information_source: The plan `{waiting.short_plan_hash}` for "
                f"*{escape_mrkdwn(waiting.server)}* already waits for approval: request "
                f"`{waiting.id}`{where}. No new request was made."))
            return None
        return self._post_new_card(self.repository.create_request(request), origin)

    def _post_new_card(self, request: RemediationRequest,
                       origin: Origin) -> RemediationRequest:
        card = render_request_card(self.card_view(request))
        try:
            response = self.client.chat_postMessage(
                channel=request.channel, text=card.text, blocks=list(card.blocks),
                unfurl_links=False, unfurl_media=False)
        except SlackClientError as error:
            reason = slack_error_code(error)
            log.warning("could not post the card of %s: %s", request.id, reason)
            self.repository.transition(
                request.id, State.PENDING, Event.ABORT, now=self.clock(),
                reason=f"its card could not be posted in Slack ({reason}): nothing can run")
            self.service.notify(origin, render_error(
                f"The remediation request for {request.server} could not be posted here "
                f"({reason}), so it was withdrawn."))
            return self.repository.get_request(request.id) or request
        channel = str(response.get("channel") or request.channel)
        try:
            stored = self.repository.set_message_ref(request.id, channel, str(response["ts"]))
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                raise
            self._withdraw_unrecorded_card(request, channel, str(response["ts"]), origin,
                                           unavailable)
            raise CardNotRecorded(request.id) from error
        return stored or request

    def _withdraw_unrecorded_card(self, request: RemediationRequest, channel: str, ts: str,
                                  origin: Origin, unavailable: str) -> None:
        """The card was posted but the database could not keep its message: the card (which
        no click could be checked against) becomes a notice without buttons; the requester is
        told the same."""
        log.warning("the card of %s was posted, but its message could not be stored: the "
                    "database is unavailable (%s); the card is withdrawn", request.id,
                    unavailable)
        notice = render_error(unrecorded_card_text(request))
        try:
            self.client.chat_update(channel=channel, ts=ts, text=notice.text,
                                    blocks=list(notice.blocks))
        except SlackClientError as error:
            log.warning("could not withdraw the card of %s: %s", request.id,
                        slack_error_code(error))
        self.service.notify(origin, notice)

    # -- rendering --------------------------------------------------------------------------

    def card_view(self, request: RemediationRequest) -> RequestCardView:
        """The card of ``request`` as the database has it now."""
        plan = plan_from_json(request.plan_json)
        events = self.audit.events(request_id=request.id)
        rollback_available = (
            request.kind == "remediation" and request.state is State.SUCCEEDED
            and rollback_unavailable_reason(
                request, existing_rollbacks=self.repository.rollbacks_of(request.id)) is None)
        return RequestCardView(
            request_id=request.id, server=request.server, state=request.state, plan=plan,
            approvals_required=self.approval.required,
            approvals=tuple((a.user_id, a.at) for a in request.approvals),
            approvers_text=approvers_mrkdwn(self.approval.approvers),
            requested_by=request.requested_by, expires_at=request.expires_at,
            now=self.clock(), step_outcomes=step_outcomes_from(plan, events),
            verification_text=verification_text_from(request.server, events),
            rollback_available=rollback_available, frozen=self.is_frozen(),
            state_reason=request.state_reason, kind=request.kind)

    @contextmanager
    def _card_lock(self, key: str) -> Iterator[None]:
        """One of a fixed set of locks, chosen by ``key`` (bounded, whatever the uptime)."""
        with self._locks[zlib.crc32(key.encode("utf-8")) % len(self._locks)]:
            yield

    def refresh_card(self, request_id: str) -> RemediationRequest | None:
        """``chat.update`` the request's card from the database (serialised per request, so a
        slower, older rendering never lands after a newer one in this process). A card that
        cannot be read for a database outage is updated by :meth:`recover_abandoned` once the
        database answers again."""
        with self._card_lock(request_id):
            try:
                request = self.repository.get_request(request_id)
                if request is None or request.message_ts is None:
                    return request
                card = render_request_card(self.card_view(request))
            except PlanFormatError as error:
                log.error("the plan of %s cannot be read: %s", request_id, error)
                return request
            except Exception as error:
                if unavailable_reason(error) is not None:
                    self._card_behind(request_id)
                raise
            try:
                self.client.chat_update(channel=request.channel, ts=request.message_ts,
                                        text=card.text, blocks=list(card.blocks))
            except SlackClientError as error:
                log.warning("could not update the card of %s: %s", request_id,
                            slack_error_code(error))
            return request

    def _card_behind(self, request_id: str, *, outcome_owed: bool = False) -> None:
        with self._behind_lock:
            self._cards_behind[request_id] = outcome_owed or self._cards_behind.get(
                request_id, False)

    @property
    def cards_behind(self) -> frozenset[str]:
        """Requests whose card missed an update for a database outage (not yet caught up)."""
        with self._behind_lock:
            return frozenset(self._cards_behind)

    def catch_up_cards(self) -> int:
        """Update the cards that missed an update for a database outage (and, after a run
        whose end may or may not have been recorded, tell its thread how it ended); raises
        the outage when the database is still unavailable (those cards stay to do). How many
        cards were updated."""
        with self._behind_lock:
            every_open, self._open_cards_behind = self._open_cards_behind, False
        if every_open:
            try:
                for request in self.repository.list_requests(states=_OPEN_STATES, limit=200):
                    self._card_behind(request.id)
            except Exception:
                with self._behind_lock:
                    self._open_cards_behind = True
                raise
        with self._behind_lock:
            behind = dict(self._cards_behind)
        updated = 0
        for request_id, outcome_owed in behind.items():
            with self._behind_lock:
                self._cards_behind.pop(request_id, None)
            try:
                current = self.refresh_card(request_id)
            except Exception as error:
                if unavailable_reason(error) is not None and outcome_owed:
                    self._card_behind(request_id, outcome_owed=True)
                raise
            updated += 1
            if outcome_owed and current is not None and current.is_terminal:
                self.post_line(current, StateLine(
                    self.clock(), current.state,
                    f"the database is back: the end of the run was recorded. "
                    f"{current.state_reason or ''}".strip()))
        if updated:
            log.info("updated %d card(s) that missed an update while the database was "
                     "unavailable", updated)
        return updated

    def post_line(self, request: RemediationRequest, line: ThreadEvent | SlackMessage) -> None:
        """Add a line to the request card's thread."""
        if request.message_ts is None:
            return
        reply = line if isinstance(line, SlackMessage) else render_thread_line(line)
        try:
            self.client.chat_postMessage(channel=request.channel, thread_ts=request.message_ts,
                                         text=reply.text, blocks=list(reply.blocks),
                                         unfurl_links=False, unfurl_media=False)
        except SlackClientError as error:
            log.warning("could not add a line to the thread of %s: %s", request.id,
                        slack_error_code(error))

    # -- clicks -----------------------------------------------------------------------------

    def click(self, click: Click, request_id: str) -> bool:
        """Queue a click on ``request_id`` (validated by the listener); never blocks."""
        return self.service.submit(f"{click.action} of {request_id}", click.origin,
                                   lambda: self.handle_click(click, request_id))

    def malformed_click(self, click: Click) -> bool:
        """A button whose value is not a request id: refused, nothing is looked up."""
        log.warning("refused a %s click by %s: the button value is not a request id",
                    click.action, click.user_id)
        return self.service.submit("button", click.origin, lambda: self.service.notify(
            click.origin, render_error("That button does not name a remediation request; "
                                       "nothing was done.")))

    def actor(self, user_id: str, team_id: str) -> ResolvedActor:
        """The user with their configured user groups, read now (or within the cache time)."""
        return self.groups.resolve(user_id, team_id)

    def handle_click(self, click: Click, request_id: str
                     ) -> Applied | Refusal | RemediationRequest | None:
        """Decide a click now (on a worker); see :meth:`approve`, :meth:`deny`,
        :meth:`request_rollback`."""
        if click.action == "approve":
            return self.approve(click, request_id)
        if click.action == "deny":
            return self.deny(click, request_id)
        return self.request_rollback(click, request_id)

    def _check_card(self, click: Click, request_id: str) -> RemediationRequest | None:
        """The request, when the click came from its card; None after telling the clicker."""
        request = self.repository.get_request(request_id)
        if request is None:
            self.service.notify(click.origin, render_error(
                f"There is no remediation request {request_id}; nothing was done."))
            return None
        if request.message_ts is None:
            reason = (f"the card of {request_id} is not recorded in the bot's database, so "
                      "this button cannot be checked; if the card was posted just now, try "
                      "again in a moment, otherwise run the check again")
            self._audit_refusal(request, click, "card_not_recorded", reason)
            self.service.notify(click.origin, render_error(f"Refused: {reason}."))
            return None
        if (click.channel_id, click.message_ts) != (request.channel, request.message_ts):
            reason = f"this button is not on the card of {request_id}"
            self._audit_refusal(request, click, "wrong_message", reason)
            self.service.notify(click.origin, render_error(f"Refused: {reason}."))
            return None
        return request

    def approve(self, click: Click, request_id: str) -> Applied | Refusal | None:
        """Approve at click time; the final approval starts the run."""
        if self._check_card(click, request_id) is None:
            return None
        resolved = self.actor(click.user_id, click.team_id)
        now = self.clock()
        result = self.repository.approve(request_id, resolved.actor, self.approval, now)
        if isinstance(result, Refusal):
            self._refused(click, result, resolved, now)
            return result
        self.post_line(result.request, ApprovalLine(click.user_id, now,
                                                    len(result.request.approvals),
                                                    self.approval.required))
        self.refresh_card(request_id)
        if result.request.state is State.APPROVED:
            self.start_execution(result.request, click.origin)
        return result

    def deny(self, click: Click, request_id: str) -> Applied | Refusal | None:
        """Deny at click time (any approver may)."""
        if self._check_card(click, request_id) is None:
            return None
        resolved = self.actor(click.user_id, click.team_id)
        now = self.clock()
        result = self.repository.deny(request_id, resolved.actor, self.approval, now)
        if isinstance(result, Refusal):
            self._refused(click, result, resolved, now)
            return result
        self.post_line(result.request, DenialLine(click.user_id, now))
        self.refresh_card(request_id)
        return result

    def request_rollback(self, click: Click, request_id: str
                         ) -> RemediationRequest | Refusal | None:
        """Propose a rollback of a succeeded connector pin: a new, approval-gated request with
        a card of its own. Refusals are audited and shown in the original's thread."""
        original = self._check_card(click, request_id)
        if original is None:
            return None
        now = self.clock()
        resolved = self.actor(click.user_id, click.team_id)
        allowed = may_run_check(resolved.actor, click.channel_id, self.settings.slack)
        if not allowed.allowed:
            return self._refuse_rollback(original, click, allowed.code.value, allowed.reason)
        with self._card_lock(f"rollback:{original.id}"):
            try:
                rollback = propose_rollback(
                    original, requested_by=click.user_id, team_id=click.team_id,
                    channel=original.channel, now=now, settings=self.approval,
                    existing_rollbacks=self.repository.rollbacks_of(original.id))
            except RollbackUnavailable as error:
                return self._refuse_rollback(original, click, "rollback_unavailable",
                                             error.reason)
            stored = self.repository.create_request(rollback)
        try:
            posted = self._post_new_card(stored, click.origin)
        except CardNotRecorded:
            return None
        self.post_line(original, _line(
            f":wrench: <@{escape_mrkdwn(click.user_id)}> requested a "
            f"rollback at {slack_date(now, '{date_short_pretty} {time_secs}')}: request "
            f"`{posted.id}` restores the previous TlsCertificateName once approved (its card "
            "is in the channel)."))
        self.refresh_card(original.id)
        return posted

    def _refuse_rollback(self, original: RemediationRequest, click: Click, code_value: str,
                         reason: str) -> Refusal:
        now = self.clock()
        self._audit_refusal(original, click, code_value, reason)
        self.post_line(original, RefusalLine(click.user_id, now, "rollback", reason))
        self.refresh_card(original.id)
        return Refusal(RefusalCode.POLICY, reason, original)

    def _audit_refusal(self, request: RemediationRequest, click: Click, code_value: str,
                       reason: str) -> None:
        self.audit.append(AuditEventType.REFUSED_CLICK, request=request,
                          actor_user=click.user_id, actor_team=click.team_id,
                          before_state=request.state.value, after_state=request.state.value,
                          result=reason, details={"action": click.action, "code": code_value},
                          at=self.clock())

    def _refused(self, click: Click, refusal: Refusal, resolved: ResolvedActor,
                 now: datetime) -> None:
        """A refused approval or denial: audited (by the repository for policy refusals, here
        otherwise), shown in the thread, and the card brought up to date."""
        request = refusal.request
        if refusal.code is RefusalCode.NOT_FOUND or request is None:
            self.service.notify(click.origin, render_error(f"Nothing was done: {refusal.reason}."))
            return
        reason = refusal.reason
        decision: Decision | None = refusal.decision
        if refusal.code is not RefusalCode.POLICY:
            self._audit_refusal(request, click, refusal.code.value, reason)
        elif decision is not None and decision.code is DecisionCode.NOT_APPROVER \
                and resolved.unreadable:
            reason += f" (the members of {', '.join(resolved.unreadable)} could not be read)"
        if decision is not None and decision.code is DecisionCode.EXPIRED:
            self.requests_expired(self.repository.expire_due(now))
        self.post_line(request, RefusalLine(click.user_id, now, click.action, reason))
        if decision is None or decision.code in _STALE_CARD_CODES:
            self.refresh_card(request.id)

    # -- running ----------------------------------------------------------------------------

    def start_execution(self, request: RemediationRequest, origin: Origin | None = None) -> bool:
        """Queue the run of an approved request on the worker pool."""
        origin = origin or Origin(channel_id=request.channel, user_id=request.requested_by,
                                  team_id=request.team_id)
        if self.service.submit(f"remediation {request.id}", origin,
                               lambda: self.run(request.id)):
            return True
        applied = self.repository.transition(
            request.id, State.APPROVED, Event.ABORT, now=self.clock(),
            reason="approved, but the bot could not start it (busy or stopping): nothing ran; "
                   "run the check again")
        if isinstance(applied, Applied):
            self._after_state_change(applied.request, applied.request.state_reason)
        return False

    def run(self, request_id: str) -> ExecutionResult:
        """Run an approved request (on a worker): claim, re-read, steps, verification. A run
        refused because remediation was frozen since the approval is aborted; after a run,
        requests that waited for the server start."""
        result = self.executor.run(request_id)
        refusal = result.refusal
        if refusal is not None and refusal.code is RefusalCode.FROZEN:
            freeze = self.repository.get_freeze()
            who = f"<@{freeze.changed_by}>" if freeze.changed_by else "an admin"
            applied = self.repository.transition(
                request_id, State.APPROVED, Event.ABORT, now=self.clock(),
                reason=f"remediation was frozen by {who} before it started: nothing ran; "
                       "run the check again once it is unfrozen")
            if isinstance(applied, Applied):
                self._after_state_change(applied.request, applied.request.state_reason)
        server = result.request.server if result.request is not None else None
        if result.claimed and server is not None:
            try:
                self.start_waiting(server)
            except Exception as error:
                unavailable = unavailable_reason(error)
                if unavailable is None:
                    raise
                log.warning("the requests waiting for %s start later: the database became "
                            "unavailable (%s)", server, unavailable)
        return result

    def start_waiting(self, server: str) -> None:
        """Queue the approved requests of ``server`` (they waited for a run to end)."""
        for waiting in self.repository.list_requests(states=(State.APPROVED,), server=server):
            self.start_execution(waiting)

    def _after_state_change(self, request: RemediationRequest, reason: str | None) -> None:
        self.post_line(request, StateLine(self.clock(), request.state, reason))
        self.refresh_card(request.id)
        if request.rollback_of is not None and request.is_terminal:
            self.refresh_card(request.rollback_of)

    def execution_update(self, update: ExecutionUpdate) -> None:
        """The executor's ``on_update``: a thread line and a card update for every moment."""
        request = update.request or self.repository.get_request(update.request_id)
        if request is None:
            return
        line = self._line_for(update, request)
        if line is not None:
            self.post_line(request, line)
        if update.kind == "refused" and update.details.get("code") != "server_busy":
            return
        if update.kind == "lost" and update.details.get("outcome_unknown"):
            self._card_behind(request.id, outcome_owed=True)
        self.refresh_card(request.id)
        if update.kind in ("finished", "aborted", "interrupted", "lost") \
                and request.rollback_of is not None:
            self.refresh_card(request.rollback_of)

    def _line_for(self, update: ExecutionUpdate, request: RemediationRequest
                  ) -> ThreadEvent | None:
        kind = update.kind
        if kind == "refused":
            if update.details.get("code") == "server_busy":
                return StateLine(update.at, State.APPROVED,
                                 f"waiting: {update.message}; it starts when that run ends")
            return None
        if kind == "started":
            return StateLine(update.at, State.RUNNING, update.message)
        if kind in ("step_started", "step_finished") and update.step is not None:
            step = update.step
            if kind == "step_started":
                return StepLine(step.index, step.step, update.at)
            return StepLine(step.index, step.step, update.at, step.text(), step.ok)
        if kind == "verification" and update.verification is not None:
            observation = update.verification
            ok = observation.outbound_publicly_trusted if request.kind == "remediation" \
                else observation.reachable
            return VerificationLine(update.at, one_line(observation.text()), ok)
        if kind in ("finished", "aborted", "interrupted", "lost"):
            state = update.report.state or request.state
            return StateLine(update.at, state, update.report.reason or update.message)
        return None

    # -- expiry -----------------------------------------------------------------------------

    def requests_expired(self, requests: Sequence[RemediationRequest]) -> None:
        """Requests the sweep (or a late click) expired: their cards lose the buttons."""
        for request in requests:
            self.post_line(request, StateLine(self.clock(), State.EXPIRED,
                                              "not approved in time: nothing ran"))
            self.refresh_card(request.id)

    def sweep_expired(self) -> list[RemediationRequest]:
        """Expire pending requests past their expiry now and update their cards."""
        expired = self.repository.expire_due(self.clock())
        self.requests_expired(expired)
        return expired

    # -- commands ---------------------------------------------------------------------------

    def perform(self, command: RemediationCommand, origin: Origin) -> bool:
        """Queue ``audit``, ``freeze`` or ``unfreeze`` (the listener has acknowledged)."""
        if isinstance(command, AuditCommand):
            return self.service.submit("audit request", origin,
                                       lambda: self.audit_reply(command.request_id, origin))
        frozen = isinstance(command, FreezeCommand)
        return self.service.submit("freeze" if frozen else "unfreeze", origin,
                                   lambda: self.set_frozen(frozen, origin))

    def set_frozen(self, frozen: bool, origin: Origin) -> bool:
        """Freeze or unfreeze (admins only; a refusal is audited and told privately); the
        change is announced in the channel and every open card shows it. True if changed."""
        word = "freeze" if frozen else "unfreeze"
        now = self.clock()
        resolved = self.actor(origin.user_id, origin.team_id)
        decision = may_freeze(resolved.actor, self.approval)
        if not decision.allowed:
            self.audit.append(AuditEventType.REFUSED_CLICK, actor_user=origin.user_id,
                              actor_team=origin.team_id, result=decision.reason,
                              slack_channel=origin.channel_id,
                              details={"action": word, "code": decision.code.value}, at=now)
            self.service.notify(origin, refusal_message(decision))
            return False
        change = self.repository.set_freeze(frozen, actor_user=origin.user_id,
                                            actor_team=origin.team_id, now=now,
                                            reason=freeze_reason(origin.command_text))
        if not change.changed:
            since = (f" by <@{change.before.changed_by}> "
                     f"{slack_date(change.before.changed_at)}"
                     if change.before.changed_by and change.before.changed_at else "")
            state = "frozen" if frozen else "not frozen"
            self.service.notify(origin, _line(
                f":information_source: Remediation is already {state}{since}; nothing changed."))
            return False
        self._announce_freeze(origin, frozen, change.after.reason, now)
        try:
            for request in self.repository.list_requests(states=_OPEN_STATES, limit=200):
                self.refresh_card(request.id)
        except Exception as error:
            if unavailable_reason(error) is not None:
                with self._behind_lock:
                    self._open_cards_behind = True
            raise
        return True

    def _announce_freeze(self, origin: Origin, frozen: bool, reason: str | None,
                         at: datetime) -> None:
        who = f"<@{escape_mrkdwn(origin.user_id)}>"
        when = slack_date(at, "{date_short_pretty} {time_secs}")
        if frozen:
            text = (f":ice_cube: {who} *froze remediation* at {when}: no request can be "
                    "approved or run until an admin types `/exchange-tls unfreeze`; a run in "
                    "progress stops before its next step.")
        else:
            text = (f":arrow_forward: {who} *unfroze remediation* at {when}: requests can be "
                    "approved and run again.")
        if reason:
            text += f"\nReason: {escape_mrkdwn(reason)}"
        try:
            self.client.chat_postMessage(channel=origin.channel_id, text=text,
                                         blocks=[section(text)], unfurl_links=False,
                                         unfurl_media=False)
        except SlackClientError as error:
            log.warning("could not announce the %s: %s", "freeze" if frozen else "unfreeze",
                        slack_error_code(error))
            self.service.notify(origin, _line(text))

    def audit_reply(self, request_id: str | None, origin: Origin) -> None:
        """Tell the requester the audit trail of ``request_id`` (or the latest events)."""
        self.service.notify(origin, self.audit_message(request_id))

    def audit_message(self, request_id: str | None) -> SlackMessage:
        """``/exchange-tls audit [REQUEST-ID]`` as a message (the whole chain is verified)."""
        verified = self.audit.verify()
        if request_id is None:
            latest = self._latest_events(AUDIT_LINES)
            return render_audit(latest, request=None, verified=verified,
                                total=verified.events_checked if verified.ok else None)
        request = self.repository.get_request(request_id)
        if request is None:
            return render_error(f"There is no remediation request {request_id}.")
        return render_audit(self.audit.events(request_id=request_id), request=request,
                            verified=verified)

    def _latest_events(self, limit: int) -> list[AuditEvent]:
        query = select(audit_events).order_by(audit_events.c.sequence.desc()).limit(limit)
        with self.repository.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [AuditEvent(**{**row._mapping, "sequence": int(row.sequence)})
                for row in reversed(rows)]

    # -- start-up and recovery --------------------------------------------------------------

    @property
    def recovery_interval(self) -> float:
        """Seconds between two looks for runs whose replica died: a quarter of the execution
        lease, at most :data:`MAX_RECOVERY_INTERVAL`."""
        return min(max(self.execution_lease.total_seconds() / 4, 0.05), MAX_RECOVERY_INTERVAL)

    def start(self) -> threading.Thread:
        """In the background: :meth:`recover` (the bot answers meanwhile), then
        :meth:`recover_abandoned` every :attr:`recovery_interval` until :meth:`close`."""
        thread = threading.Thread(target=self._start, name="exchange-tls-recovery",
                                  daemon=True)
        self._recovery_thread = thread
        thread.start()
        return thread

    def _start(self) -> None:
        try:
            self.recover()
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                log.exception("recovering interrupted remediation failed")
            else:
                log.warning("cannot recover interrupted remediation at start-up: the database "
                            "is unavailable (%s); looking again every %.1f s", unavailable,
                            self.recovery_interval)
        finally:
            self._started.set()
        while not self._stopping.wait(self.recovery_interval):
            try:
                self.recover_abandoned()
            except Exception as error:
                unavailable = unavailable_reason(error)
                if unavailable is None:
                    log.exception("looking for remediation runs whose replica died failed; "
                                  "trying again in %.1f s", self.recovery_interval)
                else:
                    log.warning("cannot look for remediation runs whose replica died: the "
                                "database is unavailable (%s); trying again in %.1f s",
                                unavailable, self.recovery_interval)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait for the start-up recovery to finish; False on time-out."""
        return self._started.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop looking for runs whose replica died, waiting up to ``timeout`` for a look in
        progress (runs in progress go on)."""
        self._stopping.set()
        thread = self._recovery_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def recover(self) -> list[RecoveryReport]:
        """At start-up: runs left by a dead process (this replica's earlier life, or any
        replica's whose heartbeat is older than the lease) become interrupted, with what the
        server shows now; approved requests that never started are started (their plan is
        re-checked first)."""
        reports = self._recover_interrupted(owner=self.owner)
        for approved in self.repository.list_requests(states=(State.APPROVED,), limit=1000):
            self.start_execution(approved)
        return reports

    def recover_abandoned(self) -> list[RecoveryReport]:
        """While this replica runs: runs of other replicas whose heartbeat is older than the
        execution lease become interrupted (re-read, reported and audited; never re-run), and
        the requests that waited for their server start. Approved requests unchanged for a
        lease on a server where nothing runs (their replica died before starting them) are
        started, their plan re-checked first. First, cards that missed an update while the
        database was unavailable are updated (:meth:`catch_up_cards`)."""
        self.catch_up_cards()
        reports = self._recover_interrupted(owner=None)
        for server in dict.fromkeys(r.server.casefold() for r in reports if r.interrupted):
            self.start_waiting(server)
        now = self.clock()
        running = {r.server.casefold() for r in
                   self.repository.list_requests(states=(State.RUNNING,), limit=1000)}
        for approved in self.repository.list_requests(states=(State.APPROVED,), limit=1000):
            if approved.updated_at <= now - self.execution_lease \
                    and approved.server.casefold() not in running \
                    and approved.id not in self.executor.active_runs:
                log.warning("starting %s: approved %s ago and not started by its replica",
                            approved.id, now - approved.updated_at)
                self.start_execution(approved)
        return reports

    def _recover_interrupted(self, *, owner: str | None) -> list[RecoveryReport]:
        reports = recover_interrupted(
            self.repository, self.audit, self.service.cache, self.settings.server,
            self.service.trust, now=self.clock(), owner=owner, clock=self.clock,
            stale_after=self.execution_lease, plan_scope=self.settings.check.plan_scope,
            on_update=self.execution_update, skip=self.executor.active_runs,
            found_by=self.owner)
        for report in reports:
            if report.interrupted:
                log.warning("remediation interrupted: %s", report.text())
            else:
                log.info("remediation %s: %s", report.request_id, report.reason)
        return reports
