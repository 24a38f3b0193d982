"""Findings: what is wrong on a server, how bad it is, and the exact cmdlet that fixes it.

Decisions worth knowing:

- SMTP_MIXED_TRUST_BINDING needs a usable public SMTP certificate and an ``internal`` or
  ``unknown`` SMTP certificate covering the same checked name (server FQDN, or the name a cloud
  connector looks for), both within validity. Self-signed competitors are not reported: the
  ranking never prefers them while a CA-issued certificate is valid, and every server has one.
  Critical when an internal certificate competes and a cloud connector of that name is not
  pinned to a public certificate (the KB fault is live); warning when all are pinned or when
  the competitor's trust is unknown.
- OUTBOUND_CERT_UNTRUSTED: critical for an internal or self-signed prediction, warning when the
  predicted certificate's trust is unknown.
- Per-certificate findings (expiry, weak key, weak signature) cover every certificate, as
  HealthChecker does, at full severity for certificates in use (a service bound, Services
  unknown, named by a connector or the hybrid configuration, or the Exchange Auth certificate)
  and as ``info`` for certificates that nothing uses.
- CERT_WEAK_SIGNATURE on a self-signed certificate is ``info``: trust in it never rests on
  its signature, and Exchange's own default and Auth certificates are SHA-1 signed (fixtures).
- Expiry thresholds are HealthChecker's: fewer than 30 days left is critical, 30-59 a warning.
- Disabled connectors carry no mail: their findings are capped at warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.analysis.certificates import (
    as_utc,
    is_auth_certificate,
    is_named_by,
    services_text,
    short_thumbprint,
    tls_certificate_name_value,
)
from bot.analysis.commands import (
    enable_services_command,
    pin_connector_command,
    quote_argument,
    retry_queue_command,
    show_services_command,
)
from bot.analysis.model import (
    CertificateAnalysis,
    Finding,
    FindingCode,
    OutboundSelection,
    Severity,
)
from bot.analysis.names import certificate_matches, tls_certificate_names_equal
from bot.analysis.outbound import (
    cloud_connectors,
    connector_applies_to_server,
    is_valid_status,
    selection_name,
)
from bot.analysis.plan import (
    best_public_certificate,
    checked_names,
    is_pinned_to_public,
    is_usable_public,
    unbind_services,
)
from bot.analysis.trust import status_name
from bot.exchange.snapshot import ExchangeService, SendConnector, ServerSnapshot

EXPIRY_WARNING_DAYS = 60
EXPIRY_CRITICAL_DAYS = 30
MINIMUM_RSA_BITS = 2048
WEAK_SIGNATURE_HASHES = frozenset({"sha1", "md5", "md4", "md2"})
QUEUE_REJECTION_MARKERS = ("454 4.7.0", "untrustedroot")
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_CODE_ORDER = {code: index for index, code in enumerate(FindingCode)}
KB_2989382 = "answer No when asked to replace the default SMTP certificate (KB 2989382)"


def _cap(severity: Severity, connector: SendConnector) -> Severity:
    if not connector.enabled and severity == "critical":
        return "warning"
    return severity


def _disabled(connector: SendConnector) -> str:
    return "" if connector.enabled else " (connector disabled)"


def _label(analysis: CertificateAnalysis) -> str:
    return f"{short_thumbprint(analysis.thumbprint)} {analysis.cert.subject}"


def _new_public_certificate_remedy(server: str, name: str) -> str:
    return (
        f"Get a certificate from a public CA covering {name}: "
        f"New-ExchangeCertificate -Server {quote_argument(server)} -GenerateRequest "
        f'-SubjectName "CN={name}" -DomainName {quote_argument(name)} -KeySize 2048 '
        "-RequestFile <path>, then Import-ExchangeCertificate -Server "
        f"{quote_argument(server)} -FileData <issued file>, then Enable-ExchangeCertificate "
        f"-Server {quote_argument(server)} -Thumbprint <new> -Services SMTP ({KB_2989382})"
    )


def _pin_remedy(
    server: str, connector: SendConnector, certificates: Sequence[CertificateAnalysis],
    server_fqdn: str | None,
) -> str:
    name = (connector.fqdn or "").strip() or server_fqdn or "the connector name"
    target = best_public_certificate(certificates, name)
    if target is None:
        return (
            _new_public_certificate_remedy(server, name)
            + "; then pin the connector to it: "
            + pin_connector_command(connector.name, "<I>{issuer}<S>{subject}")
        )
    return pin_connector_command(connector.name, tls_certificate_name_value(target.cert))


class _Context:
    def __init__(
        self,
        snapshot: ServerSnapshot,
        certificates: Sequence[CertificateAnalysis],
        outbound: Sequence[OutboundSelection],
        now: datetime,
    ) -> None:
        self.snapshot = snapshot
        self.server = snapshot.server.name
        self.fqdn = snapshot.server.fqdn
        self.certificates = certificates
        self.outbound = outbound
        self.now = now
        self.cloud = cloud_connectors(snapshot)
        self.connectors = tuple(
            c for c in snapshot.send_connectors
            if connector_applies_to_server(c, snapshot.server)
        )
        self.findings: list[Finding] = []

    def add(
        self, code: FindingCode, severity: Severity, summary: str, thumbprints: Sequence[str],
        remedy: str,
    ) -> None:
        unique = tuple(dict.fromkeys(t.upper() for t in thumbprints))
        self.findings.append(Finding(code, severity, summary, unique, remedy))

    def pin_remedy(self, connector: SendConnector) -> str:
        return _pin_remedy(self.server, connector, self.certificates, self.fqdn)

    def exposed_connectors(self, name: str) -> list[SendConnector]:
        """Cloud connectors that look for ``name`` and are not pinned to a public certificate."""
        return [
            c for c in self.cloud
            if not is_pinned_to_public(c, self.certificates)
            and (selection_name(c, self.snapshot.server) or "").lower() == name.lower()
        ]


def find_issues(
    snapshot: ServerSnapshot,
    certificates: Sequence[CertificateAnalysis],
    outbound: Sequence[OutboundSelection],
    now: datetime,
) -> tuple[Finding, ...]:
    """Every finding for one reachable server, most severe first."""
    context = _Context(snapshot, certificates, outbound, now)
    _mixed_trust(context)
    _outbound_untrusted(context)
    _queue_rejected(context)
    _no_smtp_certificate(context)
    _connector_tls_names(context)
    _hybrid_mismatch(context)
    _per_certificate(context)
    _services_unknown(context)
    return tuple(
        sorted(
            context.findings,
            key=lambda f: (_SEVERITY_ORDER[f.severity], _CODE_ORDER[f.code], f.summary),
        )
    )


def _mixed_trust(context: _Context) -> None:
    seen: set[frozenset[str]] = set()
    for name in checked_names(context.snapshot):
        covering = [
            a for a in context.certificates
            if a.within_validity and a.has_smtp is True and certificate_matches(a.cert, name)
        ]
        public = [a for a in covering if is_usable_public(a)]
        internal = [a for a in covering if a.trust == "internal"]
        unknown = [a for a in covering if a.trust == "unknown"]
        if not public or not (internal or unknown):
            continue
        key = frozenset(a.thumbprint for a in (*public, *internal, *unknown))
        if key in seen:
            continue
        seen.add(key)
        exposed = context.exposed_connectors(name)
        untrusted = [*internal, *unknown]
        described = "; ".join(f"{_label(a)} ({a.trust})" for a in untrusted)
        summary = (
            f"SMTP is bound to {len(public) + len(untrusted)} certificates covering {name}: "
            f"publicly trusted {', '.join(_label(a) for a in public)}; not publicly trusted "
            f"{described}. Exchange may present the untrusted one to Exchange Online, which "
            "refuses it (KB 2888788)."
        )
        if internal and exposed:
            severity: Severity = "critical"
        else:
            severity = "warning"
            if internal:
                summary += " The cloud connectors are pinned to a public certificate, so mail " \
                    "to Exchange Online is safe; inbound STARTTLS still ranks the certificates."
            else:
                summary += " The competitor's trust could not be established."
        remedies = [context.pin_remedy(c) for c in exposed]
        for analysis in internal:
            services = analysis.cert.services or ExchangeService.NONE
            keep = unbind_services(services)
            if keep:
                remedies.append(
                    enable_services_command(context.server, analysis.thumbprint, keep)
                    + " (KB 2888788), then check: "
                    + show_services_command(context.server, analysis.thumbprint)
                )
            else:
                remedies.append(
                    f"SMTP is the only service of {short_thumbprint(analysis.thumbprint)}: "
                    f"Remove-ExchangeCertificate -Server {quote_argument(context.server)} "
                    f"-Thumbprint {analysis.thumbprint} once nothing uses it"
                )
        for analysis in unknown:
            remedies.append(
                f"Establish the trust of {short_thumbprint(analysis.thumbprint)}: add its "
                "issuing CA to the trust store, or read RootCAType with "
                f"Get-ExchangeCertificate -Server {quote_argument(context.server)} -Thumbprint "
                f"{analysis.thumbprint} | Format-List RootCAType,Status"
            )
        context.add(
            FindingCode.SMTP_MIXED_TRUST_BINDING, severity, summary,
            [a.thumbprint for a in (*untrusted, *public)], "; ".join(remedies),
        )


def _outbound_untrusted(context: _Context) -> None:
    by_name = {c.name: c for c in context.cloud}
    for selection in context.outbound:
        connector = by_name.get(selection.connector)
        if connector is None or selection.thumbprint is None or selection.trust == "public":
            continue
        severity: Severity = "warning" if selection.trust == "unknown" else "critical"
        subject = next(
            (c.subject for c in selection.candidates if c.thumbprint == selection.thumbprint), ""
        )
        summary = (
            f"Send connector '{connector.name}'{_disabled(connector)} is predicted to present "
            f"{short_thumbprint(selection.thumbprint)} {subject} ({selection.trust}) to "
            "Exchange Online, which accepts only publicly trusted certificates "
            "(454 4.7.0 UntrustedRoot otherwise)."
        )
        if selection.trust == "unknown":
            summary += " Its trust could not be established."
        context.add(
            FindingCode.OUTBOUND_CERT_UNTRUSTED, _cap(severity, connector), summary,
            [selection.thumbprint], context.pin_remedy(connector),
        )


def _queue_rejected(context: _Context) -> None:
    for queue in context.snapshot.queues:
        error = queue.last_error or ""
        if not queue.is_to_exchange_online or not any(
            marker in error.casefold() for marker in QUEUE_REJECTION_MARKERS
        ):
            continue
        domain = (queue.next_hop_domain or "").lower()
        feeding = {
            c.name for c in context.cloud
            if domain in {host.strip().lower() for host in c.smart_hosts}
        }
        thumbprints = [
            s.thumbprint for s in context.outbound
            if s.thumbprint and (not feeding or s.connector in feeding)
        ]
        shown = error if len(error) <= 300 else error[:297] + "..."
        context.add(
            FindingCode.QUEUE_TLS_REJECTED,
            "critical",
            f"Queue {queue.identity} to {queue.next_hop_domain} holds {queue.message_count} "
            f"messages (Status {queue.status or 'unknown'}); Exchange Online refused TLS: {shown}",
            thumbprints,
            "Make the outbound certificate a publicly trusted one (see OUTBOUND_CERT_UNTRUSTED "
            "and SMTP_MIXED_TRUST_BINDING), then: "
            + retry_queue_command(context.server, queue.next_hop_domain or domain),
        )


def _no_smtp_certificate(context: _Context) -> None:
    for name in checked_names(context.snapshot):
        users = [
            c for c in context.cloud
            if not (c.tls_certificate_name and c.tls_certificate_name.is_well_formed)
            and (selection_name(c, context.snapshot.server) or "").lower() == name.lower()
        ]
        if name.lower() != (context.fqdn or "").lower() and not users:
            continue
        covering = [a for a in context.certificates if certificate_matches(a.cert, name)]
        current = [a for a in covering if a.within_validity]
        if any(a.has_smtp is not False for a in current):
            continue
        severity: Severity = "critical" if any(c.enabled for c in users) else "warning"
        summary = f"No certificate with SMTP enabled and within its validity covers {name}"
        if users:
            summary += " (looked for by " + ", ".join(f"'{c.name}'" for c in users) + ")"
        summary += "; Exchange cannot offer or present a certificate for it (event 12014)."
        if covering:
            summary += " Covering it but unusable: " + ", ".join(
                f"{_label(a)} ({'SMTP not enabled' if a.within_validity else 'not in validity'})"
                for a in covering
            ) + "."
        ready = [a for a in current if _is_public_without_smtp(a)]
        if ready:
            remedy = (
                f"Enable-ExchangeCertificate -Server {quote_argument(context.server)} "
                f"-Thumbprint {ready[0].thumbprint} -Services SMTP ({KB_2989382})"
            )
        else:
            remedy = _new_public_certificate_remedy(context.server, name)
        context.add(
            FindingCode.NO_SMTP_CERT_FOR_FQDN, severity, summary,
            [a.thumbprint for a in covering], remedy,
        )


def _is_public_without_smtp(analysis: CertificateAnalysis) -> bool:
    return analysis.trust == "public" and analysis.within_validity and analysis.has_smtp is False


def _connector_tls_names(context: _Context) -> None:
    predicted = {s.connector: s.thumbprint for s in context.outbound}
    for connector in context.connectors:
        pinned = connector.tls_certificate_name
        cloud = connector in context.cloud
        if pinned is None or not pinned.raw.strip():
            if cloud:
                thumbprint = predicted.get(connector.name)
                context.add(
                    FindingCode.CONNECTOR_TLS_CERT_MISSING,
                    "warning",
                    f"Cloud send connector '{connector.name}'{_disabled(connector)} has no "
                    "TlsCertificateName, so the certificate it presents depends on Exchange's "
                    "ranking, which a newer certificate can change.",
                    [thumbprint] if thumbprint else [],
                    context.pin_remedy(connector),
                )
            continue
        if not pinned.is_well_formed:
            context.add(
                FindingCode.CONNECTOR_TLS_CERT_SYNTAX,
                "warning",
                f"Send connector '{connector.name}'{_disabled(connector)} has TlsCertificateName "
                f"{pinned.raw!r}, which is not in <I>issuer<S>subject form.",
                [],
                context.pin_remedy(connector),
            )
            continue
        named = [a for a in context.certificates if is_named_by(a.cert, pinned)]
        base: Severity = "critical" if cloud else "warning"
        if not named:
            context.add(
                FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND,
                _cap(base, connector),
                f"Send connector '{connector.name}'{_disabled(connector)} names {pinned.raw}, "
                f"but no certificate on {context.server} has that Issuer and Subject.",
                [],
                "Import the certificate on this server (Import-ExchangeCertificate -Server "
                f"{quote_argument(context.server)} -FileData <pfx> -Password <password>) and "
                "enable SMTP on it, or pin the connector to a certificate that is here: "
                + context.pin_remedy(connector),
            )
        elif not any(_usable_for_connector(a) for a in named):
            problems = ", ".join(
                f"{short_thumbprint(a.thumbprint)}: {_unusable_reason(a)}" for a in named
            )
            only_smtp_missing = all(
                a.has_smtp is False and a.within_validity and is_valid_status(a.cert.status)
                for a in named
            )
            remedy = (
                f"Enable-ExchangeCertificate -Server {quote_argument(context.server)} "
                f"-Thumbprint {named[0].thumbprint} -Services SMTP ({KB_2989382})"
                if only_smtp_missing
                else context.pin_remedy(connector)
            )
            context.add(
                FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND,
                _cap(base, connector),
                f"Send connector '{connector.name}'{_disabled(connector)} names {pinned.raw}; "
                f"the certificate is on {context.server} but Exchange cannot use it "
                f"({problems}).",
                [a.thumbprint for a in named],
                remedy,
            )


def _usable_for_connector(analysis: CertificateAnalysis) -> bool:
    return (
        analysis.has_smtp is not False
        and analysis.within_validity
        and is_valid_status(analysis.cert.status)
    )


def _unusable_reason(analysis: CertificateAnalysis) -> str:
    reasons = []
    if analysis.has_smtp is False:
        reasons.append("SMTP is not enabled")
    if not analysis.within_validity:
        reasons.append("outside its validity")
    if not is_valid_status(analysis.cert.status):
        reasons.append(f"Status {status_name(analysis.cert.status)}")
    return ", ".join(reasons)


def _hybrid_mismatch(context: _Context) -> None:
    hybrid = context.snapshot.hybrid
    if hybrid is None or hybrid.tls_certificate_name is None:
        return
    hybrid_name = hybrid.tls_certificate_name
    if hybrid_name.raw.strip() and not hybrid_name.is_well_formed:
        context.add(
            FindingCode.CONNECTOR_TLS_CERT_SYNTAX,
            "warning",
            f"The hybrid configuration has TlsCertificateName {hybrid_name.raw!r}, which is not "
            "in <I>issuer<S>subject form.",
            [],
            'Set-HybridConfiguration -TlsCertificateName "<I>{issuer}<S>{subject}" of the '
            "publicly trusted certificate (or re-run the Hybrid Configuration Wizard)",
        )
    for connector in context.cloud:
        pinned = connector.tls_certificate_name
        if pinned is None or not pinned.raw.strip():
            continue
        if tls_certificate_names_equal(pinned, hybrid_name):
            continue
        connector_public = [
            a for a in context.certificates if is_usable_public(a) and is_named_by(a.cert, pinned)
        ]
        hybrid_public = [
            a for a in context.certificates
            if is_usable_public(a) and is_named_by(a.cert, hybrid_name)
        ]
        if connector_public and not hybrid_public:
            remedy = f'Set-HybridConfiguration -TlsCertificateName "{pinned.raw}"'
        elif hybrid_public:
            remedy = pin_connector_command(connector.name, hybrid_name.raw)
        else:
            remedy = (
                "Pin both to the publicly trusted certificate: "
                + context.pin_remedy(connector)
                + '; Set-HybridConfiguration -TlsCertificateName "<the same value>"'
            )
        context.add(
            FindingCode.CONNECTOR_TLS_CERT_MISMATCH,
            "warning",
            f"Send connector '{connector.name}'{_disabled(connector)} has TlsCertificateName "
            f"{pinned.raw}, the hybrid configuration {hybrid_name.raw}; the Hybrid "
            "Configuration Wizard would put the hybrid value back.",
            [a.thumbprint for a in (*connector_public, *hybrid_public)],
            remedy,
        )


def _renew_remedy(server: str, analysis: CertificateAnalysis) -> str:
    thumbprint = analysis.thumbprint
    quoted = quote_argument(server)
    if is_auth_certificate(analysis.cert):
        return (
            "Renew the Auth certificate (CSS-Exchange MonitorExchangeAuthCertificate.ps1 does "
            "it), or by hand: New-ExchangeCertificate -KeySize 2048 -PrivateKeyExportable $true "
            '-SubjectName "cn=Microsoft Exchange Server Auth Certificate" -FriendlyName '
            '"Microsoft Exchange Server Auth Certificate" -DomainName @(); '
            "Set-AuthConfig -NewCertificateThumbprint <new> -NewCertificateEffectiveDate "
            "(Get-Date); Set-AuthConfig -PublishCertificate; "
            "Set-AuthConfig -ClearPreviousCertificate"
        )
    if not analysis.in_use:
        return (
            "Nothing uses it: remove it: "
            f"Remove-ExchangeCertificate -Server {quoted} -Thumbprint {thumbprint}"
        )
    if analysis.is_self_signed:
        return (
            f"Renew it: Get-ExchangeCertificate -Server {quoted} -Thumbprint {thumbprint} | "
            "New-ExchangeCertificate -PrivateKeyExportable $true (same names, services "
            f"enabled again), then Remove-ExchangeCertificate -Server {quoted} "
            f"-Thumbprint {thumbprint}"
        )
    services = analysis.cert.services
    keep = services.names() if services else ["<its services>"]
    return (
        f"Renew it with its CA: Get-ExchangeCertificate -Server {quoted} -Thumbprint "
        f"{thumbprint} | New-ExchangeCertificate -GenerateRequest -RequestFile <path>; "
        f"Import-ExchangeCertificate -Server {quoted} -FileData <issued file>; "
        + f"Enable-ExchangeCertificate -Server {quoted} -Thumbprint <new> -Services "
        + ",".join(keep)
        + f" ({KB_2989382} if asked); connectors pinned by Issuer+Subject keep working when "
        "both stay the same"
    )


def _reissue_remedy(server: str, analysis: CertificateAnalysis, what: str) -> str:
    quoted = quote_argument(server)
    domains = ",".join(quote_argument(d) for d in analysis.cert.domains) or "<names>"
    services = analysis.cert.services
    service_list = ",".join(services.names()) if services else "<its services>"
    if not analysis.in_use:
        return (
            "Nothing uses it: remove it: Remove-ExchangeCertificate -Server "
            f"{quoted} -Thumbprint {analysis.thumbprint}"
        )
    if analysis.is_self_signed:
        return (
            f"Replace it with {what}: New-ExchangeCertificate -Server {quoted} -KeySize 2048 "
            f"-DomainName {domains} -Services {service_list or 'None'} ({KB_2989382}), then "
            f"Remove-ExchangeCertificate -Server {quoted} -Thumbprint {analysis.thumbprint}"
        )
    return (
        f"Have the CA issue a replacement with {what}: New-ExchangeCertificate -Server {quoted} "
        f'-GenerateRequest -KeySize 2048 -SubjectName "{analysis.cert.subject}" -DomainName '
        f"{domains} -RequestFile <path>; Import-ExchangeCertificate -Server {quoted} "
        f"-FileData <issued file>; Enable-ExchangeCertificate -Server {quoted} -Thumbprint "
        f"<new> -Services {service_list or 'None'}"
    )


def _per_certificate(context: _Context) -> None:
    now = as_utc(context.now)
    for analysis in context.certificates:
        cert = analysis.cert
        in_use = analysis.in_use
        use = f"Services {services_text(cert.services)}"
        if not in_use:
            use += ", not used"
        label = _label(analysis)
        if now > as_utc(cert.not_after):
            context.add(
                FindingCode.CERT_EXPIRED,
                "critical" if in_use else "info",
                f"Certificate {label} expired on {as_utc(cert.not_after):%Y-%m-%d} ({use}).",
                [analysis.thumbprint],
                _renew_remedy(context.server, analysis),
            )
        elif analysis.days_left < EXPIRY_WARNING_DAYS:
            if not in_use:
                severity: Severity = "info"
            elif analysis.days_left < EXPIRY_CRITICAL_DAYS:
                severity = "critical"
            else:
                severity = "warning"
            context.add(
                FindingCode.CERT_EXPIRING,
                severity,
                f"Certificate {label} expires on {as_utc(cert.not_after):%Y-%m-%d}, in "
                f"{analysis.days_left} days ({use}).",
                [analysis.thumbprint],
                _renew_remedy(context.server, analysis),
            )
        if (
            "rsa" in cert.key_algorithm.lower()
            and cert.key_size is not None
            and cert.key_size < MINIMUM_RSA_BITS
        ):
            context.add(
                FindingCode.CERT_WEAK_KEY,
                "warning" if in_use else "info",
                f"Certificate {label} has a {cert.key_size}-bit RSA key; at least "
                f"{MINIMUM_RSA_BITS} bits are required ({use}).",
                [analysis.thumbprint],
                _reissue_remedy(context.server, analysis, "a 2048-bit key"),
            )
        signature = (cert.signature_hash or "").lower().replace("-", "").replace("_", "")
        if signature in WEAK_SIGNATURE_HASHES:
            summary = f"Certificate {label} is signed with {signature.upper()} ({use})."
            if analysis.is_self_signed:
                summary += (
                    " It is self-signed: nothing is trusted through that signature, so this is "
                    "for information."
                )
            context.add(
                FindingCode.CERT_WEAK_SIGNATURE,
                "warning" if in_use and not analysis.is_self_signed else "info",
                summary,
                [analysis.thumbprint],
                _reissue_remedy(context.server, analysis, "a SHA-256 signature"),
            )


def _services_unknown(context: _Context) -> None:
    unknown = [a for a in context.certificates if a.cert.services is None]
    if not unknown:
        return
    relevant = [
        a for a in unknown
        if a.matches_fqdn or any(
            c.tls_certificate_name is not None and is_named_by(a.cert, c.tls_certificate_name)
            for c in context.connectors
        )
    ]
    summary = (
        f"Services (and Status, RootCAType) could not be read for {len(unknown)} of "
        f"{len(context.certificates)} certificates; analysis of the SMTP bindings is limited."
    )
    if relevant:
        summary += (
            " Whether SMTP is bound to "
            + ", ".join(_label(a) for a in relevant)
            + " is unknown, so the KB 2888788 condition cannot be ruled out."
        )
    context.add(
        FindingCode.SERVICES_UNKNOWN,
        "warning" if relevant else "info",
        summary,
        [a.thumbprint for a in unknown],
        f"Read them on the server: Get-ExchangeCertificate -Server "
        f"{quote_argument(context.server)} | Format-List Thumbprint,Services,RootCAType,Status. "
        "Over remote PowerShell they arrive only in SerializationData: make sure the client "
        "accepts serialization payload signing (Exchange Nov 2023 SU) or that Select-Object "
        "is available on the endpoint.",
    )


def unreachable_finding(name: str, fqdn: str | None, error: str) -> Finding:
    """SERVER_UNREACHABLE: a warning; the verdict treats an unreachable server as unknown."""
    host = fqdn or name
    return Finding(
        FindingCode.SERVER_UNREACHABLE,
        "warning",
        f"Server {name} could not be checked: {error}",
        (),
        f"Check the connection: Test-NetConnection {quote_argument(host)} -Port 80; the remote "
        f"PowerShell endpoint http://{host}/PowerShell/ and the credentials named in the "
        "configuration.",
    )
