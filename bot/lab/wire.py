"""Lab records -> psrpcore objects in the shapes Exchange sends over remote PowerShell.

:func:`to_psobject` turns a record of :mod:`bot.lab.records` (or a primitive, or any other
dataclass) into a value for ``ServerPipeline.write_output``; :func:`error_record` turns an
:class:`~bot.lab.records.ErrorSpec` into a psrpcore ``ErrorRecord``.

The shapes copy the captured Exchange 2019 exports in ``fixtures/exchange-clixml``: type-name
chains, property names and their order, nested Exchange value objects (``SmtpX509Identifier``,
``ADObjectId``, ``MultiValuedProperty`` lists, enums with ``ToString``). Type names are written
as the server sees them, without ``Deserialized.``: PowerShell's deserializer (and psrpcore's)
adds that prefix on the receiving side, pypsrp 0.9 does not.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSEnumBase,
    PSFlagBase,
    PSInt64,
    PSList,
    PSNoteProperty,
    PSObject,
    PSType,
)

from bot.exchange.snapshot import CertificateStatus, ExchangeService, RootCAType
from bot.lab.nrbf_writer import (
    exchange_certificate_identity,
    exchange_certificate_serialization_data,
)
from bot.lab.records import (
    ErrorSpec,
    LabCertificateRecord,
    LabHybridConfigurationRecord,
    LabQueueRecord,
    LabReceiveConnectorRecord,
    LabSendConnectorRecord,
    LabServerRecord,
    SelectedObject,
    SmtpX509IdentifierRecord,
)

_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_DATA_ASSEMBLY = (
    "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
)
_DIRECTORY_ASSEMBLY = (
    "Microsoft.Exchange.Data.Directory, Version=15.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35"
)
_AD_OBJECT_ID = f"Microsoft.Exchange.Data.Directory.ADObjectId, {_DIRECTORY_ASSEMBLY}"
_CONFIGURATION = "Microsoft.Exchange.Data.Directory.SystemConfiguration"
_AD_CONFIGURATION_CHAIN = (
    f"{_CONFIGURATION}.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)

CERTIFICATE_TYPE_NAMES = (
    f"{_TASKS}.ExchangeCertificate",
    "System.Security.Cryptography.X509Certificates.X509Certificate2",
    "System.Security.Cryptography.X509Certificates.X509Certificate",
    "System.Object",
)
SEND_CONNECTOR_TYPE_NAMES = (
    f"{_CONFIGURATION}.SmtpSendConnectorConfig",
    f"{_CONFIGURATION}.MailGateway",
    f"{_CONFIGURATION}.SendConnector",
    f"{_CONFIGURATION}.ADLegacyVersionableObject",
    *_AD_CONFIGURATION_CHAIN,
)
RECEIVE_CONNECTOR_TYPE_NAMES = (f"{_CONFIGURATION}.ReceiveConnector", *_AD_CONFIGURATION_CHAIN)
HYBRID_CONFIGURATION_TYPE_NAMES = (
    f"{_CONFIGURATION}.HybridConfiguration",
    *_AD_CONFIGURATION_CHAIN,
)
EXCHANGE_SERVER_TYPE_NAMES = (
    "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    *_AD_CONFIGURATION_CHAIN[1:],
)
QUEUE_TYPE_NAMES = (
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)
"""Not observed in a fixture: the ``Get-Queue`` chain is a best reading of Exchange's types."""
SMTP_X509_IDENTIFIER_TYPE_NAMES = ("Microsoft.Exchange.Data.SmtpX509Identifier", "System.Object")
PS_CUSTOM_OBJECT_TYPE_NAMES = ("System.Management.Automation.PSCustomObject", "System.Object")

_LEGACY_ROUTING_GROUP = "Exchange Routing Group (DWBGZMFD01QNBJR)"
_EXCEPTION_HRESULT = -2146233088


@PSType([f"{_TASKS}.AllowedServices"], rehydrate=False)
class AllowedServices(PSFlagBase):
    """Exchange's certificate services flags; ToString e.g. ``IMAP, POP, IIS, SMTP``."""

    none = 0
    IMAP = 1
    POP = 2
    UM = 4
    IIS = 8
    SMTP = 16
    Federation = 32
    UMCallRouter = 64


@PSType([f"{_TASKS}.CertificateAuthorityType"], rehydrate=False)
class CertificateAuthorityType(PSEnumBase):
    """``RootCAType``."""

    none = 0
    ThirdParty = 1
    Enterprise = 2
    Registry = 3
    GroupPolicy = 4
    Unknown = 5


@PSType([f"{_TASKS}.CertificateStatus"], rehydrate=False)
class ExchangeCertificateStatus(PSEnumBase):
    """``Status`` of an Exchange certificate."""

    Unknown = 0
    Valid = 1
    Revoked = 2
    DateInvalid = 3
    Untrusted = 4
    Invalid = 5
    RevocationCheckFailure = 6
    PendingRequest = 7


@PSType(["Microsoft.Exchange.Data.TlsAuthLevel"], rehydrate=False)
class TlsAuthLevel(PSEnumBase):
    """A send connector's ``TlsAuthLevel`` (numbers unverified; clients read the name)."""

    EncryptionOnly = 1
    CertificateValidation = 2
    DomainValidation = 4


@PSType([f"{_CONFIGURATION}.ServerRole"], rehydrate=False)
class ServerRole(PSFlagBase):
    """Exchange server roles (Mailbox = 2 and HubTransport = 32 observed)."""

    none = 0
    Mailbox = 2
    ClientAccess = 4
    UnifiedMessaging = 16
    HubTransport = 32
    Edge = 64


@PSType(["Microsoft.Exchange.Data.DeliveryType"], rehydrate=False)
class DeliveryType(PSEnumBase):
    """A queue's ``DeliveryType`` (numbers unverified; clients read the name)."""

    Undefined = 0
    DnsConnectorDelivery = 1
    NonSmtpGatewayDelivery = 2
    SmartHostConnectorDelivery = 3
    SmtpRelayToRemoteAdSite = 4
    SmtpRelayToTiRg = 5
    SmtpRelayWithinAdSite = 6
    SmtpRelayWithinAdSiteToEdge = 7
    MapiDelivery = 8
    Unreachable = 9
    ShadowRedundancy = 10
    Heartbeat = 11
    SmtpDeliveryToMailbox = 12
    DeliveryAgent = 13
    SmtpRelayToDag = 14
    SmtpRelayToMailboxDeliveryGroup = 15
    SmtpRelayToConnectorSourceServers = 16
    SmtpRelayToServers = 17
    SmtpRelayToRemoteForest = 18


@PSType(["Microsoft.Exchange.Data.QueueViewer.QueueStatus"], rehydrate=False)
class QueueStatus(PSEnumBase):
    """A queue's ``Status`` (numbers unverified; clients read the name)."""

    none = 0
    Active = 1
    Ready = 2
    Retry = 3
    Suspended = 4
    Connecting = 5


_E = TypeVar("_E", bound=enum.Enum)


class _PlainAttributes:
    """Mixin for the lab's psrpcore objects: ``__class__`` and ``PSObject`` read directly.

    psrpcore's ``PSObject.__getattribute__`` gathers every PS property into a dict before any
    attribute lookup, and then still returns the ordinary attribute for these two names. Its
    serializer reads them many times per object (``PSObject`` directly, ``__class__`` in each
    ``isinstance`` test that falls through to it): about a third of the lab's CLIXML
    serialization time. Reading them directly gives the same objects.
    """

    def __getattribute__(self, name: str) -> Any:
        if name in ("__class__", "PSObject"):
            return object.__getattribute__(self, name)
        return super().__getattribute__(name)


class _WireObject(_PlainAttributes, PSObject):
    """A PSObject whose type names, ToString and properties are set per instance."""


class _WireList(_PlainAttributes, PSList):
    """A PSList (``System.Object[]``, Exchange's ``MultiValuedProperty``)."""


def _note(name: str, value: object, owner: PSObject) -> PSNoteProperty:
    """``PSNoteProperty(name, value)`` for ``owner``, without psrpcore's throwaway object.

    Given a value, psrpcore's constructor stores it through ``set_value(value, PSObject())``,
    building (and dropping) a whole PSObject per property; storing it for the owner is the
    same ``set_value`` without that.
    """
    prop = PSNoteProperty(name)
    prop.set_value(value, owner)
    return prop


def to_psobject(
    record: object,
    *,
    computer_name: str,
    runspace_id: uuid.UUID,
    remoting_properties: bool = True,
) -> object:
    """The psrpcore value Exchange would write for ``record`` (for ``write_output``).

    Records of :mod:`bot.lab.records` get Exchange's shapes; primitives pass through; any
    other dataclass becomes a ``PSCustomObject`` of its fields (PascalCase names).
    ``remoting_properties`` adds ``PSComputerName``, ``RunspaceId`` and ``PSShowComputerName``
    to the ``<MS>`` of complex objects, as the captured fixtures carry them.
    """
    remoting: list[tuple[str, object]] = []
    if remoting_properties:
        remoting = [
            ("PSComputerName", computer_name),
            ("RunspaceId", runspace_id),
            ("PSShowComputerName", False),
        ]
    if isinstance(record, _REUSABLE_RECORDS):
        return _with_remoting(_exchange_object(record), remoting)
    complex_value = _complex(record, remoting)
    if complex_value is None:
        return _note_value(record)
    return complex_value


_REUSABLE_RECORDS = (
    LabCertificateRecord,
    LabSendConnectorRecord,
    LabReceiveConnectorRecord,
    LabHybridConfigurationRecord,
    LabServerRecord,
    LabQueueRecord,
)
"""Records whose objects carry the remoting trio first in ``<MS>`` and nothing else varies."""


@functools.lru_cache(maxsize=1024)
def _exchange_object(record: object) -> PSObject:
    """A record's object without remoting properties, built once per record value.

    Records are frozen values (their datetimes UTC, as the model makes them) and a shape
    depends on nothing else, so equal records share one object: a warm check, and every
    server's view of organisation-wide objects (send connectors, hybrid configuration), skip
    rebuilding it. It is never written to the wire itself and never changed:
    :func:`_with_remoting` copies its top level and shares the nested values (psrpcore only
    reads them, and each message has its own serializer, so sharing adds no ``<Ref>``).
    """
    shaped = _complex(record)
    if shaped is None:
        raise TypeError(f"no Exchange shape for {type(record).__name__}")
    return shaped


def _with_remoting(template: PSObject, remoting: Sequence[tuple[str, object]]) -> PSObject:
    """A new top-level object like ``template`` with ``remoting`` first in its ``<MS>``."""
    meta = template.PSObject
    obj = _WireObject()
    obj.PSObject.type_names = list(meta.type_names)
    obj.PSObject.adapted_properties.extend(
        _note(prop.name, prop.get_value(template), obj) for prop in meta.adapted_properties)
    obj.PSObject.extended_properties.extend(
        [_note(name, value, obj) for name, value in remoting]
        + [_note(prop.name, prop.get_value(template), obj)
           for prop in meta.extended_properties])
    if meta.to_string is not None:
        obj.PSObject.to_string = meta.to_string
    return obj


def error_record(spec: ErrorSpec, *, command_name: str | None) -> ErrorRecord:
    """A psrpcore ``ErrorRecord`` for ``spec``, as an Exchange cmdlet writes it.

    Write it with ``pipeline.write_error(record.Exception, record.CategoryInfo,
    record.TargetObject, record.FullyQualifiedErrorId)``. The category info reads like
    PowerShell's, e.g. ``ObjectNotFound: (ABC:String) [Get-ExchangeCertificate],
    ManagementObjectNotFoundException``.
    """
    try:
        category = ErrorCategory[spec.category]
    except KeyError:
        raise ValueError(f"unknown PowerShell error category {spec.category!r}") from None
    exception = NETException(Message=spec.message, HResult=_EXCEPTION_HRESULT)
    exception.PSObject.type_names = [spec.exception_type, "System.Exception", "System.Object"]
    category_info = _PowerShellCategoryInfo(
        Category=category,
        Activity=command_name or "",
        Reason=spec.exception_type.rsplit(".", 1)[-1],
        TargetName=spec.target or "",
        TargetType="String" if spec.target is not None else "",
    )
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=category_info,
        TargetObject=spec.target,
        FullyQualifiedErrorId=spec.fully_qualified_error_id,
    )


class _PowerShellCategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose text matches PowerShell's ``{Category}: (...) [...], ...``."""

    def __str__(self) -> str:
        values = {p.name: p.get_value(self) for p in self.PSObject.adapted_properties}
        category = values["Category"]
        return (
            f"{category.name}: ({values['TargetName'] or ''}:{values['TargetType'] or ''}) "
            f"[{values['Activity'] or ''}], {values['Reason'] or ''}"
        )


def x509_to_string(record: LabCertificateRecord) -> str:
    """``X509Certificate.ToString()`` as Exchange's certificates carry it (en-US dates)."""
    sections = (
        ("Subject", record.subject),
        ("Issuer", record.issuer),
        ("Serial Number", record.serial_number),
        ("Not Before", _dotnet_date(record.not_before)),
        ("Not After", _dotnet_date(record.not_after)),
        ("Thumbprint", record.thumbprint),
    )
    return "\r\n".join(f"[{title}]\r\n  {value}\r\n" for title, value in sections)


def certificate_iis_services(record: LabCertificateRecord) -> tuple[str, ...]:
    """The IIS sites Exchange lists for a certificate: the Default Web Site when IIS is bound."""
    if ExchangeService.IIS in record.services:
        return (f"IIS://{record.server}/W3SVC/1",)
    return ()


def _certificate(record: LabCertificateRecord, remoting: Sequence[tuple[str, object]]) -> PSObject:
    extended = list(remoting)
    if record.serialization_data:
        extended.append(("SerializationData", exchange_certificate_serialization_data(
            record, exchange_certificate_identity(record), certificate_iis_services(record)
        )))
    return _ps_object(
        CERTIFICATE_TYPE_NAMES,
        to_string=x509_to_string(record),
        adapted=[("RawData", record.der)],
        extended=extended,
    )


def _selected_object(record: SelectedObject, remoting: Sequence[tuple[str, object]]) -> PSObject:
    type_names: tuple[str, ...] = PS_CUSTOM_OBJECT_TYPE_NAMES
    if record.source_type_names:
        type_names = (f"Selected.{record.source_type_names[0]}", *PS_CUSTOM_OBJECT_TYPE_NAMES)
    properties = [(name, _note_value(value)) for name, value in record.properties.items()]
    return _ps_object(
        type_names,
        to_string=_custom_object_string(properties),
        extended=[*properties, *remoting],
    )


def _complex(record: object, remoting: Sequence[tuple[str, object]] = ()) -> PSObject | None:
    """Exchange's object for a lab record (or a PSCustomObject for another dataclass).

    ``remoting`` (the PSComputerName trio) goes first in ``<MS>`` of Exchange objects, as in
    the fixtures, and after the note properties of custom and selected objects.
    """
    if isinstance(record, LabCertificateRecord):
        return _certificate(record, remoting)
    if isinstance(record, SelectedObject):
        return _selected_object(record, remoting)
    exchange_object: PSObject | None = None
    if isinstance(record, SmtpX509IdentifierRecord):
        exchange_object = _smtp_x509_identifier(record)
    elif isinstance(record, LabSendConnectorRecord):
        exchange_object = _send_connector(record)
    elif isinstance(record, LabReceiveConnectorRecord):
        exchange_object = _receive_connector(record)
    elif isinstance(record, LabHybridConfigurationRecord):
        exchange_object = _hybrid_configuration(record)
    elif isinstance(record, LabServerRecord):
        exchange_object = _exchange_server(record)
    elif isinstance(record, LabQueueRecord):
        exchange_object = _queue(record)
    if exchange_object is not None:
        exchange_object.PSObject.extended_properties[:0] = [
            _note(name, value, exchange_object) for name, value in remoting]
        return exchange_object
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        properties = [
            (_pascal_case(field.name), _note_value(getattr(record, field.name)))
            for field in dataclasses.fields(record)
        ]
        return _ps_object(
            PS_CUSTOM_OBJECT_TYPE_NAMES,
            to_string=_custom_object_string(properties),
            extended=[*properties, *remoting],
        )
    return None


def _note_value(value: object) -> object:
    """A Python value as PowerShell would carry it in a property."""
    if isinstance(value, enum.Enum):
        return _enum_value(value)
    if value is None or isinstance(value, bool | int | float | str | bytes | datetime
                                   | timedelta | uuid.UUID):
        return value
    complex_value = _complex(value)
    if complex_value is not None:
        return complex_value
    if isinstance(value, Mapping):
        return {str(key): _note_value(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        array = _WireList([_note_value(item) for item in value])
        array.PSObject.type_names = ["System.Object[]", "System.Array", "System.Object"]
        return array
    raise TypeError(f"no PowerShell shape for {type(value).__name__}")


def _enum_value(value: enum.Enum) -> object:
    if isinstance(value, ExchangeService):
        return AllowedServices(int(value))
    if isinstance(value, RootCAType):
        return CertificateAuthorityType(int(value))
    if isinstance(value, CertificateStatus):
        return ExchangeCertificateStatus(int(value))
    if isinstance(value, PSEnumBase | PSFlagBase):
        return value
    if isinstance(value, int):
        return int(value)
    return value.value


def _smtp_x509_identifier(record: SmtpX509IdentifierRecord) -> PSObject:
    return _ps_object(
        SMTP_X509_IDENTIFIER_TYPE_NAMES,
        to_string=record.to_string(),
        adapted=[
            ("CertificateSubject", record.certificate_subject),
            ("CertificateIssuer", record.certificate_issuer),
            ("SubjectCommonName", record.subject_common_name),
        ],
    )


def _optional_identifier(record: SmtpX509IdentifierRecord | None) -> PSObject | None:
    return None if record is None else _smtp_x509_identifier(record)


def _send_connector(record: LabSendConnectorRecord) -> PSObject:
    any_address = _ip_address(ipaddress.IPv4Address("0.0.0.0"))  # noqa: S104
    smart_hosts = [_smart_host(host, any_address) for host in record.smart_hosts]
    adapted: list[tuple[str, object]] = [
        ("DNSRoutingEnabled", not record.smart_hosts),
        ("TlsDomain", None if record.tls_domain is None
         else _smtp_domain_with_subdomains(record.tls_domain)),
        ("TlsAuthLevel", None if record.tls_auth_level is None
         else _enum_from_name(TlsAuthLevel, record.tls_auth_level)),
        ("SmartHosts", _multi_valued(f"Microsoft.Exchange.Data.SmartHost, {_DATA_ASSEMBLY}",
                                     smart_hosts)),
        ("Port", 25),
        ("CloudServicesMailEnabled", record.cloud_services_mail_enabled),
        ("Fqdn", None if record.fqdn is None else _fqdn(record.fqdn)),
        ("TlsCertificateName", _optional_identifier(record.tls_certificate_name)),
        ("RequireTLS", record.require_tls),
        ("Enabled", record.enabled),
        ("SourceIPAddress", any_address),
        ("SmartHostsString", ",".join(record.smart_hosts)),
        ("AddressSpaces", _multi_valued(f"Microsoft.Exchange.Data.AddressSpace, {_DATA_ASSEMBLY}",
                                        [_address_space(a) for a in record.address_spaces])),
        ("IsSmtpConnector", True),
        ("SourceRoutingGroup", _ad_object_id(_LEGACY_ROUTING_GROUP, parent="Routing Groups")),
        ("SourceTransportServers", _multi_valued(
            _AD_OBJECT_ID,
            [_ad_object_id(server, parent="Servers") for server in record.source_transport_servers],
            active_directory=True,
        )),
        ("Name", record.name),
        ("Identity", _ad_object_id(record.name, to_string=record.identity, parent="Connections")),
    ]
    return _ps_object(SEND_CONNECTOR_TYPE_NAMES, to_string=record.name, adapted=adapted)


def _receive_connector(record: LabReceiveConnectorRecord) -> PSObject:
    adapted: list[tuple[str, object]] = [
        ("Bindings", _multi_valued(f"Microsoft.Exchange.Data.IPBinding, {_DATA_ASSEMBLY}",
                                   [_ip_binding(binding) for binding in record.bindings])),
        ("Fqdn", _fqdn(record.fqdn)),
        ("TlsCertificateName", _optional_identifier(record.tls_certificate_name)),
        ("Enabled", record.enabled),
        ("Server", _ad_object_id(record.server, parent="Servers")),
        ("Name", record.name),
        ("Identity", _ad_object_id(record.name, to_string=record.identity,
                                   parent="SMTP Receive Connectors")),
    ]
    return _ps_object(RECEIVE_CONNECTOR_TYPE_NAMES, to_string=record.identity, adapted=adapted)


def _hybrid_configuration(record: LabHybridConfigurationRecord) -> PSObject:
    name = "Hybrid Configuration"
    domains = [
        _ps_object(
            ("Microsoft.Exchange.Data.AutoDiscoverSmtpDomain",
             "Microsoft.Exchange.Data.SmtpDomain", "System.Object"),
            to_string=domain,
            adapted=[("AutoDiscover", False), ("Domain", domain)],
        )
        for domain in record.domains
    ]
    adapted: list[tuple[str, object]] = [
        ("SendingTransportServers", _multi_valued(
            _AD_OBJECT_ID,
            [_ad_object_id(server, parent="Servers")
             for server in record.sending_transport_servers],
            active_directory=True,
        )),
        ("OnPremisesSmartHost", None if record.on_premises_smart_host is None
         else _smtp_domain(record.on_premises_smart_host)),
        ("Domains", _multi_valued(
            f"Microsoft.Exchange.Data.AutoDiscoverSmtpDomain, {_DATA_ASSEMBLY}", domains)),
        ("TlsCertificateName", _optional_identifier(record.tls_certificate_name)),
        ("Name", name),
        ("Identity", _ad_object_id(name, parent=name)),
    ]
    return _ps_object(HYBRID_CONFIGURATION_TYPE_NAMES, to_string=name, adapted=adapted)


def _exchange_server(record: LabServerRecord) -> PSObject:
    role = _enum_from_name(ServerRole, record.server_role)
    is_mailbox = ServerRole.Mailbox in role
    adapted: list[tuple[str, object]] = [
        ("Name", record.name),
        ("Domain", record.fqdn.partition(".")[2]),
        ("Fqdn", record.fqdn),
        ("IsHubTransportServer", is_mailbox or ServerRole.HubTransport in role),
        ("IsClientAccessServer", is_mailbox or ServerRole.ClientAccess in role),
        ("IsEdgeServer", ServerRole.Edge in role),
        ("IsMailboxServer", is_mailbox),
        ("AdminDisplayVersion", _server_version(record.admin_display_version)),
        ("Site", _ad_object_id(record.site.rsplit("/", 1)[-1], to_string=record.site,
                               parent=record.site.rpartition("/")[0])),
        ("ServerRole", role),
        ("Identity", _ad_object_id(record.name, parent="Servers")),
    ]
    return _ps_object(EXCHANGE_SERVER_TYPE_NAMES, to_string=record.name, adapted=adapted)


def _queue(record: LabQueueRecord) -> PSObject:
    identity = _ps_object(
        ("Microsoft.Exchange.Data.QueueViewer.QueueIdentity",
         "Microsoft.Exchange.Data.ObjectId", "System.Object"),
        to_string=record.identity,
        adapted=[("Server", record.server)],
    )
    adapted: list[tuple[str, object]] = [
        ("DeliveryType", _enum_from_name(DeliveryType, record.delivery_type)),
        ("NextHopDomain", record.next_hop_domain),
        ("Status", _enum_from_name(QueueStatus, record.status)),
        ("MessageCount", record.message_count),
        ("LastError", record.last_error),
        ("Identity", identity),
    ]
    return _ps_object(QUEUE_TYPE_NAMES, to_string=record.identity, adapted=adapted)


def _ps_object(
    type_names: Sequence[str],
    *,
    to_string: str | None,
    adapted: Sequence[tuple[str, object]] = (),
    extended: Sequence[tuple[str, object]] = (),
) -> PSObject:
    obj = _WireObject()
    obj.PSObject.type_names = list(type_names)
    for name, value in adapted:
        obj.PSObject.adapted_properties.append(_note(name, value, obj))
    for name, value in extended:
        obj.PSObject.extended_properties.append(_note(name, value, obj))
    if to_string is not None:
        obj.PSObject.to_string = clixml_escape(to_string)
    return obj


_UNDERSCORE_X = re.compile("(?i)_(x)")
_NEEDS_ESCAPE = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]")


def clixml_escape(text: str) -> str:
    """``text`` with CLIXML's ``_xHHHH_`` escapes (CR, LF, other controls, astral characters).

    psrpcore 0.3 writes an object's ``<ToString>`` without escaping it, so a CR LF reaches the
    client as a bare LF; the ToStrings set here are escaped beforehand, as PowerShell does.
    """

    def escape(match: re.Match[str]) -> str:
        units = match.group(0).encode("utf-16-be", errors="surrogatepass").hex().upper()
        return "".join(f"_x{units[i:i + 4]}_" for i in range(0, len(units), 4))

    return _NEEDS_ESCAPE.sub(escape, _UNDERSCORE_X.sub("_x005F_\\1", text))


def _clixml_unescape(text: str) -> str:
    units = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda match: chr(int(match.group(1), 16)), text)
    return units.encode("utf-16-be", errors="surrogatepass").decode("utf-16-be")


def _multi_valued(
    element_type: str, items: Sequence[object], *, active_directory: bool = False
) -> PSList:
    """Exchange's ``MultiValuedProperty<T>`` (``ADMultiValuedProperty<T>`` for AD values)."""
    values = _WireList(list(items))
    type_names = [
        f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{element_type}]]",
        "Microsoft.Exchange.Data.MultiValuedPropertyBase",
        "System.Object",
    ]
    if active_directory:
        type_names.insert(
            0, f"Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1[[{element_type}]]"
        )
    values.PSObject.type_names = type_names
    return values


def _ad_object_id(name: str, *, parent: str, to_string: str | None = None) -> PSObject:
    return _ps_object(
        ("Microsoft.Exchange.Data.Directory.ADObjectId", "Microsoft.Exchange.Data.ObjectId",
         "System.Object"),
        to_string=to_string or name,
        adapted=[
            ("IsDeleted", False),
            ("Rdn", f"CN={name}"),
            ("Parent", parent),
            ("IsRelativeDn", False),
            ("Name", name),
        ],
    )


def _smtp_domain(domain: str) -> PSObject:
    return _ps_object(("Microsoft.Exchange.Data.SmtpDomain", "System.Object"),
                      to_string=domain, adapted=[("Domain", domain)])


def _fqdn(fqdn: str) -> PSObject:
    return _ps_object(
        ("Microsoft.Exchange.Data.Fqdn", "Microsoft.Exchange.Data.SmtpDomain", "System.Object"),
        to_string=fqdn,
        adapted=[("Domain", fqdn)],
    )


def _smtp_domain_with_subdomains(text: str) -> PSObject:
    include_subdomains = text == "*" or text.startswith("*.")
    domain = text[2:] if text.startswith("*.") else text
    return _ps_object(
        ("Microsoft.Exchange.Data.SmtpDomainWithSubdomains", "System.Object"),
        to_string=text,
        adapted=[("Address", text), ("IncludeSubDomains", include_subdomains),
                 ("Domain", domain)],
    )


def _address_space(text: str) -> PSObject:
    """``[type:]address[;cost]`` as Exchange's ``AddressSpace`` (ToString ``SMTP:*;1``)."""
    match = re.fullmatch(r"(?:(?P<type>[A-Za-z0-9]+):)?(?P<address>[^;]+)(?:;(?P<cost>\d+))?",
                         text.strip())
    if match is None:
        raise ValueError(f"not an address space: {text!r}")
    space_type = (match["type"] or "SMTP").upper()
    address = match["address"]
    cost = int(match["cost"] or 1)
    include_subdomains = address == "*" or address.startswith("*.")
    domain = address[2:] if address.startswith("*.") else address
    return _ps_object(
        ("Microsoft.Exchange.Data.AddressSpace", "System.Object"),
        to_string=f"{space_type}:{address};{cost}",
        adapted=[
            ("Address", address),
            ("Type", space_type),
            ("Cost", cost),
            ("IncludeSubDomains", include_subdomains),
            ("Domain", domain),
            ("IsSmtpType", space_type == "SMTP"),
            ("IsX400Type", space_type == "X400"),
            ("X400Address", None),
        ],
    )


def _smart_host(host: str, any_address: PSObject) -> PSObject:
    literal = host.strip("[]")
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return _ps_object(
            ("Microsoft.Exchange.Data.SmartHost", "System.Object"),
            to_string=host,
            adapted=[("Address", any_address), ("IsIPAddress", False), ("Domain", host)],
        )
    return _ps_object(
        ("Microsoft.Exchange.Data.SmartHost", "System.Object"),
        to_string=host,
        adapted=[("Address", _ip_address(address)), ("IsIPAddress", True), ("Domain", None)],
    )


def _ip_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> PSObject:
    """``System.Net.IPAddress``; the IPv4 ``Address`` is the .NET little-endian integer."""
    adapted: list[tuple[str, object]] = []
    if isinstance(address, ipaddress.IPv4Address):
        adapted.append(("Address", PSInt64(int.from_bytes(address.packed, "little"))))
        adapted.append(("AddressFamily", "InterNetwork"))
    else:
        adapted.append(("AddressFamily", "InterNetworkV6"))
        adapted.append(("ScopeId", 0))
    adapted += [
        ("IsIPv6Multicast", address.version == 6 and address.is_multicast),
        ("IsIPv6LinkLocal", address.version == 6 and address.is_link_local),
        ("IsIPv6SiteLocal", address.version == 6 and address.is_site_local),
        ("IsIPv6Teredo", isinstance(address, ipaddress.IPv6Address)
         and address.teredo is not None),
        ("IsIPv4MappedToIPv6", isinstance(address, ipaddress.IPv6Address)
         and address.ipv4_mapped is not None),
    ]
    return _ps_object(("System.Net.IPAddress", "System.Object"), to_string=str(address),
                      adapted=adapted, extended=[("IPAddressToString", str(address))])


def _ip_binding(binding: str) -> PSObject:
    """``0.0.0.0:25`` or ``[::]:25`` as Exchange's ``IPBinding``."""
    match = re.fullmatch(r"\[?(?P<host>[^\]]*?)\]?:(?P<port>\d+)", binding.strip())
    if match is None:
        raise ValueError(f"not an IP binding: {binding!r}")
    address = ipaddress.ip_address(match["host"])
    family = "InterNetwork" if address.version == 4 else "InterNetworkV6"
    return _ps_object(
        ("Microsoft.Exchange.Data.IPBinding", "System.Net.IPEndPoint", "System.Net.EndPoint",
         "System.Object"),
        to_string=binding,
        adapted=[("Port", int(match["port"])), ("AddressFamily", family),
                 ("Address", _ip_address(address))],
    )


def _server_version(text: str) -> PSObject:
    """``Version 15.2 (Build 986.5)`` as Exchange's ``ServerVersion``."""
    adapted: list[tuple[str, object]] = []
    match = re.fullmatch(r"Version (\d+)\.(\d+) \(Build (\d+)\.(\d+)\)", text.strip())
    if match is not None:
        major, minor, build, revision = (int(part) for part in match.groups())
        adapted = [("Major", major), ("Minor", minor), ("Build", build),
                   ("Revision", revision), ("FilePatchLevelDescription", None)]
    return _ps_object(("Microsoft.Exchange.Data.ServerVersion", "System.Object"),
                      to_string=text, adapted=adapted)


def _enum_from_name(enum_type: type[_E], text: str) -> _E:
    """An enum (or flags, ``"Mailbox, ClientAccess"``) member from its .NET name(s)."""
    by_name = {name.casefold(): member for name, member in enum_type.__members__.items()}
    parts = [part.strip() for part in text.split(",") if part.strip()] or ["None"]
    members = []
    for part in parts:
        member = by_name.get(part.casefold())
        if member is None:
            raise ValueError(f"{part!r} is not a {enum_type.__name__}")
        members.append(member)
    if len(members) == 1:
        return members[0]
    combined = 0
    for member in members:
        combined |= int(member.value)
    return enum_type(combined)


def _custom_object_string(properties: Sequence[tuple[str, object]]) -> str:
    """PowerShell's ``@{Name=value; ...}`` ToString of a PSCustomObject."""
    return "@{" + "; ".join(f"{name}={_display(value)}" for name, value in properties) + "}"


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, datetime):
        return _dotnet_date(value)
    if isinstance(value, PSList):
        return "System.Object[]"
    if isinstance(value, PSEnumBase | PSFlagBase):
        return _enum_display(value)
    if isinstance(value, PSObject):
        if value.PSObject.to_string is None:
            return value.PSObject.type_names[0]
        return _clixml_unescape(value.PSObject.to_string)
    if isinstance(value, bytes):
        return "System.Byte[]"
    return str(value)


def _enum_display(value: PSEnumBase | PSFlagBase) -> str:
    if isinstance(value, PSFlagBase):
        names = [name for name, member in type(value).__members__.items()
                 if member.value and member in value]
        return ", ".join(names) or "None"
    return "None" if value.name == "none" else str(value.name)


def _dotnet_date(value: datetime) -> str:
    return value.strftime("%m/%d/%Y %H:%M:%S")


def _pascal_case(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))
