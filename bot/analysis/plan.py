"""The remediation plan of docs/product.md section 2, as data with a stable hash.

A plan exists only when, for the server FQDN or the FQDN a cloud connector looks for, SMTP is
bound both to a publicly trusted certificate and to one that is not. Steps, in order:

a. ``pin_connector``: every cloud send connector of the server not already pinned to a usable
   public certificate is pinned to the public certificate the ranking would choose among the
   public ones covering its name.
b. ``unbind_smtp``: every competing certificate that is ``internal`` gets
   ``Enable-ExchangeCertificate -Services <its services minus SMTP>`` (KB 2888788), never a
   service it lacks. Shown but skipped, with the reason: SMTP as the only service (nothing to
   keep); Services unknown; trust ``unknown`` (not unbound on a guess); and ``self-signed``
   certificates: Exchange selects those only when no CA-issued certificate is valid, and needs
   the default self-signed certificate for internal transport and EdgeSync.
c. ``retry_queue``: ``Retry-Queue`` for each smart host domain of the cloud connectors and each
   queue to Exchange Online.

A plan whose pin and unbind steps are all skipped (or limited away by ``scope``) is no plan:
``None``. Steps carry no volatile facts (no message counts), so a plan recomputed from an
unchanged server has the same hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from bot.analysis.certificates import (
    is_named_by,
    services_text,
    short_thumbprint,
    tls_certificate_name_value,
)
from bot.analysis.commands import (
    enable_services_parameters,
    pin_connector_parameters,
    render_command,
    retry_queue_parameters,
)
from bot.analysis.model import (
    CertificateAnalysis,
    PlanScope,
    PlanStep,
    RemediationPlan,
    StepKind,
)
from bot.analysis.names import certificate_matches
from bot.analysis.outbound import (
    cloud_connectors,
    is_valid_status,
    ranking_key,
    selection_name,
)
from bot.exchange.snapshot import ExchangeService, SendConnector, ServerSnapshot


def is_usable_public(analysis: CertificateAnalysis) -> bool:
    """Public, within validity, SMTP known to be enabled, Status Valid or unknown."""
    return (
        analysis.trust == "public"
        and analysis.within_validity
        and analysis.has_smtp is True
        and is_valid_status(analysis.cert.status)
    )


def best_public_certificate(
    certificates: Sequence[CertificateAnalysis], name: str | None
) -> CertificateAnalysis | None:
    """The usable public certificate covering ``name`` that the ranking puts first."""
    if not name:
        return None
    matching = [
        a for a in certificates if is_usable_public(a) and certificate_matches(a.cert, name)
    ]
    matching.sort(key=lambda a: ranking_key(a.cert))
    return matching[0] if matching else None


def is_pinned_to_public(
    connector: SendConnector, certificates: Sequence[CertificateAnalysis]
) -> bool:
    pinned = connector.tls_certificate_name
    if pinned is None or not pinned.is_well_formed:
        return False
    return any(is_usable_public(a) and is_named_by(a.cert, pinned) for a in certificates)


def checked_names(snapshot: ServerSnapshot) -> tuple[str, ...]:
    """The server FQDN and the names the server's cloud connectors look for (no duplicates)."""
    names: list[str] = []
    for name in (
        snapshot.server.fqdn,
        *(selection_name(c, snapshot.server) for c in cloud_connectors(snapshot)),
    ):
        if name and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return tuple(names)


def contested_names(
    snapshot: ServerSnapshot, certificates: Sequence[CertificateAnalysis]
) -> tuple[str, ...]:
    """Names covered by a usable public SMTP certificate and by a non-public SMTP one."""
    contested = []
    for name in checked_names(snapshot):
        covering = [
            a for a in certificates
            if a.within_validity and a.has_smtp is True and certificate_matches(a.cert, name)
        ]
        if any(is_usable_public(a) for a in covering) and any(
            a.trust != "public" for a in covering
        ):
            contested.append(name)
    return tuple(contested)


def unbind_services(services: ExchangeService) -> list[str]:
    """The services a certificate keeps once SMTP is taken away (Exchange's names)."""
    return (services & ~ExchangeService.SMTP).names()


def _skipped(kind: StepKind, cmdlet: str, target: str, before: str, reason: str) -> PlanStep:
    return PlanStep(
        kind=kind,
        cmdlet=cmdlet,
        parameters=(),
        display="",
        target=target,
        before=before,
        after="unchanged",
        skipped_reason=reason,
    )


def pin_step(
    connector: SendConnector, certificates: Sequence[CertificateAnalysis], server_fqdn: str | None
) -> PlanStep:
    """Pin ``connector`` to the public certificate the ranking prefers for its name."""
    current = connector.tls_certificate_name.raw if connector.tls_certificate_name else None
    before = f"TlsCertificateName: {current}" if current else "TlsCertificateName: (not set)"
    name = (connector.fqdn or "").strip() or server_fqdn
    target = best_public_certificate(certificates, name)
    if target is None:
        return _skipped(
            "pin_connector", "Set-SendConnector", connector.name, before,
            f"no publicly trusted certificate with SMTP covers {name or 'the connector name'}",
        )
    value = tls_certificate_name_value(target.cert)
    parameters = pin_connector_parameters(connector.name, value)
    return PlanStep(
        kind="pin_connector",
        cmdlet="Set-SendConnector",
        parameters=parameters,
        display=render_command("Set-SendConnector", parameters),
        target=connector.name,
        before=before,
        after=f"TlsCertificateName: {value} ({short_thumbprint(target.thumbprint)}, public)",
    )


def unbind_step(server: str, analysis: CertificateAnalysis) -> PlanStep:
    """Take SMTP off a non-public certificate, or say why that is not done."""
    thumbprint = analysis.thumbprint
    services = analysis.cert.services
    before = f"Services: {services_text(services)}"
    cmdlet = "Enable-ExchangeCertificate"
    if services is None:
        return _skipped(
            "unbind_smtp", cmdlet, thumbprint, before,
            "Services unknown: SMTP may not be bound, and the services to keep cannot be named",
        )
    if analysis.is_self_signed:
        return _skipped(
            "unbind_smtp", cmdlet, thumbprint, before,
            "self-signed: Exchange selects it only when no CA-issued certificate is valid, and "
            "needs the default self-signed certificate for internal transport; left as it is",
        )
    if analysis.trust != "internal":
        return _skipped(
            "unbind_smtp", cmdlet, thumbprint, before,
            f"trust {analysis.trust}: not unbound on a guess; add its issuing CA to the trust "
            "store (intermediates / internal roots) to decide",
        )
    keep = unbind_services(services)
    if not keep:
        return _skipped(
            "unbind_smtp", cmdlet, thumbprint, before,
            "SMTP is its only service, so there is nothing to keep and Enable-ExchangeCertificate "
            "cannot take SMTP away; once the connectors are pinned, remove the certificate if "
            "nothing uses it: Remove-ExchangeCertificate "
            f"-Server {server} -Thumbprint {thumbprint}",
        )
    parameters = enable_services_parameters(server, thumbprint, keep)
    return PlanStep(
        kind="unbind_smtp",
        cmdlet=cmdlet,
        parameters=parameters,
        display=render_command(cmdlet, parameters),
        target=thumbprint,
        before=before,
        after=(
            f"Services: {', '.join(keep)} (SMTP removed; -Services is documented as additive, "
            "so the result is read back)"
        ),
    )


def retry_step(server: str, domain: str) -> PlanStep:
    parameters = retry_queue_parameters(server, domain)
    return PlanStep(
        kind="retry_queue",
        cmdlet="Retry-Queue",
        parameters=parameters,
        display=render_command("Retry-Queue", parameters),
        target=domain,
        before=f"messages to {domain} waiting for the next retry",
        after=f"queue to {domain} retried now; it drains once Exchange Online accepts the "
        "certificate",
    )


def retry_domains(snapshot: ServerSnapshot) -> tuple[str, ...]:
    """Smart host domains of the cloud connectors and queues to Exchange Online, sorted."""
    domains = {
        host.strip().lower()
        for connector in cloud_connectors(snapshot)
        for host in connector.smart_hosts
        if host.strip()
    }
    domains.update(
        queue.next_hop_domain.strip().lower()
        for queue in snapshot.queues
        if queue.is_to_exchange_online and queue.next_hop_domain
    )
    return tuple(sorted(domains))


def plan_hash(server: str, steps: Sequence[PlanStep]) -> str:
    """SHA-256 (hex) over the canonical JSON of the server name and the steps."""
    document = {
        "server": server,
        "steps": [
            {
                "kind": step.kind,
                "cmdlet": step.cmdlet,
                "parameters": [[name, value] for name, value in step.parameters],
                "display": step.display,
                "target": step.target,
                "before": step.before,
                "after": step.after,
                "skipped_reason": step.skipped_reason,
            }
            for step in steps
        ],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_plan(
    snapshot: ServerSnapshot,
    certificates: Sequence[CertificateAnalysis],
    scope: PlanScope = "all",
) -> RemediationPlan | None:
    """The ordered steps that end the KB 2888788 condition on this server, or None.

    ``certificates`` are the server's analysed certificates (see ``analyse_server``);
    ``scope`` limits the plan to the pins (``pin``) or the unbinding (``unbind``).
    """
    contested = contested_names(snapshot, certificates)
    if not contested:
        return None
    server = snapshot.server.name
    steps: list[PlanStep] = []
    if scope in ("all", "pin"):
        for connector in sorted(cloud_connectors(snapshot), key=lambda c: c.name.casefold()):
            if not is_pinned_to_public(connector, certificates):
                steps.append(pin_step(connector, certificates, snapshot.server.fqdn))
    if scope in ("all", "unbind"):
        for analysis in sorted(certificates, key=lambda a: a.thumbprint):
            if (
                analysis.trust == "public"
                or not analysis.within_validity
                or analysis.has_smtp is False
                or not any(certificate_matches(analysis.cert, name) for name in contested)
            ):
                continue
            steps.append(unbind_step(server, analysis))
    if not any(step.runnable for step in steps):
        return None
    steps.extend(retry_step(server, domain) for domain in retry_domains(snapshot))
    frozen = tuple(steps)
    return RemediationPlan(server=server, steps=frozen, hash=plan_hash(server, frozen))
