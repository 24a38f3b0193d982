"""The pure remediation workflow: plan JSON, proposals, rollback plans, judgements, verdicts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.analysis.commands import (
    enable_services_parameters,
    pin_connector_parameters,
    render_command,
    retry_queue_parameters,
)
from bot.analysis.model import PlanStep, RemediationPlan, ServerAnalysis
from bot.analysis.plan import plan_hash
from bot.config import ApprovalSettings
from bot.exchange.snapshot import (
    ExchangeServer,
    ExchangeService,
    SendConnector,
    ServerSnapshot,
    TlsCertificateName,
)
from bot.remediation.model import RemediationRequest
from bot.remediation.rollback import (
    ConnectorRestore,
    pinned_connectors,
    restores_of,
    rollback_plan,
    rollback_plan_now,
    tls_name_from_display,
)
from bot.remediation.states import State
from bot.remediation.workflow import (
    CertificateObservation,
    ExecutionReport,
    Observation,
    OutboundObservation,
    PlanFormatError,
    QueueObservation,
    RollbackUnavailable,
    StepOutcome,
    final_verdict,
    judge_connector,
    judge_services,
    plan_differences,
    plan_from_json,
    plan_to_json,
    propose_remediation,
    propose_rollback,
    rollback_unavailable_reason,
)

NOW = datetime(2025, 10, 26, 9, 30, tzinfo=UTC)
CONNECTOR = "Outbound to Office 365 - 6f1e2a4c"
PUBLIC = "<I>CN=Contoso Public Root CA, O=Lab Trust Services, C=US<S>CN=mail.contoso.com"
INTERNAL = "<I>CN=Contoso Corp Root CA, DC=contoso, DC=com<S>CN=ex01.contoso.com"
THUMBPRINT = "0FFDC1D3C72106B496292A17456658FF20B7CB04"
SETTINGS = ApprovalSettings(approvers=("U0APPROVER",), expires_after_minutes=45)


def pin(before: str | None = None, value: str = PUBLIC) -> PlanStep:
    parameters = pin_connector_parameters(CONNECTOR, value)
    return PlanStep(
        kind="pin_connector", cmdlet="Set-SendConnector", parameters=parameters,
        display=render_command("Set-SendConnector", parameters), target=CONNECTOR,
        before=f"TlsCertificateName: {before if before is not None else '(not set)'}",
        after=f"TlsCertificateName: {value} (ECA3036F, public)")


def unbind(services: tuple[str, ...] = ("IMAP", "POP")) -> PlanStep:
    parameters = enable_services_parameters("EX01", THUMBPRINT, list(services))
    return PlanStep(
        kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate", parameters=parameters,
        display=render_command("Enable-ExchangeCertificate", parameters), target=THUMBPRINT,
        before="Services: IMAP, POP, SMTP", after="Services: IMAP, POP (SMTP removed)")


def retry() -> PlanStep:
    domain = "contoso.mail.protection.outlook.com"
    parameters = retry_queue_parameters("EX01", domain)
    return PlanStep(kind="retry_queue", cmdlet="Retry-Queue", parameters=parameters,
                    display=render_command("Retry-Queue", parameters), target=domain,
                    before="waiting", after="retried")


def skipped() -> PlanStep:
    return PlanStep(kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate", parameters=(),
                    display="", target="5B5D05DD" + "0" * 32, before="Services: IMAP, SMTP",
                    after="unchanged", skipped_reason="self-signed")


def plan_of(*steps: PlanStep, server: str = "EX01") -> RemediationPlan:
    return RemediationPlan(server, steps, plan_hash(server, steps))


def analysis_with(plan: RemediationPlan | None, reachable: bool = True) -> ServerAnalysis:
    return ServerAnalysis(name="EX01", fqdn="ex01.contoso.com", reachable=reachable,
                          error=None if reachable else "connection refused", certificates=(),
                          send_connectors=(), outbound=(), queues=(), findings=(), plan=plan,
                          taken_at=NOW)


def remediation(plan: RemediationPlan, state: State = State.SUCCEEDED) -> RemediationRequest:
    request = propose_remediation(analysis_with(plan), requested_by="U0REQUESTER",
                                  team_id="T0TEAM", channel="C0OPS", now=NOW,
                                  settings=SETTINGS)
    assert request is not None
    return replace(request, state=state)


def connector(name: TlsCertificateName | None, connector_name: str = CONNECTOR) -> SendConnector:
    return SendConnector(name=connector_name, enabled=True, cloud_services_mail_enabled=True,
                         smart_hosts=(), address_spaces=(), fqdn=None, require_tls=True,
                         tls_auth_level=None, tls_domain=None, tls_certificate_name=name)


def snapshot(*connectors: SendConnector) -> ServerSnapshot:
    return ServerSnapshot(server=ExchangeServer("EX01", "ex01.contoso.com"), taken_at=NOW,
                          certificates=(), send_connectors=connectors)


# --------------------------------------------------------------------------- plan JSON


def test_plan_json_round_trips_with_parameter_order_lists_and_nulls() -> None:
    plan = plan_of(pin(), unbind(), skipped(), retry(),
                   *rollback_plan("EX01", [ConnectorRestore(CONNECTOR, PUBLIC, None)]).steps)
    text = plan_to_json(plan)
    assert json.loads(text)["hash"] == plan.hash
    assert text == plan_to_json(plan_from_json(text))
    again = plan_from_json(text)
    assert again == plan
    assert again.steps[1].parameters[2] == ("Services", ["IMAP", "POP"])
    assert again.steps[-1].parameters[1] == ("TlsCertificateName", None)


def test_a_plan_whose_steps_were_edited_is_refused() -> None:
    document = json.loads(plan_to_json(plan_of(pin(), retry())))
    document["steps"][0]["parameters"][1][1] = INTERNAL
    with pytest.raises(PlanFormatError, match="hash does not match"):
        plan_from_json(json.dumps(document))


@pytest.mark.parametrize("text", ["", "[]", '{"format": 2}', '{"format": 1, "server": "EX01"}',
                                  '{"format": 1, "server": "EX01", "steps": [{"kind": "x"}]}'])
def test_malformed_plan_json_is_refused(text: str) -> None:
    with pytest.raises(PlanFormatError):
        plan_from_json(text)


# --------------------------------------------------------------------------- proposals


def test_propose_remediation_stores_the_plan_and_its_hash() -> None:
    plan = plan_of(pin(), unbind(), retry())
    request = propose_remediation(analysis_with(plan), requested_by="U0REQUESTER",
                                  team_id="T0TEAM", channel="C0OPS", now=NOW, settings=SETTINGS)
    assert request is not None
    assert request.kind == "remediation"
    assert request.state is State.PENDING
    assert request.plan_hash == plan.hash
    assert plan_from_json(request.plan_json) == plan
    assert request.expires_at == NOW + timedelta(minutes=45)


@pytest.mark.parametrize("analysis", [analysis_with(None), analysis_with(plan_of(skipped())),
                                      analysis_with(plan_of(pin()), reachable=False)])
def test_nothing_to_propose(analysis: ServerAnalysis) -> None:
    assert propose_remediation(analysis, requested_by="U", team_id="T", channel="C", now=NOW,
                               settings=SETTINGS) is None


# --------------------------------------------------------------------------- plan changes


def test_plan_differences_name_what_changed() -> None:
    approved = plan_of(pin(), unbind(), retry())
    assert plan_differences(approved, approved) == ()
    changed = plan_of(pin(before=INTERNAL), retry())
    differences = plan_differences(approved, changed)
    assert any("step 1" in d and "(not set)" in d and INTERNAL in d for d in differences)
    assert any("step 2" in d and "no longer in the plan" in d for d in differences)
    added = plan_differences(plan_of(pin(), retry()), plan_of(pin(), unbind(), retry()))
    assert added == (f"new step: Enable-ExchangeCertificate {THUMBPRINT} "
                     "(Services: IMAP, POP, SMTP)",)
    (gone,) = plan_differences(approved, None)
    assert "no longer needs" in gone


# --------------------------------------------------------------------------- rollback


def test_rollback_restores_the_value_before_each_pin() -> None:
    original = plan_of(pin(before=INTERNAL), unbind(), retry())
    (restore,) = pinned_connectors(original)
    assert restore == ConnectorRestore(CONNECTOR, PUBLIC, INTERNAL)
    rollback = rollback_plan("EX01", [restore])
    (step,) = rollback.steps
    assert step.parameters == (("Identity", CONNECTOR), ("TlsCertificateName", INTERNAL))
    assert step.before == f"TlsCertificateName: {PUBLIC}"
    assert restores_of(rollback) == (restore,)


def test_rollback_to_not_set_sends_null() -> None:
    (step,) = rollback_plan("EX01", [ConnectorRestore(CONNECTOR, PUBLIC, None)]).steps
    assert step.parameters[1] == ("TlsCertificateName", None)
    assert step.display == f'Set-SendConnector -Identity "{CONNECTOR}" -TlsCertificateName $null'
    assert step.after.startswith("TlsCertificateName: (not set)")


def test_rollback_plan_now_keeps_its_hash_only_while_the_pin_is_in_place() -> None:
    approved = rollback_plan("EX01", [ConnectorRestore(CONNECTOR, PUBLIC, None)])
    respaced = PUBLIC.replace(", ", ",").lower()
    same = rollback_plan_now(approved, snapshot(connector(TlsCertificateName.parse(respaced))))
    assert same.hash == approved.hash
    cleared = rollback_plan_now(approved, snapshot(connector(None)))
    assert cleared.hash != approved.hash
    assert any("(not set)" in d for d in plan_differences(approved, cleared))
    gone = rollback_plan_now(approved, snapshot(connector(None, "Another connector")))
    assert gone.steps[0].before == "connector not found"


def test_propose_rollback() -> None:
    original = remediation(plan_of(pin(), unbind(), retry()))
    rollback = propose_rollback(original, requested_by="U0OTHER", team_id="T0TEAM",
                                channel="C0OPS", now=NOW, settings=SETTINGS)
    assert rollback.kind == "rollback"
    assert rollback.rollback_of == original.id
    assert rollback.previous_tls_certificate_name is None
    assert rollback.state is State.PENDING
    plan = plan_from_json(rollback.plan_json)
    assert rollback.plan_hash == plan.hash
    assert [s.cmdlet for s in plan.steps] == ["Set-SendConnector"]
    overridden = propose_rollback(original, requested_by="U0OTHER", team_id="T0TEAM",
                                  channel="C0OPS", now=NOW, settings=SETTINGS,
                                  previous={CONNECTOR.upper(): INTERNAL})
    assert overridden.previous_tls_certificate_name == INTERNAL


def test_when_no_rollback_can_be_proposed() -> None:
    plan = plan_of(pin(), unbind(), retry())
    original = remediation(plan)
    assert rollback_unavailable_reason(original) is None
    assert "failed" in (rollback_unavailable_reason(remediation(plan, State.FAILED)) or "")
    no_pin = remediation(plan_of(unbind(), retry()))
    assert "pinned no send connector" in (rollback_unavailable_reason(no_pin) or "")
    broken = replace(original, plan_json="{}")
    assert "cannot be read" in (rollback_unavailable_reason(broken) or "")
    rollback = propose_rollback(original, requested_by="U", team_id="T", channel="C", now=NOW,
                                settings=SETTINGS)
    for state, words in ((State.PENDING, "already pending"), (State.RUNNING, "already running"),
                         (State.SUCCEEDED, "already rolled back")):
        with pytest.raises(RollbackUnavailable, match=words):
            propose_rollback(original, requested_by="U", team_id="T", channel="C", now=NOW,
                             settings=SETTINGS,
                             existing_rollbacks=[replace(rollback, state=state)])
    assert rollback_unavailable_reason(
        original, existing_rollbacks=[replace(rollback, state=State.DENIED)]) is None
    assert "only a remediation" in (
        rollback_unavailable_reason(replace(rollback, state=State.SUCCEEDED)) or "")


def test_tls_name_display_round_trip() -> None:
    assert tls_name_from_display("TlsCertificateName: (not set)") is None
    assert tls_name_from_display(f"TlsCertificateName: {PUBLIC}") == PUBLIC
    with pytest.raises(ValueError, match="not a TlsCertificateName"):
        tls_name_from_display("Services: SMTP")


# --------------------------------------------------------------------------- judgements


def test_judge_connector() -> None:
    assert judge_connector(pin(), True, TlsCertificateName.parse(PUBLIC)).status == "succeeded"
    wrong = judge_connector(pin(), True, TlsCertificateName.parse(INTERNAL))
    assert wrong.status == "failed"
    assert INTERNAL in (wrong.reason or "")
    assert judge_connector(pin(), True, None).status == "failed"
    assert judge_connector(pin(), False, None).status == "failed"
    (clear,) = rollback_plan("EX01", [ConnectorRestore(CONNECTOR, PUBLIC, None)]).steps
    assert judge_connector(clear, True, None).status == "succeeded"
    assert judge_connector(clear, True, TlsCertificateName.parse(PUBLIC)).status == "failed"


def test_judge_services_reports_smtp_still_listed_as_observed() -> None:
    kept = ExchangeService.IMAP | ExchangeService.POP
    assert judge_services(unbind(), True, kept).status == "succeeded"
    additive = judge_services(unbind(), True, kept | ExchangeService.SMTP)
    assert additive.status == "differs"
    assert "SMTP is still listed" in (additive.reason or "")
    assert "additive" in (additive.reason or "")
    unknown = judge_services(unbind(), True, None)
    assert unknown.status == "differs"
    assert "unknown" in (unknown.reason or "")
    assert judge_services(unbind(), False, None).status == "failed"
    extra = judge_services(unbind(), True, kept | ExchangeService.IIS)
    assert extra.status == "differs"


# --------------------------------------------------------------------------- verdicts


def observation(*, public: bool = True, smtp: bool = False, queued: int = 0,
                reachable: bool = True) -> Observation:
    return Observation(
        server="EX01", at=NOW, reachable=reachable,
        error=None if reachable else "connection refused",
        outbound=(OutboundObservation(CONNECTOR, "ECA3036F" + "0" * 32, "CN=mail.contoso.com",
                                      "public" if public else "internal", False, "ranked"),),
        certificates=(CertificateObservation(THUMBPRINT, "CN=ex01.contoso.com", "internal",
                                             "IMAP, POP, SMTP" if smtp else "IMAP, POP", smtp,
                                             True),),
        queues=(QueueObservation("EX01\\70", "contoso.mail.protection.outlook.com",
                                 "Retry" if queued else "Ready", queued,
                                 "454 4.7.0" if queued else None),))


def outcomes(plan: RemediationPlan, *statuses: str) -> list[StepOutcome]:
    return [StepOutcome(i, step, status, reason="why")  # type: ignore[arg-type]
            for (i, step), status in zip(enumerate(plan.steps), statuses, strict=True)]


def test_final_verdict() -> None:
    plan = plan_of(pin(), unbind(), skipped(), retry())
    done = outcomes(plan, "succeeded", "differs", "skipped", "succeeded")
    ok, reason = final_verdict("remediation", plan, done, observation(smtp=True))
    assert ok
    assert "SMTP is still listed on 0FFDC1D3" in reason
    assert final_verdict("remediation", plan, done, observation(public=False))[0] is False
    unread, why = final_verdict("remediation", plan, done, observation(reachable=False))
    assert not unread
    assert "success is not claimed" in why
    stopped = outcomes(plan, "succeeded", "failed", "skipped", "not_run")
    ok, reason = final_verdict("remediation", plan, stopped, observation())
    assert not ok
    assert reason.startswith("step 2 (Enable-ExchangeCertificate")
    assert "nothing was retried" in reason
    missing = outcomes(plan, "succeeded", "succeeded", "skipped", "not_run")
    assert final_verdict("remediation", plan, missing, observation()) == (
        False, "step(s) 4 did not run")


def test_final_verdict_of_a_rollback_does_not_need_a_public_certificate() -> None:
    plan = rollback_plan("EX01", [ConnectorRestore(CONNECTOR, PUBLIC, None)])
    ok, reason = final_verdict("rollback", plan, outcomes(plan, "succeeded"),
                               observation(public=False))
    assert ok
    assert "may fail again" in reason
    assert final_verdict("rollback", plan, outcomes(plan, "failed"), observation())[0] is False


def test_outcome_texts_and_card_outcomes() -> None:
    plan = plan_of(pin(), unbind(), retry())
    steps = (
        StepOutcome(0, plan.steps[0], "succeeded", observed_before="TlsCertificateName: (not set)",
                    observed_after=f"TlsCertificateName: {PUBLIC}"),
        StepOutcome(1, plan.steps[1], "failed", reason="error record: not found",
                    observed_after="certificate not found"),
        StepOutcome(2, plan.steps[2], "not_run", reason="stopped"),
    )
    assert steps[0].text() == f"read back: TlsCertificateName: (not set) -> " \
                              f"TlsCertificateName: {PUBLIC}"
    assert steps[1].text() == ("failed: error record: not found. Read back afterwards: "
                               "certificate not found")
    assert steps[2].text() == "not run: stopped"
    report = ExecutionReport("R-1", "remediation", "EX01", plan, "failed", State.FAILED,
                             "step 2 failed", steps, observation(queued=25))
    assert report.card_outcomes() == ((0, steps[0].text(), True), (1, steps[1].text(), False))
    assert "25 messages; last error: 454 4.7.0" in report.text()
    document = report.to_json()
    assert document["steps"][1]["status"] == "failed"
    assert document["verification"]["outbound_publicly_trusted"] is True
