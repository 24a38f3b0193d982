"""The remediation executor against the lab (real pypsrp, WinRM/PSRP) and a real database.

Every test runs on SQLite and on PostgreSQL (tests/conftest_db.py). Clocks are injected: a
ticking clock drives the database, the audit trail and the analysis; nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from bot.analysis.commands import render_command
from bot.analysis.model import PlanStep, RemediationPlan, ServerAnalysis
from bot.analysis.plan import plan_hash
from bot.audit import AuditLog
from bot.lab.records import CommandCall
from bot.lab.state import LabFaults
from bot.remediation.executor import (
    ExecutionResult,
    RemediationExecutor,
    recover_interrupted,
)
from bot.remediation.model import RemediationRequest
from bot.remediation.states import State
from bot.remediation.workflow import (
    ExecutionUpdate,
)
from bot.storage.repository import Applied, Refusal, RefusalCode, Repository
from tests.executor_env import (
    APPROVER,
    TEAM,
    Env,
    EnvFactory,
    assert_chain_intact,
    env_factory,
)

pytest_plugins = ("tests.conftest_db",)


@pytest.fixture
def make_env(migrated_engine: Engine) -> Iterator[EnvFactory]:
    with env_factory(migrated_engine) as factory:
        yield factory


def thumbprint_of(analysis: ServerAnalysis, trust: str) -> str:
    (found,) = [c.thumbprint for c in analysis.certificates
                if c.trust == trust and c.cert.subject == "CN=ex01.contoso.com"]
    return found


# --------------------------------------------------------------------------- happy paths


def test_additive_behaviour_pins_and_reports_smtp_still_listed(make_env: EnvFactory) -> None:
    env = make_env("kb-2888788")
    analysis = env.analyse()
    internal = thumbprint_of(analysis, "internal")
    request = env.approved_remediation()
    queue = env.org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert queue.message_count == 25

    result = env.executor().run(request.id)

    assert result.claimed
    assert result.outcome == "succeeded", result.report.text()
    assert result.request is not None
    assert result.request.state is State.SUCCEEDED
    by_kind = {s.step.kind: s for s in result.report.steps if s.step.runnable}
    pin, unbind, retry = by_kind["pin_connector"], by_kind["unbind_smtp"], by_kind["retry_queue"]
    assert pin.status == "succeeded"
    assert pin.observed_before == "TlsCertificateName: (not set)"
    assert pin.observed_after is not None
    assert "CN=mail.contoso.com" in pin.observed_after
    # The documented, additive behaviour: the command ran, SMTP stayed, and that is said.
    assert unbind.status == "differs"
    assert unbind.observed_after == "Services: IMAP, POP, SMTP"
    assert "SMTP is still listed" in unbind.text()
    assert "removed" not in (unbind.observed_after or "")
    assert "SMTP" in env.services(internal)
    assert retry.status == "succeeded"
    verification = result.report.verification
    assert verification is not None
    assert verification.outbound_publicly_trusted
    assert [c.thumbprint for c in verification.smtp_still_listed] == [internal]
    assert "SMTP still listed" in verification.text()
    assert verification.queued_messages == 0
    # The lab's own mail flow agrees: the pin fixed the outbound certificate, the queue drained.
    queue = env.org.queue_for_exchange_online("EX01")
    assert queue is not None
    assert queue.message_count == 0
    assert queue.status == "Ready"
    assert "SMTP is still listed" in result.report.reason
    assert env.event_types(request.id) == [
        "request_created", "approved", "execution_started",
        "step_started", "step_finished", "step_started", "step_finished",
        "step_started", "step_finished", "verification", "execution_finished"]
    finished = [e for e in env.events(request.id) if e.event_type == "step_finished"]
    assert finished[1].details_object["observed_before"] == "Services: IMAP, POP, SMTP"
    assert finished[1].details_object["observed_after"] == "Services: IMAP, POP, SMTP"
    assert finished[1].details_object["status"] == "differs"
    assert_chain_intact(env)
    kinds = [u.kind for u in env.updates]
    assert kinds[0] == "started"
    assert kinds[-2:] == ["verification", "finished"]
    assert kinds.count("step_started") == kinds.count("step_finished") == 3
    assert result.report.card_outcomes()[0][2] is True


def test_replace_behaviour_removes_smtp_and_says_so(make_env: EnvFactory) -> None:
    env = make_env("replace-behaviour")
    internal = thumbprint_of(env.analyse(), "internal")
    request = env.approved_remediation()

    result = env.executor().run(request.id)

    assert result.outcome == "succeeded", result.report.text()
    (unbind,) = [s for s in result.report.steps if s.step.kind == "unbind_smtp"
                 and s.step.runnable]
    assert unbind.status == "succeeded"
    assert unbind.observed_after == "Services: IMAP, POP"
    assert env.services(internal) == ["IMAP", "POP"]
    verification = result.report.verification
    assert verification is not None
    assert verification.smtp_still_listed == ()
    (observed,) = [c for c in verification.certificates if c.thumbprint == internal]
    assert observed.smtp_listed is False
    assert "SMTP not listed" in observed.text()
    assert "still listed on" not in result.report.reason
    assert_chain_intact(env)


# --------------------------------------------------------------------------- exactly once


def test_a_second_run_is_refused_and_runs_nothing(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()
    executor = env.executor()
    first = executor.run(request.id)
    second = executor.run(request.id)
    third = env.executor(owner="replica-2").run(request.id)

    assert first.outcome == "succeeded"
    for again in (second, third):
        assert not again.claimed
        assert again.refusal is not None
        assert again.refusal.code is RefusalCode.CONFLICT
        assert again.outcome == "refused"
    assert len(env.calls("Set-SendConnector")) == 1
    assert len(env.calls("Enable-ExchangeCertificate")) == 1
    assert len(env.calls("Retry-Queue")) == 1
    assert env.event_types(request.id).count("execution_started") == 1


def test_ten_concurrent_runs_execute_once(make_env: EnvFactory,
                                          make_engine: Callable[[], Engine]) -> None:
    env = make_env()
    request = env.approved_remediation()
    executors = []
    for i in range(10):
        engine = make_engine()  # each like a separate replica with its own pool
        audit = AuditLog(engine, bot_version="test")
        executors.append(RemediationExecutor(
            Repository(engine, audit=audit), audit, env.new_sessions(), env.lookup, env.trust,
            clock=env.clock, owner=f"replica-{i}"))
    barrier = threading.Barrier(len(executors))
    results: list[ExecutionResult] = []
    errors: list[BaseException] = []

    def worker(executor: RemediationExecutor) -> None:
        try:
            barrier.wait()
            results.append(executor.run(request.id))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(e,)) for e in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 10
    claimed = [r for r in results if r.claimed]
    assert len(claimed) == 1
    assert claimed[0].outcome == "succeeded"
    assert all(r.refusal is not None and r.refusal.code is RefusalCode.CONFLICT
               for r in results if not r.claimed)
    assert len(env.calls("Set-SendConnector")) == 1
    assert len(env.calls("Enable-ExchangeCertificate")) == 1
    assert_chain_intact(env)


# --------------------------------------------------------------------------- nothing runs


def test_server_changed_after_approval_aborts_before_anything_runs(make_env: EnvFactory
                                                                   ) -> None:
    env = make_env()
    request = env.approved_remediation()
    # Someone pins the connector by hand (to the internal certificate) after approval.
    internal = next(c for c in env.org.certificates("EX01") if c.subject == "CN=ex01.contoso.com")
    manual = f"<I>{internal.issuer}<S>{internal.subject}"
    done = env.org.run([CommandCall("Set-SendConnector", (
        ("Identity", env.connector().name), ("TlsCertificateName", manual)))],
        user="CONTOSO\\someone", connected_server="EX01")
    assert not done.failed
    calls_before = len(env.org.call_log())

    result = env.executor().run(request.id)

    assert result.outcome == "aborted"
    assert result.request is not None
    assert result.request.state is State.ABORTED
    assert "changed since the plan was approved" in result.report.reason
    assert any("TlsCertificateName: (not set)" in d and manual in d
               for d in result.report.differences), result.report.differences
    changing = [e for e in env.org.call_log()[calls_before:]
                if not e.cmdlet.startswith("Get-")]
    assert changing == []
    assert len(env.calls("Set-SendConnector")) == 1  # only the manual one
    (aborted,) = [e for e in env.events(request.id) if e.event_type == "aborted"]
    assert aborted.details_object["differences"] == list(result.report.differences)
    assert "step_started" not in env.event_types(request.id)
    assert [u.kind for u in env.updates] == ["started", "aborted"]


def test_freeze_refuses_the_claim(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()
    env.repo.set_freeze(True, actor_user=APPROVER, actor_team=TEAM, now=env.clock())

    result = env.executor().run(request.id)

    assert result.refusal is not None
    assert result.refusal.code is RefusalCode.FROZEN
    assert env.calls("Set-SendConnector") == []
    stored = env.repo.get_request(request.id)
    assert stored is not None
    assert stored.state is State.APPROVED
    assert [u.kind for u in env.updates] == ["refused"]

    env.repo.set_freeze(False, actor_user=APPROVER, actor_team=TEAM, now=env.clock())
    assert env.executor().run(request.id).outcome == "succeeded"


def test_freeze_during_the_run_stops_before_the_next_step(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()

    def freeze_after_first_step(update: ExecutionUpdate) -> None:
        if update.kind == "step_finished" and update.step is not None \
                and update.step.index == 0:
            env.repo.set_freeze(True, actor_user=APPROVER, actor_team=TEAM, now=env.clock())

    result = env.executor(on_update=freeze_after_first_step).run(request.id)

    assert result.outcome == "aborted"
    assert "frozen" in result.report.reason
    assert len(env.calls("Set-SendConnector")) == 1
    assert env.calls("Enable-ExchangeCertificate") == []
    assert env.calls("Retry-Queue") == []


# --------------------------------------------------------------------------- stops


def hand_made_plan(env: Env, middle: PlanStep) -> RemediationPlan:
    """The real pin step, ``middle``, then the real Retry-Queue step."""
    plan = env.analyse().plan
    assert plan is not None
    pin = next(s for s in plan.steps if s.kind == "pin_connector")
    retry = next(s for s in plan.steps if s.kind == "retry_queue")
    steps = (pin, middle, retry)
    return RemediationPlan("EX01", steps, plan_hash("EX01", steps))


def enable_step(thumbprint: str, services: list[str]) -> PlanStep:
    parameters = (("Server", "EX01"), ("Thumbprint", thumbprint), ("Services", services))
    return PlanStep(kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate",
                    parameters=parameters,
                    display=render_command("Enable-ExchangeCertificate", parameters),
                    target=thumbprint, before="Services: ?", after=f"Services: {services}")


def keep_approved(request: RemediationRequest, approved: RemediationPlan, *_: object
                  ) -> RemediationPlan:
    return approved


def assert_stopped_at_step_2(env: Env, result: ExecutionResult, reason: str) -> None:
    assert result.outcome == "failed", result.report.text()
    assert result.request is not None
    assert result.request.state is State.FAILED
    steps = result.report.steps
    assert steps[0].status == "succeeded"
    assert steps[1].status == "failed"
    assert reason in (steps[1].reason or "")
    assert steps[2].status == "not_run"
    assert "step 2" in result.report.reason
    assert "nothing was retried" in result.report.reason
    assert env.calls("Retry-Queue") == []
    request_id = result.request_id
    finished = [e for e in env.events(request_id) if e.event_type == "step_finished"]
    assert len(finished) == 2
    assert reason in (finished[1].error or "")
    assert env.event_types(request_id)[-2:] == ["verification", "execution_failed"]
    failed_update = [u for u in env.updates if u.kind == "step_finished"][-1]
    assert failed_update.step is not None
    assert failed_update.step.status == "failed"
    assert_chain_intact(env)


def test_a_prompt_stops_the_run(make_env: EnvFactory) -> None:
    env = make_env()
    internal = thumbprint_of(env.analyse(), "internal")
    # Adding SMTP to a certificate that is not the default SMTP certificate prompts.
    plan = hand_made_plan(env, enable_step(internal, ["IMAP", "POP", "SMTP"]))
    request = env.approved_plan(plan)

    result = env.executor(planner=keep_approved).run(request.id)

    assert_stopped_at_step_2(env, result, "asked for confirmation")
    (enable,) = env.calls("Enable-ExchangeCertificate")
    assert "declined" in enable.outcome  # answered No, never Yes; not asked twice


def test_an_error_record_stops_the_run(make_env: EnvFactory) -> None:
    env = make_env()
    unknown = "00" * 20
    request = env.approved_plan(hand_made_plan(env, enable_step(unknown, ["IMAP", "POP"])))

    result = env.executor(planner=keep_approved).run(request.id)

    assert_stopped_at_step_2(env, result, "error record")
    assert "was not found" in (result.report.steps[1].reason or "")
    assert len(env.calls("Enable-ExchangeCertificate")) == 1


@pytest.mark.parametrize("cmdlet", ["Set-SendConnector", "Enable-ExchangeCertificate"])
def test_a_dropped_connection_stops_the_run(make_env: EnvFactory, cmdlet: str) -> None:
    env = make_env()
    request = env.approved_remediation()
    env.lab.faults = LabFaults(drop_connection_on=cmdlet)

    result = env.executor().run(request.id)

    assert result.outcome == "failed", result.report.text()
    failed = [s for s in result.report.steps if s.status == "failed"]
    assert len(failed) == 1
    assert failed[0].step.cmdlet == cmdlet
    assert "connection" in (failed[0].reason or "")
    assert env.calls(cmdlet) == []  # dropped before the server ran it, and never sent again
    assert env.calls("Retry-Queue") == []
    later = [s for s in result.report.steps if s.index > failed[0].index and s.step.runnable]
    assert later
    assert all(s.status == "not_run" for s in later)
    assert result.report.verification is not None
    assert not result.report.verification.outbound_publicly_trusted \
        or cmdlet != "Set-SendConnector"
    errors = [e.error for e in env.events(request.id) if e.event_type == "step_finished"]
    assert errors[-1] is not None
    assert "connection" in errors[-1]
    assert_chain_intact(env)


def test_a_time_out_is_reported_with_what_the_server_shows(make_env: EnvFactory) -> None:
    env = make_env(operation_timeout=1)
    request = env.approved_remediation()
    env.lab.faults = LabFaults(slow_cmdlets={"Set-SendConnector": 4.0})

    result = env.executor().run(request.id)

    assert result.outcome == "failed"
    pin = result.report.steps[0]
    assert pin.status == "failed"
    assert "time-out" in (pin.reason or "")
    # The lab applied the change before answering late: the read-back shows it, as observed.
    assert pin.observed_after is not None
    assert "CN=mail.contoso.com" in pin.observed_after
    assert len(env.calls("Set-SendConnector")) == 1
    assert env.calls("Enable-ExchangeCertificate") == []


# --------------------------------------------------------------------------- crash safety


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in the executor catches it."""


def test_a_run_left_by_a_dead_process_is_interrupted_and_not_rerun(make_env: EnvFactory
                                                                   ) -> None:
    env = make_env()
    request = env.approved_remediation()

    started: list[ExecutionUpdate] = []

    def die_when_the_second_step_starts(update: ExecutionUpdate) -> None:
        if update.kind == "step_started":
            started.append(update)
            if len(started) == 2:
                raise Crash

    with pytest.raises(Crash):
        env.executor(owner="replica-dead",
                     on_update=die_when_the_second_step_starts).run(request.id)
    left = env.repo.get_request(request.id)
    assert left is not None
    assert left.state is State.RUNNING

    # Another replica starting soon after leaves a fresh heartbeat alone...
    assert recover_interrupted(env.repo, env.audit, env.new_sessions(), env.lookup, env.trust,
                               now=env.clock() + timedelta(minutes=1),
                               owner="replica-other") == []
    # ...and takes a stale one for dead.
    env.clock.advance(timedelta(minutes=11))
    reports = recover_interrupted(env.repo, env.audit, env.new_sessions(), env.lookup,
                                  env.trust, now=env.clock(), owner="replica-other")

    (report,) = reports
    assert report.interrupted
    assert report.request is not None
    assert report.request.state is State.INTERRUPTED
    assert report.audited_steps[0].startswith("step 1 (Set-SendConnector")
    assert "finished: succeeded" in report.audited_steps[0]
    assert "never finished" in report.audited_steps[1]
    assert report.observation is not None
    assert report.observation.outbound_publicly_trusted  # the pin had been applied
    interrupted = env.events(request.id)[-1]
    assert interrupted.event_type == "execution_interrupted"
    observed = interrupted.details_object["observed"]
    assert observed["outbound_publicly_trusted"] is True
    assert observed["queues"][0]["message_count"] == 25
    assert "Found now" in (interrupted.result or "")
    assert env.calls("Enable-ExchangeCertificate") == []

    again = env.executor(owner="replica-other").run(request.id)
    assert again.refusal is not None
    assert env.calls("Enable-ExchangeCertificate") == []
    assert len(env.calls("Set-SendConnector")) == 1
    assert_chain_intact(env)


def test_a_restarted_replica_interrupts_its_own_runs_at_once(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()
    claim = env.repo.claim_execution(request.id, owner="replica-1", now=env.clock())
    assert isinstance(claim, Applied)

    (report,) = recover_interrupted(env.repo, env.audit, env.sessions, env.lookup, env.trust,
                                    now=env.clock(), owner="replica-1")

    assert report.interrupted
    assert report.audited_steps == ("no step had started",)
    assert report.observation is not None
    assert not report.observation.outbound_publicly_trusted
    assert env.calls("Set-SendConnector") == []


def test_a_run_that_lost_its_claim_runs_nothing_more(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()
    other = env.new_sessions()

    def another_replica_declares_it_dead(update: ExecutionUpdate) -> None:
        if update.kind == "step_finished" and update.step is not None \
                and update.step.index == 0:
            recover_interrupted(env.repo, env.audit, other, env.lookup, env.trust,
                                now=env.clock(), owner="replica-1")

    result = env.executor(on_update=another_replica_declares_it_dead).run(request.id)
    other.close_all()

    assert result.outcome == "lost"
    assert result.request is not None
    assert result.request.state is State.INTERRUPTED
    assert len(env.calls("Set-SendConnector")) == 1
    assert env.calls("Enable-ExchangeCertificate") == []
    assert env.calls("Retry-Queue") == []


def test_an_unconfigured_server_aborts(make_env: EnvFactory) -> None:
    env = make_env()
    request = env.approved_remediation()
    executor = RemediationExecutor(env.repo, env.audit, env.sessions, lambda _: None, env.trust,
                                   clock=env.clock, owner="replica-1")
    result = executor.run(request.id)
    assert result.outcome == "aborted"
    assert "not configured" in result.report.reason
    assert env.calls("Set-SendConnector") == []


def test_refusal_of_an_unknown_request(make_env: EnvFactory) -> None:
    env = make_env()
    result = env.executor().run("R-NOSUCHREQ")
    assert isinstance(result.refusal, Refusal)
    assert result.refusal.code is RefusalCode.NOT_FOUND
    assert result.request is None
