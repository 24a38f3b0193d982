"""The contract between the lab's Exchange model (pure) and its WSMan/PSRP shell.

The shell turns each PSRP pipeline into a tuple of :class:`CommandCall` and drives
:meth:`bot.lab.model.ExchangeOrganisation.execute`, a generator that may yield a
:class:`ConfirmationRequest` (Exchange's ShouldContinue) and finally returns a
:class:`PipelineResult`. :mod:`bot.lab.wire` turns the result's records into psrpcore objects
in the shapes real Exchange sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.exchange.snapshot import CertificateStatus, ExchangeService, RootCAType

ParameterValue = Any
"""str, int, bool, None (a switch), or a list of those, as the client sent it."""


@dataclass(frozen=True)
class CommandCall:
    """One command of a pipeline: the cmdlet name as sent and its parameters in order."""

    name: str
    parameters: tuple[tuple[str | None, ParameterValue], ...] = ()
    is_script: bool = False


@dataclass(frozen=True)
class LabCertificateRecord:
    """A certificate as Exchange holds it on one server."""

    server: str
    server_fqdn: str
    thumbprint: str
    der: bytes
    services: ExchangeService
    root_ca_type: RootCAType
    status: CertificateStatus
    self_signed: bool
    private_key_exportable: bool
    subject: str
    issuer: str
    serial_number: str
    not_before: datetime
    not_after: datetime
    domains: tuple[str, ...]
    friendly_name: str
    public_key_size: int
    signature_algorithm: str
    serialization_data: bool = True
    """False: sent with RawData only (no SerializationData blob), as to an unverifying client."""


@dataclass(frozen=True)
class SmtpX509IdentifierRecord:
    """``Microsoft.Exchange.Data.SmtpX509Identifier``: TlsCertificateName on the wire."""

    certificate_issuer: str
    certificate_subject: str
    subject_common_name: str

    def to_string(self) -> str:
        return f"<I>{self.certificate_issuer}<S>{self.certificate_subject}"


@dataclass(frozen=True)
class LabSendConnectorRecord:
    name: str
    identity: str
    enabled: bool
    cloud_services_mail_enabled: bool
    smart_hosts: tuple[str, ...]
    address_spaces: tuple[str, ...]
    fqdn: str | None
    require_tls: bool
    tls_auth_level: str | None
    tls_domain: str | None
    tls_certificate_name: SmtpX509IdentifierRecord | None
    source_transport_servers: tuple[str, ...]


@dataclass(frozen=True)
class LabReceiveConnectorRecord:
    name: str
    identity: str
    server: str
    fqdn: str
    enabled: bool
    bindings: tuple[str, ...]
    tls_certificate_name: SmtpX509IdentifierRecord | None


@dataclass(frozen=True)
class LabHybridConfigurationRecord:
    tls_certificate_name: SmtpX509IdentifierRecord | None
    on_premises_smart_host: str | None
    domains: tuple[str, ...]
    sending_transport_servers: tuple[str, ...]


@dataclass(frozen=True)
class LabQueueRecord:
    identity: str
    server: str
    delivery_type: str
    next_hop_domain: str
    status: str
    message_count: int
    last_error: str | None


@dataclass(frozen=True)
class LabServerRecord:
    name: str
    fqdn: str
    admin_display_version: str
    site: str
    server_role: str


@dataclass(frozen=True)
class SelectedObject:
    """The output of ``Select-Object -Property``: a ``Selected.<type>`` object with note props.

    Values keep their Python types; an :class:`ExchangeService` value goes on the wire as
    PowerShell's flags enum (``<I32>`` with ToString ``IMAP, POP, IIS, SMTP``).
    """

    source_type_names: tuple[str, ...]
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class ErrorSpec:
    """An error record as Exchange writes it."""

    message: str
    category: str
    fully_qualified_error_id: str
    target: str | None = None
    exception_type: str = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    terminating: bool = False


@dataclass(frozen=True)
class ConfirmationRequest:
    """Exchange's ShouldContinue: the shell asks the client host (PromptForChoice) or refuses."""

    caption: str
    message: str


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline produced: objects (records above), error records, and its final state."""

    output: tuple[object, ...] = ()
    errors: tuple[ErrorSpec, ...] = ()
    failed: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CallLogEntry:
    """One cmdlet the lab ran, for tests and for evaluating what the product did."""

    time: datetime
    user: str
    cmdlet: str
    parameters: tuple[tuple[str | None, ParameterValue], ...]
    outcome: str
