"""Runs an approved request on its Exchange server, and recovers runs a dead process left.

The shell around :mod:`bot.remediation.workflow`: the database (compare-and-set claims and
transitions through :class:`~bot.storage.repository.Repository`), the audit trail, and the
server (through :class:`~bot.exchange.session.ExchangeSession`). One run:

1. ``claim_execution``: exactly one caller wins, across threads, processes and replicas;
   refused while frozen, while another remediation runs on the server, or when not approved.
2. The server is re-read and the plan recomputed; a plan hash other than the approved one
   aborts with the differences, and nothing runs.
3. Each runnable step in order, with the plan's structured parameters, each audited
   (``step_started`` / ``step_finished``, with the state read from the server before and
   after it). The first error record, prompt, time-out or dropped connection stops the run;
   nothing is retried. A freeze during the run stops it before the next step.
4. The verification: a fresh snapshot and analysis (predicted outbound certificate and its
   trust, SMTP on the untrusted certificates, the queue to Exchange Online), audited.
5. The final state: succeeded only when every runnable step finished and the verification
   predicts a publicly trusted outbound certificate (rollbacks: every value restored).

A heartbeat is recorded at every phase and, while the run lasts, every quarter of the
execution lease by a thread of its own (so a step slower than the lease is not taken for dead);
a run whose request stopped being its own (marked interrupted by :func:`recover_interrupted`
elsewhere) stops before its next step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.analysis.analyse import analyse_server
from bot.analysis.model import PlanScope, PlanStep, RemediationPlan, ServerAnalysis
from bot.analysis.trust import TrustStore
from bot.audit import AuditEvent, AuditEventType, AuditLog
from bot.config import ServerSettings
from bot.exchange.parse import (
    SnapshotParseError,
    parse_certificate,
    parse_queue,
    parse_send_connector,
)
from bot.exchange.reader import SELECTED_CERTIFICATE_PROPERTIES, read_snapshot
from bot.exchange.remote_object import RemoteObject
from bot.exchange.session import (
    CommandRefused,
    CommandResult,
    CommandTimedOut,
    ExchangeSession,
    ExchangeUnavailable,
    SessionCache,
)
from bot.exchange.snapshot import ServerSnapshot
from bot.remediation.model import RemediationRequest
from bot.remediation.rollback import restores_of, rollback_plan_now
from bot.remediation.states import Event, State
from bot.remediation.workflow import (
    ExecutionOutcome,
    ExecutionReport,
    ExecutionUpdate,
    Judgement,
    Observation,
    PlanFormatError,
    StepOutcome,
    UpdateKind,
    final_verdict,
    judge_connector,
    judge_services,
    not_run_outcomes,
    observe,
    plan_differences,
    plan_from_json,
    queues_text,
    services_display,
    tls_name_text,
    unbind_targets,
)
from bot.storage.outage import outcome_unknown, unavailable_reason
from bot.storage.repository import Applied, Refusal, Repository

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ServerSettingsLookup = Callable[[str], ServerSettings | None]
"""The configured server of a name (e.g. ``Settings.server``), or None."""
UpdateCallback = Callable[[ExecutionUpdate], None]
Planner = Callable[[RemediationRequest, RemediationPlan, ServerSnapshot, ServerAnalysis],
                   RemediationPlan | None]
"""(request, approved plan, fresh snapshot, fresh analysis) -> the plan computed now."""

DEFAULT_STALE_AFTER = timedelta(minutes=10)
"""The default execution lease: a running request whose heartbeat is older than this is taken
for dead at recovery. A live run renews it every quarter of the lease."""
DEFAULT_EXECUTION_LEASE = DEFAULT_STALE_AFTER


def heartbeat_interval(lease: timedelta) -> float:
    """Seconds between the heartbeats of a run: a quarter of ``lease`` (three may be missed
    before another replica takes the run for dead)."""
    return max(lease.total_seconds() / 4, 0.05)


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_planner(request: RemediationRequest, approved: RemediationPlan,
                    snapshot: ServerSnapshot, analysis: ServerAnalysis) -> RemediationPlan | None:
    """The plan the server needs now: the analysis's plan for a remediation; for a rollback
    the restore steps against what each connector holds now."""
    if request.kind == "rollback":
        return rollback_plan_now(approved, snapshot)
    return analysis.plan


@dataclass(frozen=True)
class ExecutionResult:
    """What :meth:`RemediationExecutor.run` did. ``refusal`` is set when the claim was refused
    (nothing ran); ``request`` is the request as stored afterwards."""

    request_id: str
    report: ExecutionReport
    request: RemediationRequest | None
    refusal: Refusal | None = None

    @property
    def claimed(self) -> bool:
        return self.refusal is None

    @property
    def outcome(self) -> ExecutionOutcome:
        return self.report.outcome


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class ReadBack:
    """What the server shows for a step's target: text for people and the judgement."""

    text: str
    judgement: Judgement


def _objects(result: CommandResult) -> list[RemoteObject]:
    return [item for item in result.output if isinstance(item, RemoteObject)]


def _parameter_text(step: PlanStep, name: str, default: str) -> str:
    for key, value in step.parameters:
        if key.casefold() == name.casefold() and isinstance(value, str):
            return value
    return default


def _read_connector(session: ExchangeSession, step: PlanStep) -> ReadBack:
    identity = _parameter_text(step, "Identity", step.target)
    result = session.run("Get-SendConnector", [("Identity", identity)])
    objects = _objects(result)
    if not objects:
        detail = f": {result.errors[0].message}" if result.errors else ""
        return ReadBack(f"send connector {identity} not found{detail}",
                        judge_connector(step, False, None))
    connector = parse_send_connector(objects[0])
    return ReadBack(tls_name_text(connector.tls_certificate_name),
                    judge_connector(step, True, connector.tls_certificate_name))


def _read_certificate(session: ExchangeSession, server: str, step: PlanStep) -> ReadBack:
    server = _parameter_text(step, "Server", server)
    thumbprint = _parameter_text(step, "Thumbprint", step.target)
    parameters = [("Server", server), ("Thumbprint", thumbprint)]
    result = session.run("Get-ExchangeCertificate", parameters)
    objects = _objects(result)
    if not objects:
        detail = f": {result.errors[0].message}" if result.errors else ""
        return ReadBack(f"certificate {thumbprint} not found{detail}",
                        judge_services(step, False, None))
    certificate = parse_certificate(objects[0])
    if certificate.services is None and session.has_command("Select-Object"):
        selected = _objects(session.run("Get-ExchangeCertificate", parameters,
                                        select=SELECTED_CERTIFICATE_PROPERTIES))
        if selected:
            certificate = parse_certificate(objects[0], selected=selected[0])
    return ReadBack(services_display(certificate.services),
                    judge_services(step, True, certificate.services))


def _read_queues(session: ExchangeSession, server: str, step: PlanStep) -> ReadBack:
    server = _parameter_text(step, "Server", server)
    result = session.run("Get-Queue", [("Server", server)])
    queues = [parse_queue(obj) for obj in _objects(result)]
    text = queues_text(step.target, queues)
    if result.errors and not queues:
        text += f" ({result.errors[0].message})"
    return ReadBack(text, Judgement("succeeded"))


def read_back(session: ExchangeSession, server: str, step: PlanStep) -> ReadBack:
    """Read from the server what ``step`` changes: ``Get-SendConnector -Identity`` for a
    connector pin or restore, ``Get-ExchangeCertificate -Server -Thumbprint`` for services,
    ``Get-Queue -Server`` for a retried queue. Raises what the session raises."""
    cmdlet = step.cmdlet.casefold()
    if cmdlet == "set-sendconnector":
        return _read_connector(session, step)
    if cmdlet == "enable-exchangecertificate":
        return _read_certificate(session, server, step)
    if cmdlet == "retry-queue":
        return _read_queues(session, server, step)
    return ReadBack(f"exchange-tls has no read-back for {step.cmdlet}",
                    Judgement("differs", f"the result of {step.cmdlet} cannot be read back"))


def _failure_reason(error: Exception) -> str:
    if isinstance(error, CommandRefused):
        return error.reason
    if isinstance(error, CommandTimedOut):
        return f"time-out: {error.reason}"
    if isinstance(error, ExchangeUnavailable):
        return f"connection: {error.reason}"
    return f"{type(error).__name__}: {error}"


def _try_read_back(session: ExchangeSession, server: str, step: PlanStep
                   ) -> tuple[ReadBack | None, str | None]:
    try:
        return read_back(session, server, step), None
    except (ExchangeUnavailable, CommandRefused, SnapshotParseError) as error:
        return None, _failure_reason(error)


def observe_server(session: ExchangeSession, settings: ServerSettings, trust: TrustStore,
                   now: Clock, *, plan_scope: PlanScope = "all",
                   targets: Sequence[str] = ()) -> tuple[Observation, ServerAnalysis | None,
                                                         ServerSnapshot | None]:
    """A fresh snapshot and analysis as an :class:`Observation` (unreachable: with the error)."""
    try:
        snapshot = read_snapshot(session, settings.name, now=now())
    except (ExchangeUnavailable, CommandRefused) as error:
        return (Observation(server=settings.name, at=now(), reachable=False,
                            error=_failure_reason(error)), None, None)
    analysis = analyse_server(snapshot, trust, now(), plan_scope=plan_scope)
    return observe(analysis, targets=targets), analysis, snapshot


# --------------------------------------------------------------------------- the executor


class RemediationExecutor:
    """Runs approved requests. Thread-safe: each :meth:`run` is independent.

    ``owner`` identifies this process in claims and heartbeats (stable per replica, so that a
    restart can recognise its own dead runs). ``on_update`` is called at every step of a run
    (exceptions it raises are logged, never stop a run). ``lease``: the execution lease; a run
    renews its heartbeat every quarter of it.
    """

    def __init__(
        self,
        repository: Repository,
        audit: AuditLog,
        sessions: SessionCache,
        server_settings: ServerSettingsLookup,
        trust: TrustStore,
        *,
        clock: Clock = utc_now,
        owner: str,
        on_update: UpdateCallback | None = None,
        plan_scope: PlanScope = "all",
        planner: Planner = default_planner,
        lease: timedelta = DEFAULT_EXECUTION_LEASE,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self.repository = repository
        self.audit = audit
        self.sessions = sessions
        self.server_settings = server_settings
        self.trust = trust
        self.clock = clock
        self.owner = owner
        self.on_update = on_update
        self.plan_scope = plan_scope
        self.planner = planner
        self.lease = lease
        self._active: dict[str, int] = {}
        self._active_lock = threading.Lock()

    @property
    def active_runs(self) -> frozenset[str]:
        """Requests this executor is claiming or running now (never dead, whatever their
        heartbeat says)."""
        with self._active_lock:
            return frozenset(self._active)

    @contextmanager
    def _registered(self, request_id: str) -> Iterator[None]:
        # Registered before the claim, so no recovery in this process takes a run it has just
        # claimed for one left by a dead process of the same replica id.
        with self._active_lock:
            self._active[request_id] = self._active.get(request_id, 0) + 1
        try:
            yield
        finally:
            with self._active_lock:
                left = self._active.pop(request_id) - 1
                if left:
                    self._active[request_id] = left

    @contextmanager
    def _heartbeats(self, request_id: str) -> Iterator[None]:
        """Renew the run's heartbeat in a thread of its own until the block ends (or the claim
        is lost: the run notices before its next step)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(heartbeat_interval(self.lease)):
                try:
                    if not self.repository.heartbeat(request_id, owner=self.owner,
                                                      now=self.clock()):
                        return
                except Exception as error:
                    unavailable = unavailable_reason(error)
                    log.warning("the heartbeat of %s could not be recorded (%s); trying again",
                                request_id, unavailable or type(error).__name__,
                                exc_info=unavailable is None)

        thread = threading.Thread(target=beat, name=f"exchange-tls-heartbeat-{request_id}",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def notify(self, update: ExecutionUpdate) -> None:
        if self.on_update is None:
            return
        try:
            self.on_update(update)
        except Exception as error:
            reason = unavailable_reason(error)
            if reason is None:
                log.exception("on_update failed for %s (%s); the run goes on",
                              update.request_id, update.kind)
            else:
                log.warning("on_update for %s (%s) incomplete: the database is unavailable (%s)",
                            update.request_id, update.kind, reason)

    def run(self, request_id: str) -> ExecutionResult:
        """Claim and run one approved request; see the module docstring."""
        with self._registered(request_id):
            return self._claim_and_run(request_id)

    def _claim_and_run(self, request_id: str) -> ExecutionResult:
        claim = self.repository.claim_execution(request_id, owner=self.owner, now=self.clock())
        if isinstance(claim, Refusal):
            current = claim.request
            report = ExecutionReport(
                request_id=request_id, kind=current.kind if current else "remediation",
                server=current.server if current else "", plan=None, outcome="refused",
                state=current.state if current else None, reason=claim.reason)
            self.notify(ExecutionUpdate("refused", self.clock(), request_id, current, report,
                                        message=claim.reason,
                                        details={"code": claim.code.value}))
            return ExecutionResult(request_id, report, current, claim)
        execution = _Run(self, claim.request)
        with self._heartbeats(request_id):
            try:
                return execution.execute()
            except Exception as error:
                reason = unavailable_reason(error)
                if reason is not None:
                    log.warning("remediation %s stopped: the database became unavailable (%s)",
                                request_id, reason)
                    return execution.stop_without_database(
                        outcome_unknown=outcome_unknown(error))
                log.exception("remediation %s stopped by an unexpected error", request_id)
                return execution.fail_unexpectedly(error)


class _Run:
    """One claimed run: the steps so far and the verification."""

    def __init__(self, executor: RemediationExecutor, request: RemediationRequest) -> None:
        self.x = executor
        self.request = request
        self.plan: RemediationPlan | None = None
        self.steps: list[StepOutcome] = []
        self.verification: Observation | None = None
        self.differences: tuple[str, ...] = ()
        self.concluding = False
        """The end of the run is being recorded."""

    # -- reporting -------------------------------------------------------------------------

    def report(self, outcome: ExecutionOutcome, reason: str,
               state: State | None = None) -> ExecutionReport:
        steps = list(self.steps)
        if self.plan is not None and outcome != "running":
            done = {s.index for s in steps}
            steps += not_run_outcomes(self.plan, done, "the run stopped before this step")
            steps.sort(key=lambda s: s.index)
        return ExecutionReport(
            request_id=self.request.id, kind=self.request.kind, server=self.request.server,
            plan=self.plan, outcome=outcome,
            state=state if state is not None else self.request.state, reason=reason,
            steps=tuple(steps), verification=self.verification, differences=self.differences)

    def notify(self, kind: UpdateKind, *, message: str = "", step: StepOutcome | None = None,
               report: ExecutionReport | None = None) -> None:
        self.x.notify(ExecutionUpdate(
            kind=kind, at=self.x.clock(), request_id=self.request.id, request=self.request,
            report=report or self.report("running", message), step=step,
            verification=self.verification if kind == "verification" else None,
            message=message))

    def audit(self, event: AuditEventType, *, result: str | None = None,
              error: str | None = None, details: dict[str, Any] | None = None) -> AuditEvent:
        return self.x.audit.append(
            event, request=self.request, before_state=State.RUNNING.value,
            after_state=State.RUNNING.value, result=result, error=error,
            details={"owner": self.x.owner, **(details or {})}, at=self.x.clock())

    # -- transitions -----------------------------------------------------------------------

    def _transition(self, event: Event, reason: str, outcome: ExecutionOutcome,
                    details: dict[str, Any] | None = None,
                    error: str | None = None) -> ExecutionResult:
        applied = self.x.repository.transition(
            self.request.id, State.RUNNING, event, now=self.x.clock(), reason=reason,
            expected_version=self.request.version, result=reason, error=error,
            details={"owner": self.x.owner, **(details or {})})
        if isinstance(applied, Refusal):
            return self.lost(f"could not record the end of the run ({applied.reason})",
                             applied.request)
        self.request = applied.request
        report = self.report(outcome, reason, applied.request.state)
        self.notify("aborted" if outcome == "aborted" else "finished", message=reason,
                    report=report)
        return ExecutionResult(self.request.id, report, applied.request)

    def abort(self, reason: str, details: dict[str, Any] | None = None) -> ExecutionResult:
        return self._transition(Event.ABORT, reason, "aborted", details)

    def lost(self, reason: str, current: RemediationRequest | None = None) -> ExecutionResult:
        """The request is no longer this run's: stop, change nothing more."""
        if current is None:
            current = self.x.repository.get_request(self.request.id)
        state = current.state if current is not None else None
        text = (f"{reason}; the request is now {state.value if state else 'gone'}: nothing more "
                "was run")
        report = self.report("lost", text, state)
        self.notify("lost", message=text, report=report)
        return ExecutionResult(self.request.id, report, current)

    def heartbeat(self) -> bool:
        return self.x.repository.heartbeat(self.request.id, owner=self.x.owner,
                                           now=self.x.clock())

    def stop_without_database(self, *, outcome_unknown: bool = False) -> ExecutionResult:
        """The database went away mid-run: nothing more runs, as nothing more could be audited.

        The request stays *running* in the database; recovery (the next start, or a replica's
        look for runs whose heartbeat stopped) marks it interrupted and reads the server again.
        With ``outcome_unknown`` the connection was lost while a commit was on its way: when
        that was the end of the run, the database may hold it (the card then shows it once
        the database is back). The update's ``details`` carry ``outcome_unknown``.
        """
        if outcome_unknown and self.concluding:
            text = ("the bot's database went away while the end of the run was being saved: "
                    "the end of the run may have been recorded, the bot cannot tell. Nothing "
                    "more runs. Once the database is back the card shows how the run ended; "
                    "if its end was not recorded, the request is marked interrupted and the "
                    "server is read again")
        elif outcome_unknown:
            text = ("the bot's database went away while the run's progress was being saved, "
                    "so the bot cannot tell whether that was recorded: it stopped before its "
                    "next step and nothing more runs. Once the database is back the request "
                    "is marked interrupted and the server is read again")
        else:
            text = ("the bot's database became unavailable during the run: it stopped before "
                    "its next step and nothing more runs. Once the database is back the "
                    "request is marked interrupted and the server is read again")
        report = self.report("lost", text, State.RUNNING)
        self.x.notify(ExecutionUpdate("lost", self.x.clock(), self.request.id, self.request,
                                      report, message=text,
                                      details={"outcome_unknown": outcome_unknown}))
        return ExecutionResult(self.request.id, report, None)

    def fail_unexpectedly(self, error: Exception) -> ExecutionResult:
        reason = (f"stopped by an unexpected error in exchange-tls ({type(error).__name__}); "
                  "nothing was retried: check the server")
        try:
            return self._transition(Event.STEP_FAILED, reason, "failed",
                                    error=f"{type(error).__name__}: {error}")
        except Exception:
            log.exception("could not record the failure of %s; recovery will mark it "
                          "interrupted", self.request.id)
            report = self.report("failed", reason, None)
            return ExecutionResult(self.request.id, report, None)

    # -- the run ---------------------------------------------------------------------------

    def execute(self) -> ExecutionResult:
        request = self.request
        settings = self.x.server_settings(request.server)
        if settings is None:
            return self.abort(f"server {request.server} is not configured: nothing ran")
        try:
            approved = plan_from_json(request.plan_json)
        except PlanFormatError as error:
            return self.abort(f"the approved plan cannot be read ({error}): nothing ran")
        if approved.hash != request.plan_hash:
            return self.abort("the stored plan does not match the approved plan hash: "
                              "nothing ran")
        self.plan = approved
        self.notify("started", message=f"re-reading {request.server} before the first step")
        try:
            with self.x.sessions.session(settings) as session:
                return self._execute_on(session, settings, approved)
        except ExchangeUnavailable as error:
            if self.steps:
                raise
            # Only opening the session raises here (e.g. credentials missing): nothing ran.
            return self.abort(f"cannot connect to {settings.name} ({error.reason}): "
                              "nothing ran")

    def _execute_on(self, session: ExchangeSession, settings: ServerSettings,
                    approved: RemediationPlan) -> ExecutionResult:
        if not self.heartbeat():
            return self.lost("the claim was lost before the server was re-read")
        try:
            snapshot = read_snapshot(session, settings.name, now=self.x.clock())
        except (ExchangeUnavailable, CommandRefused) as error:
            return self.abort(f"could not re-read {settings.name} before the first step "
                              f"({_failure_reason(error)}): nothing ran")
        analysis = analyse_server(snapshot, self.x.trust, self.x.clock(),
                                  plan_scope=self.x.plan_scope)
        try:
            current = self.x.planner(self.request, approved, snapshot, analysis)
        except ValueError as error:
            return self.abort(f"the plan cannot be recomputed ({error}): nothing ran")
        if current is None or current.hash != approved.hash:
            self.differences = plan_differences(approved, current)
            return self.abort(
                "the server changed since the plan was approved, so nothing ran: "
                + "; ".join(self.differences),
                {"differences": list(self.differences), "approved_plan_hash": approved.hash,
                 "current_plan_hash": current.hash if current else None})
        stopped: str | None = None
        for index, step in enumerate(approved.steps):
            if not step.runnable:
                self.steps.append(StepOutcome(index, step, "skipped",
                                              reason=step.skipped_reason))
                continue
            if not self.heartbeat():
                return self.lost(f"the claim was lost before step {index + 1}")
            freeze = self.x.repository.get_freeze()
            if freeze.frozen:
                stopped = (f"remediation was frozen by {freeze.changed_by or 'an admin'} during "
                           f"the run: step {index + 1} and later were not run")
                break
            outcome = self.run_step(session, index, step)
            if outcome.status == "failed":
                break
        if not self.heartbeat():
            return self.lost("the claim was lost before the verification")
        self.verify(session, settings, approved)
        return self.conclude(approved, stopped)

    def run_step(self, session: ExchangeSession, index: int, step: PlanStep) -> StepOutcome:
        server = self.request.server
        before, before_error = _try_read_back(session, server, step)
        observed_before = before.text if before else f"could not be read ({before_error})"
        started = StepOutcome(index, step, "running", started_at=self.x.clock(),
                              observed_before=observed_before)
        self.audit(AuditEventType.STEP_STARTED, details={
            "index": index, "kind": step.kind, "cmdlet": step.cmdlet,
            "parameters": [[name, value] for name, value in step.parameters],
            "display": step.display, "target": step.target, "planned_before": step.before,
            "planned_after": step.after, "observed_before": observed_before})
        self.notify("step_started", step=started, message=f"step {index + 1} started")
        failure: str | None = None
        try:
            result = session.run(step.cmdlet, step.parameters, read_only=False)
            if result.errors:
                failure = f"error record: {result.errors[0].message}"
        except (CommandRefused, ExchangeUnavailable) as error:
            failure = _failure_reason(error)
        after, after_error = _try_read_back(session, server, step)
        finished_at = self.x.clock()
        observed_after = after.text if after else None
        if failure is not None:
            outcome = replace(started, status="failed", finished_at=finished_at,
                              observed_after=observed_after, reason=failure)
        elif after is None:
            outcome = replace(started, status="failed", finished_at=finished_at,
                              reason=f"ran without an error, but its result could not be read "
                                     f"back ({after_error}), so it is not claimed")
        else:
            outcome = replace(started, status=after.judgement.status, finished_at=finished_at,
                              observed_after=observed_after, reason=after.judgement.reason)
        self.steps.append(outcome)
        self.audit(AuditEventType.STEP_FINISHED,
                   result=outcome.text() if outcome.finished else None,
                   error=outcome.reason if outcome.status == "failed" else None,
                   details={"index": index, "kind": step.kind, "cmdlet": step.cmdlet,
                            "target": step.target, "status": outcome.status,
                            "planned_after": step.after, "observed_before": observed_before,
                            "observed_after": observed_after, "reason": outcome.reason})
        self.notify("step_finished", step=outcome,
                    message=f"step {index + 1} {outcome.status}")
        return outcome

    def verify(self, session: ExchangeSession, settings: ServerSettings,
               plan: RemediationPlan) -> Observation:
        targets = sorted(unbind_targets(plan)) if self.request.kind == "remediation" else []
        observation, _, _ = observe_server(session, settings, self.x.trust, self.x.clock,
                                           plan_scope=self.x.plan_scope, targets=targets)
        self.verification = observation
        self.audit(AuditEventType.VERIFICATION,
                   result=observation.text() if observation.reachable else None,
                   error=observation.error, details={"observed": observation.to_json()})
        self.notify("verification", message=observation.text())
        return observation

    def conclude(self, plan: RemediationPlan, stopped: str | None) -> ExecutionResult:
        summary = {"steps": [{"index": s.index, "status": s.status} for s in self.steps],
                   "outbound_publicly_trusted": self.verification.outbound_publicly_trusted
                   if self.verification else None}
        if self.request.kind == "rollback":
            self.audit_rollback()
        self.concluding = True
        if stopped is not None:
            return self.abort(stopped, summary)
        succeeded, reason = final_verdict(self.request.kind, plan, self.steps,
                                          self.verification)
        if succeeded:
            return self._transition(Event.FINISH, reason, "succeeded", summary)
        return self._transition(Event.STEP_FAILED, reason, "failed", summary)

    def audit_rollback(self) -> None:
        assert self.plan is not None
        restored = {r.connector: r.previous for r in restores_of(self.plan)}
        observed = {s.step.target: s.observed_after for s in self.steps}
        all_ok = bool(self.steps) and all(s.status == "succeeded" for s in self.steps)
        self.audit(AuditEventType.ROLLBACK,
                   result="previous TlsCertificateName restored" if all_ok else None,
                   error=None if all_ok else "not every connector was restored",
                   details={"rollback_of": self.request.rollback_of, "restored": restored,
                            "observed": observed})


# --------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class RecoveryReport:
    """A run found dead (at start-up or by another replica): now interrupted, with what the
    server showed."""

    request_id: str
    server: str
    request: RemediationRequest | None
    interrupted: bool
    """This call marked it interrupted (False: it changed meanwhile, see ``reason``)."""
    observation: Observation | None
    audited_steps: tuple[str, ...]
    reason: str

    def text(self) -> str:
        lines = [f"{self.request_id} on {self.server}: {self.reason}"]
        lines += [f"  {line}" for line in self.audited_steps]
        if self.observation is not None:
            lines += [f"  found: {line}" for line in self.observation.text().splitlines()]
        return "\n".join(lines)


def audited_steps(events: Sequence[AuditEvent]) -> tuple[str, ...]:
    """What the audit trail says the run did, step by step (a started step with no finish
    has an unknown outcome)."""
    started: dict[int, AuditEvent] = {}
    finished: dict[int, AuditEvent] = {}
    for event in events:
        details = event.details_object
        index = details.get("index")
        if not isinstance(index, int):
            continue
        if event.event_type == AuditEventType.STEP_STARTED.value:
            started[index] = event
        elif event.event_type == AuditEventType.STEP_FINISHED.value:
            finished[index] = event
    lines = []
    for index in sorted(started):
        details = started[index].details_object
        label = f"step {index + 1} ({details.get('cmdlet')} {details.get('target')})"
        if index in finished:
            lines.append(f"{label} finished: {finished[index].details_object.get('status')}")
        else:
            lines.append(f"{label} started at {started[index].occurred_at} and never "
                         "finished: its outcome is unknown, see what was found")
    return tuple(lines) or ("no step had started",)


def recover_interrupted(
    repository: Repository,
    audit: AuditLog,
    sessions: SessionCache,
    server_settings: ServerSettingsLookup,
    trust: TrustStore,
    *,
    now: datetime,
    owner: str | None = None,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    clock: Clock | None = None,
    plan_scope: PlanScope = "all",
    on_update: UpdateCallback | None = None,
    skip: Collection[str] = (),
    found_by: str | None = None,
) -> list[RecoveryReport]:
    """Every request left running by a process that died becomes interrupted.

    Dead means claimed by ``owner`` (this replica's stable id, given at start-up: nothing of
    its own still runs) or with a heartbeat older than ``stale_after`` (the execution lease;
    any replica, at any time). ``skip``: requests this process is running itself, never dead.
    ``found_by`` names the recovering replica in the audit trail (default ``owner``).
    Each server is re-read first; the ``execution_interrupted`` event records what was found
    and what the audit trail says the run did. The change is made only if the run is still the
    one judged dead (no heartbeat since, same version and claimant), so a run that was merely
    slow goes on, and of several replicas recovering at once one reports it. Nothing is
    re-run: that takes a new request and approval.
    """
    read_clock = clock or (lambda: now)
    deadline = now - stale_after
    running = repository.list_requests(states=(State.RUNNING,), limit=100_000)
    dead = [r for r in running
            if r.id not in skip
            and ((owner is not None and r.execution_claimed_by == owner)
                 or r.execution_heartbeat_at is None or r.execution_heartbeat_at < deadline)]
    reports: list[RecoveryReport] = []
    for request in dead:
        own = owner is not None and request.execution_claimed_by == owner
        steps = audited_steps(audit.events(request_id=request.id))
        observation = _observe_for_recovery(request, sessions, server_settings, trust,
                                            read_clock, plan_scope)
        heartbeat = (request.execution_heartbeat_at.isoformat()
                     if request.execution_heartbeat_at else "never")
        found = "; ".join(observation.text().splitlines())
        reason = (f"interrupted: the process running it ({request.execution_claimed_by}) "
                  f"stopped, last heartbeat {heartbeat}. Nothing is re-run without a new "
                  f"approval. Audit trail: {'; '.join(steps)}. Found now: {found}")
        marked_at = read_clock() if clock is not None else now
        applied = repository.interrupt_execution(
            request.id, version=request.version, claimed_by=request.execution_claimed_by,
            heartbeat_before=None if own else marked_at - stale_after, now=marked_at,
            reason=reason,
            details={"observed": observation.to_json(), "audited_steps": list(steps),
                     "claimed_by": request.execution_claimed_by,
                     "last_heartbeat": heartbeat, "found_by": found_by or owner,
                     "found": "own replica id at start-up" if own else "heartbeat stale"})
        if isinstance(applied, Applied):
            report = RecoveryReport(request.id, request.server, applied.request, True,
                                    observation, steps, reason)
        else:
            report = RecoveryReport(request.id, request.server, applied.request, False,
                                    observation, steps,
                                    f"not marked interrupted: {applied.reason}")
        reports.append(report)
        if on_update is not None and report.interrupted:
            _notify_recovery(on_update, report, marked_at)
    return reports


def _observe_for_recovery(request: RemediationRequest, sessions: SessionCache,
                          server_settings: ServerSettingsLookup, trust: TrustStore,
                          clock: Clock, plan_scope: PlanScope) -> Observation:
    settings = server_settings(request.server)
    if settings is None:
        return Observation(server=request.server, at=clock(), reachable=False,
                           error="the server is no longer configured")
    try:
        plan = plan_from_json(request.plan_json)
        targets = sorted(unbind_targets(plan)) if request.kind == "remediation" else []
    except PlanFormatError:
        targets = []
    try:
        with sessions.session(settings) as session:
            observation, _, _ = observe_server(session, settings, trust, clock,
                                               plan_scope=plan_scope, targets=targets)
    except ExchangeUnavailable as error:
        return Observation(server=request.server, at=clock(), reachable=False,
                           error=_failure_reason(error))
    return observation


def _notify_recovery(on_update: UpdateCallback, report: RecoveryReport, at: datetime) -> None:
    request = report.request
    plan: RemediationPlan | None
    try:
        plan = plan_from_json(request.plan_json) if request else None
    except PlanFormatError:
        plan = None
    execution = ExecutionReport(
        request_id=report.request_id, kind=request.kind if request else "remediation",
        server=report.server, plan=plan, outcome="interrupted",
        state=request.state if request else None, reason=report.reason,
        verification=report.observation)
    try:
        on_update(ExecutionUpdate("interrupted", at, report.request_id, request, execution,
                                  verification=report.observation, message=report.reason))
    except Exception as error:
        unavailable = unavailable_reason(error)
        if unavailable is None:
            log.exception("on_update failed for the interrupted %s", report.request_id)
        else:
            log.warning("on_update for the interrupted %s incomplete: the database is "
                        "unavailable (%s)", report.request_id, unavailable)
