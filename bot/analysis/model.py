"""Result types of the analysis: what the report, the plan and the renderers read.

Every record is immutable. Names of finding codes, trust levels, severities and verdicts are
fixed by docs/product.md section 6; scripts and monitoring depend on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.exchange.snapshot import ExchangeCertificate, ExchangeService, Queue, SendConnector

Trust = Literal["public", "internal", "self-signed", "unknown"]
Severity = Literal["info", "warning", "critical"]
Verdict = Literal["ok", "warning", "critical", "unknown"]
PlanScope = Literal["all", "pin", "unbind"]
StepKind = Literal["pin_connector", "unbind_smtp", "retry_queue"]
ParameterValue = str | list[str] | None
"""A cmdlet parameter value: a string, a list of strings, or None for a switch."""


class FindingCode(enum.StrEnum):
    """Finding codes of docs/product.md section 6, in the order reports list them."""

    SERVER_UNREACHABLE = "SERVER_UNREACHABLE"
    SMTP_MIXED_TRUST_BINDING = "SMTP_MIXED_TRUST_BINDING"
    OUTBOUND_CERT_UNTRUSTED = "OUTBOUND_CERT_UNTRUSTED"
    QUEUE_TLS_REJECTED = "QUEUE_TLS_REJECTED"
    NO_SMTP_CERT_FOR_FQDN = "NO_SMTP_CERT_FOR_FQDN"
    CONNECTOR_TLS_CERT_MISSING = "CONNECTOR_TLS_CERT_MISSING"
    CONNECTOR_TLS_CERT_NOT_FOUND = "CONNECTOR_TLS_CERT_NOT_FOUND"
    CONNECTOR_TLS_CERT_MISMATCH = "CONNECTOR_TLS_CERT_MISMATCH"
    CONNECTOR_TLS_CERT_SYNTAX = "CONNECTOR_TLS_CERT_SYNTAX"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_EXPIRING = "CERT_EXPIRING"
    CERT_WEAK_KEY = "CERT_WEAK_KEY"
    CERT_WEAK_SIGNATURE = "CERT_WEAK_SIGNATURE"
    SERVICES_UNKNOWN = "SERVICES_UNKNOWN"


@dataclass(frozen=True)
class TrustAssessment:
    """Who would trust a certificate, and the facts that verdict rests on."""

    trust: Trust
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class CertificateAnalysis:
    """One certificate with the facts the findings and the plan need, computed once."""

    cert: ExchangeCertificate
    trust: Trust
    evidence: tuple[str, ...]
    matches_fqdn: bool
    """Matches the server FQDN or the FQDN of a cloud send connector of this server."""
    matched_names: tuple[str, ...]
    within_validity: bool
    days_left: int
    """Whole days until NotAfter (negative once expired), as HealthChecker counts them."""
    in_use: bool
    """Bound to a service, services unknown, named by a connector, or the Auth certificate."""

    @property
    def thumbprint(self) -> str:
        return self.cert.thumbprint.upper()

    @property
    def has_smtp(self) -> bool | None:
        """True/False when Services is known, None when it is not."""
        if self.cert.services is None:
            return None
        return ExchangeService.SMTP in self.cert.services

    @property
    def is_self_signed(self) -> bool:
        return self.trust == "self-signed" or self.cert.self_signed


@dataclass(frozen=True)
class CandidateRanking:
    """One eligible certificate in the outbound ranking (rank 1 is considered first)."""

    rank: int
    thumbprint: str
    subject: str
    not_before: datetime
    not_after: datetime
    trust: Trust
    ca_issued: bool
    valid: bool
    """Usable by the ranking: Status Valid, or Status unknown (then assumed valid)."""
    services_known: bool
    note: str


@dataclass(frozen=True)
class OutboundSelection:
    """The certificate Exchange is predicted to present on a send connector, with reasons."""

    connector: str
    thumbprint: str | None
    reason: str
    candidates: tuple[CandidateRanking, ...]
    uncertain: bool = False
    trust: Trust | None = None
    """Trust of the predicted certificate (None when nothing is predicted)."""


@dataclass(frozen=True)
class Finding:
    code: FindingCode
    severity: Severity
    summary: str
    thumbprints: tuple[str, ...]
    remedy: str


@dataclass(frozen=True)
class PlanStep:
    """One cmdlet of a remediation plan.

    ``parameters`` is what the executor passes to ``add_parameter`` in order; ``display`` is
    the same command as a person would type it. A step with ``skipped_reason`` is shown, never
    run: it has no parameters and an empty ``display``.
    """

    kind: StepKind
    cmdlet: str
    parameters: tuple[tuple[str, ParameterValue], ...]
    display: str
    target: str
    before: str
    after: str
    skipped_reason: str | None = None

    @property
    def runnable(self) -> bool:
        return self.skipped_reason is None


@dataclass(frozen=True)
class RemediationPlan:
    server: str
    steps: tuple[PlanStep, ...]
    hash: str
    """SHA-256 (hex) of the canonical JSON of the server name and the steps."""

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


@dataclass(frozen=True)
class ServerAnalysis:
    name: str
    fqdn: str | None
    reachable: bool
    error: str | None
    certificates: tuple[CertificateAnalysis, ...]
    send_connectors: tuple[SendConnector, ...]
    outbound: tuple[OutboundSelection, ...]
    queues: tuple[Queue, ...]
    findings: tuple[Finding, ...]
    plan: RemediationPlan | None
    taken_at: datetime | None = None
    notes: tuple[str, ...] = ()
    """What could not be read or was left out while reading the server (never silent)."""


@dataclass(frozen=True)
class FleetReport:
    generated_at: datetime
    servers: tuple[ServerAnalysis, ...]
    verdict: Verdict
