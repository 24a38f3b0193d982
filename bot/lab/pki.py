"""Real X.509 for the lab: self-signed CA roots and leaves signed by them (or by themselves).

RSA key generation is slow, so keys come from a small process-wide pool and are shared
between leaves: only public keys reach the wire, and a 50-server state builds in about a
second. Each CA gets a key of its own so that no two CAs can vouch for each other.
Serial numbers are derived from the server and certificate ids, so they are stable.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bot.lab.state import (
    SELF_ISSUER,
    LabCA,
    LabCertificateSpec,
    LabServerSpec,
    LabState,
    parse_distinguished_name,
)

LEAF_KEYS_PER_SIZE = 3
"""Distinct keys per RSA size shared by all leaf certificates of the process."""

_NAME_OIDS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "STREET": NameOID.STREET_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}
_OID_LABELS = {oid: label for label, oid in _NAME_OIDS.items()}

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_DOTNET_SPECIAL = set(',+="\\<>#;\n')

# AlgorithmIdentifier DER of sha256WithRSAEncryption and sha1WithRSAEncryption: same length,
# so a SHA-256 TBSCertificate becomes a SHA-1 one by swapping the bytes in place.
_SHA256_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d01010b0500")
_SHA1_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101050500")


class _KeyPool:
    """Process-wide RSA keys, generated lazily; safe to use from several threads."""

    def __init__(self) -> None:
        self._keys: dict[tuple[int, int], rsa.RSAPrivateKey] = {}
        self._lock = threading.Lock()

    def key(self, size: int, index: int) -> rsa.RSAPrivateKey:
        with self._lock:
            found = self._keys.get((size, index))
            if found is None:
                found = rsa.generate_private_key(public_exponent=65537, key_size=size)
                self._keys[(size, index)] = found
            return found


_POOL = _KeyPool()


def x509_name(distinguished_name: str) -> x509.Name:
    """``CN=a, O=b`` (most specific first, as .NET writes it) -> an x509.Name."""
    pairs = parse_distinguished_name(distinguished_name)
    return x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(_NAME_OIDS[label], value)])
        for label, value in reversed(pairs)
    ])


def dotnet_name(name: x509.Name) -> str:
    """Format a name as .NET's ``X500DistinguishedName.Name`` (``CN=x, O=y, C=z``)."""
    parts: list[str] = []
    for rdn in reversed(list(name.rdns)):
        for attribute in rdn:
            label = _OID_LABELS.get(attribute.oid, attribute.oid.dotted_string)
            value = attribute.value if isinstance(attribute.value, str) \
                else attribute.value.hex()
            if any(ch in _DOTNET_SPECIAL for ch in value) or value != value.strip():
                value = '"' + value.replace('"', '""') + '"'
            parts.append(f"{label}={value}")
    return ", ".join(parts)


def _serial(*parts: str) -> int:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return (int.from_bytes(digest[:20], "big") >> 1) or 1


def dotnet_serial_number(serial: int) -> str:
    """Upper-case hex of the DER integer bytes, as .NET's ``SerialNumber``."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big").hex().upper()


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate made for one server, with the facts Exchange reports about it."""

    server: str
    spec_id: str
    certificate: x509.Certificate
    der: bytes
    thumbprint: str
    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    public_key_size: int
    signature_algorithm: str
    self_signed: bool
    ca_id: str | None
    """The issuing CA id, None for a self-signed certificate."""


@dataclass(frozen=True)
class _CertificateAuthority:
    ca: LabCA
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate


def _signature_name(algorithm: str) -> str:
    return f"{algorithm}RSA"


def _leaf_key_index(server: str, cert_id: str) -> int:
    digest = hashlib.sha256(f"{server.lower()}/{cert_id}".encode()).digest()
    return digest[0] % LEAF_KEYS_PER_SIZE


class LabPKI:
    """The CAs of a lab state and the certificates they issued to its servers."""

    def __init__(self, authorities: dict[str, _CertificateAuthority]) -> None:
        self._authorities = authorities
        self._issued: dict[tuple[str, str], IssuedCertificate] = {}

    @classmethod
    def build(cls, state: LabState) -> LabPKI:
        """Create every CA of ``state`` and issue every server's certificates."""
        authorities: dict[str, _CertificateAuthority] = {}
        for index, ca in enumerate(state.cas):
            key = _POOL.key(ca.key_size, LEAF_KEYS_PER_SIZE + index)
            authorities[ca.id] = _CertificateAuthority(ca, key, _ca_certificate(ca, key))
        pki = cls(authorities)
        for server in state.servers:
            for spec in server.certificates:
                pki.issue(spec, server)
        return pki

    def ca_certificate(self, ca_id: str) -> x509.Certificate:
        return self._authorities[ca_id].certificate

    def ca(self, ca_id: str) -> LabCA:
        return self._authorities[ca_id].ca

    def ca_certificates(self) -> list[x509.Certificate]:
        return [authority.certificate for authority in self._authorities.values()]

    def public_root_certificates(self) -> list[x509.Certificate]:
        """Roots of the CAs marked ``public``: what Exchange Online trusts."""
        return [a.certificate for a in self._authorities.values() if a.ca.public]

    def is_public_ca(self, ca_id: str | None) -> bool:
        return ca_id is not None and ca_id in self._authorities \
            and self._authorities[ca_id].ca.public

    def certificate(self, server: str, cert_id: str) -> IssuedCertificate:
        """The certificate already issued for ``server`` under ``cert_id``."""
        return self._issued[(server.lower(), cert_id)]

    def issue(self, spec: LabCertificateSpec, server: LabServerSpec | str) -> IssuedCertificate:
        """Issue (or return the already issued) certificate ``spec`` for ``server``."""
        server_name = server if isinstance(server, str) else server.name
        cache_key = (server_name.lower(), spec.id)
        if cache_key in self._issued:
            return self._issued[cache_key]
        key = _POOL.key(spec.key_size, _leaf_key_index(server_name, spec.id))
        subject = x509_name(spec.subject)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(key.public_key())
            .serial_number(_serial("leaf", server_name.lower(), spec.id))
            .not_valid_before(spec.not_before)
            .not_valid_after(spec.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=True, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
        )
        if spec.domains:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(d) for d in spec.domains]),
                critical=False)
        hash_algorithm = _HASHES.get(spec.signature, hashes.SHA256)()
        if spec.issuer == SELF_ISSUER:
            signer = key
            certificate = builder.issuer_name(subject).sign(key, hash_algorithm)
            ca_id = None
        else:
            authority = self._authorities[spec.issuer]
            signer = authority.key
            certificate = (
                builder.issuer_name(authority.certificate.subject)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        authority.key.public_key()),
                    critical=False)
                .sign(authority.key, hash_algorithm)
            )
            ca_id = authority.ca.id
        if spec.signature == "sha1":
            certificate = _resign_with_sha1(certificate, signer)
        der = certificate.public_bytes(serialization.Encoding.DER)
        issued = IssuedCertificate(
            server=server_name,
            spec_id=spec.id,
            certificate=certificate,
            der=der,
            thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
            subject=dotnet_name(certificate.subject),
            issuer=dotnet_name(certificate.issuer),
            serial_number=dotnet_serial_number(certificate.serial_number),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            public_key_size=spec.key_size,
            signature_algorithm=_signature_name(spec.signature),
            self_signed=ca_id is None,
            ca_id=ca_id,
        )
        self._issued[cache_key] = issued
        return issued


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _resign_with_sha1(certificate: x509.Certificate, key: rsa.RSAPrivateKey
                      ) -> x509.Certificate:
    """Re-sign a SHA-256 certificate with SHA-1 (``cryptography`` no longer signs with SHA-1,
    but weak signatures are exactly what the lab must be able to show)."""
    tbs = certificate.tbs_certificate_bytes
    if tbs.count(_SHA256_RSA_ALGORITHM) != 1:
        raise ValueError("unexpected TBSCertificate layout")
    tbs = tbs.replace(_SHA256_RSA_ALGORITHM, _SHA1_RSA_ALGORITHM)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + _SHA1_RSA_ALGORITHM + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_length(len(body)) + body)


def _ca_certificate(ca: LabCA, key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509_name(ca.name)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial("ca", ca.id))
        .not_valid_before(ca.not_before)
        .not_valid_after(ca.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
