"""Exchange objects (as :class:`RemoteObject`) -> the immutable snapshot records.

One parser for both roads in: live pypsrp output and ``Export-Clixml`` files (see
:mod:`.remote_object`). Pure: no I/O, no clock.

A value Exchange did not send stays ``None`` ("unknown"). Required values that are missing or of
the wrong type raise :class:`SnapshotParseError` naming the object and the property; things that
only reduce what is known (an unreadable SerializationData blob, an unknown enum number) become
notes (:class:`ParseOutcome`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import nrbf

from bot.exchange.remote_object import RemoteObject, strip_deserialized, type_suffix_matches
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeServer,
    ExchangeService,
    HybridConfiguration,
    Queue,
    ReceiveConnector,
    RootCAType,
    SendConnector,
    ServerSnapshot,
    ServicesSource,
    TlsCertificateName,
)
from bot.exchange.x509_facts import CertificateParseError, certificate_facts

ObjectKind = Literal["certificate", "send_connector", "receive_connector",
                     "hybrid_configuration", "queue", "exchange_server", "unknown"]

T = TypeVar("T")


class SnapshotParseError(ValueError):
    """An Exchange object lacks a required value or has one of the wrong type."""


@dataclass(frozen=True)
class ParseOutcome(Generic[T]):
    """A parsed record and what the parser could not learn, in words for people."""

    value: T
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

_CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
_TYPES_BY_KIND: tuple[tuple[ObjectKind, tuple[str, ...]], ...] = (
    ("certificate", (_CERTIFICATE_TYPE,)),
    ("send_connector", (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.SmtpSendConnectorConfig",)),
    ("receive_connector", (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector",)),
    ("hybrid_configuration", (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.HybridConfiguration",)),
    ("queue", (
        "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
        "Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
        "Microsoft.Exchange.Data.QueueViewer.QueueInfo",
    )),
    ("exchange_server", ("Microsoft.Exchange.Data.Directory.Management.ExchangeServer",)),
)
_SELECTED_PREFIX = "Selected."


def classify(obj: object) -> ObjectKind:
    """Which Exchange object this is, by its type names (``unknown`` for anything else).

    ``Select-Object`` output (``Selected.…`` type names) counts as a certificate only when it
    kept ``RawData``; see :func:`is_selected_certificate_row` for the rest.
    """
    if not isinstance(obj, RemoteObject):
        return "unknown"
    selected = _is_selected(obj)
    for kind, type_names in _TYPES_BY_KIND:
        if any(type_suffix_matches(obj, name) for name in type_names):
            if selected and not (kind == "certificate" and isinstance(obj.get("RawData"), bytes)):
                return "unknown"
            return kind
    return "unknown"


def is_selected_certificate_row(obj: object) -> bool:
    """A ``Get-ExchangeCertificate | Select-Object Thumbprint,Services,...`` row without RawData."""
    return (isinstance(obj, RemoteObject) and _is_selected(obj)
            and type_suffix_matches(obj, _CERTIFICATE_TYPE)
            and not isinstance(obj.get("RawData"), bytes)
            and isinstance(obj.get("Thumbprint"), str))


def _is_selected(obj: RemoteObject) -> bool:
    return bool(obj.type_names) and strip_deserialized(obj.type_names[0]).startswith(
        _SELECTED_PREFIX)


# ---------------------------------------------------------------------------------------------
# Reading typed values out of a RemoteObject, with errors that name object and property
# ---------------------------------------------------------------------------------------------

class _Missing:
    pass


_MISSING = _Missing()


class _Reader:
    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, RemoteObject):
            raise SnapshotParseError(
                f"{what}: expected an Exchange object, got {type(obj).__name__}")
        self.obj = obj
        self.what = what

    @property
    def label(self) -> str:
        name = self.obj.get("Name")
        if isinstance(name, str) and name:
            return f"{self.what} {name!r}"
        if self.obj.to_string:
            return f"{self.what} {self.obj.to_string[:80]!r}"
        return self.what

    def error(self, name: str, problem: str) -> SnapshotParseError:
        return SnapshotParseError(f"{self.label}: property {name!r} {problem}")

    def raw(self, name: str) -> object:
        return self.obj.get(name, _MISSING) if self.obj.has(name) else _MISSING

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is _MISSING or value is None:
            return None
        text = _as_text(value)
        if text is None:
            raise self.error(name, f"should be text, got {_describe(value)}")
        return text

    def optional_text(self, name: str) -> str | None:
        """``text``, with blank text read as ``None``."""
        text = self.text(name)
        return text if text is not None and text.strip() else None

    def required_text(self, name: str) -> str:
        value = self.raw(name)
        if value is _MISSING or value is None:
            raise self.error(name, "is missing" if value is _MISSING else "is empty (null)")
        text = self.text(name)
        if text is None or not text.strip():
            raise self.error(name, "is empty")
        return text

    def boolean(self, name: str, *, default: bool | None = None) -> bool:
        value = self.raw(name)
        if value is _MISSING or value is None:
            if default is None:
                raise self.error(name, "is missing" if value is _MISSING else "is empty (null)")
            return default
        flag = _as_bool(value)
        if flag is None:
            raise self.error(name, f"should be True or False, got {_describe(value)}")
        return flag

    def integer(self, name: str, *, default: int | None = None) -> int:
        value = self.raw(name)
        if value is _MISSING or value is None:
            if default is None:
                raise self.error(name, "is missing" if value is _MISSING else "is empty (null)")
            return default
        number = _as_int(value)
        if number is None:
            raise self.error(name, f"should be a whole number, got {_describe(value)}")
        return number

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is _MISSING or value is None:
            return ()
        items: Sequence[object] = value if isinstance(value, tuple) else (value,)
        result: list[str] = []
        for item in items:
            if item is None:
                continue
            text = _as_text(item)
            if text is None:
                raise self.error(name, f"should hold text values, got {_describe(item)}")
            if text.strip():
                result.append(text.strip())
        return tuple(result)

    def tls_certificate_name(self, name: str) -> TlsCertificateName | None:
        value = self.raw(name)
        if value is _MISSING:
            return None
        try:
            return parse_tls_certificate_name(value)
        except SnapshotParseError as error:
            raise SnapshotParseError(f"{self.label}: property {name!r}: {error}") from None


def _describe(value: object) -> str:
    if isinstance(value, RemoteObject):
        return f"an object of type {value.type_name or 'unknown'} without a text form"
    if isinstance(value, tuple):
        return f"a list of {len(value)} values"
    return f"{type(value).__name__} {value!r:.60}"


def _as_text(value: object) -> str | None:
    """Text of a string, an enum (its name) or an object with a ToString (e.g. an ADObjectId)."""
    if isinstance(value, str):
        return value
    if isinstance(value, RemoteObject):
        if value.to_string is not None:
            return value.to_string
        if isinstance(value.value, str):
            return value.value
        if isinstance(value.value, int) and not isinstance(value.value, bool):
            return str(value.value)
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, RemoteObject):
        value = value.value
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, RemoteObject):
        value = value.value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(-?\d{1,19})\s*", value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None  # re's \s is wider than int()'s


# ---------------------------------------------------------------------------------------------
# TlsCertificateName
# ---------------------------------------------------------------------------------------------

def parse_tls_certificate_name(value: object) -> TlsCertificateName | None:
    """``TlsCertificateName`` from an ``SmtpX509Identifier`` object, its text, or ``None``.

    The object's ``CertificateIssuer``/``CertificateSubject`` are used when present; its
    ToString (``<I>issuer<S>subject``) is kept as ``raw``. Empty text means "not set".
    """
    if value is None:
        return None
    if isinstance(value, str):
        return TlsCertificateName.parse(value) if value.strip() else None
    if not isinstance(value, RemoteObject):
        raise SnapshotParseError(
            f"TlsCertificateName should be <I>issuer<S>subject text or an SmtpX509Identifier, "
            f"got {_describe(value)}")
    issuer = value.get("CertificateIssuer")
    subject = value.get("CertificateSubject")
    issuer_text = _as_text(issuer) if issuer is not None else None
    subject_text = _as_text(subject) if subject is not None else None
    raw = value.to_string
    if raw is None and isinstance(value.value, str):
        raw = value.value
    if issuer_text and subject_text and issuer_text.strip() and subject_text.strip():
        if raw is None or not raw.strip():
            raw = f"<I>{issuer_text}<S>{subject_text}"
        return TlsCertificateName(raw=raw, issuer=issuer_text.strip(),
                                  subject=subject_text.strip())
    if raw is not None:
        return TlsCertificateName.parse(raw) if raw.strip() else None
    raise SnapshotParseError(
        f"TlsCertificateName object of type {value.type_name or 'unknown'} has neither a "
        "ToString nor CertificateIssuer and CertificateSubject")


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------

_ALL_SERVICES = 0
for _member in ExchangeService:
    _ALL_SERVICES |= int(_member)

_THUMBPRINT_IN_TO_STRING = re.compile(r"\[Thumbprint\]\s*([0-9A-Fa-f]{40})")


@dataclass(frozen=True)
class _ExchangeView:
    """Services, Status, RootCAType, SelfSigned and Identity from one source."""

    source: ServicesSource
    services: ExchangeService | None = None
    root_ca_type: RootCAType | None = None
    status: CertificateStatus | None = None
    self_signed: bool | None = None
    identity: str | None = None


def parse_certificate(obj: RemoteObject, *,
                      selected: RemoteObject | None = None) -> ExchangeCertificate:
    """One ``Get-ExchangeCertificate`` object -> :class:`ExchangeCertificate` (notes dropped)."""
    return parse_certificate_with_notes(obj, selected=selected).value


def parse_certificate_with_notes(
        obj: RemoteObject, *,
        selected: RemoteObject | None = None) -> ParseOutcome[ExchangeCertificate]:
    """Like :func:`parse_certificate`, with notes on what could not be learnt.

    RawData gives the X.509 facts. Services, Status, RootCAType, SelfSigned and Identity come
    from the SerializationData blob (read with ``nrbf``), else from properties the object
    itself carries or from ``selected`` (a ``Select-Object Thumbprint,Services,RootCAType,
    Status`` row of the same certificate), else stay unknown.
    """
    reader = _Reader(obj, "certificate")
    der = reader.raw("RawData")
    if der is _MISSING or der is None:
        raise reader.error("RawData", "is missing: the certificate itself was not sent")
    if not isinstance(der, bytes):
        raise reader.error("RawData", f"should be bytes (DER), got {_describe(der)}")
    try:
        facts = certificate_facts(der)
    except CertificateParseError as error:
        raise reader.error("RawData", f"is not a readable certificate: {error}") from None

    label = f"certificate {facts.thumbprint}"
    notes = [f"{label}: {problem}" for problem in facts.problems]
    shown = _THUMBPRINT_IN_TO_STRING.search(obj.to_string or "")
    if shown and shown.group(1).upper() != facts.thumbprint:
        notes.append(f"{label}: ToString names thumbprint {shown.group(1).upper()}, "
                     "which does not match RawData")

    views: list[_ExchangeView] = []
    blob_view = _view_from_serialization_data(obj, label, notes)
    if blob_view is not None:
        views.append(blob_view)
    if any(obj.has(name) for name in ("Services", "RootCAType", "Status")):
        views.append(_view_from_properties(obj, label, "its own properties", notes))
    if selected is not None:
        selected_thumbprint = selected.get("Thumbprint")
        if (isinstance(selected_thumbprint, str)
                and _normal_thumbprint(selected_thumbprint) != facts.thumbprint):
            notes.append(f"{label}: ignored Select-Object row of another certificate "
                         f"({_normal_thumbprint(selected_thumbprint)})")
        else:
            views.append(_view_from_properties(selected, label, "Select-Object", notes))

    services, services_source = None, ServicesSource.UNKNOWN
    for view in views:
        if view.services is not None:
            services, services_source = view.services, view.source
            break
    if services is None and not views and obj.get("SerializationData") is None:
        notes.append(f"{label}: Exchange sent no SerializationData and no Services property; "
                     "Services, Status and RootCAType are unknown")
    elif services is None:
        notes.append(f"{label}: Services is unknown")

    exchange_self_signed = _first(view.self_signed for view in views)
    if exchange_self_signed is not None and exchange_self_signed != facts.self_signed:
        notes.append(f"{label}: Exchange says self-signed={exchange_self_signed}, "
                     f"the certificate itself says {facts.self_signed}")

    computer_name = obj.get("PSComputerName")
    certificate = ExchangeCertificate(
        thumbprint=facts.thumbprint,
        der=der,
        subject=facts.subject,
        issuer=facts.issuer,
        serial_number=facts.serial_number,
        domains=facts.domains,
        not_before=facts.not_before,
        not_after=facts.not_after,
        self_signed=exchange_self_signed if exchange_self_signed is not None
        else facts.self_signed,
        key_algorithm=facts.key_algorithm,
        key_size=facts.key_size,
        signature_hash=facts.signature_hash,
        extended_key_usages=facts.extended_key_usages,
        services=services,
        root_ca_type=_first(view.root_ca_type for view in views),
        status=_first(view.status for view in views),
        services_source=services_source,
        identity=_first(view.identity for view in views) or _identity_text(obj.get("Identity")),
        computer_name=computer_name if isinstance(computer_name, str) and computer_name else None,
    )
    return ParseOutcome(certificate, tuple(notes))


def _first(values: Iterable[T | None]) -> T | None:
    for value in values:
        if value is not None:
            return value
    return None


def _normal_thumbprint(text: str) -> str:
    return re.sub(r"[^0-9A-Fa-f]", "", text).upper()


def _identity_text(value: object) -> str | None:
    text = _as_text(value) if value is not None else None
    return text if text else None


class _BoundedNrbfParser(nrbf.NRBFParser):  # type: ignore[misc]
    """nrbf's parser with its work bounded by the size of the blob.

    nrbf 0.1.2 expands ``ObjectNullMultiple`` counts without checking them, so a 30-byte blob
    declaring a 2**31-item array could ask for gigabytes of ``None``; and it resolves
    references without memo, so ~800 bytes of arrays sharing references take 2**40 steps.
    This copy of its array loop checks null runs against the array and a budget of values,
    and reference resolution spends from the same budget. Byte arrays (a certificate's DER in
    SerializationData) are read at once as ``bytes``, not value by value.
    """

    _OBJECT_NULL = 10
    _OBJECT_NULL_MULTIPLE_256 = 13
    _OBJECT_NULL_MULTIPLE = 14
    _PRIMITIVE_BYTE = 2
    _MINIMUM_BUDGET = 100_000
    _BUDGET_PER_BYTE = 32

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._budget = max(self._MINIMUM_BUDGET, self._BUDGET_PER_BYTE * len(data))

    def _spend(self, values: int) -> None:
        self._budget -= values
        if self._budget < 0:
            raise nrbf.ParseError("too many values for the size of the stream "
                                  "(null runs or shared references)")

    def _resolve(self, value: Any) -> Any:
        self._spend(1)
        return super()._resolve(value)

    def _read_array_single_primitive(self) -> list[Any] | bytes:
        object_id = self._i32()
        length = self._i32()
        primitive_type = self._u8()
        if length < 0:
            raise nrbf.ParseError(f"array of negative length {length}")
        if primitive_type == self._PRIMITIVE_BYTE:
            values: list[Any] | bytes = self._f.read(length)
            if len(values) != length:
                raise nrbf.ParseError(f"byte array of {length} runs past the end of the stream")
        else:
            self._spend(length)
            values = [self._primitive(primitive_type) for _ in range(length)]
        self.objects[object_id] = values
        return values

    def _read_array_elements(self, length: int) -> list[Any]:
        items: list[Any] = []
        while len(items) < length:
            position = self._f.tell()
            record = self._f.read(1)
            if not record:
                break
            if record[0] == self._OBJECT_NULL:
                items.append(None)
            elif record[0] in (self._OBJECT_NULL_MULTIPLE_256, self._OBJECT_NULL_MULTIPLE):
                count = (self._u8() if record[0] == self._OBJECT_NULL_MULTIPLE_256
                         else self._i32())
                if count < 0 or count > length - len(items):
                    raise nrbf.ParseError(f"null run of {count} exceeds its array at {position}")
                self._spend(count)
                items.extend([None] * count)
            else:
                self._f.seek(position)
                items.append(self._read_inline_value())
        return items


def read_serialization_data(blob: bytes) -> dict[str, object]:
    """The fields of an ExchangeCertificate SerializationData blob (MS-NRBF, read by ``nrbf``).

    Raises ``ValueError`` when the blob is not a readable BinaryFormatter stream of one object.
    Nothing is instantiated: nrbf only reads.
    """
    try:
        root = _BoundedNrbfParser(blob).parse()
    except Exception as error:  # nrbf raises IndexError, struct.error, ... on corrupt input
        raise ValueError(f"not a readable BinaryFormatter stream ({type(error).__name__}: "
                         f"{error})") from None
    if not isinstance(root, dict):
        raise ValueError(f"holds a {type(root).__name__}, not an object")
    return {str(key): value for key, value in root.items()}


def _view_from_serialization_data(obj: RemoteObject, label: str,
                                  notes: list[str]) -> _ExchangeView | None:
    blob = obj.get("SerializationData")
    if blob is None:
        return None
    if not isinstance(blob, bytes):
        notes.append(f"{label}: SerializationData should be bytes, got {_describe(blob)}; "
                     "ignored")
        return None
    try:
        fields = read_serialization_data(blob)
    except ValueError as error:
        notes.append(f"{label}: SerializationData is unreadable, treated as missing: {error}")
        return None
    class_name = fields.get("__class__")
    if not (isinstance(class_name, str) and class_name.endswith(".ExchangeCertificate")):
        notes.append(f"{label}: SerializationData holds {class_name!r}, not an "
                     "ExchangeCertificate; ignored")
        return None
    where = "SerializationData"
    self_signed = fields.get("SelfSigned")
    identity = fields.get("Identity")
    return _ExchangeView(
        source=ServicesSource.SERIALIZATION_DATA,
        services=_services_of(fields.get("Services"), label, where, notes),
        root_ca_type=_enum_of(RootCAType, "RootCAType", fields.get("RootCAType"), label, where,
                              notes),
        status=_enum_of(CertificateStatus, "Status", fields.get("Status"), label, where, notes),
        self_signed=self_signed if isinstance(self_signed, bool) else None,
        identity=identity if isinstance(identity, str) and identity else None,
    )


def _view_from_properties(source: RemoteObject, label: str, where: str,
                          notes: list[str]) -> _ExchangeView:
    self_signed = _as_bool(source.get("IsSelfSigned"))
    return _ExchangeView(
        source=ServicesSource.SELECT_OBJECT,
        services=_services_of(source.get("Services"), label, where, notes),
        root_ca_type=_enum_of(RootCAType, "RootCAType", source.get("RootCAType"), label, where,
                              notes),
        status=_enum_of(CertificateStatus, "Status", source.get("Status"), label, where, notes),
        self_signed=self_signed,
        identity=_identity_text(source.get("Identity")),
    )


def _enum_parts(value: object) -> tuple[int | None, str | None, bool]:
    """(number, name, understood) of an enum value given as int, name text or enum object."""
    if value is None:
        return None, None, True
    if isinstance(value, RemoteObject):
        number = value.value if isinstance(value.value, int) and not isinstance(
            value.value, bool) else None
        name = value.to_string if value.to_string and value.to_string.strip() else None
        return number, name, number is not None or name is not None
    if isinstance(value, bool):
        return None, None, False
    if isinstance(value, int):
        return value, None, True
    if isinstance(value, str):
        digits = re.fullmatch(r"\s*(\d{1,10})\s*", value)
        if digits:  # re's \s is wider than int()'s: "0\x1f" matches, int("0\x1f") fails
            return int(digits.group(1)), None, True
        return None, (value if value.strip() else None), True
    return None, None, False


def _services_of(value: object, label: str, where: str,
                 notes: list[str]) -> ExchangeService | None:
    number, name, understood = _enum_parts(value)
    if not understood:
        notes.append(f"{label}: Services from {where} is {_describe(value)}; unknown")
        return None
    from_number: ExchangeService | None = None
    if number is not None:
        if number >= 0 and not number & ~_ALL_SERVICES:
            from_number = ExchangeService(number)
        else:
            notes.append(f"{label}: Services from {where} is {number}, which holds flags "
                         "this tool does not know; unknown")
    from_name: ExchangeService | None = None
    if name is not None:
        try:
            from_name = ExchangeService.from_names(name)
        except ValueError:
            notes.append(f"{label}: Services from {where} is {name!r}, which this tool does not "
                         "know; unknown")
    if from_name is not None and from_number is not None and from_name != from_number:
        notes.append(f"{label}: Services from {where}: number {number} and name {name!r} "
                     "disagree; the name is used")
    return from_name if from_name is not None else from_number


_E = TypeVar("_E", RootCAType, CertificateStatus)


def _enum_of(enum_type: type[_E], field_name: str, value: object, label: str, where: str,
             notes: list[str]) -> _E | None:
    """An Exchange enum from its number or name; names win (they are documented, numbers of
    unobserved members are not)."""
    number, name, understood = _enum_parts(value)
    if not understood:
        notes.append(f"{label}: {field_name} from {where} is {_describe(value)}; unknown")
        return None
    from_number: _E | None = None
    if number is not None:
        try:
            from_number = enum_type(number)
        except ValueError:
            notes.append(f"{label}: {field_name} from {where} is {number}, a value this tool "
                         "does not know; unknown")
    from_name: _E | None = None
    if name is not None:
        from_name = _enum_member_named(enum_type, name)
        if from_name is None:
            notes.append(f"{label}: {field_name} from {where} is {name!r}, a value this tool "
                         "does not know; unknown")
    if from_name is not None and from_number is not None and from_name != from_number:
        notes.append(f"{label}: {field_name} from {where}: number {number} and name {name!r} "
                     "disagree; the name is used")
    return from_name if from_name is not None else from_number


def _enum_member_named(enum_type: type[_E], name: str) -> _E | None:
    wanted = re.sub(r"[^A-Za-z]", "", name).upper()
    for member in enum_type:
        if member.name.replace("_", "") == wanted:
            return member
    return None


# ---------------------------------------------------------------------------------------------
# Connectors, hybrid configuration, queues, servers
# ---------------------------------------------------------------------------------------------

def parse_send_connector(obj: RemoteObject) -> SendConnector:
    """One ``Get-SendConnector`` object -> :class:`SendConnector`."""
    reader = _Reader(obj, "send connector")
    smart_hosts = reader.texts("SmartHosts")
    if not smart_hosts:
        smart_hosts_text = reader.text("SmartHostsString") or ""
        smart_hosts = tuple(host.strip() for host in re.split(r"[,;]", smart_hosts_text)
                            if host.strip())
    return SendConnector(
        name=reader.required_text("Name"),
        enabled=reader.boolean("Enabled"),
        cloud_services_mail_enabled=reader.boolean("CloudServicesMailEnabled", default=False),
        smart_hosts=smart_hosts,
        address_spaces=reader.texts("AddressSpaces"),
        fqdn=reader.optional_text("Fqdn"),
        require_tls=reader.boolean("RequireTLS", default=False),
        tls_auth_level=reader.optional_text("TlsAuthLevel"),
        tls_domain=reader.optional_text("TlsDomain"),
        tls_certificate_name=reader.tls_certificate_name("TlsCertificateName"),
        source_transport_servers=reader.texts("SourceTransportServers"),
    )


def parse_receive_connector(obj: RemoteObject) -> ReceiveConnector:
    """One ``Get-ReceiveConnector`` object -> :class:`ReceiveConnector`."""
    reader = _Reader(obj, "receive connector")
    return ReceiveConnector(
        name=reader.required_text("Name"),
        server=reader.optional_text("Server"),
        fqdn=reader.optional_text("Fqdn"),
        enabled=reader.boolean("Enabled"),
        bindings=reader.texts("Bindings"),
        tls_certificate_name=reader.tls_certificate_name("TlsCertificateName"),
    )


def parse_hybrid_configuration(obj: RemoteObject) -> HybridConfiguration:
    """The ``Get-HybridConfiguration`` object -> :class:`HybridConfiguration`."""
    reader = _Reader(obj, "hybrid configuration")
    return HybridConfiguration(
        tls_certificate_name=reader.tls_certificate_name("TlsCertificateName"),
        on_premises_smart_host=reader.optional_text("OnPremisesSmartHost"),
        domains=reader.texts("Domains"),
        sending_transport_servers=reader.texts("SendingTransportServers"),
    )


def parse_queue(obj: RemoteObject) -> Queue:
    """One ``Get-Queue`` object -> :class:`Queue`."""
    reader = _Reader(obj, "queue")
    return Queue(
        identity=reader.required_text("Identity"),
        delivery_type=reader.optional_text("DeliveryType"),
        next_hop_domain=reader.optional_text("NextHopDomain"),
        status=reader.optional_text("Status"),
        message_count=reader.integer("MessageCount"),
        last_error=reader.optional_text("LastError"),
    )


def parse_exchange_server(obj: RemoteObject) -> ExchangeServer:
    """The ``Get-ExchangeServer`` object -> :class:`ExchangeServer`."""
    reader = _Reader(obj, "Exchange server")
    return ExchangeServer(
        name=reader.required_text("Name"),
        fqdn=reader.optional_text("Fqdn"),
        version=reader.optional_text("AdminDisplayVersion"),
        roles=reader.optional_text("ServerRole"),
    )


# ---------------------------------------------------------------------------------------------
# Offline snapshot (exchange-tls analyze FILE...)
# ---------------------------------------------------------------------------------------------

def snapshot_from_objects(objects: Iterable[object], *, taken_at: datetime,
                          server_name: str | None = None) -> ServerSnapshot:
    """One server's snapshot from a mixed bag of exported objects.

    Certificates are grouped by server (the server part of their Identity, else
    PSComputerName); the ``server_name`` group is kept, else the server of a
    ``Get-ExchangeServer`` object, else the first group. Send connectors and the hybrid
    configuration are organisation-wide and kept; receive connectors and queues of other
    servers are left out. Everything skipped or unknown is said in ``notes``.
    """
    if taken_at.tzinfo is None:
        raise ValueError("taken_at must be timezone-aware")
    notes: list[str] = []
    buckets = _sort_objects(objects, notes)

    selected_rows: dict[str, RemoteObject] = {}
    for selected_row in buckets.selected_rows:
        row_thumbprint = selected_row.get("Thumbprint")
        if isinstance(row_thumbprint, str):
            selected_rows.setdefault(_normal_thumbprint(row_thumbprint), selected_row)

    certificates: list[ExchangeCertificate] = []
    used_rows: set[str] = set()
    for obj in buckets.certificates:
        raw = obj.get("RawData")
        thumbprint = (hashlib.sha1(raw, usedforsecurity=False).hexdigest().upper()
                      if isinstance(raw, bytes) else "")
        row = selected_rows.get(thumbprint)
        try:
            outcome = parse_certificate_with_notes(obj, selected=row)
        except SnapshotParseError as error:
            notes.append(f"skipped: {error}")
            continue
        certificates.append(outcome.value)
        notes.extend(outcome.notes)
        if row is not None:
            used_rows.add(thumbprint)
    for thumbprint in selected_rows.keys() - used_rows:
        notes.append(f"Select-Object row for certificate {thumbprint} has no matching "
                     "certificate (RawData) in the input; ignored")

    servers = _parse_each(buckets.servers, parse_exchange_server, notes)
    all_receive_connectors = _parse_each(buckets.receive_connectors, parse_receive_connector,
                                         notes)
    all_queues = _parse_each(buckets.queues, parse_queue, notes)
    hints = [*(_certificate_server(certificate) for certificate in certificates),
             *(connector.server for connector in all_receive_connectors),
             *(_server_part(queue.identity) for queue in all_queues)]
    target = _target_server(server_name, servers, hints)
    server = _server_record(target, servers, certificates, notes)
    kept_certificates = _certificates_of(target, certificates, notes)
    send_connectors = _unique_by_name(
        _parse_each(buckets.send_connectors, parse_send_connector, notes), "send connector",
        notes)
    receive_connectors = _of_server(target, all_receive_connectors,
                                    lambda connector: connector.server, "receive connectors",
                                    notes)
    queues = _of_server(target, all_queues, lambda queue: _server_part(queue.identity),
                        "queues", notes)
    hybrids = _parse_each(buckets.hybrids, parse_hybrid_configuration, notes)
    if len(hybrids) > 1:
        notes.append(f"{len(hybrids)} hybrid configurations in the input; the first is used")

    if not kept_certificates:
        notes.append("no certificates in the input for this server")
    return ServerSnapshot(
        server=server,
        taken_at=taken_at,
        certificates=tuple(kept_certificates),
        send_connectors=tuple(send_connectors),
        receive_connectors=tuple(receive_connectors),
        hybrid=hybrids[0] if hybrids else None,
        queues=tuple(queues),
        notes=tuple(dict.fromkeys(notes)),
    )


@dataclass
class _Buckets:
    certificates: list[RemoteObject]
    selected_rows: list[RemoteObject]
    send_connectors: list[RemoteObject]
    receive_connectors: list[RemoteObject]
    hybrids: list[RemoteObject]
    queues: list[RemoteObject]
    servers: list[RemoteObject]


def _sort_objects(objects: Iterable[object], notes: list[str]) -> _Buckets:
    buckets = _Buckets([], [], [], [], [], [], [])
    by_kind: dict[ObjectKind, list[RemoteObject]] = {
        "certificate": buckets.certificates,
        "send_connector": buckets.send_connectors,
        "receive_connector": buckets.receive_connectors,
        "hybrid_configuration": buckets.hybrids,
        "queue": buckets.queues,
        "exchange_server": buckets.servers,
    }
    skipped: dict[str, int] = {}
    for obj in objects:
        kind = classify(obj)
        if isinstance(obj, RemoteObject) and kind != "unknown":
            by_kind[kind].append(obj)
        elif is_selected_certificate_row(obj):
            assert isinstance(obj, RemoteObject)
            buckets.selected_rows.append(obj)
        else:
            described = (obj.type_name or "untyped value") if isinstance(obj, RemoteObject) \
                else type(obj).__name__
            skipped[described] = skipped.get(described, 0) + 1
    for described, count in skipped.items():
        plural = "object" if count == 1 else "objects"
        notes.append(f"skipped {count} {plural} of type {described}: not used by the analysis")
    return buckets


def _parse_each(objects: list[RemoteObject], parse: Callable[[RemoteObject], T],
                notes: list[str]) -> list[T]:
    records: list[T] = []
    for obj in objects:
        try:
            records.append(parse(obj))
        except SnapshotParseError as error:
            notes.append(f"skipped: {error}")
    return records


def _server_part(identity: str | None) -> str | None:
    """``EX01\\Submission`` / ``ex01.contoso.com\\THUMB`` -> the server part."""
    if identity and "\\" in identity:
        server = identity.split("\\", 1)[0].strip()
        return server or None
    return None


def _certificate_server(certificate: ExchangeCertificate) -> str | None:
    return _server_part(certificate.identity) or certificate.computer_name


def same_server(left: str | None, right: str | None) -> bool:
    """``EX01`` names the same server as ``ex01.contoso.com``; two FQDNs must match fully."""
    if not left or not right:
        return False
    a, b = left.strip().rstrip(".").casefold(), right.strip().rstrip(".").casefold()
    if a == b:
        return True
    if "." in a and "." in b:
        return False
    return a.split(".", 1)[0] == b.split(".", 1)[0]


def _target_server(server_name: str | None, servers: list[ExchangeServer],
                   hints: Iterable[str | None]) -> str | None:
    if server_name:
        return server_name
    if servers:
        return servers[0].fqdn or servers[0].name
    return next((hint for hint in hints if hint), None)


def _server_record(target: str | None, servers: list[ExchangeServer],
                   certificates: list[ExchangeCertificate], notes: list[str]) -> ExchangeServer:
    matching = [server for server in servers
                if same_server(target, server.name) or same_server(target, server.fqdn)]
    others = [server.name for server in servers if server not in matching]
    if others:
        notes.append(f"Get-ExchangeServer objects of other servers ignored: {', '.join(others)}")
    if matching:
        return matching[0]
    if target is None:
        notes.append("the input does not say which server it came from")
        return ExchangeServer(name="unknown", fqdn=None)
    fqdn = target if "." in target else None
    if fqdn is None:
        for certificate in certificates:
            server = _certificate_server(certificate)
            if server and "." in server and same_server(target, server):
                fqdn = server
                break
    return ExchangeServer(name=target.split(".", 1)[0], fqdn=fqdn)


def _certificates_of(target: str | None, certificates: list[ExchangeCertificate],
                     notes: list[str]) -> list[ExchangeCertificate]:
    kept: list[ExchangeCertificate] = []
    seen: set[str] = set()
    others: dict[str, int] = {}
    for certificate in certificates:
        server = _certificate_server(certificate)
        if target is not None and server is not None and not same_server(target, server):
            others[server] = others.get(server, 0) + 1
            continue
        if certificate.thumbprint in seen:
            notes.append(f"certificate {certificate.thumbprint} appears more than once; "
                         "the first is used")
            continue
        seen.add(certificate.thumbprint)
        kept.append(certificate)
    if others:
        listed = ", ".join(f"{server} ({count})" for server, count in others.items())
        notes.append(f"certificates of other servers left out: {listed}")
    return kept


_R = TypeVar("_R")


def _of_server(target: str | None, records: list[_R], server_of: Callable[[_R], str | None],
               what: str, notes: list[str]) -> list[_R]:
    if target is None:
        return records
    kept = [record for record in records
            if server_of(record) is None or same_server(target, server_of(record))]
    if len(kept) < len(records):
        notes.append(f"{len(records) - len(kept)} {what} of other servers left out")
    return kept


def _unique_by_name(connectors: list[SendConnector], what: str,
                    notes: list[str]) -> list[SendConnector]:
    kept: dict[str, SendConnector] = {}
    for connector in connectors:
        key = connector.name.casefold()
        if key in kept:
            if kept[key] != connector:
                notes.append(f"{what} {connector.name!r} appears more than once with different "
                             "settings; the first is used")
            continue
        kept[key] = connector
    return list(kept.values())
