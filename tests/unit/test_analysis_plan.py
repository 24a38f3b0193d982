"""The remediation plan: steps, skipped steps with reasons, scopes, and the stable hash."""

from __future__ import annotations

from dataclasses import replace

from bot.analysis.analyse import analyse_server
from bot.analysis.model import PlanScope, RemediationPlan
from bot.analysis.plan import build_plan
from bot.exchange.snapshot import ExchangeService, ServerSnapshot
from tests.unit.certgen import (
    HCW_CONNECTOR,
    NOW,
    cloud_connector,
    ec_key,
    exchange_certificate,
    healthy_scenario,
    issue_leaf,
    kb_scenario,
    pki,
    tls_name_of,
)


def plan_of(snapshot: ServerSnapshot, scope: PlanScope = "all") -> RemediationPlan | None:
    return analyse_server(snapshot, pki().store, NOW, plan_scope=scope).plan


def hash_of(snapshot: ServerSnapshot, scope: PlanScope = "all") -> str:
    plan = plan_of(snapshot, scope)
    assert plan is not None
    return plan.hash


def test_kb_scenario_plan_pins_unbinds_and_retries() -> None:
    scenario = kb_scenario()
    plan = plan_of(scenario.snapshot)
    assert plan is not None
    assert plan.server == "EX01"
    assert [s.kind for s in plan.steps] == [
        "pin_connector", "unbind_smtp", "unbind_smtp", "retry_queue",
    ]
    assert [s.target for s in plan.steps[1:3]] == sorted(
        [scenario.internal.thumbprint, scenario.default.thumbprint]
    )
    pin, unbind, skipped, retry = (
        plan.steps[0],
        next(s for s in plan.steps if s.kind == "unbind_smtp" and s.runnable),
        next(s for s in plan.steps if not s.runnable),
        plan.steps[-1],
    )
    value = tls_name_of(scenario.public)
    assert pin.cmdlet == "Set-SendConnector"
    assert pin.parameters == (("Identity", HCW_CONNECTOR), ("TlsCertificateName", value))
    assert pin.display == (
        f'Set-SendConnector -Identity "{HCW_CONNECTOR}" -TlsCertificateName "{value}"'
    )
    assert pin.before == "TlsCertificateName: (not set)"
    assert value in pin.after

    assert unbind.cmdlet == "Enable-ExchangeCertificate"
    assert unbind.parameters == (
        ("Server", "EX01"), ("Thumbprint", scenario.internal.thumbprint),
        ("Services", ["IMAP", "POP"]),
    )
    assert unbind.display == (
        f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {scenario.internal.thumbprint} "
        "-Services IMAP,POP"
    )
    assert unbind.before == "Services: IMAP, POP, SMTP"
    assert unbind.after.startswith("Services: IMAP, POP (SMTP removed")

    assert skipped.target == scenario.default.thumbprint
    assert skipped.skipped_reason is not None
    assert skipped.skipped_reason.startswith("self-signed")
    assert skipped.parameters == ()
    assert skipped.display == ""

    assert retry.cmdlet == "Retry-Queue"
    assert retry.parameters == (
        ("Server", "EX01"),
        ("Filter", "NextHopDomain -eq 'contoso.mail.protection.outlook.com' -and "
                   "Status -eq 'Retry'"),
    )
    assert retry.display == (
        "Retry-Queue -Server EX01 -Filter \"NextHopDomain -eq "
        "'contoso.mail.protection.outlook.com' -and Status -eq 'Retry'\""
    )


def test_healthy_scenario_has_no_plan() -> None:
    assert plan_of(healthy_scenario().snapshot) is None


def test_no_public_certificate_means_no_plan() -> None:
    scenario = kb_scenario()
    snapshot = replace(scenario.snapshot, certificates=(scenario.internal, scenario.default))
    assert plan_of(snapshot) is None


def test_scope_limits_the_plan() -> None:
    snapshot = kb_scenario().snapshot
    pin_only = plan_of(snapshot, "pin")
    unbind_only = plan_of(snapshot, "unbind")
    assert pin_only is not None
    assert unbind_only is not None
    assert [s.kind for s in pin_only.steps] == ["pin_connector", "retry_queue"]
    assert {s.kind for s in unbind_only.steps} == {"unbind_smtp", "retry_queue"}
    assert len({pin_only.hash, unbind_only.hash, hash_of(snapshot)}) == 3


def test_pinned_connector_needs_no_pin_step() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector(tls_name_of(scenario.public)),)
    )
    plan = plan_of(snapshot)
    assert plan is not None
    assert "pin_connector" not in {s.kind for s in plan.steps}
    assert plan_of(snapshot, "pin") is None


def test_connector_pinned_to_the_internal_certificate_is_repinned() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector(tls_name_of(scenario.internal)),)
    )
    plan = plan_of(snapshot)
    assert plan is not None
    assert plan.steps[0].kind == "pin_connector"
    assert plan.steps[0].before == f"TlsCertificateName: {tls_name_of(scenario.internal)}"


def test_smtp_only_certificate_is_skipped_with_reason() -> None:
    scenario = kb_scenario()
    smtp_only = replace(scenario.internal, services=ExchangeService.SMTP)
    snapshot = replace(
        scenario.snapshot, certificates=(scenario.public, smtp_only, scenario.default)
    )
    plan = plan_of(snapshot)
    assert plan is not None
    step = next(s for s in plan.steps if s.target == smtp_only.thumbprint)
    assert not step.runnable
    assert step.skipped_reason is not None
    assert "SMTP is its only service" in step.skipped_reason
    assert f"Remove-ExchangeCertificate -Server EX01 -Thumbprint {smtp_only.thumbprint}" in (
        step.skipped_reason
    )
    assert plan_of(snapshot, "unbind") is None


def test_never_adds_a_service_the_certificate_lacks() -> None:
    scenario = kb_scenario()
    with_um = replace(
        scenario.internal, services=ExchangeService.UM | ExchangeService.IIS | ExchangeService.SMTP
    )
    snapshot = replace(scenario.snapshot, certificates=(scenario.public, with_um))
    plan = plan_of(snapshot)
    assert plan is not None
    step = next(s for s in plan.steps if s.kind == "unbind_smtp")
    assert dict(step.parameters)["Services"] == ["UM", "IIS"]


def test_unknown_trust_and_unknown_services_are_skipped() -> None:
    scenario = kb_scenario()
    foreign = exchange_certificate(
        issue_leaf(None, "placeholder", key=ec_key(20)), services=ExchangeService.SMTP
    )
    unknown_trust = replace(scenario.internal, root_ca_type=None)
    unknown_services = replace(
        foreign, der=scenario.internal.der, thumbprint="AB" * 20, services=None,
        self_signed=False, subject=scenario.internal.subject, issuer=scenario.internal.issuer,
        domains=scenario.internal.domains,
    )
    store = replace(pki().store, internal_roots=())
    snapshot = replace(
        scenario.snapshot, certificates=(scenario.public, unknown_trust, unknown_services)
    )
    plan = analyse_server(snapshot, store, NOW).plan
    assert plan is not None
    reasons = {s.target: s.skipped_reason for s in plan.steps if s.kind == "unbind_smtp"}
    assert (reasons[unknown_trust.thumbprint] or "").startswith("trust unknown")
    assert (reasons["AB" * 20] or "").startswith("Services unknown")
    assert [s.kind for s in plan.steps if s.runnable] == ["pin_connector", "retry_queue"]


def test_plan_hash_is_stable_and_sensitive() -> None:
    scenario = kb_scenario()
    first = plan_of(scenario.snapshot)
    again = plan_of(replace(scenario.snapshot, taken_at=NOW.replace(hour=13)))
    assert first is not None
    assert again is not None
    assert first.hash == again.hash
    assert len(first.hash) == 64
    assert first.short_hash == first.hash[:12]

    more_mail = replace(
        scenario.snapshot,
        queues=tuple(replace(q, message_count=q.message_count + 100)
                     for q in scenario.snapshot.queues),
    )
    assert hash_of(more_mail) == first.hash

    renamed = replace(scenario.snapshot, send_connectors=(cloud_connector(None, name="Other"),))
    assert hash_of(renamed) != first.hash
    other_services = replace(
        scenario.snapshot,
        certificates=(
            scenario.public,
            replace(scenario.internal, services=ExchangeService.IIS | ExchangeService.SMTP),
            scenario.default,
        ),
    )
    assert hash_of(other_services) != first.hash
    other_server = replace(
        scenario.snapshot, server=replace(scenario.snapshot.server, name="EX02")
    )
    assert hash_of(other_server) != first.hash


def test_plan_does_not_depend_on_input_order() -> None:
    scenario = kb_scenario()
    reordered = replace(
        scenario.snapshot, certificates=tuple(reversed(scenario.snapshot.certificates))
    )
    assert hash_of(reordered) == plan_of(scenario.snapshot).hash


def test_build_plan_directly_from_certificate_facts() -> None:
    scenario = kb_scenario()
    analysis = analyse_server(scenario.snapshot, pki().store, NOW)
    plan = build_plan(scenario.snapshot, analysis.certificates, "all")
    assert plan == analysis.plan


def test_public_and_self_signed_only_pins_the_unpinned_connector() -> None:
    """Product section 2 read literally: the self-signed default is not publicly trusted, so an
    unpinned cloud connector is pinned; the self-signed certificate itself is left alone."""
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, certificates=(scenario.public, scenario.default), queues=()
    )
    plan = plan_of(snapshot)
    assert plan is not None
    assert [(s.kind, s.runnable) for s in plan.steps] == [
        ("pin_connector", True), ("unbind_smtp", False), ("retry_queue", True),
    ]
