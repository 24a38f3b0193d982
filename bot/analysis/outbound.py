"""Which certificate will Exchange present to Exchange Online on a send connector?

Exchange documents the ranking for inbound STARTTLS only; for send connectors the same ranking
is a (lead) reading of Exchange internals (docs/exchange-hybrid-tls.md section 2), so the result
is reported as a prediction with its reasoning:

1. Name: with a well-formed ``TlsCertificateName`` only certificates with exactly that Issuer
   and Subject; otherwise certificates whose Subject CN or SAN covers the connector FQDN, or the
   server FQDN when the connector has none (wildcards count).
2. Eligible: SMTP enabled (Services unknown: kept, and the prediction is marked uncertain) and
   within NotBefore..NotAfter at ``now``.
3. Ranked newest NotBefore first (ties: later NotAfter, then thumbprint, so the order is stable).
4. The first *valid* CA-issued certificate wins, public or internal alike: the server trusts its
   enterprise root. Valid means Exchange Status Valid; an unknown Status is assumed valid.
5. A self-signed certificate only when no CA-issued certificate is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from bot.analysis.certificates import (
    as_utc,
    is_named_by,
    short_thumbprint,
    within_validity,
)
from bot.analysis.model import CandidateRanking, OutboundSelection, Trust, TrustAssessment
from bot.analysis.names import certificate_matches
from bot.analysis.trust import TrustStore, assess_trust, status_name
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeServer,
    ExchangeService,
    SendConnector,
    ServerSnapshot,
)

PREDICTION_NOTE = (
    "Prediction: Exchange's documented inbound STARTTLS ranking applied to the send connector "
    "(not confirmed by Microsoft for outbound)."
)


def _host_label(value: str) -> str:
    text = value.strip().replace("/", "\\").rsplit("\\", 1)[-1]
    return text.split(".", 1)[0].lower()


def connector_applies_to_server(connector: SendConnector, server: ExchangeServer) -> bool:
    """True when the server is one of the connector's source transport servers.

    Send connectors are organisation-wide; an empty source list (not read) counts as "applies".
    """
    if not connector.source_transport_servers:
        return True
    own = {_host_label(server.name)}
    if server.fqdn:
        own.add(_host_label(server.fqdn))
    return any(_host_label(source) in own for source in connector.source_transport_servers)


def cloud_connectors(snapshot: ServerSnapshot) -> tuple[SendConnector, ...]:
    """The send connectors of this server that carry mail to Exchange Online."""
    return tuple(
        connector
        for connector in snapshot.send_connectors
        if connector.is_cloud and connector_applies_to_server(connector, snapshot.server)
    )


def selection_name(connector: SendConnector, server: ExchangeServer) -> str | None:
    """The host name a connector without a pinned certificate looks for."""
    fqdn = (connector.fqdn or "").strip()
    return fqdn or server.fqdn or None


def is_valid_status(status: CertificateStatus | None) -> bool:
    """Valid for the ranking: Status Valid, or no usable Status (assumed valid)."""
    return status in (None, CertificateStatus.UNKNOWN, CertificateStatus.VALID)


def ranking_key(cert: ExchangeCertificate) -> tuple[float, float, str]:
    """Sort key: newest NotBefore first, then later NotAfter, then thumbprint."""
    return (
        -as_utc(cert.not_before).timestamp(),
        -as_utc(cert.not_after).timestamp(),
        cert.thumbprint.upper(),
    )


def _is_self_signed(cert: ExchangeCertificate, trust: Trust) -> bool:
    return trust == "self-signed" or cert.self_signed


def _candidate_note(cert: ExchangeCertificate, ca_issued: bool, valid: bool) -> str:
    notes = ["CA-issued" if ca_issued else "self-signed"]
    if cert.status is None or cert.status == CertificateStatus.UNKNOWN:
        notes.append("Status unknown: assumed valid")
    elif not valid:
        notes.append(f"Status {status_name(cert.status)}: not valid")
    if cert.services is None:
        notes.append("Services unknown")
    return ", ".join(notes)


def _describe(candidate: CandidateRanking) -> str:
    facts: list[str] = [candidate.trust]
    facts += [part for part in candidate.note.split(", ") if part != candidate.trust]
    return (
        f"{candidate.rank}. {short_thumbprint(candidate.thumbprint)} {candidate.subject} "
        f"({', '.join(facts)}, NotBefore {as_utc(candidate.not_before):%Y-%m-%d})"
    )


def predict_outbound_certificate(
    snapshot: ServerSnapshot,
    connector: SendConnector,
    store: TrustStore,
    now: datetime,
    *,
    assessments: Mapping[str, TrustAssessment] | None = None,
) -> OutboundSelection:
    """Predict the certificate Exchange presents on ``connector``, with checkable reasons.

    ``assessments`` (by upper-case thumbprint) saves re-assessing trust already assessed.
    """

    def trust_of(cert: ExchangeCertificate) -> Trust:
        known = assessments.get(cert.thumbprint.upper()) if assessments else None
        return (known or assess_trust(cert, store, now)).trust

    return _predict(snapshot, connector, now, trust_of)


def _predict(
    snapshot: ServerSnapshot,
    connector: SendConnector,
    now: datetime,
    trust_of: Callable[[ExchangeCertificate], Trust],
) -> OutboundSelection:
    pinned = connector.tls_certificate_name
    lines: list[str] = []
    matches: Callable[[ExchangeCertificate], bool]
    if pinned is not None and pinned.is_well_formed:
        lines.append(
            f"TlsCertificateName {pinned.raw} is set, so only certificates with exactly that "
            "Issuer and Subject are considered."
        )

        def matches(cert: ExchangeCertificate) -> bool:
            return is_named_by(cert, pinned)
    else:
        if pinned is not None:
            lines.append(
                f"TlsCertificateName {pinned.raw!r} is not in <I>issuer<S>subject form and "
                "cannot name a certificate; it is treated as not set."
            )
        name = selection_name(connector, snapshot.server)
        if name is None:
            return OutboundSelection(
                connector=connector.name,
                thumbprint=None,
                reason=" ".join(
                    [*lines, "Neither the connector FQDN nor the server FQDN is known, so no "
                     "certificate can be predicted.", PREDICTION_NOTE]
                ),
                candidates=(),
                uncertain=True,
            )
        source = "connector FQDN" if (connector.fqdn or "").strip() else "server FQDN"
        lines.append(
            f"TlsCertificateName is not set, so Exchange looks for certificates whose Subject "
            f"or SAN covers the {source} {name}."
        )

        def matches(cert: ExchangeCertificate) -> bool:
            return certificate_matches(cert, name)

    excluded: list[str] = []
    eligible: list[ExchangeCertificate] = []
    for cert in snapshot.certificates:
        if not matches(cert):
            continue
        label = short_thumbprint(cert.thumbprint)
        if cert.services is not None and ExchangeService.SMTP not in cert.services:
            excluded.append(f"{label} (SMTP not enabled)")
        elif as_utc(now) > as_utc(cert.not_after):
            excluded.append(f"{label} (expired)")
        elif not within_validity(cert, now):
            excluded.append(f"{label} (not valid yet)")
        else:
            eligible.append(cert)
    eligible.sort(key=ranking_key)

    candidates: list[CandidateRanking] = []
    for rank, cert in enumerate(eligible, start=1):
        trust = trust_of(cert)
        ca_issued = not _is_self_signed(cert, trust)
        valid = is_valid_status(cert.status)
        candidates.append(
            CandidateRanking(
                rank=rank,
                thumbprint=cert.thumbprint.upper(),
                subject=cert.subject,
                not_before=cert.not_before,
                not_after=cert.not_after,
                trust=trust,
                ca_issued=ca_issued,
                valid=valid,
                services_known=cert.services is not None,
                note=_candidate_note(cert, ca_issued, valid),
            )
        )

    lines.append(
        f"Eligible (SMTP enabled, within validity): {len(candidates)}"
        + (f"; left out: {', '.join(excluded)}." if excluded else ".")
    )
    if candidates:
        lines.append(
            "Ranked newest NotBefore first: " + "; ".join(_describe(c) for c in candidates) + "."
        )

    winner = _choose(candidates)
    if winner is None:
        lines.append("No eligible certificate is valid, so none can be predicted.")
    elif winner.ca_issued:
        lines.append(
            f"The first valid CA-issued certificate wins: {short_thumbprint(winner.thumbprint)} "
            f"({winner.trust})."
        )
    else:
        lines.append(
            "No CA-issued certificate is valid, so the newest valid self-signed certificate is "
            f"used: {short_thumbprint(winner.thumbprint)}."
        )
    unknown_services = [c for c in candidates if not c.services_known]
    if unknown_services:
        labels = ", ".join(short_thumbprint(c.thumbprint) for c in unknown_services)
        lines.append(
            f"Services are unknown for {labels} (counted as if SMTP were enabled): "
            "the prediction is uncertain."
        )
    lines.append(PREDICTION_NOTE)
    return OutboundSelection(
        connector=connector.name,
        thumbprint=winner.thumbprint if winner else None,
        reason=" ".join(lines),
        candidates=tuple(candidates),
        uncertain=bool(unknown_services),
        trust=winner.trust if winner else None,
    )


def _choose(candidates: Sequence[CandidateRanking]) -> CandidateRanking | None:
    for candidate in candidates:
        if candidate.valid and candidate.ca_issued:
            return candidate
    for candidate in candidates:
        if candidate.valid:
            return candidate
    return None
