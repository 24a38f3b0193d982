"""X.509 facts of a DER certificate, in the forms Exchange and Windows print them.

Pure: no I/O. ``certificate_facts`` reads one DER certificate (``RawData`` of
``Get-ExchangeCertificate``) and returns what the analysis needs: thumbprint, the Windows
string form of subject and issuer (most-specific RDN first, ``S=`` for the state, quoted values),
serial, names, validity, self-signature, key and signature algorithms, EKUs.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.x509.oid import ExtensionOID, NameOID


class CertificateParseError(ValueError):
    """The bytes are not a readable DER X.509 certificate."""


@dataclass(frozen=True)
class X509Facts:
    """What one certificate says about itself (nothing about Exchange's bindings)."""

    thumbprint: str
    subject: str
    issuer: str
    serial_number: str
    domains: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    self_signed: bool
    key_algorithm: str
    key_size: int | None
    signature_hash: str | None
    signature_algorithm_oid: str
    extended_key_usages: tuple[str, ...]
    version: int
    problems: tuple[str, ...] = ()


# Attribute keys of Windows' CertNameToStr (CERT_X500_NAME_STR), which Exchange's Subject,
# Issuer and TlsCertificateName use. Anything else prints as ``OID.<dotted>``.
_WINDOWS_ATTRIBUTE_KEYS: dict[str, str] = {
    NameOID.COMMON_NAME.dotted_string: "CN",
    NameOID.LOCALITY_NAME.dotted_string: "L",
    NameOID.ORGANIZATION_NAME.dotted_string: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string: "OU",
    NameOID.EMAIL_ADDRESS.dotted_string: "E",
    NameOID.COUNTRY_NAME.dotted_string: "C",
    NameOID.STATE_OR_PROVINCE_NAME.dotted_string: "S",
    NameOID.STREET_ADDRESS.dotted_string: "STREET",
    NameOID.TITLE.dotted_string: "T",
    NameOID.GIVEN_NAME.dotted_string: "G",
    NameOID.INITIALS.dotted_string: "I",
    NameOID.SURNAME.dotted_string: "SN",
    NameOID.DOMAIN_COMPONENT.dotted_string: "DC",
    NameOID.SERIAL_NUMBER.dotted_string: "SERIALNUMBER",
    NameOID.POSTAL_CODE.dotted_string: "PostalCode",
    "2.5.4.13": "Description",
    "2.5.4.18": "POBox",
    "2.5.4.20": "Phone",
}

# CertNameToStr quotes a value holding any of these, or leading/trailing white space.
_CHARACTERS_NEEDING_QUOTES = frozenset(',+="<>#;\r\n')

# Signature algorithm OID -> hash, after microsoft/CSS-Exchange HealthChecker
# (Get-ExchangeServerCertificates.ps1), so weak hashes cryptography cannot name still show.
_SIGNATURE_HASH_BY_OID: dict[str, str] = {
    "1.2.840.113549.1.1.2": "md2",
    "1.2.840.113549.1.1.3": "md4",
    "1.2.840.113549.1.1.4": "md5",
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.10040.4.3": "sha1",
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.3.14.3.2.29": "sha1",
    "1.3.14.3.2.3": "md5",
}

EKU_FRIENDLY_NAMES: dict[str, str] = {
    "1.3.6.1.5.5.7.3.1": "Server Authentication",
    "1.3.6.1.5.5.7.3.2": "Client Authentication",
    "1.3.6.1.5.5.7.3.3": "Code Signing",
    "1.3.6.1.5.5.7.3.4": "Secure Email",
    "1.3.6.1.5.5.7.3.8": "Time Stamping",
    "1.3.6.1.5.5.7.3.9": "OCSP Signing",
    "1.3.6.1.4.1.311.10.3.4": "Encrypting File System",
    "1.3.6.1.4.1.311.20.2.2": "Smart Card Logon",
    "2.5.29.37.0": "Any Purpose",
}
"""Windows' display names of common extended key usages, for renderers."""

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?$")


def certificate_facts(der: bytes) -> X509Facts:
    """Read a DER certificate; raise :class:`CertificateParseError` when it is not one."""
    if not isinstance(der, bytes | bytearray | memoryview):
        raise CertificateParseError(
            f"certificate data must be bytes (DER), not {type(der).__name__}")
    data = bytes(der)
    if not data:
        raise CertificateParseError("certificate data is empty")
    try:
        certificate = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as error:
        raise CertificateParseError(f"not a DER X.509 certificate: {error}") from None
    try:
        return _facts_of(certificate, data)
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm,
            x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        raise CertificateParseError(f"unreadable X.509 certificate: {error}") from None


def windows_name(name: x509.Name) -> str:
    """A distinguished name as Windows prints it: ``CN=host, OU=Unit, O=Org, C=US``."""
    rdns = []
    for rdn in reversed(list(name.rdns)):
        rdns.append(" + ".join(_windows_attribute(attribute) for attribute in rdn))
    return ", ".join(rdns)


def _windows_attribute(attribute: x509.NameAttribute[str | bytes]) -> str:
    dotted = attribute.oid.dotted_string
    key = _WINDOWS_ATTRIBUTE_KEYS.get(dotted, f"OID.{dotted}")
    value = attribute.value
    if isinstance(value, bytes):
        return f"{key}=#{value.hex().upper()}"
    needs_quotes = (value != value.strip() or value == ""
                    or any(character in _CHARACTERS_NEEDING_QUOTES for character in value))
    if needs_quotes:
        value = '"' + value.replace('"', '""') + '"'
    return f"{key}={value}"


def _facts_of(certificate: x509.Certificate, der: bytes) -> X509Facts:
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subject = windows_name(certificate.subject)
        issuer = windows_name(certificate.issuer)
    problems.extend(sorted({f"name attribute: {warning.message}" for warning in caught}))
    extensions = _extensions(certificate, problems)
    key_algorithm, key_size = _key_facts(certificate, problems)
    signature_oid = certificate.signature_algorithm_oid.dotted_string
    return X509Facts(
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        subject=subject,
        issuer=issuer,
        serial_number=_serial_hex(certificate.serial_number),
        domains=_domains(certificate.subject, extensions, problems),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        self_signed=_is_self_signed(certificate),
        key_algorithm=key_algorithm,
        key_size=key_size,
        signature_hash=_signature_hash(certificate, signature_oid),
        signature_algorithm_oid=signature_oid,
        extended_key_usages=_extended_key_usages(extensions, problems),
        version=1 if certificate.version == x509.Version.v1 else 3,
        problems=tuple(problems),
    )


def _serial_hex(serial: int) -> str:
    """Serial as Windows shows it: the encoded two's-complement bytes, upper-case hex."""
    length = max(1, (serial.bit_length() + 8) // 8)
    return serial.to_bytes(length, "big", signed=True).hex().upper()


def _extensions(certificate: x509.Certificate, problems: list[str]) -> x509.Extensions | None:
    try:
        return certificate.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        problems.append(f"certificate extensions are unreadable ({error}); "
                        "names and key usages come from the subject only")
        return None


def _domains(subject: x509.Name, extensions: x509.Extensions | None,
             problems: list[str]) -> tuple[str, ...]:
    """Subject CN (when it is a host name) then SAN dNSNames; case kept, duplicates dropped."""
    names: list[str] = []
    for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        if isinstance(value, str) and _HOST_NAME.match(value.strip()):
            names.append(value.strip())
    if extensions is not None:
        try:
            san = extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        except x509.ExtensionNotFound:
            pass
        else:
            if isinstance(san.value, x509.SubjectAlternativeName):
                names.extend(name.strip() for name in san.value.get_values_for_type(x509.DNSName))
            else:
                problems.append("subject alternative name extension is unreadable")
    return _unique_ignoring_case(name for name in names if name)


def _unique_ignoring_case(names: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    unique: list[str] = []
    for name in names:
        folded = name.casefold()
        if folded not in seen:
            seen.add(folded)
            unique.append(name)
    return tuple(unique)


def _is_self_signed(certificate: x509.Certificate) -> bool:
    """Issuer equals subject and the signature verifies with the certificate's own key.

    Verified by hand: ``verify_directly_issued_by`` refuses SHA-1, which Exchange's own
    self-signed certificates (Auth, server name) use.
    """
    if certificate.issuer != certificate.subject:
        return False
    try:
        key = certificate.public_key()
        signature = certificate.signature
        signed = certificate.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            padding = certificate.signature_algorithm_parameters
            hash_algorithm = certificate.signature_hash_algorithm
            if (not isinstance(padding, asymmetric_padding.PKCS1v15 | asymmetric_padding.PSS)
                    or hash_algorithm is None):
                return False
            key.verify(signature, signed, padding, hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            ecdsa = certificate.signature_algorithm_parameters
            if not isinstance(ecdsa, ec.ECDSA):
                return False
            key.verify(signature, signed, ecdsa)
        elif isinstance(key, dsa.DSAPublicKey):
            hash_algorithm = certificate.signature_hash_algorithm
            if hash_algorithm is None:
                return False
            key.verify(signature, signed, hash_algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, signed)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _key_facts(certificate: x509.Certificate, problems: list[str]) -> tuple[str, int | None]:
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        oid = certificate.public_key_algorithm_oid.dotted_string
        problems.append(f"public key ({oid}) is not readable: {error}")
        return oid, None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", None
    return certificate.public_key_algorithm_oid.dotted_string, None


def _signature_hash(certificate: x509.Certificate, signature_oid: str) -> str | None:
    known = _SIGNATURE_HASH_BY_OID.get(signature_oid)
    if known is not None:
        return known
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return None if algorithm is None else algorithm.name


def _extended_key_usages(extensions: x509.Extensions | None,
                         problems: list[str]) -> tuple[str, ...]:
    if extensions is None:
        return ()
    try:
        extension = extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    except x509.ExtensionNotFound:
        return ()
    if not isinstance(extension.value, x509.ExtendedKeyUsage):
        problems.append("extended key usage extension is unreadable")
        return ()
    return tuple(oid.dotted_string for oid in extension.value)
