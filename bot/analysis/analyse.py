"""Analyse one server: the pure entry point from a snapshot to findings and a plan."""

from __future__ import annotations

from datetime import datetime

from bot.analysis.certificates import (
    days_left,
    is_auth_certificate,
    is_named_by,
    within_validity,
)
from bot.analysis.findings import find_issues, unreachable_finding
from bot.analysis.model import (
    CertificateAnalysis,
    PlanScope,
    ServerAnalysis,
    TrustAssessment,
)
from bot.analysis.names import certificate_matches
from bot.analysis.outbound import cloud_connectors, predict_outbound_certificate
from bot.analysis.plan import build_plan, checked_names
from bot.analysis.trust import TrustStore, assess_trust
from bot.exchange.snapshot import ExchangeCertificate, ExchangeService, ServerSnapshot


def _in_use(cert: ExchangeCertificate, snapshot: ServerSnapshot) -> bool:
    if cert.services is None or cert.services != ExchangeService.NONE:
        return True
    if is_auth_certificate(cert):
        return True
    names = [c.tls_certificate_name for c in snapshot.send_connectors]
    names += [c.tls_certificate_name for c in snapshot.receive_connectors]
    if snapshot.hybrid is not None:
        names.append(snapshot.hybrid.tls_certificate_name)
    return any(name is not None and is_named_by(cert, name) for name in names)


def analyse_certificate(
    cert: ExchangeCertificate,
    assessment: TrustAssessment,
    snapshot: ServerSnapshot,
    now: datetime,
) -> CertificateAnalysis:
    """The per-certificate facts findings and plan rely on."""
    matched = tuple(name for name in checked_names(snapshot) if certificate_matches(cert, name))
    return CertificateAnalysis(
        cert=cert,
        trust=assessment.trust,
        evidence=assessment.evidence,
        matches_fqdn=bool(matched),
        matched_names=matched,
        within_validity=within_validity(cert, now),
        days_left=days_left(cert, now),
        in_use=_in_use(cert, snapshot),
    )


def analyse_server(
    snapshot: ServerSnapshot,
    store: TrustStore,
    now: datetime,
    *,
    plan_scope: PlanScope = "all",
) -> ServerAnalysis:
    """Trust, outbound predictions, findings and the remediation plan of one server."""
    assessments: dict[str, TrustAssessment] = {}
    for cert in snapshot.certificates:
        key = cert.thumbprint.upper()
        if key not in assessments:
            assessments[key] = assess_trust(cert, store, now)
    certificates = tuple(
        analyse_certificate(cert, assessments[cert.thumbprint.upper()], snapshot, now)
        for cert in snapshot.certificates
    )
    outbound = tuple(
        predict_outbound_certificate(snapshot, connector, store, now, assessments=assessments)
        for connector in cloud_connectors(snapshot)
    )
    return ServerAnalysis(
        name=snapshot.server.name,
        fqdn=snapshot.server.fqdn,
        reachable=True,
        error=None,
        certificates=certificates,
        send_connectors=snapshot.send_connectors,
        outbound=outbound,
        queues=snapshot.queues,
        findings=find_issues(snapshot, certificates, outbound, now),
        plan=build_plan(snapshot, certificates, plan_scope),
        taken_at=snapshot.taken_at,
        notes=snapshot.notes,
    )


def unreachable_server(name: str, fqdn: str | None, error: str) -> ServerAnalysis:
    """The analysis of a server that could not be read: one SERVER_UNREACHABLE finding."""
    return ServerAnalysis(
        name=name,
        fqdn=fqdn,
        reachable=False,
        error=error,
        certificates=(),
        send_connectors=(),
        outbound=(),
        queues=(),
        findings=(unreachable_finding(name, fqdn, error),),
        plan=None,
    )
