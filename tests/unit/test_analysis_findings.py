"""Every finding code: when it is raised, how severe, and the cmdlet in its remedy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.analysis.analyse import analyse_server, unreachable_server
from bot.analysis.model import Finding, FindingCode, ServerAnalysis
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeService,
    HybridConfiguration,
    Queue,
    RootCAType,
    SendConnector,
    ServerSnapshot,
    ServicesSource,
    TlsCertificateName,
)
from tests.unit.certgen import (
    HCW_CONNECTOR,
    NOW,
    cloud_connector,
    days,
    ec_key,
    exchange_certificate,
    healthy_scenario,
    issue_leaf,
    kb_scenario,
    pki,
    rsa_key,
    tls_name_of,
)


def analyse(snapshot: ServerSnapshot) -> ServerAnalysis:
    return analyse_server(snapshot, pki().store, NOW)


def only(analysis: ServerAnalysis, code: FindingCode) -> Finding:
    found = [f for f in analysis.findings if f.code == code]
    assert len(found) == 1, analysis.findings
    return found[0]


def codes(analysis: ServerAnalysis) -> set[FindingCode]:
    return {f.code for f in analysis.findings}


def test_kb_scenario_findings() -> None:
    scenario = kb_scenario()
    analysis = analyse(scenario.snapshot)
    assert codes(analysis) == {
        FindingCode.SMTP_MIXED_TRUST_BINDING,
        FindingCode.OUTBOUND_CERT_UNTRUSTED,
        FindingCode.QUEUE_TLS_REJECTED,
        FindingCode.CONNECTOR_TLS_CERT_MISSING,
    }
    mixed = only(analysis, FindingCode.SMTP_MIXED_TRUST_BINDING)
    assert mixed.severity == "critical"
    assert set(mixed.thumbprints) == {scenario.public.thumbprint, scenario.internal.thumbprint}
    pin = (
        f'Set-SendConnector -Identity "{HCW_CONNECTOR}" '
        f'-TlsCertificateName "{tls_name_of(scenario.public)}"'
    )
    assert pin in mixed.remedy
    assert (
        f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {scenario.internal.thumbprint} "
        "-Services IMAP,POP" in mixed.remedy
    )
    untrusted = only(analysis, FindingCode.OUTBOUND_CERT_UNTRUSTED)
    assert untrusted.severity == "critical"
    assert untrusted.thumbprints == (scenario.internal.thumbprint,)
    assert untrusted.remedy == pin
    queue = only(analysis, FindingCode.QUEUE_TLS_REJECTED)
    assert queue.severity == "critical"
    assert queue.thumbprints == (scenario.internal.thumbprint,)
    assert (
        "Retry-Queue -Server EX01 -Filter \"NextHopDomain -eq "
        "'contoso.mail.protection.outlook.com' -and Status -eq 'Retry'\"" in queue.remedy
    )
    missing = only(analysis, FindingCode.CONNECTOR_TLS_CERT_MISSING)
    assert missing.severity == "warning"
    assert [f.severity for f in analysis.findings] == ["critical"] * 3 + ["warning"]


def test_healthy_scenario_has_no_findings() -> None:
    assert analyse(healthy_scenario().snapshot).findings == ()


def test_mixed_binding_is_a_warning_once_connectors_are_pinned() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector(tls_name_of(scenario.public)),),
        queues=(),
    )
    analysis = analyse(snapshot)
    assert codes(analysis) == {FindingCode.SMTP_MIXED_TRUST_BINDING}
    mixed = only(analysis, FindingCode.SMTP_MIXED_TRUST_BINDING)
    assert mixed.severity == "warning"
    assert "Set-SendConnector" not in mixed.remedy
    assert "Enable-ExchangeCertificate" in mixed.remedy


def test_mixed_binding_with_unknown_trust_is_a_warning() -> None:
    scenario = kb_scenario()
    unknown = replace(scenario.internal, root_ca_type=None)
    store = replace(pki().store, internal_roots=())
    snapshot = replace(
        scenario.snapshot,
        certificates=(scenario.public, unknown, scenario.default),
        queues=(),
    )
    analysis = analyse_server(snapshot, store, NOW)
    mixed = only(analysis, FindingCode.SMTP_MIXED_TRUST_BINDING)
    assert mixed.severity == "warning"
    assert "could not be established" in mixed.summary
    untrusted = only(analysis, FindingCode.OUTBOUND_CERT_UNTRUSTED)
    assert untrusted.severity == "warning"


def test_public_and_self_signed_alone_is_not_the_kb_condition() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        certificates=(scenario.public, scenario.default),
        send_connectors=(cloud_connector(tls_name_of(scenario.public)),),
        queues=(),
    )
    assert codes(analyse(snapshot)) == set()


def test_connector_pinned_to_self_signed_certificate() -> None:
    """The real fixture: 'Mail to O365' pinned to <I>CN=localhost<S>CN=localhost."""
    scenario = kb_scenario()
    localhost = exchange_certificate(
        issue_leaf(None, "localhost", domains=("localhost",), key=ec_key(9)),
        services=ExchangeService.SMTP,
    )
    snapshot = replace(
        scenario.snapshot,
        certificates=(scenario.public, localhost),
        send_connectors=(cloud_connector("<I>CN=localhost<S>CN=localhost", name="Mail to O365"),),
        hybrid=None,
        queues=(),
    )
    analysis = analyse(snapshot)
    untrusted = only(analysis, FindingCode.OUTBOUND_CERT_UNTRUSTED)
    assert untrusted.severity == "critical"
    assert untrusted.thumbprints == (localhost.thumbprint,)
    assert "(self-signed)" in untrusted.summary
    assert untrusted.remedy.startswith('Set-SendConnector -Identity "Mail to O365"')


def test_connector_tls_certificate_not_found() -> None:
    scenario = healthy_scenario()
    missing_name = "<I>CN=GeoTrust TLS RSA CA G1, O=DigiCert Inc, C=US<S>CN=mail.contoso.com"
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector(missing_name),), hybrid=None
    )
    analysis = analyse(snapshot)
    found = only(analysis, FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND)
    assert found.severity == "critical"
    assert "Import-ExchangeCertificate -Server EX01" in found.remedy
    assert tls_name_of(scenario.public) in found.remedy


def test_connector_tls_certificate_without_smtp_counts_as_not_found() -> None:
    scenario = healthy_scenario()
    iis_only = replace(scenario.public, services=ExchangeService.IIS)
    snapshot = replace(
        scenario.snapshot, certificates=(iis_only, scenario.default), hybrid=None
    )
    found = only(analyse(snapshot), FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND)
    assert "SMTP is not enabled" in found.summary
    assert "Exchange cannot use it" in found.summary
    assert found.remedy.startswith(
        f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {scenario.public.thumbprint} "
        "-Services SMTP"
    )


def test_non_cloud_connector_not_found_is_a_warning() -> None:
    scenario = healthy_scenario()
    partner = SendConnector(
        name="To Partner", enabled=True, cloud_services_mail_enabled=False,
        smart_hosts=("smtp.fabrikam.com",), address_spaces=("smtp:fabrikam.com;1",), fqdn=None,
        require_tls=True, tls_auth_level=None, tls_domain=None,
        tls_certificate_name=TlsCertificateName.parse("<I>CN=Nobody<S>CN=nothing"),
    )
    snapshot = replace(
        scenario.snapshot, send_connectors=(*scenario.snapshot.send_connectors, partner)
    )
    found = only(analyse(snapshot), FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND)
    assert found.severity == "warning"


def test_connector_tls_certificate_syntax() -> None:
    scenario = healthy_scenario()
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector("CN=mail.contoso.com"),)
    )
    analysis = analyse(snapshot)
    syntax = only(analysis, FindingCode.CONNECTOR_TLS_CERT_SYNTAX)
    assert syntax.severity == "warning"
    assert f'-TlsCertificateName "{tls_name_of(scenario.public)}"' in syntax.remedy
    assert FindingCode.CONNECTOR_TLS_CERT_MISMATCH in codes(analysis)


def test_connector_and_hybrid_configuration_differ() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        send_connectors=(cloud_connector(tls_name_of(scenario.public)),),
        hybrid=replace(
            scenario.snapshot.hybrid,
            tls_certificate_name=TlsCertificateName.parse(tls_name_of(scenario.internal)),
        ),
        queues=(),
    )
    mismatch = only(analyse(snapshot), FindingCode.CONNECTOR_TLS_CERT_MISMATCH)
    assert mismatch.severity == "warning"
    assert mismatch.remedy == (
        f'Set-HybridConfiguration -TlsCertificateName "{tls_name_of(scenario.public)}"'
    )


def test_same_pin_spelled_differently_is_no_mismatch() -> None:
    scenario = healthy_scenario()
    assert scenario.snapshot.hybrid is not None
    respelled = tls_name_of(scenario.public).replace(", ", ",").upper()
    snapshot = replace(
        scenario.snapshot,
        hybrid=HybridConfiguration(TlsCertificateName.parse(respelled), None, (), ()),
    )
    assert FindingCode.CONNECTOR_TLS_CERT_MISMATCH not in codes(analyse(snapshot))


def test_no_smtp_certificate_for_the_fqdn() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        certificates=(replace(scenario.public, services=ExchangeService.IIS), scenario.auth),
        queues=(),
    )
    analysis = analyse(snapshot)
    missing = only(analysis, FindingCode.NO_SMTP_CERT_FOR_FQDN)
    assert missing.severity == "critical"
    assert "ex01.contoso.com" in missing.summary
    assert missing.remedy.startswith(
        f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {scenario.public.thumbprint} "
        "-Services SMTP"
    )
    assert "KB 2989382" in missing.remedy


def test_no_smtp_certificate_without_cloud_connector_is_a_warning() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, certificates=(scenario.auth,), send_connectors=(), queues=(),
        hybrid=None,
    )
    missing = only(analyse(snapshot), FindingCode.NO_SMTP_CERT_FOR_FQDN)
    assert missing.severity == "warning"
    assert "New-ExchangeCertificate -Server EX01 -GenerateRequest" in missing.remedy


@pytest.mark.parametrize(
    ("days_left", "code", "severity"),
    [
        (-3, FindingCode.CERT_EXPIRED, "critical"),
        (10, FindingCode.CERT_EXPIRING, "critical"),
        (29, FindingCode.CERT_EXPIRING, "critical"),
        (30, FindingCode.CERT_EXPIRING, "warning"),
        (59, FindingCode.CERT_EXPIRING, "warning"),
        (60, None, None),
    ],
)
def test_expiry_thresholds(days_left: int, code: FindingCode | None, severity: str | None) -> None:
    scenario = healthy_scenario()
    public = exchange_certificate(
        issue_leaf(pki().public_ca, "mail.contoso.com",
                   domains=("mail.contoso.com", "ex01.contoso.com"),
                   not_before=NOW - days(300), not_after=NOW + days(days_left, ) + days(0.5)
                   if days_left >= 0 else NOW + days(days_left), key=ec_key(2)),
        root_ca_type=RootCAType.THIRD_PARTY,
    )
    snapshot = replace(scenario.snapshot, certificates=(public, scenario.default))
    found = [f for f in analyse(snapshot).findings
             if f.code in (FindingCode.CERT_EXPIRED, FindingCode.CERT_EXPIRING)]
    if code is None:
        assert found == []
    else:
        assert [(f.code, f.severity) for f in found] == [(code, severity)]
        assert found[0].thumbprints == (public.thumbprint,)
        assert "New-ExchangeCertificate -GenerateRequest" in found[0].remedy


def test_unused_expired_certificate_is_info_with_removal() -> None:
    scenario = healthy_scenario()
    old = exchange_certificate(
        issue_leaf(pki().public_ca, "old.contoso.com",
                   not_before=NOW - days(800), not_after=NOW - days(400), key=ec_key(10)),
        services=ExchangeService.NONE,
    )
    snapshot = replace(
        scenario.snapshot, certificates=(*scenario.snapshot.certificates, old)
    )
    expired = only(analyse(snapshot), FindingCode.CERT_EXPIRED)
    assert expired.severity == "info"
    assert expired.remedy.endswith(
        f"Remove-ExchangeCertificate -Server EX01 -Thumbprint {old.thumbprint}"
    )


def test_expiring_auth_certificate_is_critical_even_without_services() -> None:
    scenario = healthy_scenario()
    auth = exchange_certificate(
        issue_leaf(None, "Microsoft Exchange Server Auth Certificate",
                   not_before=NOW - days(1800), not_after=NOW + days(12), key=ec_key(5)),
        services=ExchangeService.NONE,
    )
    snapshot = replace(
        scenario.snapshot, certificates=(scenario.public, scenario.default, auth)
    )
    expiring = only(analyse(snapshot), FindingCode.CERT_EXPIRING)
    assert expiring.severity == "critical"
    assert "Set-AuthConfig -NewCertificateThumbprint" in expiring.remedy


def test_weak_key_and_sha1_signature() -> None:
    scenario = healthy_scenario()
    weak = exchange_certificate(
        issue_leaf(pki().internal_root, "legacy.contoso.com", key=rsa_key(1024, 0),
                   signature="sha1"),
        services=ExchangeService.IIS,
    )
    unused_weak = exchange_certificate(
        issue_leaf(None, "spare", key=rsa_key(1024, 0)), services=ExchangeService.NONE,
    )
    snapshot = replace(
        scenario.snapshot, certificates=(*scenario.snapshot.certificates, weak, unused_weak)
    )
    analysis = analyse(snapshot)
    weak_keys = {f.thumbprints[0]: f for f in analysis.findings
                 if f.code == FindingCode.CERT_WEAK_KEY}
    assert weak_keys[weak.thumbprint].severity == "warning"
    assert "1024-bit RSA key" in weak_keys[weak.thumbprint].summary
    assert "-KeySize 2048" in weak_keys[weak.thumbprint].remedy
    assert weak_keys[unused_weak.thumbprint].severity == "info"
    signature = only(analysis, FindingCode.CERT_WEAK_SIGNATURE)
    assert signature.thumbprints == (weak.thumbprint,)
    assert signature.severity == "warning"
    assert "SHA1" in signature.summary


def test_sha1_self_signed_default_certificate_is_only_info() -> None:
    """Exchange's own default and Auth certificates are SHA-1 signed (see the fixtures)."""
    scenario = healthy_scenario()
    default = exchange_certificate(
        issue_leaf(None, "EX01", domains=("EX01", "ex01.contoso.com"), key=rsa_key(2048, 7),
                   signature="sha1"),
        services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.IIS
        | ExchangeService.SMTP,
    )
    snapshot = replace(scenario.snapshot, certificates=(scenario.public, default))
    analysis = analyse(snapshot)
    signature = only(analysis, FindingCode.CERT_WEAK_SIGNATURE)
    assert signature.severity == "info"
    assert "self-signed" in signature.summary
    assert analysis.certificates[1].trust == "self-signed"


def test_services_unknown() -> None:
    scenario = kb_scenario()
    blind = tuple(
        replace(c, services=None, status=None, root_ca_type=None,
                services_source=ServicesSource.UNKNOWN)
        for c in scenario.snapshot.certificates
    )
    snapshot = replace(scenario.snapshot, certificates=blind)
    analysis = analyse(snapshot)
    unknown = only(analysis, FindingCode.SERVICES_UNKNOWN)
    assert unknown.severity == "warning"
    assert "cannot be ruled out" in unknown.summary
    assert (
        "Get-ExchangeCertificate -Server EX01 | Format-List Thumbprint,Services" in unknown.remedy
    )
    assert FindingCode.SMTP_MIXED_TRUST_BINDING not in codes(analysis)
    assert only(analysis, FindingCode.OUTBOUND_CERT_UNTRUSTED).severity == "critical"


def test_services_unknown_only_for_unrelated_certificates_is_info() -> None:
    scenario = healthy_scenario()
    other = exchange_certificate(
        issue_leaf(pki().public_ca, "legacy.fabrikam.com", key=ec_key(11)),
        services_source=ServicesSource.UNKNOWN,
    )
    snapshot = replace(
        scenario.snapshot, certificates=(*scenario.snapshot.certificates, other)
    )
    assert only(analyse(snapshot), FindingCode.SERVICES_UNKNOWN).severity == "info"


def test_queue_rejection_matches_case_insensitively_and_only_for_exchange_online() -> None:
    scenario = healthy_scenario()
    queues = (
        Queue("EX01\\1", "SmartHostConnectorDelivery", "contoso.mail.protection.outlook.com",
              "Retry", 3, "TLS channel: untrustedroot"),
        Queue("EX01\\2", "SmartHostConnectorDelivery", "smtp.fabrikam.com", "Retry", 3,
              "454 4.7.0 Temporary authentication failure"),
        Queue("EX01\\3", "SmartHostConnectorDelivery", "contoso.mail.protection.outlook.com",
              "Retry", 3, "451 4.4.0 DNS query failed"),
    )
    snapshot = replace(scenario.snapshot, queues=queues)
    found = only(analyse(snapshot), FindingCode.QUEUE_TLS_REJECTED)
    assert "EX01\\1" in found.summary
    assert found.thumbprints == (scenario.public.thumbprint,)


def test_disabled_connector_findings_are_capped_at_warning() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot, send_connectors=(cloud_connector(None, enabled=False),), queues=()
    )
    untrusted = only(analyse(snapshot), FindingCode.OUTBOUND_CERT_UNTRUSTED)
    assert untrusted.severity == "warning"
    assert "(connector disabled)" in untrusted.summary


def test_connector_of_another_server_is_ignored() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        send_connectors=(cloud_connector(None, source_transport_servers=("EX02",)),),
        queues=(),
    )
    analysis = analyse(snapshot)
    assert analysis.outbound == ()
    assert FindingCode.CONNECTOR_TLS_CERT_MISSING not in codes(analysis)


def test_server_unreachable() -> None:
    analysis = unreachable_server("EX02", "ex02.contoso.com", "connection refused")
    assert not analysis.reachable
    finding = only(analysis, FindingCode.SERVER_UNREACHABLE)
    assert finding.severity == "warning"
    assert "connection refused" in finding.summary
    assert "http://ex02.contoso.com/PowerShell/" in finding.remedy


def test_pinned_certificate_with_bad_status_is_reported() -> None:
    scenario = healthy_scenario()
    revoked = replace(scenario.public, status=CertificateStatus.REVOKED)
    snapshot = replace(scenario.snapshot, certificates=(revoked, scenario.default))
    analysis = analyse(snapshot)
    assert any("Exchange Status Revoked" in line for line in analysis.certificates[0].evidence)
    assert analysis.outbound[0].thumbprint is None
    found = only(analysis, FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND)
    assert found.severity == "critical"
    assert "Status Revoked" in found.summary
