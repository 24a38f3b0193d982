"""Test helper: real X.509 CA chains and leaves made with cryptography, and Exchange views of them.

Keys are cached (RSA generation is slow): ``rsa_key(bits, slot)`` and ``ec_key(slot)`` return
the same key for the same arguments. SHA-1 signatures, which cryptography no longer creates,
are made by re-signing the to-be-signed bytes of an RSA/SHA-256 certificate with SHA-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bot.analysis.names import dotnet_name
from bot.analysis.trust import TrustStore
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeServer,
    ExchangeService,
    HybridConfiguration,
    Queue,
    RootCAType,
    SendConnector,
    ServerSnapshot,
    ServicesSource,
    TlsCertificateName,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_SHA256_WITH_RSA = bytes.fromhex("2a864886f70d01010b")
_SHA1_WITH_RSA = bytes.fromhex("2a864886f70d010105")


def days(count: float) -> timedelta:
    return timedelta(days=count)


ROOT_NOT_BEFORE = NOW - days(3650)
ROOT_NOT_AFTER = NOW + days(3650)
INTERMEDIATE_NOT_BEFORE = NOW - days(1800)
INTERMEDIATE_NOT_AFTER = NOW + days(1800)
LEAF_NOT_BEFORE = NOW - days(30)
LEAF_NOT_AFTER = NOW + days(335)


@cache
def rsa_key(bits: int = 2048, slot: int = 0) -> rsa.RSAPrivateKey:
    """A cached RSA key: the same (bits, slot) always gives the same key in one test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(slot: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attributes = []
    if organisation:
        attributes += [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _sha1_resign(cert: x509.Certificate, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    der = cert.public_bytes(Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    assert der.count(_SHA256_WITH_RSA) == 2, "needs an RSA/SHA-256 certificate"
    new_tbs = tbs.replace(_SHA256_WITH_RSA, _SHA1_WITH_RSA)
    signature = signer.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    assert len(signature) == len(cert.signature)
    new_der = der.replace(tbs, new_tbs).replace(_SHA256_WITH_RSA, _SHA1_WITH_RSA)
    new_der = new_der.replace(cert.signature, signature)
    return x509.load_der_x509_certificate(new_der)


def _build(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: PrivateKey,
    signer: PrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    domains: Sequence[str] = (),
    signature: str = "sha256",
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if domains:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    cert = builder.sign(signer, hashes.SHA256())
    if signature == "sha1":
        assert isinstance(signer, rsa.RSAPrivateKey), "SHA-1 test certificates need an RSA signer"
        return _sha1_resign(cert, signer)
    assert signature == "sha256"
    return cert


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def make_root(
    common_name: str,
    *,
    key: PrivateKey | None = None,
    organisation: str | None = None,
    not_before: datetime = ROOT_NOT_BEFORE,
    not_after: datetime = ROOT_NOT_AFTER,
) -> Authority:
    key = key or rsa_key(2048, 100)
    name = _name(common_name, organisation)
    cert = _build(name, name, key, key, ca=True, not_before=not_before, not_after=not_after)
    return Authority(cert, key)


def make_intermediate(
    parent: Authority,
    common_name: str,
    *,
    key: PrivateKey | None = None,
    organisation: str | None = None,
    not_before: datetime = INTERMEDIATE_NOT_BEFORE,
    not_after: datetime = INTERMEDIATE_NOT_AFTER,
) -> Authority:
    key = key or ec_key(101)
    cert = _build(
        _name(common_name, organisation), parent.name, key, parent.key,
        ca=True, not_before=not_before, not_after=not_after,
    )
    return Authority(cert, key)


def issue_leaf(
    issuer: Authority | None,
    common_name: str,
    *,
    domains: Sequence[str] = (),
    not_before: datetime = LEAF_NOT_BEFORE,
    not_after: datetime = LEAF_NOT_AFTER,
    key: PrivateKey | None = None,
    signature: str = "sha256",
) -> x509.Certificate:
    """A leaf issued by ``issuer``, or self-signed when ``issuer`` is None."""
    key = key or ec_key(1)
    subject = _name(common_name)
    if issuer is None:
        return _build(
            subject, subject, key, key, ca=False, not_before=not_before, not_after=not_after,
            domains=domains, signature=signature,
        )
    return _build(
        subject, issuer.name, key, issuer.key, ca=False, not_before=not_before,
        not_after=not_after, domains=domains, signature=signature,
    )


def thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303


def exchange_certificate(
    cert: x509.Certificate,
    *,
    services: ExchangeService | None = ExchangeService.IIS | ExchangeService.SMTP,
    root_ca_type: RootCAType | None = None,
    status: CertificateStatus | None = CertificateStatus.VALID,
    services_source: ServicesSource = ServicesSource.SERIALIZATION_DATA,
) -> ExchangeCertificate:
    """What the snapshot would hold for ``cert`` (subject/issuer in Exchange's spelling)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        domains = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        domains = tuple(
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        algorithm, size = "RSA", public_key.key_size
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm, size = "ECDSA", public_key.key_size
    else:
        algorithm, size = type(public_key).__name__, None
    hash_algorithm = cert.signature_hash_algorithm
    try:
        ekus = tuple(
            oid.dotted_string
            for oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    except x509.ExtensionNotFound:
        ekus = ()
    return ExchangeCertificate(
        thumbprint=thumbprint(cert),
        der=cert.public_bytes(Encoding.DER),
        subject=dotnet_name(cert.subject),
        issuer=dotnet_name(cert.issuer),
        serial_number=format(cert.serial_number, "X"),
        domains=domains,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_signed=cert.issuer == cert.subject,
        key_algorithm=algorithm,
        key_size=size,
        signature_hash=None if hash_algorithm is None else hash_algorithm.name,
        extended_key_usages=ekus,
        services=services if services_source != ServicesSource.UNKNOWN else None,
        root_ca_type=root_ca_type if services_source != ServicesSource.UNKNOWN else None,
        status=status if services_source != ServicesSource.UNKNOWN else None,
        services_source=services_source,
        identity=None,
    )


@dataclass(frozen=True)
class Pki:
    """A public CA (root + intermediate) and an internal enterprise root, with a trust store."""

    public_root: Authority
    public_ca: Authority
    internal_root: Authority
    store: TrustStore


@lru_cache(maxsize=1)
def pki() -> Pki:
    public_root = make_root("Test Public Root G2", organisation="Test Trust Services",
                            key=rsa_key(2048, 1))
    public_ca = make_intermediate(public_root, "Test TLS RSA CA G1",
                                  organisation="Test Trust Services", key=rsa_key(2048, 2))
    internal_root = make_root("Contoso Enterprise Root CA", key=rsa_key(2048, 3))
    store = TrustStore(
        public_roots=(public_root.cert,),
        intermediates=(public_ca.cert,),
        internal_roots=(internal_root.cert,),
        description="test PKI",
    )
    return Pki(public_root, public_ca, internal_root, store)


SERVER = ExchangeServer(name="EX01", fqdn="ex01.contoso.com", version="15.2", roles="Mailbox")
HCW_CONNECTOR = "Outbound to Office 365 - 6f1e2a"
SMART_HOST = "contoso.mail.protection.outlook.com"
REJECTION = (
    "451 4.4.0 Primary target IP address responded with: \"454 4.7.0 Temporary authentication "
    "failure\" Attempted failover to alternate host, but that did not succeed. TLS channel: "
    "UntrustedRoot: Access Denied"
)


def cloud_connector(
    tls_certificate_name: str | None = None, *, name: str = HCW_CONNECTOR, fqdn: str | None = None,
    enabled: bool = True, source_transport_servers: tuple[str, ...] = ("EX01",),
) -> SendConnector:
    return SendConnector(
        name=name,
        enabled=enabled,
        cloud_services_mail_enabled=True,
        smart_hosts=(SMART_HOST,),
        address_spaces=("smtp:contoso.mail.onmicrosoft.com;1",),
        fqdn=fqdn,
        require_tls=True,
        tls_auth_level="DomainValidation",
        tls_domain="mail.protection.outlook.com",
        tls_certificate_name=(
            None if tls_certificate_name is None else TlsCertificateName.parse(tls_certificate_name)
        ),
        source_transport_servers=source_transport_servers,
    )


def rejected_queue(messages: int = 25) -> Queue:
    return Queue(
        identity=f"EX01\\{SMART_HOST}",
        delivery_type="SmartHostConnectorDelivery",
        next_hop_domain=SMART_HOST,
        status="Retry",
        message_count=messages,
        last_error=REJECTION,
    )


@dataclass(frozen=True)
class Scenario:
    snapshot: ServerSnapshot
    public: ExchangeCertificate
    internal: ExchangeCertificate
    default: ExchangeCertificate
    auth: ExchangeCertificate


def tls_name_of(cert: ExchangeCertificate) -> str:
    return f"<I>{cert.issuer}<S>{cert.subject}"


@lru_cache(maxsize=1)
def kb_certificates() -> tuple[ExchangeCertificate, ExchangeCertificate, ExchangeCertificate,
                               ExchangeCertificate]:
    """Public (older), internal (newer), Exchange self-signed default, Auth certificate."""
    p = pki()
    public = exchange_certificate(
        issue_leaf(p.public_ca, "mail.contoso.com",
                   domains=("mail.contoso.com", "ex01.contoso.com", "autodiscover.contoso.com"),
                   not_before=NOW - days(120), not_after=NOW + days(245), key=ec_key(2)),
        services=ExchangeService.IIS | ExchangeService.SMTP,
        root_ca_type=RootCAType.THIRD_PARTY,
    )
    internal = exchange_certificate(
        issue_leaf(p.internal_root, "ex01.contoso.com", domains=("ex01.contoso.com",),
                   not_before=NOW - days(10), not_after=NOW + days(355), key=ec_key(3)),
        services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.SMTP,
        root_ca_type=RootCAType.ENTERPRISE,
    )
    default = exchange_certificate(
        issue_leaf(None, "EX01", domains=("EX01", "ex01.contoso.com"),
                   not_before=NOW - days(900), not_after=NOW + days(925), key=ec_key(4)),
        services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.IIS
        | ExchangeService.SMTP,
        root_ca_type=RootCAType.REGISTRY,
    )
    auth = exchange_certificate(
        issue_leaf(None, "Microsoft Exchange Server Auth Certificate",
                   not_before=NOW - days(900), not_after=NOW + days(925), key=ec_key(5)),
        services=ExchangeService.SMTP,
        root_ca_type=RootCAType.NONE,
    )
    return public, internal, default, auth


def kb_scenario() -> Scenario:
    """KB 2888788: a newer internal SMTP certificate beats the public one (unpinned connector)."""
    public, internal, default, auth = kb_certificates()
    snapshot = ServerSnapshot(
        server=SERVER,
        taken_at=NOW,
        certificates=(public, internal, default, auth),
        send_connectors=(cloud_connector(None),),
        hybrid=HybridConfiguration(
            tls_certificate_name=TlsCertificateName.parse(tls_name_of(public)),
            on_premises_smart_host="mail.contoso.com",
            domains=("contoso.com",),
            sending_transport_servers=("EX01",),
        ),
        queues=(rejected_queue(),),
    )
    return Scenario(snapshot, public, internal, default, auth)


def healthy_scenario() -> Scenario:
    """Public certificate pinned on the cloud connector; only the self-signed default competes."""
    public, internal, default, auth = kb_certificates()
    internal_without_smtp = replace(internal, services=ExchangeService.IMAP | ExchangeService.POP)
    snapshot = ServerSnapshot(
        server=SERVER,
        taken_at=NOW,
        certificates=(public, internal_without_smtp, default, auth),
        send_connectors=(cloud_connector(tls_name_of(public)),),
        hybrid=HybridConfiguration(
            tls_certificate_name=TlsCertificateName.parse(tls_name_of(public)),
            on_premises_smart_host="mail.contoso.com",
            domains=("contoso.com",),
            sending_transport_servers=("EX01",),
        ),
        queues=(),
    )
    return Scenario(snapshot, public, internal_without_smtp, default, auth)
