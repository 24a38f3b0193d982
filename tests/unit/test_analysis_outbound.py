"""Outbound certificate prediction: the documented ranking, by example and by property."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.analysis.model import Trust, TrustAssessment
from bot.analysis.outbound import connector_applies_to_server, predict_outbound_certificate
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeServer,
    ExchangeService,
    ServerSnapshot,
)
from tests.unit.certgen import (
    NOW,
    SERVER,
    cloud_connector,
    days,
    healthy_scenario,
    kb_scenario,
    pki,
    tls_name_of,
)


def test_kb_scenario_predicts_the_newer_internal_certificate() -> None:
    scenario = kb_scenario()
    connector = scenario.snapshot.send_connectors[0]
    selection = predict_outbound_certificate(scenario.snapshot, connector, pki().store, NOW)
    assert selection.thumbprint == scenario.internal.thumbprint
    assert selection.trust == "internal"
    assert [c.thumbprint for c in selection.candidates] == [
        scenario.internal.thumbprint, scenario.public.thumbprint, scenario.default.thumbprint,
    ]
    assert "server FQDN ex01.contoso.com" in selection.reason
    assert "first valid CA-issued certificate wins" in selection.reason
    assert "Prediction" in selection.reason
    assert not selection.uncertain


def test_pinned_connector_considers_only_the_named_certificate() -> None:
    scenario = healthy_scenario()
    connector = scenario.snapshot.send_connectors[0]
    kb = replace(scenario.snapshot, certificates=kb_scenario().snapshot.certificates)
    selection = predict_outbound_certificate(kb, connector, pki().store, NOW)
    assert selection.thumbprint == scenario.public.thumbprint
    assert [c.thumbprint for c in selection.candidates] == [scenario.public.thumbprint]
    assert "only certificates with exactly that Issuer and Subject" in selection.reason


def test_malformed_pin_is_ignored_and_said_so() -> None:
    scenario = kb_scenario()
    connector = cloud_connector("CN=mail.contoso.com")
    selection = predict_outbound_certificate(scenario.snapshot, connector, pki().store, NOW)
    assert selection.thumbprint == scenario.internal.thumbprint
    assert "not in <I>issuer<S>subject form" in selection.reason


def test_connector_fqdn_is_used_before_server_fqdn() -> None:
    scenario = kb_scenario()
    connector = cloud_connector(None, fqdn="mail.contoso.com")
    selection = predict_outbound_certificate(scenario.snapshot, connector, pki().store, NOW)
    assert selection.thumbprint == scenario.public.thumbprint
    assert "connector FQDN mail.contoso.com" in selection.reason


def test_self_signed_only_when_no_ca_issued_certificate_is_valid() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        certificates=(
            replace(scenario.public, status=CertificateStatus.REVOKED),
            replace(scenario.internal, status=CertificateStatus.UNTRUSTED),
            scenario.default,
        ),
    )
    selection = predict_outbound_certificate(
        snapshot, snapshot.send_connectors[0], pki().store, NOW
    )
    assert selection.thumbprint == scenario.default.thumbprint
    assert "newest valid self-signed certificate" in selection.reason
    assert "Status Untrusted: not valid" in selection.reason


def test_expired_and_smtp_less_certificates_are_left_out() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        certificates=(
            replace(scenario.internal, not_after=NOW - days(1)),
            replace(scenario.public, services=ExchangeService.IIS),
            scenario.default,
        ),
    )
    selection = predict_outbound_certificate(
        snapshot, snapshot.send_connectors[0], pki().store, NOW
    )
    assert selection.thumbprint == scenario.default.thumbprint
    assert f"{scenario.internal.thumbprint[:8]} (expired)" in selection.reason
    assert f"{scenario.public.thumbprint[:8]} (SMTP not enabled)" in selection.reason


def test_unknown_services_make_the_prediction_uncertain() -> None:
    scenario = kb_scenario()
    snapshot = replace(
        scenario.snapshot,
        certificates=tuple(replace(c, services=None, status=None)
                           for c in scenario.snapshot.certificates),
    )
    selection = predict_outbound_certificate(
        snapshot, snapshot.send_connectors[0], pki().store, NOW
    )
    assert selection.uncertain
    assert selection.thumbprint == scenario.internal.thumbprint
    assert "the prediction is uncertain" in selection.reason


def test_nothing_predicted_without_any_fqdn() -> None:
    snapshot = replace(kb_scenario().snapshot, server=ExchangeServer(name="EX01", fqdn=None))
    selection = predict_outbound_certificate(
        snapshot, cloud_connector(None), pki().store, NOW
    )
    assert selection.thumbprint is None
    assert selection.uncertain


def test_connector_applies_to_its_source_servers_only() -> None:
    assert connector_applies_to_server(cloud_connector(None), SERVER)
    assert connector_applies_to_server(
        cloud_connector(None, source_transport_servers=("ex01.contoso.com",)), SERVER
    )
    assert not connector_applies_to_server(
        cloud_connector(None, source_transport_servers=("EX02",)), SERVER
    )
    assert connector_applies_to_server(
        cloud_connector(None, source_transport_servers=()), SERVER
    )


# Properties: generated certificate sets (no real DER needed: trust is given per thumbprint).

TRUSTS: tuple[Trust, ...] = ("public", "internal", "self-signed", "unknown")


@st.composite
def certificate_sets(
    draw: st.DrawFn,
) -> tuple[list[ExchangeCertificate], dict[str, TrustAssessment]]:
    count = draw(st.integers(min_value=0, max_value=8))
    certificates: list[ExchangeCertificate] = []
    trusts: dict[str, TrustAssessment] = {}
    for index in range(count):
        trust = draw(st.sampled_from(TRUSTS))
        start = NOW + timedelta(hours=draw(st.integers(min_value=-2000, max_value=50)))
        end = start + timedelta(hours=draw(st.integers(min_value=1, max_value=4000)))
        services = draw(st.sampled_from([
            ExchangeService.SMTP, ExchangeService.IIS | ExchangeService.SMTP,
            ExchangeService.IIS, None,
        ]))
        status = draw(st.sampled_from([
            CertificateStatus.VALID, CertificateStatus.UNTRUSTED, None,
        ]))
        issuer = draw(st.sampled_from(["CN=Issuer A", "CN=Issuer B"]))
        subject = draw(st.sampled_from(["CN=ex01.contoso.com", "CN=mail.contoso.com"]))
        domains = draw(st.sampled_from([
            ("ex01.contoso.com",), ("mail.contoso.com",), ("*.contoso.com",),
            ("other.fabrikam.com",),
        ]))
        thumbprint = f"{index:040X}"
        certificates.append(ExchangeCertificate(
            thumbprint=thumbprint, der=b"", subject=subject,
            issuer=subject if trust == "self-signed" else issuer, serial_number=str(index),
            domains=domains, not_before=start, not_after=end,
            self_signed=trust == "self-signed", key_algorithm="RSA", key_size=2048,
            signature_hash="sha256", extended_key_usages=(), services=services, status=status,
        ))
        trusts[thumbprint] = TrustAssessment(trust, ())
    return certificates, trusts


@settings(max_examples=200, deadline=None)
@given(certificate_sets(), st.sampled_from([None, "<I>CN=Issuer A<S>CN=mail.contoso.com",
                                            "<I>CN=mail.contoso.com<S>CN=mail.contoso.com"]))
def test_ranking_invariants(
    generated: tuple[list[ExchangeCertificate], dict[str, TrustAssessment]], pin: str | None
) -> None:
    certificates, trusts = generated
    snapshot = ServerSnapshot(server=SERVER, taken_at=NOW, certificates=tuple(certificates))
    connector = cloud_connector(pin)
    selection = predict_outbound_certificate(
        snapshot, connector, pki().store, NOW, assessments=trusts
    )
    by_thumbprint = {c.thumbprint: c for c in certificates}
    candidates = [by_thumbprint[c.thumbprint] for c in selection.candidates]

    for cert in candidates:
        assert cert.services is None or ExchangeService.SMTP in cert.services
        assert cert.not_before <= NOW <= cert.not_after
        if pin is not None:
            issuer, subject = pin[3:].split("<S>")
            assert (cert.issuer, cert.subject) == (issuer, subject)

    starts = [c.not_before for c in candidates]
    assert starts == sorted(starts, reverse=True)

    valid_ca_issued = [
        c for c in selection.candidates if c.valid and c.ca_issued
    ]
    if valid_ca_issued:
        winner = by_thumbprint[selection.thumbprint or ""]
        assert not winner.self_signed
        assert winner.not_before == max(by_thumbprint[c.thumbprint].not_before
                                        for c in valid_ca_issued)
    elif selection.thumbprint is not None:
        assert trusts[selection.thumbprint].trust == "self-signed"
    if selection.thumbprint is not None:
        assert selection.thumbprint in {c.thumbprint for c in selection.candidates}
        assert selection.trust == trusts[selection.thumbprint].trust
    assert selection.uncertain == any(not c.services_known for c in selection.candidates)


def test_healthy_pin_matches_hybrid_value_spelled_differently() -> None:
    scenario = healthy_scenario()
    public = scenario.public
    spaced = tls_name_of(public).replace(", ", ",").lower()
    selection = predict_outbound_certificate(
        scenario.snapshot, cloud_connector(spaced), pki().store, NOW
    )
    assert selection.thumbprint == public.thumbprint
