"""X.509 facts: Windows name strings, names, self-signature, algorithms, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.exchange.remote_object import read_clixml_file, type_suffix_matches
from bot.exchange.x509_facts import CertificateParseError, certificate_facts, windows_name

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2026, 1, 1, tzinfo=UTC)


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _certificate(subject: x509.Name, *, issuer: x509.Name | None = None,
                 key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                 | ed25519.Ed25519PrivateKey | None = None,
                 signing_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                 | ed25519.Ed25519PrivateKey | None = None,
                 dns_names: tuple[str, ...] = (), serial: int = 0x1234,
                 eku: tuple[x509.ObjectIdentifier, ...] = (),
                 algorithm: hashes.SHA256 | hashes.SHA384 | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    signing_key = signing_key or key
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer or subject)
               .public_key(key.public_key())
               .serial_number(serial)
               .not_valid_before(NOT_BEFORE)
               .not_valid_after(NOT_AFTER))
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if isinstance(signing_key, ed25519.Ed25519PrivateKey):
        certificate = builder.sign(signing_key, None)
    else:
        certificate = builder.sign(signing_key, algorithm or hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER)


def _to_string_sections(text: str) -> dict[str, str]:
    return dict(re.findall(r"\[([^\]]+)\]\r?\n  (.*?)\r?\n", text))


def _fixture_certificates() -> list[tuple[str, bytes, str]]:
    if not FIXTURES.is_dir():
        return []
    found = []
    for path in sorted(FIXTURES.glob("*.xml")):
        for obj in read_clixml_file(path):
            raw = obj.get("RawData")
            if type_suffix_matches(obj, "ExchangeCertificate") and isinstance(raw, bytes):
                found.append((path.name, raw, obj.to_string or ""))
    return found


FIXTURE_CERTIFICATES = _fixture_certificates()


@pytest.mark.skipif(not FIXTURE_CERTIFICATES,
                    reason=f"Exchange CLIXML fixtures not found at {FIXTURES}")
@pytest.mark.parametrize(("file_name", "der", "to_string"), FIXTURE_CERTIFICATES,
                         ids=[f"{name}-{index}" for index, (name, _, _)
                              in enumerate(FIXTURE_CERTIFICATES)])
def test_matches_what_exchange_printed_for_every_fixture_certificate(
        file_name: str, der: bytes, to_string: str) -> None:
    facts = certificate_facts(der)
    shown = _to_string_sections(to_string)
    assert facts.subject == shown["Subject"]
    assert facts.issuer == shown["Issuer"]
    assert facts.serial_number == shown["Serial Number"]
    assert facts.thumbprint == shown["Thumbprint"]
    assert facts.not_before.tzinfo is not None


@pytest.mark.skipif(not FIXTURE_CERTIFICATES, reason=f"fixtures not found at {FIXTURES}")
def test_exchange_self_signed_sha1_certificates_count_as_self_signed() -> None:
    auth = [certificate_facts(der) for _, der, text in FIXTURE_CERTIFICATES
            if "Microsoft Exchange Server Auth Certificate" in text]
    sha1_auth = [facts for facts in auth if facts.signature_hash == "sha1"]
    assert sha1_auth, "fixtures hold SHA-1 Auth certificates"
    assert all(facts.self_signed for facts in sha1_auth)
    assert all(facts.domains == () for facts in auth), "a CN with spaces is not a host name"


@pytest.mark.skipif(not FIXTURE_CERTIFICATES, reason=f"fixtures not found at {FIXTURES}")
def test_odd_country_code_is_reported_not_fatal() -> None:
    germany = [certificate_facts(der) for _, der, text in FIXTURE_CERTIFICATES
               if "C=Germany" in text]
    assert germany
    facts = germany[0]
    assert facts.subject == "CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany"
    assert facts.domains == ("domain.com", "sub.domain.com")
    assert any("length" in problem for problem in facts.problems)


def test_windows_name_is_most_specific_first_with_windows_keys_and_quotes() -> None:
    name = _name((NameOID.COUNTRY_NAME, "US"), (NameOID.STATE_OR_PROVINCE_NAME, "Utah"),
                 (NameOID.ORGANIZATION_NAME, "DigiCert, Inc."),
                 (NameOID.ORGANIZATIONAL_UNIT_NAME, 'Say "hi"'),
                 (NameOID.EMAIL_ADDRESS, "pki@example.com"),
                 (NameOID.DOMAIN_COMPONENT, "example"),
                 (NameOID.BUSINESS_CATEGORY, "Private Organization"),
                 (NameOID.COMMON_NAME, " padded "))
    assert windows_name(name) == (
        'CN=" padded ", OID.2.5.4.15=Private Organization, DC=example, E=pki@example.com, '
        'OU="Say ""hi""", O="DigiCert, Inc.", S=Utah, C=US')


def test_multi_valued_rdn_joins_with_plus() -> None:
    name = x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "a"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b")])])
    assert windows_name(name) in ("CN=a + OU=b", "OU=b + CN=a")


def test_domains_are_cn_then_san_without_case_duplicates() -> None:
    der = _certificate(_name((NameOID.COMMON_NAME, "Mail.Contoso.com")),
                       dns_names=("mail.contoso.com", "autodiscover.contoso.com",
                                  "*.contoso.com", "AUTODISCOVER.contoso.com"))
    facts = certificate_facts(der)
    assert facts.domains == ("Mail.Contoso.com", "autodiscover.contoso.com", "*.contoso.com")


def test_ca_issued_certificate_is_not_self_signed_and_reports_its_algorithms() -> None:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Corp"),
                    (NameOID.COMMON_NAME, "Corp Root"))
    der = _certificate(_name((NameOID.COMMON_NAME, "ex01.contoso.com")), issuer=ca_name,
                       key=leaf_key, signing_key=ca_key, algorithm=hashes.SHA384(),
                       eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    facts = certificate_facts(der)
    assert facts.issuer == "CN=Corp Root, O=Corp, C=US"
    assert facts.self_signed is False
    assert (facts.key_algorithm, facts.key_size) == ("RSA", 2048)
    assert facts.signature_hash == "sha384"
    assert facts.signature_algorithm_oid == "1.2.840.10045.4.3.3"
    assert facts.extended_key_usages == ("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2")
    assert facts.not_before == NOT_BEFORE
    assert facts.not_after == NOT_AFTER
    assert facts.version == 3


def test_same_names_but_foreign_signature_is_not_self_signed() -> None:
    subject = _name((NameOID.COMMON_NAME, "mail.contoso.com"))
    impostor = _certificate(subject, key=ec.generate_private_key(ec.SECP256R1()),
                            signing_key=ec.generate_private_key(ec.SECP256R1()))
    genuine = _certificate(subject)
    assert certificate_facts(impostor).self_signed is False
    assert certificate_facts(genuine).self_signed is True
    assert certificate_facts(genuine).key_algorithm == "EC"
    assert certificate_facts(genuine).key_size == 256


def test_ed25519_certificate_has_no_hash_and_verifies() -> None:
    der = _certificate(_name((NameOID.COMMON_NAME, "ed.example")),
                       key=ed25519.Ed25519PrivateKey.generate())
    facts = certificate_facts(der)
    assert (facts.key_algorithm, facts.key_size, facts.signature_hash) == ("Ed25519", None, None)
    assert facts.self_signed is True


@pytest.mark.parametrize(("serial", "expected"), [
    (0x1234, "1234"),
    (0x80, "0080"),
    (0x7F, "7F"),
    (0x00C1A2B3, "00C1A2B3"),
])
def test_serial_is_the_encoded_bytes_in_upper_case_hex(serial: int, expected: str) -> None:
    der = _certificate(_name((NameOID.COMMON_NAME, "s.example")), serial=serial)
    assert certificate_facts(der).serial_number == expected


def test_thumbprint_is_upper_case_sha1_of_the_der() -> None:
    der = _certificate(_name((NameOID.COMMON_NAME, "t.example")))
    expected = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    assert certificate_facts(der).thumbprint == expected


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01", b"not a certificate",
                                     b"\x30\x82\xff\xff" + b"\x00" * 16])
def test_malformed_der_raises_certificate_parse_error(garbage: bytes) -> None:
    with pytest.raises(CertificateParseError, match="certificate"):
        certificate_facts(garbage)


def test_non_bytes_input_raises_certificate_parse_error() -> None:
    with pytest.raises(CertificateParseError, match="bytes"):
        certificate_facts("MIIB...")  # type: ignore[arg-type]


def test_truncated_real_certificate_raises_certificate_parse_error() -> None:
    der = _certificate(_name((NameOID.COMMON_NAME, "t.example")))
    with pytest.raises(CertificateParseError):
        certificate_facts(der[:-10])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_facts_or_the_typed_error(data: bytes) -> None:
    with contextlib.suppress(CertificateParseError):
        certificate_facts(data)


_SAMPLE_DER = _certificate(_name((NameOID.COMMON_NAME, "sample.example")),
                           dns_names=("sample.example", "www.sample.example"),
                           eku=(ExtendedKeyUsageOID.SERVER_AUTH,))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_bit_flips_in_a_real_certificate_give_facts_or_the_typed_error(
        data: st.DataObject) -> None:
    der = bytearray(_SAMPLE_DER)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(der) - 1))
        der[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CertificateParseError):
        certificate_facts(bytes(der))


def test_sample_is_valid_for_the_fuzz_above() -> None:
    facts = certificate_facts(_SAMPLE_DER)
    assert facts.domains == ("sample.example", "www.sample.example")
    assert facts.not_after - facts.not_before == timedelta(days=731)
