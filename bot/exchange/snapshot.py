"""Immutable, typed records of what an Exchange server told us.

A snapshot is the only thing the analysis sees: it never touches pypsrp or psrpcore objects.
Values Exchange did not give us are ``None`` ("unknown"), never a guess.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime


class ExchangeService(enum.IntFlag):
    """Exchange's ``AllowedServices`` flags enum (values observed in SerializationData)."""

    NONE = 0
    IMAP = 1
    POP = 2
    UM = 4
    IIS = 8
    SMTP = 16
    FEDERATION = 32
    UMCALLROUTER = 64

    @classmethod
    def from_names(cls, text: str) -> ExchangeService:
        """Parse Exchange's ToString form, e.g. ``"IMAP, POP, IIS, SMTP"`` or ``"None"``."""
        result = cls.NONE
        for part in text.replace(";", ",").split(","):
            name = part.strip().upper()
            if not name or name == "NONE":
                continue
            try:
                result |= cls[name]
            except KeyError:
                raise ValueError(f"unknown Exchange service {part.strip()!r}") from None
        return result

    def names(self) -> list[str]:
        """Service names in Exchange's order (IMAP, POP, UM, IIS, SMTP, ...)."""
        display = {
            ExchangeService.FEDERATION: "Federation",
            ExchangeService.UMCALLROUTER: "UMCallRouter",
        }
        return [
            display.get(member, str(member.name))
            for member in ExchangeService
            if member and member in self
        ]


class RootCAType(enum.IntEnum):
    """Exchange's ``CertificateAuthorityType``: where the server found the certificate's root."""

    NONE = 0
    THIRD_PARTY = 1
    ENTERPRISE = 2
    REGISTRY = 3
    GROUP_POLICY = 4
    UNKNOWN = 5


class CertificateStatus(enum.IntEnum):
    """Exchange's ``CertificateStatus``, judged by the Exchange server's own trust store."""

    UNKNOWN = 0
    VALID = 1
    REVOKED = 2
    DATE_INVALID = 3
    UNTRUSTED = 4
    INVALID = 5
    REVOCATION_CHECK_FAILURE = 6
    PENDING_REQUEST = 7


class ServicesSource(enum.StrEnum):
    """Where a certificate's Services, Status and RootCAType came from."""

    SERIALIZATION_DATA = "serialization-data"
    SELECT_OBJECT = "select-object"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ExchangeCertificate:
    """One certificate of ``Get-ExchangeCertificate``: X.509 facts plus Exchange's view of it."""

    thumbprint: str
    der: bytes
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
    extended_key_usages: tuple[str, ...]
    services: ExchangeService | None = None
    root_ca_type: RootCAType | None = None
    status: CertificateStatus | None = None
    services_source: ServicesSource = ServicesSource.UNKNOWN
    identity: str | None = None
    computer_name: str | None = None


@dataclass(frozen=True)
class TlsCertificateName:
    """A connector's ``TlsCertificateName`` (``<I>issuer<S>subject``), kept verbatim."""

    raw: str
    issuer: str | None
    subject: str | None

    @property
    def is_well_formed(self) -> bool:
        return self.issuer is not None and self.subject is not None

    @classmethod
    def parse(cls, raw: str) -> TlsCertificateName:
        """Split ``<I>{issuer}<S>{subject}``; malformed text keeps ``issuer``/``subject`` None."""
        split = split_tls_certificate_name(raw)
        if split is None:
            return cls(raw=raw, issuer=None, subject=None)
        return cls(raw=raw, issuer=split[0], subject=split[1])


_TLS_CERTIFICATE_NAME = re.compile(r"<I>(.*?)<S>(.*)", re.IGNORECASE | re.DOTALL)


def split_tls_certificate_name(value: str) -> tuple[str, str] | None:
    """``<I>issuer<S>subject`` -> (issuer, subject) (markers in any case), or None when malformed.

    Matched in place: upper-casing first would shift positions for letters such as 'ß' -> 'SS'.
    """
    match = _TLS_CERTIFICATE_NAME.fullmatch(value.strip())
    if match is None:
        return None
    issuer, subject = match.group(1).strip(), match.group(2).strip()
    return (issuer, subject) if issuer and subject else None


@dataclass(frozen=True)
class SendConnector:
    name: str
    enabled: bool
    cloud_services_mail_enabled: bool
    smart_hosts: tuple[str, ...]
    address_spaces: tuple[str, ...]
    fqdn: str | None
    require_tls: bool
    tls_auth_level: str | None
    tls_domain: str | None
    tls_certificate_name: TlsCertificateName | None
    source_transport_servers: tuple[str, ...] = ()

    @property
    def is_cloud(self) -> bool:
        """A connector that carries mail to Exchange Online (HCW-made or smart host in EXO)."""
        if self.cloud_services_mail_enabled:
            return True
        return any(
            host.lower().endswith(".mail.protection.outlook.com") for host in self.smart_hosts
        )


@dataclass(frozen=True)
class ReceiveConnector:
    name: str
    server: str | None
    fqdn: str | None
    enabled: bool
    bindings: tuple[str, ...]
    tls_certificate_name: TlsCertificateName | None


@dataclass(frozen=True)
class HybridConfiguration:
    tls_certificate_name: TlsCertificateName | None
    on_premises_smart_host: str | None
    domains: tuple[str, ...]
    sending_transport_servers: tuple[str, ...]


@dataclass(frozen=True)
class Queue:
    identity: str
    delivery_type: str | None
    next_hop_domain: str | None
    status: str | None
    message_count: int
    last_error: str | None

    @property
    def is_to_exchange_online(self) -> bool:
        return (self.next_hop_domain or "").lower().endswith(".mail.protection.outlook.com")


@dataclass(frozen=True)
class ExchangeServer:
    name: str
    fqdn: str | None
    version: str | None = None
    roles: str | None = None


@dataclass(frozen=True)
class ServerSnapshot:
    """Everything read from one server at one moment."""

    server: ExchangeServer
    taken_at: datetime
    certificates: tuple[ExchangeCertificate, ...]
    send_connectors: tuple[SendConnector, ...] = ()
    receive_connectors: tuple[ReceiveConnector, ...] = ()
    hybrid: HybridConfiguration | None = None
    queues: tuple[Queue, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
