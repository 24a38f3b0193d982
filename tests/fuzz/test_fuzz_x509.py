"""Fuzz ``certificate_facts``: DER bytes -> ``X509Facts`` or ``CertificateParseError``.

Inputs: the fixtures' real certificates (RawData) with TLV-aware mutations (elements deleted,
duplicated, re-tagged, swapped, wrapped; contents and INTEGERs replaced) and raw byte
mutations; random bytes; and valid certificates with hostile names built by cryptography,
which must always read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import assume, example, given
from hypothesis import strategies as st

from bot.exchange.x509_facts import CertificateParseError, X509Facts, certificate_facts
from tests.fuzz import (
    DerNode,
    assert_readable,
    bounded,
    der_decode,
    der_encode,
    fuzz_settings,
    mutated_der,
    real_certificates,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive")  # mutated serials; cryptography warns


def check_facts(der: bytes) -> X509Facts | None:
    try:
        facts = bounded(lambda: certificate_facts(der), "certificate_facts")
    except CertificateParseError as error:
        assert_readable(str(error))
        return None
    assert isinstance(facts, X509Facts)
    assert facts.thumbprint == hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    assert isinstance(facts.subject, str)
    assert isinstance(facts.issuer, str)
    assert all(isinstance(name, str) and name for name in facts.domains)
    assert facts.not_before.tzinfo is not None
    assert facts.not_after.tzinfo is not None
    assert all(isinstance(problem, str) for problem in facts.problems)
    assert facts.version in (1, 3)
    return facts


def test_real_certificates_read() -> None:
    for der in real_certificates():
        assert check_facts(der) is not None


def _duplicated_first_extension(der: bytes) -> bytes:
    root = der_decode(der)
    assert root.children is not None
    tbs = root.children[0]
    assert tbs.children is not None
    extensions = tbs.children[-1].children
    assert extensions is not None
    assert extensions[0].children is not None
    extensions[0].children.append(extensions[0].children[0])
    return der_encode(root)


def test_a_duplicated_extension_is_a_problem_not_a_crash() -> None:
    """Found by fuzzing: cryptography raises DuplicateExtension (not a ValueError)."""
    der = _duplicated_first_extension(real_certificates()[0])
    facts = check_facts(der)
    assert facts is not None
    assert any("extensions are unreadable" in problem for problem in facts.problems)


@given(mutated_der(real_certificates()))
@example(b"\x30\x80" + b"\x00" * 4)  # indefinite length (BER, not DER)
@example(b"\x30\x84\xff\xff\xff\xff")  # a length beyond the data
@example(b"\x30" + b"\x81\x00")
@fuzz_settings()
def test_mutated_certificates_read_or_fail_cleanly(der: bytes) -> None:
    check_facts(der)


@given(st.binary(max_size=2048))
@example(b"")
@fuzz_settings()
def test_random_bytes(der: bytes) -> None:
    check_facts(der)


@given(st.sampled_from(real_certificates()), st.integers(0, 4096),
       st.binary(min_size=1, max_size=4))
@fuzz_settings()
def test_byte_patches(der: bytes, at: int, patch: bytes) -> None:
    position = at % len(der)
    check_facts(der[:position] + patch + der[position + len(patch):])


def test_wrong_input_types_are_parse_errors() -> None:
    for value in (None, "MIIDKTCC", 42, [1, 2]):
        with pytest.raises(CertificateParseError):
            certificate_facts(value)  # type: ignore[arg-type]
    der = real_certificates()[0]
    assert certificate_facts(bytearray(der)) == certificate_facts(der)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Valid certificates with hostile content: always readable
# ---------------------------------------------------------------------------------------------

@cache
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


NAME_OIDS = (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
             NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.STREET_ADDRESS,
             NameOID.DOMAIN_COMPONENT, NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER,
             NameOID.TITLE, x509.ObjectIdentifier("1.2.3.4.5"))
hostile_name_text = st.one_of(
    st.text(min_size=1, max_size=64),
    st.sampled_from(["mail.contoso.com", "*.contoso.com", " padded ", '"quoted"', "a,b+c=d",
                     "\x00nul", "bidi\u202etxt", "ｍａｉｌ.contoso.com", "xn--mnchen-3ya.de",
                     "<!channel>", "a" * 64, "CN=evil, O=x", "#hex", "line\nbreak", "é"]),
)


@st.composite
def hostile_certificates(draw: st.DrawFn) -> bytes:
    try:  # cryptography refuses some values up front (a 65-character CN, a 3-letter C=...)
        attributes = [
            x509.NameAttribute(draw(st.sampled_from(NAME_OIDS)), draw(hostile_name_text))
            for _ in range(draw(st.integers(0, 4)))
        ]
    except ValueError:
        assume(False)
        raise
    name = x509.Name(attributes)
    sans: list[x509.GeneralName] = [
        x509.DNSName(draw(st.text(st.characters(codec="ascii"), min_size=1, max_size=40)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    issuer = name if draw(st.booleans()) else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")])
    start = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 60000)))
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
               .public_key(signing_key().public_key())
               .serial_number(draw(st.integers(1, 2**159 - 1)))
               .not_valid_before(start)
               .not_valid_after(start + timedelta(days=draw(st.integers(0, 40000)))))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    try:
        certificate = builder.sign(signing_key(), hashes.SHA256())
    except ValueError:
        assume(False)
        raise
    return certificate.public_bytes(Encoding.DER)


@given(hostile_certificates())
@fuzz_settings()
def test_valid_certificates_with_hostile_names_always_read(der: bytes) -> None:
    facts = check_facts(der)
    assert facts is not None
    assert facts.problems == () or all(isinstance(problem, str) for problem in facts.problems)


def test_der_helpers_round_trip() -> None:
    for der in real_certificates():
        assert der_encode(der_decode(der)) == der
    assert der_encode(DerNode(0x04, b"x" * 200))[:3] == b"\x04\x81\xc8"
