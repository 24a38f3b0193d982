"""Real X.509 for the lab: chains, names, key sizes, signatures and speed."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bot.lab.pki import LabPKI, dotnet_name, dotnet_serial_number, x509_name
from bot.lab.state import LabState, default_state, parse_state

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def state() -> LabState:
    return default_state(now=NOW)


@pytest.fixture(scope="module")
def pki(state: LabState) -> LabPKI:
    return LabPKI.build(state)


def verify_server(leaf: x509.Certificate, roots: list[x509.Certificate], name: str) -> None:
    verifier = PolicyBuilder().store(Store(roots)).time(NOW) \
        .build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, [])


def test_ca_certificates_are_self_signed_roots(pki: LabPKI) -> None:
    for ca_id in ("public-root", "corp-root"):
        root = pki.ca_certificate(ca_id)
        assert root.subject == root.issuer
        root.verify_directly_issued_by(root)
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert usage.crl_sign
    assert dotnet_name(pki.ca_certificate("public-root").subject) == \
        "CN=Contoso Public Root CA, O=Lab Trust Services, C=US"


def test_public_roots_are_only_the_public_cas(pki: LabPKI) -> None:
    assert pki.public_root_certificates() == [pki.ca_certificate("public-root")]
    assert pki.is_public_ca("public-root")
    assert not pki.is_public_ca("corp-root")
    assert not pki.is_public_ca(None)


def test_public_leaf_chains_to_the_public_root_only(pki: LabPKI) -> None:
    leaf = pki.certificate("EX01", "public-cert").certificate
    verify_server(leaf, pki.public_root_certificates(), "ex01.contoso.com")
    verify_server(leaf, pki.public_root_certificates(), "autodiscover.contoso.com")
    with pytest.raises(VerificationError):
        verify_server(leaf, [pki.ca_certificate("corp-root")], "ex01.contoso.com")


def test_internal_leaf_chains_to_the_corp_root_not_to_a_public_one(pki: LabPKI) -> None:
    leaf = pki.certificate("EX01", "internal-cert").certificate
    verify_server(leaf, [pki.ca_certificate("corp-root")], "ex01.contoso.com")
    with pytest.raises(VerificationError):
        verify_server(leaf, pki.public_root_certificates(), "ex01.contoso.com")


def test_self_signed_leaf_chains_to_nothing(pki: LabPKI) -> None:
    issued = pki.certificate("EX01", "exchange-self-signed")
    assert issued.self_signed
    assert issued.ca_id is None
    issued.certificate.verify_directly_issued_by(issued.certificate)
    with pytest.raises(VerificationError):
        verify_server(issued.certificate, pki.ca_certificates(), "ex01.contoso.com")


def test_leaf_facts(pki: LabPKI, state: LabState) -> None:
    issued = pki.certificate("EX01", "public-cert")
    cert = issued.certificate
    spec = state.servers[0].certificate("public-cert")
    assert spec is not None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(spec.domains)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert issued.thumbprint == hashlib.sha1(issued.der, usedforsecurity=False).hexdigest().upper()
    assert issued.subject == "CN=mail.contoso.com"
    assert issued.issuer == "CN=Contoso Public Root CA, O=Lab Trust Services, C=US"
    assert issued.not_before == spec.not_before
    assert issued.not_after == spec.not_after
    assert issued.signature_algorithm == "sha256RSA"
    assert issued.public_key_size == 2048
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_auth_certificate_has_no_subject_alternative_name(pki: LabPKI) -> None:
    cert = pki.certificate("EX01", "auth-cert").certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def _state_with(signature: str, key_size: int) -> LabState:
    document = {
        "tenant": "contoso",
        "cas": [{"id": "public-root", "public": True}],
        "servers": [{
            "name": "EX01", "fqdn": "ex01.contoso.com",
            "certificates": [{
                "id": "weak", "issuer": "public-root", "subject": "CN=ex01.contoso.com",
                "domains": ["ex01.contoso.com"], "not_before": "-1d", "not_after": "+10d",
                "services": ["SMTP"], "signature": signature, "key_size": key_size,
            }],
        }],
        "users": [{"name": "admin", "password": "x"}],
    }
    return parse_state(yaml.safe_dump(document), source="t.yaml", now=NOW)


def test_sha1_signature_and_small_key_for_weak_certificates() -> None:
    pki = LabPKI.build(_state_with("sha1", 1024))
    issued = pki.certificate("EX01", "weak")
    cert = issued.certificate
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    assert issued.signature_algorithm == "sha1RSA"
    assert cert.public_key().key_size == 1024  # type: ignore[union-attr]
    root_key = pki.ca_certificate("public-root").public_key()
    assert isinstance(root_key, rsa.RSAPublicKey)
    root_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                    hashes.SHA1())  # noqa: S303
    assert issued.thumbprint == hashlib.sha1(cert.public_bytes(
        serialization.Encoding.DER), usedforsecurity=False).hexdigest().upper()


def test_sha384_signature() -> None:
    cert = LabPKI.build(_state_with("sha384", 2048)).certificate("EX01", "weak").certificate
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    cert.verify_directly_issued_by(
        LabPKI.build(_state_with("sha384", 2048)).ca_certificate("public-root"))


def test_building_twice_gives_the_same_certificates(state: LabState, pki: LabPKI) -> None:
    again = LabPKI.build(state)
    for server in state.servers:
        for spec in server.certificates:
            assert again.certificate(server.name, spec.id).der == \
                pki.certificate(server.name, spec.id).der


def test_serials_are_distinct_and_in_dotnet_form(pki: LabPKI, state: LabState) -> None:
    serials = {pki.certificate("EX01", c.id).certificate.serial_number
               for c in state.servers[0].certificates}
    assert len(serials) == len(state.servers[0].certificates)
    assert dotnet_serial_number(0x80) == "0080"
    assert dotnet_serial_number(0x7F) == "7F"
    assert dotnet_serial_number(0x1234) == "1234"


def test_names_round_trip_in_dotnet_form() -> None:
    text = 'CN=mail.contoso.com, O="Contoso, Ltd", L=Amsterdam, C=NL'
    assert dotnet_name(x509_name(text)) == text


def test_fifty_servers_build_in_about_a_second() -> None:
    servers = []
    for number in range(1, 51):
        name = f"EX{number:02}"
        fqdn = f"{name.lower()}.contoso.com"
        servers.append({
            "name": name, "fqdn": fqdn,
            "certificates": [
                {"id": "public", "issuer": "public-root", "subject": "CN=mail.contoso.com",
                 "domains": ["mail.contoso.com", fqdn], "not_before": "-60d",
                 "not_after": "+300d", "services": ["IIS", "SMTP"]},
                {"id": "internal", "issuer": "corp-root", "subject": f"CN={fqdn}",
                 "domains": [fqdn], "not_before": "-10d", "not_after": "+700d",
                 "services": ["SMTP"]},
                {"id": "setup", "issuer": "self", "subject": f"CN={name}",
                 "domains": [name, fqdn], "not_before": "-400d", "not_after": "+1400d",
                 "services": ["IMAP", "POP", "IIS", "SMTP"]},
                {"id": "auth", "issuer": "self",
                 "subject": "CN=Microsoft Exchange Server Auth Certificate",
                 "not_before": "-400d", "not_after": "+1400d", "services": ["SMTP"]},
            ],
            "send_connectors": [{"name": "Outbound to Office 365", "cloud": True}],
            "queue_messages": 10,
        })
    document = {
        "tenant": "contoso",
        "cas": [{"id": "public-root", "public": True}, {"id": "corp-root", "public": False}],
        "servers": servers,
    }
    text = yaml.safe_dump(document)
    LabPKI.build(default_state(now=NOW))  # warm the process-wide key pool
    started = time.perf_counter()
    state = parse_state(text, source="fleet.yaml", now=NOW)
    pki = LabPKI.build(state)
    elapsed = time.perf_counter() - started
    assert len({pki.certificate(s.name, "internal").thumbprint for s in state.servers}) == 50
    assert elapsed < 3.0, f"building 50 servers took {elapsed:.2f} s"
