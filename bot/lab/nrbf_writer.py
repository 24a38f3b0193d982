"""A small MS-NRBF (.NET BinaryFormatter) writer for the lab's Exchange ``SerializationData``.

Exchange attaches a BinaryFormatter stream to the objects it sends over remote PowerShell (the
``SerializationData`` extended property). This module writes such streams from a plain object
graph (:class:`ClassInstance`, arrays, strings, primitives); it never reads or instantiates
anything. Record layout, object ids and metadata reuse follow what .NET's ``BinaryFormatter``
does, so :func:`serialize` reproduces Exchange's own ``ExchangeCertificate`` blobs byte for byte
(checked against the captured fixtures).

:func:`exchange_certificate_serialization_data` builds the blob of one certificate.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from bot.lab.records import LabCertificateRecord

EXCHANGE_MANAGEMENT_ASSEMBLY = (
    "Microsoft.Exchange.Management, Version=15.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35"
)
SYSTEM_ASSEMBLY = "System, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
EXCHANGE_CERTIFICATE_CLASS = (
    "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
)
_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"


class RecordType(enum.IntEnum):
    """MS-NRBF 2.1.2.1 RecordTypeEnumeration (the records this writer emits)."""

    SERIALIZED_STREAM_HEADER = 0
    CLASS_WITH_ID = 1
    SYSTEM_CLASS_WITH_MEMBERS_AND_TYPES = 4
    CLASS_WITH_MEMBERS_AND_TYPES = 5
    BINARY_OBJECT_STRING = 6
    BINARY_ARRAY = 7
    MEMBER_PRIMITIVE_TYPED = 8
    MEMBER_REFERENCE = 9
    OBJECT_NULL = 10
    MESSAGE_END = 11
    BINARY_LIBRARY = 12
    OBJECT_NULL_MULTIPLE_256 = 13
    OBJECT_NULL_MULTIPLE = 14
    ARRAY_SINGLE_PRIMITIVE = 15
    ARRAY_SINGLE_OBJECT = 16
    ARRAY_SINGLE_STRING = 17


class BinaryType(enum.IntEnum):
    """MS-NRBF 2.1.2.2 BinaryTypeEnumeration: how a member's type is described."""

    PRIMITIVE = 0
    STRING = 1
    OBJECT = 2
    SYSTEM_CLASS = 3
    CLASS = 4
    OBJECT_ARRAY = 5
    STRING_ARRAY = 6
    PRIMITIVE_ARRAY = 7


class PrimitiveType(enum.IntEnum):
    """MS-NRBF 2.1.2.3 PrimitiveTypeEnumeration."""

    BOOLEAN = 1
    BYTE = 2
    CHAR = 3
    DECIMAL = 5
    DOUBLE = 6
    INT16 = 7
    INT32 = 8
    INT64 = 9
    SBYTE = 10
    SINGLE = 11
    TIMESPAN = 12
    DATETIME = 13
    UINT16 = 14
    UINT32 = 15
    UINT64 = 16


_STRUCT_FORMATS: dict[PrimitiveType, str] = {
    PrimitiveType.BYTE: "<B",
    PrimitiveType.SBYTE: "<b",
    PrimitiveType.INT16: "<h",
    PrimitiveType.UINT16: "<H",
    PrimitiveType.INT32: "<i",
    PrimitiveType.UINT32: "<I",
    PrimitiveType.INT64: "<q",
    PrimitiveType.UINT64: "<Q",
    PrimitiveType.TIMESPAN: "<q",
    PrimitiveType.DATETIME: "<Q",
    PrimitiveType.SINGLE: "<f",
    PrimitiveType.DOUBLE: "<d",
}


@dataclass(frozen=True)
class MemberType:
    """The declared type of one class member (BinaryTypeEnum plus its additional info).

    Use the constructors: :meth:`primitive`, :meth:`string`, :meth:`object`,
    :meth:`system_class`, :meth:`class_`, :meth:`primitive_array`, :meth:`string_array`,
    :meth:`object_array`.
    """

    binary_type: BinaryType
    primitive_type: PrimitiveType | None = None
    class_name: str | None = None
    library: str | None = None

    @classmethod
    def primitive(cls, primitive_type: PrimitiveType) -> MemberType:
        return cls(BinaryType.PRIMITIVE, primitive_type=primitive_type)

    @classmethod
    def string(cls) -> MemberType:
        return cls(BinaryType.STRING)

    @classmethod
    def object(cls) -> MemberType:
        return cls(BinaryType.OBJECT)

    @classmethod
    def system_class(cls, class_name: str) -> MemberType:
        """A class of mscorlib (no library record)."""
        return cls(BinaryType.SYSTEM_CLASS, class_name=class_name)

    @classmethod
    def class_(cls, class_name: str, library: str) -> MemberType:
        """A class of another assembly; ``library`` is its full assembly name."""
        return cls(BinaryType.CLASS, class_name=class_name, library=library)

    @classmethod
    def primitive_array(cls, primitive_type: PrimitiveType) -> MemberType:
        return cls(BinaryType.PRIMITIVE_ARRAY, primitive_type=primitive_type)

    @classmethod
    def string_array(cls) -> MemberType:
        return cls(BinaryType.STRING_ARRAY)

    @classmethod
    def object_array(cls) -> MemberType:
        return cls(BinaryType.OBJECT_ARRAY)

    def __post_init__(self) -> None:
        needs_primitive = self.binary_type in (BinaryType.PRIMITIVE, BinaryType.PRIMITIVE_ARRAY)
        if needs_primitive != (self.primitive_type is not None):
            raise ValueError(f"{self.binary_type.name} member needs exactly a primitive type")
        needs_name = self.binary_type in (BinaryType.SYSTEM_CLASS, BinaryType.CLASS)
        if needs_name != (self.class_name is not None):
            raise ValueError(f"{self.binary_type.name} member needs exactly a class name")
        if (self.binary_type is BinaryType.CLASS) != (self.library is not None):
            raise ValueError("only a CLASS member names a library")


@dataclass(frozen=True)
class ClassInfo:
    """A .NET class as BinaryFormatter describes it: name, library, members in order.

    ``library`` None means a system class (mscorlib), written without a library record.
    ``value_type`` marks structs and enums: they are written inline where they occur, with
    a negative object id, instead of being referenced.
    """

    name: str
    members: tuple[tuple[str, MemberType], ...]
    library: str | None = None
    value_type: bool = False


@dataclass(frozen=True, eq=False)
class ClassInstance:
    """One object of a :class:`ClassInfo`, with a value per member."""

    class_info: ClassInfo
    values: tuple[NrbfValue, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.class_info.members):
            raise ValueError(
                f"{self.class_info.name}: {len(self.class_info.members)} members, "
                f"{len(self.values)} values"
            )


@dataclass(frozen=True, eq=False)
class PrimitiveArray:
    """A single-dimension array of one primitive type (``byte[]`` from ``bytes``)."""

    primitive_type: PrimitiveType
    items: bytes | tuple[bool | int | float | str, ...]


@dataclass(frozen=True, eq=False)
class ClassArray:
    """A single-dimension array of a class type (a BinaryArray record), e.g. ``IisService[]``."""

    element_type: MemberType
    items: tuple[ClassInstance | None, ...]

    def __post_init__(self) -> None:
        if self.element_type.binary_type not in (BinaryType.CLASS, BinaryType.SYSTEM_CLASS):
            raise ValueError("a ClassArray holds CLASS or SYSTEM_CLASS elements")


@dataclass(frozen=True, eq=False)
class StringArray:
    """``string[]``."""

    items: tuple[str | None, ...]


@dataclass(frozen=True, eq=False)
class ObjectArray:
    """``object[]``."""

    items: tuple[NrbfValue, ...]


@dataclass(frozen=True)
class BoxedPrimitive:
    """A primitive stored in an ``Object``-typed member or ``object[]`` element."""

    primitive_type: PrimitiveType
    value: bool | int | float | str


NrbfValue = Union[  # noqa: UP007  (a runtime alias used before the classes it names)
    None,
    bool,
    int,
    float,
    str,
    ClassInstance,
    PrimitiveArray,
    ClassArray,
    StringArray,
    ObjectArray,
    BoxedPrimitive,
]
"""A value the writer understands; bare bool/int/float only in PRIMITIVE members."""

_Referenced = Union[ClassInstance, PrimitiveArray, ClassArray, StringArray, ObjectArray]  # noqa: UP007


def serialize(root: _Referenced) -> bytes:
    """Write ``root`` and everything it references as one BinaryFormatter stream."""
    return _Writer().write(root)


def enum_instance(type_name: str, library: str, value: int) -> ClassInstance:
    """A boxed Int32 .NET enum value: a value-type class with one ``value__`` member."""
    info = ClassInfo(
        name=type_name,
        members=(("value__", MemberType.primitive(PrimitiveType.INT32)),),
        library=library,
        value_type=True,
    )
    return ClassInstance(info, (value,))


def generic_list(
    element_type_name: str,
    element_library: str,
    items: Sequence[ClassInstance | None],
    *,
    version: int,
) -> ClassInstance:
    """``System.Collections.Generic.List<T>`` of a class ``T`` from ``element_library``.

    The backing array grows like .NET's (empty, then 4, 8, 16, ...). ``version`` is the
    list's modification counter (``_version``) as the producer left it.
    """
    capacity = 0
    if items:
        capacity = 4
        while capacity < len(items):
            capacity *= 2
    list_info = ClassInfo(
        name=f"System.Collections.Generic.List`1[[{element_type_name}, {element_library}]]",
        members=(
            ("_items", MemberType.class_(f"{element_type_name}[]", element_library)),
            ("_size", MemberType.primitive(PrimitiveType.INT32)),
            ("_version", MemberType.primitive(PrimitiveType.INT32)),
        ),
    )
    backing = ClassArray(
        element_type=MemberType.class_(element_type_name, element_library),
        items=tuple(items) + (None,) * (capacity - len(items)),
    )
    return ClassInstance(list_info, (backing, len(items), version))


class _Writer:
    def __init__(self) -> None:
        self._out = bytearray()
        self._next_id = 1
        self._reference_ids: dict[int, int] = {}
        self._pending: deque[tuple[int, _Referenced]] = deque()
        self._libraries: dict[str, int] = {}
        self._metadata_ids: dict[ClassInfo, int] = {}
        self._keep_alive: list[object] = []

    def write(self, root: _Referenced) -> bytes:
        root_id = self._reference(root)
        self._out.append(RecordType.SERIALIZED_STREAM_HEADER)
        self._out += struct.pack("<iiii", root_id, -1, 1, 0)
        while self._pending:
            object_id, value = self._pending.popleft()
            self._write_referenced(object_id, value)
        self._out.append(RecordType.MESSAGE_END)
        return bytes(self._out)

    def _new_id(self) -> int:
        object_id = self._next_id
        self._next_id += 1
        return object_id

    def _reference(self, value: _Referenced) -> int:
        key = id(value)
        if key not in self._reference_ids:
            self._reference_ids[key] = self._new_id()
            self._keep_alive.append(value)
            self._pending.append((self._reference_ids[key], value))
        return self._reference_ids[key]

    def _library_id(self, library: str) -> int:
        if library not in self._libraries:
            library_id = self._new_id()
            self._libraries[library] = library_id
            self._out.append(RecordType.BINARY_LIBRARY)
            self._out += struct.pack("<i", library_id)
            self._out += _length_prefixed(library)
        return self._libraries[library]

    def _write_referenced(self, object_id: int, value: _Referenced) -> None:
        if isinstance(value, ClassInstance):
            self._write_class(object_id, value)
        elif isinstance(value, PrimitiveArray):
            self._out.append(RecordType.ARRAY_SINGLE_PRIMITIVE)
            self._out += struct.pack("<ii", object_id, len(value.items))
            self._out.append(value.primitive_type)
            if isinstance(value.items, bytes):
                if value.primitive_type is not PrimitiveType.BYTE:
                    raise ValueError("bytes items need PrimitiveType.BYTE")
                self._out += value.items
            else:
                for item in value.items:
                    self._out += _primitive_bytes(value.primitive_type, item)
        elif isinstance(value, ClassArray):
            self._write_class_array(object_id, value)
        elif isinstance(value, StringArray):
            self._out.append(RecordType.ARRAY_SINGLE_STRING)
            self._out += struct.pack("<ii", object_id, len(value.items))
            self._write_elements(value.items)
        else:
            self._out.append(RecordType.ARRAY_SINGLE_OBJECT)
            self._out += struct.pack("<ii", object_id, len(value.items))
            self._write_elements(value.items)

    def _write_class(self, object_id: int, instance: ClassInstance) -> None:
        info = instance.class_info
        metadata_id = self._metadata_ids.get(info)
        if metadata_id is not None:
            self._out.append(RecordType.CLASS_WITH_ID)
            self._out += struct.pack("<ii", object_id, metadata_id)
        else:
            library_id = self._library_id(info.library) if info.library is not None else None
            for _, member_type in info.members:
                if member_type.library is not None:
                    self._library_id(member_type.library)
            self._out.append(
                RecordType.CLASS_WITH_MEMBERS_AND_TYPES
                if library_id is not None
                else RecordType.SYSTEM_CLASS_WITH_MEMBERS_AND_TYPES
            )
            self._out += struct.pack("<i", object_id)
            self._out += _length_prefixed(info.name)
            self._out += struct.pack("<i", len(info.members))
            for name, _ in info.members:
                self._out += _length_prefixed(name)
            for _, member_type in info.members:
                self._out.append(member_type.binary_type)
            for _, member_type in info.members:
                self._out += self._additional_info(member_type)
            if library_id is not None:
                self._out += struct.pack("<i", library_id)
            self._metadata_ids[info] = object_id
        for (name, member_type), value in zip(info.members, instance.values, strict=True):
            if member_type.binary_type is BinaryType.PRIMITIVE:
                assert member_type.primitive_type is not None
                if not isinstance(value, bool | int | float | str):
                    raise TypeError(f"{info.name}.{name}: primitive member needs a primitive")
                self._out += _primitive_bytes(member_type.primitive_type, value)
            else:
                self._write_inline(value)

    def _additional_info(self, member_type: MemberType) -> bytes:
        if member_type.primitive_type is not None:
            return bytes([member_type.primitive_type])
        if member_type.binary_type is BinaryType.SYSTEM_CLASS:
            assert member_type.class_name is not None
            return _length_prefixed(member_type.class_name)
        if member_type.binary_type is BinaryType.CLASS:
            assert member_type.class_name is not None
            assert member_type.library is not None
            library_id = self._libraries[member_type.library]
            return _length_prefixed(member_type.class_name) + struct.pack("<i", library_id)
        return b""

    def _write_class_array(self, object_id: int, array: ClassArray) -> None:
        if array.element_type.library is not None:
            self._library_id(array.element_type.library)
        self._out.append(RecordType.BINARY_ARRAY)
        self._out += struct.pack("<i", object_id)
        self._out.append(0)  # BinaryArrayTypeEnumeration.Single
        self._out += struct.pack("<ii", 1, len(array.items))
        self._out.append(array.element_type.binary_type)
        self._out += self._additional_info(array.element_type)
        self._write_elements(array.items)

    def _write_elements(self, items: Sequence[NrbfValue]) -> None:
        for run_value, run_length in _null_runs(items):
            if run_value is not None:
                self._write_inline(run_value)
            elif run_length == 1:
                self._out.append(RecordType.OBJECT_NULL)
            elif run_length < 256:
                self._out.append(RecordType.OBJECT_NULL_MULTIPLE_256)
                self._out.append(run_length)
            else:
                self._out.append(RecordType.OBJECT_NULL_MULTIPLE)
                self._out += struct.pack("<i", run_length)

    def _write_inline(self, value: NrbfValue) -> None:
        if value is None:
            self._out.append(RecordType.OBJECT_NULL)
        elif isinstance(value, str):
            self._out.append(RecordType.BINARY_OBJECT_STRING)
            self._out += struct.pack("<i", self._new_id())
            self._out += _length_prefixed(value)
        elif isinstance(value, BoxedPrimitive):
            self._out.append(RecordType.MEMBER_PRIMITIVE_TYPED)
            self._out.append(value.primitive_type)
            self._out += _primitive_bytes(value.primitive_type, value.value)
        elif isinstance(value, ClassInstance) and value.class_info.value_type:
            self._write_class(-self._new_id(), value)
        elif isinstance(value, ClassInstance | PrimitiveArray | ClassArray | StringArray
                        | ObjectArray):
            self._out.append(RecordType.MEMBER_REFERENCE)
            self._out += struct.pack("<i", self._reference(value))
        else:
            raise TypeError(
                f"{type(value).__name__} outside a primitive member: wrap it in BoxedPrimitive"
            )


def _null_runs(items: Sequence[NrbfValue]) -> Iterator[tuple[NrbfValue, int]]:
    """Yield (value, 1) for values and (None, n) for each run of n nulls."""
    nulls = 0
    for item in items:
        if item is None:
            nulls += 1
            continue
        if nulls:
            yield None, nulls
            nulls = 0
        yield item, 1
    if nulls:
        yield None, nulls


def _length_prefixed(text: str) -> bytes:
    """MS-NRBF LengthPrefixedString: 7-bit encoded byte length, then UTF-8."""
    data = text.encode("utf-8")
    length = len(data)
    prefix = bytearray()
    while True:
        low = length & 0x7F
        length >>= 7
        if length:
            prefix.append(low | 0x80)
        else:
            prefix.append(low)
            return bytes(prefix) + data


def _primitive_bytes(primitive_type: PrimitiveType, value: bool | int | float | str) -> bytes:
    if primitive_type is PrimitiveType.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"Boolean needs a bool, not {value!r}")
        return b"\x01" if value else b"\x00"
    if primitive_type is PrimitiveType.CHAR:
        if not isinstance(value, str) or len(value) != 1:
            raise TypeError(f"Char needs a one-character str, not {value!r}")
        return value.encode("utf-8")
    if primitive_type is PrimitiveType.DECIMAL:
        return _length_prefixed(str(value))
    if isinstance(value, bool | str):
        raise TypeError(f"{primitive_type.name} needs a number, not {value!r}")
    if primitive_type not in (PrimitiveType.SINGLE, PrimitiveType.DOUBLE) and not isinstance(
        value, int
    ):
        raise TypeError(f"{primitive_type.name} needs an int, not {value!r}")
    try:
        return struct.pack(_STRUCT_FORMATS[primitive_type], value)
    except struct.error as error:
        raise ValueError(f"{value!r} does not fit {primitive_type.name}") from error


# --- Exchange's ExchangeCertificate -----------------------------------------------------------

_CERTIFICATE_STATUS = f"{_TASKS}.CertificateStatus"
_CERTIFICATE_AUTHORITY_TYPE = f"{_TASKS}.CertificateAuthorityType"
_ALLOWED_SERVICES = f"{_TASKS}.AllowedServices"
_IIS_SERVICE = f"{_TASKS}.IisService"
_URL_VALIDATION = f"{_TASKS}.UrlValidation"

_IIS_SERVICE_CLASS = ClassInfo(
    name=_IIS_SERVICE,
    members=(
        ("serviceName", MemberType.string()),
        ("internalUrl", MemberType.class_("System.Uri", SYSTEM_ASSEMBLY)),
        ("internalUrlValid", MemberType.class_(_URL_VALIDATION, EXCHANGE_MANAGEMENT_ASSEMBLY)),
        ("externalUrl", MemberType.class_("System.Uri", SYSTEM_ASSEMBLY)),
        ("externalUrlValid", MemberType.class_(_URL_VALIDATION, EXCHANGE_MANAGEMENT_ASSEMBLY)),
    ),
    library=EXCHANGE_MANAGEMENT_ASSEMBLY,
)

_IIS_SERVICE_LIST = (
    f"System.Collections.Generic.List`1[[{_IIS_SERVICE}, {EXCHANGE_MANAGEMENT_ASSEMBLY}]]"
)

_EXCHANGE_CERTIFICATE_CLASS = ClassInfo(
    name=EXCHANGE_CERTIFICATE_CLASS,
    members=(
        ("CertData", MemberType.primitive_array(PrimitiveType.BYTE)),
        ("SelfSigned", MemberType.primitive(PrimitiveType.BOOLEAN)),
        ("Status", MemberType.class_(_CERTIFICATE_STATUS, EXCHANGE_MANAGEMENT_ASSEMBLY)),
        ("RootCAType", MemberType.class_(_CERTIFICATE_AUTHORITY_TYPE,
                                         EXCHANGE_MANAGEMENT_ASSEMBLY)),
        ("Services", MemberType.class_(_ALLOWED_SERVICES, EXCHANGE_MANAGEMENT_ASSEMBLY)),
        ("IISServices", MemberType.system_class(_IIS_SERVICE_LIST)),
        ("PrivateKeyExportable", MemberType.primitive(PrimitiveType.BOOLEAN)),
        ("Identity", MemberType.string()),
    ),
    library=EXCHANGE_MANAGEMENT_ASSEMBLY,
)


def iis_service_instance(service_name: str) -> ClassInstance:
    """One ``IisService`` entry (e.g. ``IIS://SERVER/W3SVC/1``) with no URLs, as observed."""
    return ClassInstance(
        _IIS_SERVICE_CLASS,
        (service_name,
         None, enum_instance(_URL_VALIDATION, EXCHANGE_MANAGEMENT_ASSEMBLY, 0),
         None, enum_instance(_URL_VALIDATION, EXCHANGE_MANAGEMENT_ASSEMBLY, 0)),
    )


def exchange_certificate_instance(
    *,
    cert_data: bytes,
    self_signed: bool,
    status: int,
    root_ca_type: int,
    services: int,
    iis_services: Sequence[str],
    private_key_exportable: bool,
    identity: str,
) -> ClassInstance:
    """The object graph Exchange serializes for one ``ExchangeCertificate``.

    ``cert_data`` is the Windows serialized certificate store element (see
    :func:`windows_serialized_certificate`); enum arguments are their numeric values.
    """
    iis_list = generic_list(
        _IIS_SERVICE,
        EXCHANGE_MANAGEMENT_ASSEMBLY,
        [iis_service_instance(name) for name in iis_services],
        version=1,
    )
    return ClassInstance(
        _EXCHANGE_CERTIFICATE_CLASS,
        (
            PrimitiveArray(PrimitiveType.BYTE, cert_data),
            self_signed,
            enum_instance(_CERTIFICATE_STATUS, EXCHANGE_MANAGEMENT_ASSEMBLY, status),
            enum_instance(_CERTIFICATE_AUTHORITY_TYPE, EXCHANGE_MANAGEMENT_ASSEMBLY, root_ca_type),
            enum_instance(_ALLOWED_SERVICES, EXCHANGE_MANAGEMENT_ASSEMBLY, services),
            iis_list,
            private_key_exportable,
            identity,
        ),
    )


def exchange_certificate_serialization_data(
    record: LabCertificateRecord,
    identity: str,
    iis_services: Sequence[str] = (),
) -> bytes:
    """The ``SerializationData`` blob Exchange sends with ``record``.

    ``identity`` is Exchange's ``<server FQDN>\\<THUMBPRINT>`` (see
    :func:`exchange_certificate_identity`); ``iis_services`` the IIS sites bound to the
    certificate, e.g. ``("IIS://EX01/W3SVC/1",)``.
    """
    cert_data = windows_serialized_certificate(
        record.der,
        friendly_name=record.friendly_name,
        key_container_name=str(uuid.uuid5(uuid.NAMESPACE_OID, record.thumbprint.upper())),
        public_key_bits=record.public_key_size,
    )
    return serialize(
        exchange_certificate_instance(
            cert_data=cert_data,
            self_signed=record.self_signed,
            status=int(record.status),
            root_ca_type=int(record.root_ca_type),
            services=int(record.services),
            iis_services=iis_services,
            private_key_exportable=record.private_key_exportable,
            identity=identity,
        )
    )


def exchange_certificate_identity(record: LabCertificateRecord) -> str:
    """Exchange's certificate Identity as the fixtures show it: ``<server FQDN>\\<THUMBPRINT>``."""
    return f"{record.server_fqdn}\\{record.thumbprint}"


# --- CertData: the Windows serialized certificate (CertSerializeCertificateStoreElement) -------

_CERT_KEY_PROV_INFO_PROP_ID = 2
_CERT_SHA1_HASH_PROP_ID = 3
_CERT_MD5_HASH_PROP_ID = 4
_CERT_FRIENDLY_NAME_PROP_ID = 11
_CERT_SIGNATURE_HASH_PROP_ID = 15
_CERT_KEY_IDENTIFIER_PROP_ID = 20
_CERT_SUBJECT_PUBLIC_KEY_MD5_HASH_PROP_ID = 25
_CERT_CERT_PROP_ID = 32
_CERT_SIGN_HASH_CNG_ALG_PROP_ID = 89
_CERT_SUBJECT_PUB_KEY_BIT_LENGTH_PROP_ID = 92

_PROV_RSA_SCHANNEL = 12
_CRYPT_MACHINE_KEYSET = 0x20
_AT_KEYEXCHANGE = 1


def windows_serialized_certificate(
    der: bytes,
    *,
    friendly_name: str,
    key_container_name: str | None,
    public_key_bits: int,
) -> bytes:
    """A certificate as ``X509Certificate2.Export(SerializedCert)`` writes it (Exchange's CertData).

    A sequence of ``{property id, 1, length, value}`` elements ending with the DER certificate
    (property 32), with the hash, key-identifier, friendly-name and key-provider properties a
    certificate in the machine store carries. ``key_container_name`` None omits the private
    key provider info (a certificate without a private key).
    """
    certificate = x509.load_der_x509_certificate(der)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        key_identifier = certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        key_identifier = hashlib.sha1(spki, usedforsecurity=False).digest()
    properties: list[tuple[int, bytes]] = []
    if friendly_name:
        properties.append((_CERT_FRIENDLY_NAME_PROP_ID, _utf16z(friendly_name)))
    signature_hash = certificate.signature_hash_algorithm
    key_algorithm = _cng_key_algorithm(certificate)
    if signature_hash is not None and key_algorithm is not None:
        properties.append((
            _CERT_SIGN_HASH_CNG_ALG_PROP_ID,
            _utf16z(f"{key_algorithm}/{signature_hash.name.upper().replace('-', '')}"),
        ))
    properties.append((
        _CERT_SUBJECT_PUBLIC_KEY_MD5_HASH_PROP_ID,
        hashlib.md5(_subject_public_key_bits(spki), usedforsecurity=False).digest(),
    ))
    properties.append((_CERT_MD5_HASH_PROP_ID,
                       hashlib.md5(der, usedforsecurity=False).digest()))
    properties.append((_CERT_KEY_IDENTIFIER_PROP_ID, key_identifier))
    if key_container_name is not None:
        properties.append((_CERT_KEY_PROV_INFO_PROP_ID, _key_provider_info(key_container_name)))
    properties.append((_CERT_SHA1_HASH_PROP_ID,
                       hashlib.sha1(der, usedforsecurity=False).digest()))
    if signature_hash is not None:
        tbs_hash = hashlib.new(signature_hash.name, certificate.tbs_certificate_bytes)
        properties.append((_CERT_SIGNATURE_HASH_PROP_ID, tbs_hash.digest()))
    properties.append((_CERT_SUBJECT_PUB_KEY_BIT_LENGTH_PROP_ID,
                       struct.pack("<I", public_key_bits)))
    properties.append((_CERT_CERT_PROP_ID, der))
    return b"".join(
        struct.pack("<III", property_id, 1, len(value)) + value
        for property_id, value in properties
    )


def _utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def _cng_key_algorithm(certificate: x509.Certificate) -> str | None:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return None


def _key_provider_info(container_name: str) -> bytes:
    """A serialized CRYPT_KEY_PROV_INFO: machine-key container, no provider name."""
    header_size = 7 * 4
    header = struct.pack(
        "<7I", header_size, 0, _PROV_RSA_SCHANNEL, _CRYPT_MACHINE_KEYSET, 0, 0, _AT_KEYEXCHANGE
    )
    name = _utf16z(container_name)
    return header + name + b"\0" * (-len(name) % 8)


def _subject_public_key_bits(spki: bytes) -> bytes:
    """The contents of SubjectPublicKeyInfo's BIT STRING, without the unused-bits byte."""
    _, body, _ = _der_element(spki, 0)
    _, _, algorithm_end = _der_element(body, 0)
    tag, bit_string, _ = _der_element(body, algorithm_end)
    if tag != 0x03:
        raise ValueError("SubjectPublicKeyInfo without a BIT STRING")
    return bit_string[1:]


def _der_element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """Tag, contents and end offset of the DER element starting at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start:start + size], "big")
        start += size
    end = start + length
    return tag, data[start:end], end
