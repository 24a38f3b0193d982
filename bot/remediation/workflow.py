"""The remediation workflow as data: proposing requests, judging read-backs, reporting runs.

Pure: no I/O and no clock. :mod:`bot.remediation.executor` is the shell that talks to Exchange
and the database; the Slack card, its thread and the audit trail render what is defined here:

- :func:`propose_remediation` / :func:`propose_rollback`: the pending request for a plan;
- :func:`plan_to_json` / :func:`plan_from_json`: the approved plan as stored (``plan_json``);
- :func:`plan_differences`: why a plan recomputed at execution differs from the approved one;
- :class:`StepOutcome`, :class:`Observation`, :class:`ExecutionReport`,
  :class:`ExecutionUpdate`: what happened, as observed on the server.

Nothing here claims what was not read back: a step's outcome holds what the server showed
after it, and ``Enable-ExchangeCertificate`` leaving SMTP listed (``-Services`` is documented
as additive) is reported as exactly that.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from bot.analysis.certificates import iso_utc, services_text, short_thumbprint
from bot.analysis.model import (
    ParameterValue,
    PlanStep,
    RemediationPlan,
    ServerAnalysis,
    StepKind,
    Trust,
)
from bot.analysis.names import tls_certificate_names_equal
from bot.analysis.plan import plan_hash
from bot.config import ApprovalSettings
from bot.exchange.snapshot import ExchangeService, Queue, TlsCertificateName
from bot.remediation.model import RemediationRequest, RequestKind, new_request
from bot.remediation.rollback import (
    ConnectorRestore,
    pinned_connectors,
    rollback_plan,
    tls_name_display,
)
from bot.remediation.states import State

PLAN_FORMAT = 1
"""Version of the ``plan_json`` document."""

_STEP_KINDS: frozenset[str] = frozenset(get_args(StepKind))
_SHOWN_ERROR = 200


class PlanFormatError(ValueError):
    """Stored plan JSON that is malformed, or whose hash does not match its steps."""


class RollbackUnavailable(ValueError):
    """A rollback cannot be proposed for this request; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- plan JSON


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def step_document(step: PlanStep) -> dict[str, Any]:
    """One step as JSON data; parameters are ``[name, value]`` pairs, in order."""
    return {
        "kind": step.kind,
        "cmdlet": step.cmdlet,
        "parameters": [[name, list(value) if isinstance(value, list) else value]
                       for name, value in step.parameters],
        "display": step.display,
        "target": step.target,
        "before": step.before,
        "after": step.after,
        "skipped_reason": step.skipped_reason,
    }


def plan_to_json(plan: RemediationPlan) -> str:
    """The plan as canonical JSON (sorted keys, no whitespace): the request's ``plan_json``."""
    return _canonical({
        "format": PLAN_FORMAT,
        "server": plan.server,
        "hash": plan.hash,
        "steps": [step_document(step) for step in plan.steps],
    })


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise PlanFormatError(f"{what} must be text")
    return value


def _parameter_value(value: object, what: str) -> ParameterValue:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    raise PlanFormatError(f"{what} must be text, a list of text or null")


def _step_from(document: object, index: int) -> PlanStep:
    where = f"step {index + 1}"
    if not isinstance(document, dict):
        raise PlanFormatError(f"{where} must be an object")
    kind = _text(document.get("kind"), f"{where} kind")
    if kind not in _STEP_KINDS:
        raise PlanFormatError(f"{where}: unknown kind {kind!r}")
    raw_parameters = document.get("parameters")
    if not isinstance(raw_parameters, list):
        raise PlanFormatError(f"{where} parameters must be a list")
    parameters: list[tuple[str, ParameterValue]] = []
    for pair in raw_parameters:
        if not isinstance(pair, list) or len(pair) != 2:
            raise PlanFormatError(f"{where}: each parameter is a [name, value] pair")
        name = _text(pair[0], f"{where} parameter name")
        parameters.append((name, _parameter_value(pair[1], f"{where} -{name}")))
    skipped = document.get("skipped_reason")
    return PlanStep(
        kind=kind,  # type: ignore[arg-type]  # checked against StepKind above
        cmdlet=_text(document.get("cmdlet"), f"{where} cmdlet"),
        parameters=tuple(parameters),
        display=_text(document.get("display"), f"{where} display"),
        target=_text(document.get("target"), f"{where} target"),
        before=_text(document.get("before"), f"{where} before"),
        after=_text(document.get("after"), f"{where} after"),
        skipped_reason=None if skipped is None else _text(skipped, f"{where} skipped_reason"),
    )


def plan_from_json(text: str) -> RemediationPlan:
    """The plan stored by :func:`plan_to_json`; raises :class:`PlanFormatError` when the text
    is malformed or its hash does not match its server and steps."""
    try:
        document = json.loads(text)
    except (TypeError, ValueError) as error:
        raise PlanFormatError(f"plan JSON does not parse: {error}") from None
    if not isinstance(document, dict):
        raise PlanFormatError("plan JSON must be an object")
    if document.get("format") != PLAN_FORMAT:
        raise PlanFormatError(f"unknown plan format {document.get('format')!r}")
    server = _text(document.get("server"), "server")
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list):
        raise PlanFormatError("steps must be a list")
    steps = tuple(_step_from(step, index) for index, step in enumerate(raw_steps))
    computed = plan_hash(server, steps)
    if document.get("hash") != computed:
        raise PlanFormatError("the plan's hash does not match its steps")
    return RemediationPlan(server=server, steps=steps, hash=computed)


# --------------------------------------------------------------------------- proposals


def propose_remediation(analysis: ServerAnalysis, *, requested_by: str, team_id: str,
                        channel: str, now: datetime, settings: ApprovalSettings,
                        message_ts: str | None = None,
                        request_id: str | None = None) -> RemediationRequest | None:
    """A pending remediation request for the analysis's plan; None when there is nothing to
    run (unreachable server, no plan, or only skipped steps)."""
    plan = analysis.plan
    if not analysis.reachable or plan is None or not any(s.runnable for s in plan.steps):
        return None
    return new_request(
        kind="remediation", server=plan.server, plan_hash=plan.hash,
        plan_json=plan_to_json(plan), requested_by=requested_by, team_id=team_id,
        channel=channel, now=now,
        expires_after=timedelta(minutes=settings.expires_after_minutes),
        message_ts=message_ts, request_id=request_id,
    )


_OPEN_ROLLBACK_STATES = frozenset({State.PENDING, State.APPROVED, State.RUNNING})


def rollback_unavailable_reason(original: RemediationRequest, *,
                                existing_rollbacks: Sequence[RemediationRequest] = ()
                                ) -> str | None:
    """Why ``original`` cannot be rolled back now, or None when it can.

    Only a succeeded remediation that pinned a send connector can, and only while no other
    rollback of it is open or has succeeded (``existing_rollbacks``: see
    ``Repository.rollbacks_of``).
    """
    if original.kind != "remediation":
        return f"{original.id} is a rollback: only a remediation can be rolled back"
    if original.state is not State.SUCCEEDED:
        return (f"{original.id} is {original.state.value}: only a succeeded remediation can be "
                "rolled back")
    try:
        restores = pinned_connectors(plan_from_json(original.plan_json))
    except ValueError as error:
        return f"the plan of {original.id} cannot be read: {error}"
    if not restores:
        return f"the plan of {original.id} pinned no send connector: nothing to roll back"
    for rollback in existing_rollbacks:
        if rollback.state in _OPEN_ROLLBACK_STATES:
            return f"rollback {rollback.id} of {original.id} is already {rollback.state.value}"
        if rollback.state is State.SUCCEEDED:
            return f"{original.id} was already rolled back by {rollback.id}"
    return None


def propose_rollback(original: RemediationRequest, *, requested_by: str, team_id: str,
                     channel: str, now: datetime, settings: ApprovalSettings,
                     existing_rollbacks: Sequence[RemediationRequest] = (),
                     previous: Mapping[str, str | None] | None = None,
                     message_ts: str | None = None,
                     request_id: str | None = None) -> RemediationRequest:
    """A pending rollback request restoring each connector ``original`` pinned to the
    ``TlsCertificateName`` it had before (``$null`` when it was not set).

    The value before is the pin step's ``before`` (verified against the server just before the
    pin ran); ``previous`` (by connector name) overrides it. Approval-gated like any request.
    Raises :class:`RollbackUnavailable` with the reason when no rollback can be proposed.
    """
    reason = rollback_unavailable_reason(original, existing_rollbacks=existing_rollbacks)
    if reason is not None:
        raise RollbackUnavailable(reason)
    overrides = {name.casefold(): value for name, value in (previous or {}).items()}
    restores = tuple(
        ConnectorRestore(r.connector, r.pinned, overrides[r.connector.casefold()])
        if r.connector.casefold() in overrides else r
        for r in pinned_connectors(plan_from_json(original.plan_json))
    )
    plan = rollback_plan(original.server, restores)
    return new_request(
        kind="rollback", server=original.server, plan_hash=plan.hash,
        plan_json=plan_to_json(plan), requested_by=requested_by, team_id=team_id,
        channel=channel, now=now,
        expires_after=timedelta(minutes=settings.expires_after_minutes),
        message_ts=message_ts, rollback_of=original.id,
        previous_tls_certificate_name=restores[0].previous if len(restores) == 1 else None,
        request_id=request_id,
    )


# --------------------------------------------------------------------------- plan changes


def _step_key(step: PlanStep) -> tuple[str, str, str]:
    return (step.kind, step.cmdlet.casefold(), step.target.casefold())


def _describe_step(step: PlanStep) -> str:
    return f"{step.cmdlet} {step.target}"


def plan_differences(approved: RemediationPlan, current: RemediationPlan | None
                     ) -> tuple[str, ...]:
    """What differs between the approved plan and the plan computed now, for people.

    Empty when the hashes are equal. Steps are matched by kind, cmdlet and target.
    """
    if current is not None and current.hash == approved.hash:
        return ()
    if current is None:
        return ("the server no longer needs this remediation: a fresh analysis finds no plan "
                "(someone may have fixed or changed it)",)
    differences: list[str] = []
    if current.server.casefold() != approved.server.casefold():
        differences.append(f"server {approved.server} is now read as {current.server}")
    now_by_key = {_step_key(s): s for s in current.steps}
    approved_keys = {_step_key(s) for s in approved.steps}
    for index, step in enumerate(approved.steps, 1):
        now = now_by_key.get(_step_key(step))
        label = f"step {index} ({_describe_step(step)})"
        if now is None:
            differences.append(f"{label} is no longer in the plan")
            continue
        if now.before != step.before:
            differences.append(f"{label}: approved with {step.before!r}, the server now shows "
                               f"{now.before!r}")
        if now.parameters != step.parameters or now.display != step.display:
            differences.append(f"{label}: the command is now {now.display or '(skipped)'!r}")
        if now.skipped_reason != step.skipped_reason:
            differences.append(
                f"{label}: " + (f"now skipped ({now.skipped_reason})" if now.skipped_reason
                                else "now runnable"))
        if now.after != step.after and now.parameters == step.parameters:
            differences.append(f"{label}: expected result is now {now.after!r}")
    for step in current.steps:
        if _step_key(step) not in approved_keys:
            differences.append(f"new step: {_describe_step(step)} ({step.before})")
    if not differences:
        differences.append("the plan's steps are ordered or described differently")
    return tuple(differences)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class OutboundObservation:
    """The certificate a cloud connector is predicted to present now (a prediction)."""

    connector: str
    thumbprint: str | None
    subject: str | None
    trust: Trust | None
    uncertain: bool
    reason: str

    @property
    def publicly_trusted(self) -> bool:
        return self.thumbprint is not None and self.trust == "public"

    def text(self) -> str:
        if self.thumbprint is None:
            return f"{self.connector}: no certificate predicted"
        trust = self.trust or "unknown"
        verdict = ("publicly trusted" if self.publicly_trusted
                   else "NOT publicly trusted: Exchange Online refuses it")
        doubt = " (uncertain)" if self.uncertain else ""
        return (f"{self.connector}: predicted outbound certificate "
                f"{short_thumbprint(self.thumbprint)} {self.subject or ''} ({trust}), "
                f"{verdict}{doubt}")


@dataclass(frozen=True)
class CertificateObservation:
    """A certificate that is not publicly trusted and carries the server's names."""

    thumbprint: str
    subject: str
    trust: Trust
    services: str
    smtp_listed: bool | None
    targeted: bool
    """The plan meant to take SMTP off it."""

    def text(self) -> str:
        label = f"{short_thumbprint(self.thumbprint)} {self.subject} ({self.trust})"
        if self.smtp_listed is None:
            return f"{label}: Services unknown, cannot say whether SMTP is listed"
        if not self.smtp_listed:
            return f"{label}: SMTP not listed (Services: {self.services})"
        note = (": SMTP was not removed; Exchange documents -Services as additive"
                if self.targeted else "")
        return f"{label}: SMTP still listed (Services: {self.services}){note}"


@dataclass(frozen=True)
class QueueObservation:
    identity: str
    next_hop_domain: str | None
    status: str | None
    message_count: int
    last_error: str | None

    @classmethod
    def of(cls, queue: Queue) -> QueueObservation:
        return cls(queue.identity, queue.next_hop_domain, queue.status, queue.message_count,
                   queue.last_error)

    def text(self) -> str:
        line = (f"queue {self.identity} to {self.next_hop_domain or '?'}: "
                f"{self.status or 'status unknown'}, {self.message_count} message"
                f"{'' if self.message_count == 1 else 's'}")
        if self.last_error and self.message_count:
            error = self.last_error
            if len(error) > _SHOWN_ERROR:
                error = error[:_SHOWN_ERROR - 1].rstrip() + "…"
            line += f"; last error: {error}"
        return line


@dataclass(frozen=True)
class Observation:
    """What a fresh read of the server showed: the verification after a run, or the state
    found after an interruption."""

    server: str
    at: datetime | None
    reachable: bool
    error: str | None = None
    outbound: tuple[OutboundObservation, ...] = ()
    certificates: tuple[CertificateObservation, ...] = ()
    queues: tuple[QueueObservation, ...] = ()
    findings: tuple[str, ...] = ()

    @property
    def outbound_publicly_trusted(self) -> bool:
        """Every cloud connector (at least one) is predicted to present a public certificate."""
        return (self.reachable and bool(self.outbound)
                and all(o.publicly_trusted for o in self.outbound))

    @property
    def smtp_still_listed(self) -> tuple[CertificateObservation, ...]:
        """Certificates the plan meant to take SMTP off that still list it."""
        return tuple(c for c in self.certificates if c.targeted and c.smtp_listed)

    @property
    def untrusted_with_smtp(self) -> tuple[CertificateObservation, ...]:
        """Every certificate not publicly trusted, with the server's names, listing SMTP."""
        return tuple(c for c in self.certificates if c.smtp_listed)

    @property
    def queued_messages(self) -> int:
        return sum(q.message_count for q in self.queues)

    def text(self) -> str:
        """Lines for the card and the thread: outbound, SMTP on untrusted, queues."""
        if not self.reachable:
            return f"could not read {self.server}: {self.error or 'unknown error'}"
        lines = [o.text() for o in self.outbound] or ["no cloud send connector found"]
        lines += [c.text() for c in self.certificates if c.smtp_listed is not False
                  or c.targeted]
        lines += [q.text() for q in self.queues] or ["no queue to Exchange Online"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "at": iso_utc(self.at) if self.at is not None else None,
            "reachable": self.reachable,
            "error": self.error,
            "outbound": [
                {"connector": o.connector, "thumbprint": o.thumbprint, "subject": o.subject,
                 "trust": o.trust, "uncertain": o.uncertain,
                 "publicly_trusted": o.publicly_trusted}
                for o in self.outbound
            ],
            "untrusted_certificates": [
                {"thumbprint": c.thumbprint, "subject": c.subject, "trust": c.trust,
                 "services": c.services, "smtp_listed": c.smtp_listed, "targeted": c.targeted}
                for c in self.certificates
            ],
            "queues": [
                {"identity": q.identity, "next_hop_domain": q.next_hop_domain,
                 "status": q.status, "message_count": q.message_count,
                 "last_error": q.last_error}
                for q in self.queues
            ],
            "findings": list(self.findings),
            "outbound_publicly_trusted": self.outbound_publicly_trusted,
        }


def unbind_targets(plan: RemediationPlan | None) -> frozenset[str]:
    """Thumbprints (upper case) the plan takes SMTP off (runnable steps only)."""
    if plan is None:
        return frozenset()
    return frozenset(s.target.upper() for s in plan.steps
                     if s.kind == "unbind_smtp" and s.runnable)


def observe(analysis: ServerAnalysis, *, targets: Collection[str] = ()) -> Observation:
    """The observation a fresh analysis gives; ``targets`` are thumbprints the plan meant to
    unbind (always reported, SMTP or not)."""
    if not analysis.reachable:
        return Observation(server=analysis.name, at=analysis.taken_at, reachable=False,
                           error=analysis.error)
    wanted = {t.upper() for t in targets}
    by_thumbprint = {c.thumbprint: c for c in analysis.certificates}
    outbound = tuple(
        OutboundObservation(
            connector=o.connector, thumbprint=o.thumbprint,
            subject=(by_thumbprint[o.thumbprint.upper()].cert.subject
                     if o.thumbprint and o.thumbprint.upper() in by_thumbprint else None),
            trust=o.trust, uncertain=o.uncertain, reason=o.reason)
        for o in analysis.outbound
    )
    certificates = tuple(
        CertificateObservation(
            thumbprint=c.thumbprint, subject=c.cert.subject, trust=c.trust,
            services=services_text(c.cert.services), smtp_listed=c.has_smtp,
            targeted=c.thumbprint in wanted)
        for c in analysis.certificates
        if c.thumbprint in wanted
        or (c.trust != "public" and c.matches_fqdn and c.within_validity)
    )
    queues = tuple(QueueObservation.of(q) for q in analysis.queues if q.is_to_exchange_online)
    return Observation(server=analysis.name, at=analysis.taken_at, reachable=True,
                       outbound=outbound, certificates=certificates, queues=queues,
                       findings=tuple(str(f.code) for f in analysis.findings))


# --------------------------------------------------------------------------- step outcomes

StepStatus = Literal["running", "succeeded", "differs", "failed", "skipped", "not_run"]
"""``running``: started, not finished yet; ``succeeded``: ran and read back as planned;
``differs``: ran without error but the server shows something else than planned (reported as
observed); ``failed``: error record, prompt, time-out, dropped connection or a read-back that
contradicts the step; ``skipped``: a step the plan only shows; ``not_run``: never started (an
earlier step stopped the run)."""


@dataclass(frozen=True)
class StepOutcome:
    """One plan step as it went, with what the server showed before and after it."""

    index: int
    """Index into ``plan.steps`` (0-based; people see ``index + 1``)."""
    step: PlanStep
    status: StepStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    observed_before: str | None = None
    observed_after: str | None = None
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """The command ran to completion without an error (its effect may differ)."""
        return self.status in ("succeeded", "differs")

    @property
    def ok(self) -> bool:
        return self.finished

    def text(self) -> str:
        """The outcome line for the card and the thread (plain text)."""
        before = self.observed_before or "?"
        after = self.observed_after or "could not be read back"
        if self.status == "succeeded":
            return f"read back: {before} -> {after}"
        if self.status == "differs":
            return f"read back: {before} -> {after}. {self.reason or ''}".rstrip()
        if self.status == "failed":
            text = f"failed: {self.reason or 'unknown error'}"
            if self.observed_after is not None:
                text += f". Read back afterwards: {self.observed_after}"
            return text
        if self.status == "skipped":
            return f"skipped: {self.reason or self.step.skipped_reason or ''}"
        if self.status == "running":
            return f"running; before: {before}"
        return f"not run: {self.reason or 'the run stopped before it'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.step.kind,
            "cmdlet": self.step.cmdlet,
            "target": self.step.target,
            "display": self.step.display,
            "status": self.status,
            "started_at": iso_utc(self.started_at) if self.started_at else None,
            "finished_at": iso_utc(self.finished_at) if self.finished_at else None,
            "planned_before": self.step.before,
            "planned_after": self.step.after,
            "observed_before": self.observed_before,
            "observed_after": self.observed_after,
            "reason": self.reason,
        }


def tls_name_text(name: TlsCertificateName | None) -> str:
    """A connector's TlsCertificateName as read back, in the plan's wording."""
    return tls_name_display(name.raw if name is not None else None)


def services_display(services: ExchangeService | None) -> str:
    return f"Services: {services_text(services)}"


def _parameter(step: PlanStep, name: str) -> ParameterValue:
    return next((value for key, value in step.parameters if key.casefold() == name.casefold()),
                None)


@dataclass(frozen=True)
class Judgement:
    status: Literal["succeeded", "differs", "failed"]
    reason: str | None = None


def judge_connector(step: PlanStep, found: bool, observed: TlsCertificateName | None
                    ) -> Judgement:
    """A ``Set-SendConnector -TlsCertificateName`` step against the value read back."""
    if not found:
        return Judgement("failed", f"send connector {step.target} was not found on read-back")
    wanted = _parameter(step, "TlsCertificateName")
    if wanted is None:
        if observed is None:
            return Judgement("succeeded")
        return Judgement("failed", f"TlsCertificateName should be cleared but reads back as "
                                   f"{observed.raw}")
    if not isinstance(wanted, str):
        return Judgement("failed", "the step's TlsCertificateName is not text")
    if observed is not None and tls_certificate_names_equal(observed,
                                                            TlsCertificateName.parse(wanted)):
        return Judgement("succeeded")
    shown = observed.raw if observed is not None else "(not set)"
    return Judgement("failed", f"TlsCertificateName reads back as {shown}, not {wanted}")


def judge_services(step: PlanStep, found: bool, observed: ExchangeService | None) -> Judgement:
    """An ``Enable-ExchangeCertificate -Services`` step against the services read back.

    SMTP still listed is not a failure of the command: ``-Services`` is documented as
    additive, so it is reported as observed (status ``differs``).
    """
    if not found:
        return Judgement("failed", f"certificate {step.target} was not found on read-back")
    if observed is None:
        return Judgement("differs", "its services could not be read back, so whether SMTP is "
                                    "still listed is unknown")
    raw = _parameter(step, "Services")
    names = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
    try:
        wanted = ExchangeService.from_names(",".join(names))
    except ValueError:
        wanted = None
    if ExchangeService.SMTP in observed and (wanted is None
                                             or ExchangeService.SMTP not in wanted):
        return Judgement("differs", "SMTP is still listed on this certificate: Exchange "
                                    "documents -Services as additive, so it was not removed")
    if wanted is not None and observed != wanted:
        return Judgement("differs", f"the services read back ({services_text(observed)}) are "
                                    f"not the ones requested ({services_text(wanted)})")
    return Judgement("succeeded")


def queues_text(domain: str, queues: Sequence[Queue]) -> str:
    """The queues to ``domain`` as read back."""
    matching = [q for q in queues if (q.next_hop_domain or "").casefold() == domain.casefold()]
    if not matching:
        return f"no queue to {domain}"
    return "; ".join(QueueObservation.of(q).text() for q in matching)


# --------------------------------------------------------------------------- the report

ExecutionOutcome = Literal["running", "succeeded", "failed", "aborted", "refused",
                           "interrupted", "lost"]
"""``lost``: the request stopped being this executor's (e.g. marked interrupted by another
replica) in the middle; nothing more was run and its state was left as the other party set."""


@dataclass(frozen=True)
class ExecutionReport:
    """A run as it stands: the steps, the verification, the final state and its reason."""

    request_id: str
    kind: RequestKind
    server: str
    plan: RemediationPlan | None
    outcome: ExecutionOutcome
    state: State | None
    reason: str
    steps: tuple[StepOutcome, ...] = ()
    verification: Observation | None = None
    differences: tuple[str, ...] = ()

    def card_outcomes(self) -> tuple[tuple[int, str, bool], ...]:
        """``(index, text, ok)`` per step that ran: ``RequestCardView.step_outcomes``."""
        return tuple((s.index, s.text(), s.ok) for s in self.steps
                     if s.status in ("succeeded", "differs", "failed"))

    def text(self) -> str:
        """A plain-text summary (CLI, demo, logs)."""
        lines = [f"{self.kind} {self.request_id} on {self.server}: {self.outcome} "
                 f"({self.state.value if self.state else 'no state'}): {self.reason}"]
        lines += [f"  difference: {d}" for d in self.differences]
        for outcome in self.steps:
            lines.append(f"  {outcome.index + 1}. {outcome.step.cmdlet} {outcome.step.target}: "
                         f"{outcome.text()}")
        if self.verification is not None:
            lines.append("  verification:")
            lines += [f"    {line}" for line in self.verification.text().splitlines()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "server": self.server,
            "plan_hash": self.plan.hash if self.plan else None,
            "outcome": self.outcome,
            "state": self.state.value if self.state else None,
            "reason": self.reason,
            "differences": list(self.differences),
            "steps": [s.to_json() for s in self.steps],
            "verification": self.verification.to_json() if self.verification else None,
        }


def not_run_outcomes(plan: RemediationPlan, done: Collection[int], reason: str
                     ) -> tuple[StepOutcome, ...]:
    """Outcomes for the steps not in ``done``: skipped ones as skipped, others not run."""
    outcomes = []
    for index, step in enumerate(plan.steps):
        if index in done:
            continue
        if not step.runnable:
            outcomes.append(StepOutcome(index, step, "skipped", reason=step.skipped_reason))
        else:
            outcomes.append(StepOutcome(index, step, "not_run", reason=reason))
    return tuple(outcomes)


def final_verdict(kind: RequestKind, plan: RemediationPlan, steps: Sequence[StepOutcome],
                  verification: Observation | None) -> tuple[bool, str]:
    """(succeeded, reason): a remediation succeeds only when every runnable step finished and
    the verification predicts a publicly trusted outbound certificate on every cloud
    connector; a rollback when every restore finished and read back as the value before."""
    failed = next((s for s in steps if s.status == "failed"), None)
    if failed is not None:
        return False, (f"step {failed.index + 1} ({failed.step.cmdlet} {failed.step.target}) "
                       f"failed: {failed.reason}; later steps were not run, nothing was "
                       "retried")
    runnable = [i for i, s in enumerate(plan.steps) if s.runnable]
    finished = {s.index for s in steps if s.finished}
    missing = [i + 1 for i in runnable if i not in finished]
    if missing:
        return False, f"step(s) {', '.join(map(str, missing))} did not run"
    if kind == "rollback":
        if any(s.status != "succeeded" for s in steps if s.index in finished):
            return False, "a restored value did not read back as planned"
        text = "every connector reads back its previous TlsCertificateName"
        if verification is not None and verification.reachable \
                and not verification.outbound_publicly_trusted:
            text += ("; note: the predicted outbound certificate is now not publicly trusted, "
                     "mail to Exchange Online may fail again")
        return True, text
    if verification is None or not verification.reachable:
        error = verification.error if verification is not None else "not read"
        return False, (f"every step finished, but the verification could not read the server "
                       f"({error}): success is not claimed")
    if not verification.outbound:
        return False, "every step finished, but no cloud send connector is seen any more"
    untrusted = [o for o in verification.outbound if not o.publicly_trusted]
    if untrusted:
        return False, ("every step finished, but the verification predicts a certificate that "
                       f"is not publicly trusted: {untrusted[0].text()}")
    text = "every step finished; the predicted outbound certificate is publicly trusted"
    still = verification.smtp_still_listed
    if still:
        text += ("; SMTP is still listed on " + ", ".join(short_thumbprint(c.thumbprint)
                                                          for c in still)
                 + " (as observed)")
    if verification.queued_messages:
        text += f"; {verification.queued_messages} message(s) still queued"
    return True, text


UpdateKind = Literal["refused", "started", "aborted", "step_started", "step_finished",
                     "verification", "finished", "interrupted", "lost"]


@dataclass(frozen=True)
class ExecutionUpdate:
    """One moment of a run, for ``on_update`` (the card's ``chat.update`` and thread lines).

    ``report`` is the run so far; ``step`` is set for step updates, ``verification`` for the
    verification; ``request`` is the request as stored at that moment (None when unknown).
    """

    kind: UpdateKind
    at: datetime
    request_id: str
    request: RemediationRequest | None
    report: ExecutionReport
    step: StepOutcome | None = None
    verification: Observation | None = None
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
