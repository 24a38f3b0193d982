"""The JSON report of docs/product.md section 6 (``check|analyze --format json``).

Fields named there are fixed. Fields beside them (per-server ``verdict`` and ``taken_at``,
certificate ``root_ca_type`` / ``status`` / ``self_signed`` ..., outbound ``trust``,
``uncertain`` and ``candidates``, plan ``short_hash``) are additions: more may come, none will
change meaning.
"""

from __future__ import annotations

from typing import Any

from bot.analysis.certificates import iso_utc
from bot.analysis.model import (
    CandidateRanking,
    CertificateAnalysis,
    Finding,
    FleetReport,
    OutboundSelection,
    PlanStep,
    RemediationPlan,
    ServerAnalysis,
)
from bot.analysis.trust import root_ca_type_name, status_name
from bot.analysis.verdict import server_verdict
from bot.exchange.snapshot import Queue, SendConnector


def certificate_to_json(analysis: CertificateAnalysis) -> dict[str, Any]:
    cert = analysis.cert
    return {
        "thumbprint": analysis.thumbprint,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "domains": list(cert.domains),
        "not_before": iso_utc(cert.not_before),
        "not_after": iso_utc(cert.not_after),
        "services": None if cert.services is None else cert.services.names(),
        "trust": analysis.trust,
        "trust_evidence": list(analysis.evidence),
        "self_signed": analysis.is_self_signed,
        "root_ca_type": root_ca_type_name(cert.root_ca_type),
        "status": status_name(cert.status),
        "services_source": str(cert.services_source),
        "key_algorithm": cert.key_algorithm,
        "key_size": cert.key_size,
        "signature_hash": cert.signature_hash,
        "matches_fqdn": analysis.matches_fqdn,
        "matched_names": list(analysis.matched_names),
        "days_left": analysis.days_left,
        "in_use": analysis.in_use,
    }


def send_connector_to_json(connector: SendConnector) -> dict[str, Any]:
    name = connector.tls_certificate_name
    return {
        "name": connector.name,
        "cloud": connector.is_cloud,
        "enabled": connector.enabled,
        "tls_certificate_name": None if name is None else name.raw,
        "smart_hosts": list(connector.smart_hosts),
        "address_spaces": list(connector.address_spaces),
        "fqdn": connector.fqdn,
        "require_tls": connector.require_tls,
        "tls_auth_level": connector.tls_auth_level,
        "tls_domain": connector.tls_domain,
        "source_transport_servers": list(connector.source_transport_servers),
    }


def candidate_to_json(candidate: CandidateRanking) -> dict[str, Any]:
    return {
        "rank": candidate.rank,
        "thumbprint": candidate.thumbprint,
        "subject": candidate.subject,
        "not_before": iso_utc(candidate.not_before),
        "not_after": iso_utc(candidate.not_after),
        "trust": candidate.trust,
        "ca_issued": candidate.ca_issued,
        "valid": candidate.valid,
        "services_known": candidate.services_known,
        "note": candidate.note,
    }


def outbound_to_json(selection: OutboundSelection) -> dict[str, Any]:
    return {
        "connector": selection.connector,
        "thumbprint": selection.thumbprint,
        "reason": selection.reason,
        "trust": selection.trust,
        "uncertain": selection.uncertain,
        "candidates": [candidate_to_json(c) for c in selection.candidates],
    }


def queue_to_json(queue: Queue) -> dict[str, Any]:
    return {
        "identity": queue.identity,
        "delivery_type": queue.delivery_type,
        "next_hop_domain": queue.next_hop_domain,
        "status": queue.status,
        "message_count": queue.message_count,
        "last_error": queue.last_error,
    }


def finding_to_json(finding: Finding) -> dict[str, Any]:
    return {
        "code": str(finding.code),
        "severity": finding.severity,
        "summary": finding.summary,
        "thumbprints": list(finding.thumbprints),
        "remedy": finding.remedy,
    }


def step_to_json(step: PlanStep) -> dict[str, Any]:
    return {
        "kind": step.kind,
        "cmdlet": step.cmdlet,
        "parameters": {
            name: list(value) if isinstance(value, list) else value
            for name, value in step.parameters
        },
        "display": step.display,
        "target": step.target,
        "before": step.before,
        "after": step.after,
        "skipped_reason": step.skipped_reason,
    }


def plan_to_json(plan: RemediationPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {
        "server": plan.server,
        "hash": plan.hash,
        "short_hash": plan.short_hash,
        "steps": [step_to_json(step) for step in plan.steps],
    }


def server_to_json(analysis: ServerAnalysis) -> dict[str, Any]:
    return {
        "name": analysis.name,
        "fqdn": analysis.fqdn,
        "reachable": analysis.reachable,
        "error": analysis.error,
        "verdict": server_verdict(analysis),
        "taken_at": None if analysis.taken_at is None else iso_utc(analysis.taken_at),
        "notes": list(analysis.notes),
        "certificates": [certificate_to_json(c) for c in analysis.certificates],
        "send_connectors": [send_connector_to_json(c) for c in analysis.send_connectors],
        "outbound": [outbound_to_json(s) for s in analysis.outbound],
        "queues": [queue_to_json(q) for q in analysis.queues],
        "findings": [finding_to_json(f) for f in analysis.findings],
        "plan": plan_to_json(analysis.plan),
    }


def report_to_json(report: FleetReport) -> dict[str, Any]:
    """The report as JSON-ready data (``json.dumps`` it)."""
    return {
        "verdict": report.verdict,
        "generated_at": iso_utc(report.generated_at),
        "servers": [server_to_json(server) for server in report.servers],
    }
