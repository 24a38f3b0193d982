"""The MS-NRBF writer against Exchange's real SerializationData blobs and the ``nrbf`` parser."""

from __future__ import annotations

import base64
import hashlib
import struct
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import nrbf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bot.exchange.snapshot import CertificateStatus, ExchangeService, RootCAType
from bot.lab.nrbf_writer import (
    EXCHANGE_CERTIFICATE_CLASS,
    BoxedPrimitive,
    ClassInfo,
    ClassInstance,
    MemberType,
    ObjectArray,
    PrimitiveArray,
    PrimitiveType,
    StringArray,
    exchange_certificate_identity,
    exchange_certificate_instance,
    exchange_certificate_serialization_data,
    serialize,
    windows_serialized_certificate,
)
from bot.lab.records import LabCertificateRecord

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "exchange-clixml"
NS = "{http://schemas.microsoft.com/powershell/2004/04}"
DEFAULT_SERVICES = ExchangeService(27)
CERTIFICATE_FILES = (
    "e2016-azure.xml",
    "e2016-eight-certs.xml",
    "e2016-solo.xml",
    "e2019-four-certs.xml",
    "e2019-multiple-smtp-matches.xml",
    "e2019-solo.xml",
)


@cache
def fixture_certificates(name: str) -> tuple[tuple[bytes, bytes], ...]:
    """(RawData, SerializationData) of each top-level certificate object in a fixture."""
    root = ET.parse(FIXTURES / name).getroot()  # noqa: S314  (trusted fixture)
    found = []
    for obj in root.findall(f"{NS}Obj"):
        raw = obj.find(f"{NS}Props/{NS}BA[@N='RawData']")
        data = obj.find(f"{NS}MS/{NS}BA[@N='SerializationData']")
        assert raw is not None
        assert data is not None
        found.append((base64.b64decode(raw.text or ""), base64.b64decode(data.text or "")))
    return tuple(found)


def all_fixture_blobs() -> list[Any]:
    return [
        pytest.param(name, index, id=f"{name}-{index}")
        for name in CERTIFICATE_FILES
        for index in range(len(fixture_certificates(name)))
    ]


def cert_properties(cert_data: bytes) -> dict[int, bytes]:
    properties, offset = {}, 0
    while offset < len(cert_data):
        property_id, _, length = struct.unpack_from("<III", cert_data, offset)
        properties[property_id] = cert_data[offset + 12:offset + 12 + length]
        offset += 12 + length
    assert offset == len(cert_data)
    return properties


def value_types(parsed: dict[str, Any]) -> dict[str, type]:
    return {key: type(value) for key, value in parsed.items()}


@pytest.mark.parametrize(("name", "index"), all_fixture_blobs())
def test_reproduces_every_exchange_certificate_blob_byte_for_byte(name: str, index: int) -> None:
    _, blob = fixture_certificates(name)[index]
    parsed = nrbf.loads(blob)
    assert parsed["__class__"] == EXCHANGE_CERTIFICATE_CLASS

    rebuilt = serialize(exchange_certificate_instance(
        cert_data=bytes(parsed["CertData"]),
        self_signed=parsed["SelfSigned"],
        status=parsed["Status"],
        root_ca_type=parsed["RootCAType"],
        services=parsed["Services"],
        iis_services=[service["serviceName"] for service in parsed["IISServices"]],
        private_key_exportable=parsed["PrivateKeyExportable"],
        identity=parsed["Identity"],
    ))

    assert rebuilt == blob


@pytest.mark.parametrize(("name", "index"), all_fixture_blobs())
def test_cert_data_properties_match_windows_for_the_same_certificate(
    name: str, index: int
) -> None:
    der, blob = fixture_certificates(name)[index]
    windows = cert_properties(bytes(nrbf.loads(blob)["CertData"]))
    friendly_name = windows.get(11, b"").decode("utf-16-le").rstrip("\0")
    provider_info = windows[2]
    container_offset, provider_offset, provider_type = struct.unpack_from("<III", provider_info)
    container = provider_info[container_offset:].decode("utf-16-le").split("\0")[0]

    ours = cert_properties(windows_serialized_certificate(
        der,
        friendly_name=friendly_name,
        key_container_name=container,
        public_key_bits=struct.unpack("<I", windows[92])[0] if 92 in windows else 2048,
    ))

    assert ours[32] == der
    assert list(ours)[-1] == 32
    assert set(windows) - set(ours) <= {97}
    shared = (set(windows) & set(ours)) - {2}
    assert shared >= {3, 4, 20, 32}
    assert {pid: ours[pid] for pid in shared} == {pid: windows[pid] for pid in shared}
    if provider_offset == 0 and provider_type == 12:
        assert ours[2] == provider_info


@cache
def lab_certificate(services: ExchangeService = DEFAULT_SERVICES) -> LabCertificateRecord:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.contoso.com")])
    not_before = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(Encoding.DER)
    return LabCertificateRecord(
        server="EX01",
        server_fqdn="EX01.contoso.com",
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        der=der,
        services=services,
        root_ca_type=RootCAType.REGISTRY,
        status=CertificateStatus.VALID,
        self_signed=True,
        private_key_exportable=False,
        subject="CN=mail.contoso.com",
        issuer="CN=mail.contoso.com",
        serial_number="1234ABCD",
        not_before=not_before,
        not_after=not_before + timedelta(days=365),
        domains=("mail.contoso.com",),
        friendly_name="Microsoft Exchange",
        public_key_size=256,
        signature_algorithm="sha256ECDSA",
    )


def test_lab_blob_parses_like_the_fixture_blobs() -> None:
    record = lab_certificate()
    identity = exchange_certificate_identity(record)
    blob = exchange_certificate_serialization_data(
        record, identity, ("IIS://EX01/W3SVC/1", "IIS://EX01/W3SVC/2")
    )
    ours = nrbf.loads(blob)
    fixture = nrbf.loads(fixture_certificates("e2019-four-certs.xml")[1][1])

    assert value_types(ours) == value_types(fixture)
    assert list(ours) == list(fixture)
    assert all(isinstance(byte, int) for byte in ours["CertData"])
    assert ours["Services"] == 27
    assert ours["RootCAType"] == 3
    assert ours["Status"] == 1
    assert ours["SelfSigned"] is True
    assert ours["PrivateKeyExportable"] is False
    assert ours["Identity"] == f"EX01.contoso.com\\{record.thumbprint}"
    assert [service["serviceName"] for service in ours["IISServices"]] == [
        "IIS://EX01/W3SVC/1", "IIS://EX01/W3SVC/2"]
    assert value_types(ours["IISServices"][0]) == value_types(fixture["IISServices"][0])


def test_lab_cert_data_carries_the_certificate_and_its_windows_properties() -> None:
    record = lab_certificate()
    blob = exchange_certificate_serialization_data(record, exchange_certificate_identity(record))
    properties = cert_properties(bytes(nrbf.loads(blob)["CertData"]))

    assert properties[32] == record.der
    assert properties[3].hex().upper() == record.thumbprint
    assert properties[11].decode("utf-16-le") == "Microsoft Exchange\0"
    assert properties[89].decode("utf-16-le") == "ECDSA/SHA256\0"
    assert struct.unpack("<I", properties[92]) == (256,)
    assert 2 in properties
    assert nrbf.loads(blob)["IISServices"] == []


def test_identity_uses_the_server_fqdn_like_the_fixtures() -> None:
    fixture_identity = nrbf.loads(fixture_certificates("e2019-four-certs.xml")[0][1])["Identity"]
    assert fixture_identity.startswith("WIN-CTD3L0RGEN4.exlab.dom\\")
    assert exchange_certificate_identity(lab_certificate()).startswith("EX01.contoso.com\\")


POINT = ClassInfo(
    name="Lab.Point",
    members=(
        ("x", MemberType.primitive(PrimitiveType.INT32)),
        ("label", MemberType.string()),
        ("tags", MemberType.string_array()),
        ("extra", MemberType.object()),
        ("next", MemberType.class_("Lab.Point", "Lab, Version=1.0.0.0")),
    ),
    library="Lab, Version=1.0.0.0",
)


def test_generic_graph_round_trips_through_nrbf() -> None:
    shared_tags = StringArray(("a", None, None, None, "b"))
    tail = ClassInstance(POINT, (2, "tail", shared_tags, None, None))
    head = ClassInstance(POINT, (1, "head", shared_tags, ObjectArray(
        (BoxedPrimitive(PrimitiveType.DOUBLE, 1.5), "text", None, tail)), tail))

    parsed = nrbf.loads(serialize(head))

    assert parsed["x"] == 1
    assert parsed["label"] == "head"
    assert parsed["tags"] == ["a", None, None, None, "b"]
    assert parsed["extra"][:3] == [1.5, "text", None]
    assert parsed["extra"][3]["label"] == "tail"
    assert parsed["next"]["x"] == 2
    assert parsed["next"]["tags"] == parsed["tags"]


def test_second_instance_of_a_class_reuses_its_metadata() -> None:
    tail = ClassInstance(POINT, (2, "tail", StringArray(()), None, None))
    blob = serialize(ClassInstance(POINT, (1, "head", StringArray(()), None, tail)))

    assert blob.count(b"Lab.Point") == 2  # the class record and the `next` member type
    assert b"\x01" + struct.pack("<ii", 5, 1) in blob  # ClassWithId(id 5, metadata of id 1)


def test_long_null_runs_and_long_strings_are_encoded_per_spec() -> None:
    long_text = "x" * 200
    blob = serialize(StringArray((long_text, *([None] * 300), None)))

    assert b"\xc8\x01" + long_text.encode() in blob
    assert b"\x0e" + struct.pack("<i", 301) in blob
    assert nrbf.loads(blob) == [long_text, *([None] * 301)]


def test_byte_array_root_is_an_array_single_primitive() -> None:
    blob = serialize(PrimitiveArray(PrimitiveType.BYTE, b"\x00\xff"))
    assert blob[17:] == b"\x0f" + struct.pack("<ii", 1, 2) + b"\x02\x00\xff\x0b"
    assert nrbf.loads(blob) == [0, 255]


def test_out_of_range_and_mistyped_primitives_are_refused() -> None:
    with pytest.raises(ValueError, match="INT32"):
        serialize(ClassInstance(POINT, (2**31, "x", StringArray(()), None, None)))
    with pytest.raises(TypeError, match="INT32"):
        serialize(ClassInstance(POINT, (True, "x", StringArray(()), None, None)))
    with pytest.raises(TypeError, match="BoxedPrimitive"):
        serialize(ClassInstance(POINT, (1, "x", StringArray(()), 7, None)))
    with pytest.raises(ValueError, match="members"):
        ClassInstance(POINT, (1,))
