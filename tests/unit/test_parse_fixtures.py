"""Parsing real Exchange exports into snapshot records, through both adapters."""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypsrp.serializer import Serializer

from bot.exchange.parse import (
    ParseOutcome,
    SnapshotParseError,
    classify,
    is_selected_certificate_row,
    parse_certificate,
    parse_certificate_with_notes,
    parse_exchange_server,
    parse_hybrid_configuration,
    parse_queue,
    parse_receive_connector,
    parse_send_connector,
    parse_tls_certificate_name,
    read_serialization_data,
    snapshot_from_objects,
)
from bot.exchange.remote_object import (
    RemoteObject,
    TolerantPypsrpSerializer,
    from_pypsrp,
    read_clixml_file,
)
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeService,
    RootCAType,
    ServerSnapshot,
    ServicesSource,
    TlsCertificateName,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
FIXTURE_FILES = sorted(FIXTURES.glob("*.xml")) if FIXTURES.is_dir() else []
pytestmark = pytest.mark.skipif(not FIXTURE_FILES,
                                reason=f"Exchange CLIXML fixtures not found at {FIXTURES}")

TAKEN_AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
SELECTED_TYPES = ("Selected." + CERTIFICATE_TYPE,
                  "System.Management.Automation.PSCustomObject", "System.Object")
# pypsrp 0.9's own serializer raises KeyError on these (see test_remote_object.py); the client
# must read them with TolerantPypsrpSerializer, so the live path is tested with it here.
NEEDS_TOLERANT_PYPSRP = {"e2019-send-connectors.xml", "e2019-hybrid-configuration.xml"}

AUTH = "2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7"
SERVER_SELF_SIGNED = "611C687DFC4343A5A03E0005A1EC6E9B6AFF586D"
LOCALHOST = "E267D459A0FB53D0EF225C11FAC062D522648C09"
WMSVC = "3341CEAF3DF4D3A9527EC98BDD53C54ECC3E0620"
SECOND_LOCALHOST = "03221367D3A3E863698501592A9B9C420D8D3F4E"


def _fixture(name: str) -> list[RemoteObject]:
    return read_clixml_file(FIXTURES / name)


def _snapshot(*names: str, server_name: str | None = None) -> ServerSnapshot:
    objects = [obj for name in names for obj in _fixture(name)]
    return snapshot_from_objects(objects, taken_at=TAKEN_AT, server_name=server_name)


def _pypsrp_objects(path: Path) -> list[object]:
    """The fixture as pypsrp 0.9 would hand it over live: GenericComplexObjects."""
    root = ElementTree.fromstring(path.read_text(encoding="utf-8-sig"))  # noqa: S314 - fixture
    for node in root.iter():
        if node.tag.startswith("{"):
            node.tag = node.tag.split("}", 1)[1]
    serializer = (TolerantPypsrpSerializer() if path.name in NEEDS_TOLERANT_PYPSRP
                  else Serializer())
    # Export-Clixml shares <TN> references across objects: keep them after the first object.
    return [from_pypsrp(serializer.deserialize(element, clear=index == 0))
            for index, element in enumerate(root)]


def _with(obj: RemoteObject, **changes: object) -> RemoteObject:
    return RemoteObject(obj.type_names, {**obj.properties, **changes}, obj.to_string, obj.value)


def _without(obj: RemoteObject, *names: str) -> RemoteObject:
    return RemoteObject(obj.type_names,
                        {key: value for key, value in obj.properties.items() if key not in names},
                        obj.to_string, obj.value)


def _certificate_object(file_name: str, thumbprint: str) -> RemoteObject:
    for obj in _fixture(file_name):
        if thumbprint in (obj.to_string or ""):
            return obj
    raise AssertionError(f"{thumbprint} not in {file_name}")


def _selected(thumbprint: str, **properties: object) -> RemoteObject:
    return RemoteObject(SELECTED_TYPES, {"Thumbprint": thumbprint, **properties}, None)


def _enum(number: int, name: str, type_name: str = "AllowedServices") -> RemoteObject:
    return RemoteObject((f"Microsoft.Exchange.Management.SystemConfigurationTasks.{type_name}",
                         "System.Enum", "System.ValueType", "System.Object"), {}, name, number)


# --- every fixture --------------------------------------------------------------------------

@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.name for path in FIXTURE_FILES])
def test_every_fixture_parses_without_error(path: Path) -> None:
    objects = read_clixml_file(path)
    kinds = {classify(obj) for obj in objects}
    assert "unknown" not in kinds
    snapshot = snapshot_from_objects(objects, taken_at=TAKEN_AT)
    assert snapshot.taken_at == TAKEN_AT
    records = (len(snapshot.certificates) + len(snapshot.send_connectors)
               + len(snapshot.receive_connectors) + (snapshot.hybrid is not None)
               + (snapshot.server.version is not None))
    assert records > 0
    assert not any(note.startswith("skipped") for note in snapshot.notes)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.name for path in FIXTURE_FILES])
def test_both_adapters_give_equal_records(path: Path) -> None:
    from_file = snapshot_from_objects(read_clixml_file(path), taken_at=TAKEN_AT)
    live = snapshot_from_objects(_pypsrp_objects(path), taken_at=TAKEN_AT)
    assert live == from_file


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.name for path in FIXTURE_FILES])
def test_certificate_thumbprints_match_the_to_string_thumbprints(path: Path) -> None:
    for obj in read_clixml_file(path):
        if classify(obj) != "certificate":
            continue
        shown = re.search(r"\[Thumbprint\]\s+([0-9A-F]{40})", obj.to_string or "")
        assert shown is not None
        certificate = parse_certificate(obj)
        assert certificate.thumbprint == shown.group(1)
        assert certificate.identity is None or certificate.identity.endswith(
            "\\" + certificate.thumbprint)


# --- exact values ---------------------------------------------------------------------------

def test_four_certs_services_trust_and_identity() -> None:
    snapshot = _snapshot("e2019-four-certs.xml")
    by_thumbprint = {certificate.thumbprint: certificate
                     for certificate in snapshot.certificates}
    assert list(by_thumbprint) == [AUTH, SERVER_SELF_SIGNED, LOCALHOST, WMSVC]
    assert {thumbprint: certificate.services
            for thumbprint, certificate in by_thumbprint.items()} == {
        AUTH: ExchangeService.NONE,
        SERVER_SELF_SIGNED: ExchangeService.IMAP | ExchangeService.POP | ExchangeService.IIS,
        LOCALHOST: ExchangeService.NONE,
        WMSVC: ExchangeService.NONE,
    }
    assert int(by_thumbprint[SERVER_SELF_SIGNED].services or 0) == 11
    assert {thumbprint: certificate.root_ca_type
            for thumbprint, certificate in by_thumbprint.items()} == {
        AUTH: RootCAType.NONE, SERVER_SELF_SIGNED: RootCAType.REGISTRY,
        LOCALHOST: RootCAType.NONE, WMSVC: RootCAType.REGISTRY}
    for certificate in snapshot.certificates:
        assert certificate.status is CertificateStatus.VALID
        assert certificate.services_source is ServicesSource.SERIALIZATION_DATA
        assert certificate.identity == f"WIN-CTD3L0RGEN4.exlab.dom\\{certificate.thumbprint}"
        assert certificate.computer_name == "win-ctd3l0rgen4.exlab.dom"
        assert certificate.self_signed is True
    server_certificate = by_thumbprint[SERVER_SELF_SIGNED]
    assert server_certificate.subject == server_certificate.issuer == "CN=WIN-CTD3L0RGEN4"
    assert server_certificate.domains == ("WIN-CTD3L0RGEN4", "WIN-CTD3L0RGEN4.exlab.dom")
    assert server_certificate.serial_number == "1333B3FEE3E2CD894710594489D296B0"
    assert server_certificate.not_before == datetime(2021, 8, 6, 13, 56, 14, tzinfo=UTC)
    assert (server_certificate.key_algorithm, server_certificate.key_size) == ("RSA", 2048)
    assert server_certificate.signature_hash == "sha1"
    assert server_certificate.extended_key_usages == ("1.3.6.1.5.5.7.3.1",)
    assert by_thumbprint[AUTH].subject == "CN=Microsoft Exchange Server Auth Certificate"
    assert by_thumbprint[AUTH].domains == ()
    assert snapshot.server.name == "WIN-CTD3L0RGEN4"
    assert snapshot.server.fqdn == "WIN-CTD3L0RGEN4.exlab.dom"
    assert snapshot.notes == ()


def test_default_certificate_of_solo_servers_has_imap_pop_iis_smtp() -> None:
    for file_name, thumbprint in (("e2019-solo.xml", "6C7DE09FB39A40144F57EFEBC3DF0148E3A9AB28"),
                                  ("e2016-solo.xml", "823884A32609DCDC8C4B5462952586C30D814073")):
        [certificate] = [certificate for certificate in _snapshot(file_name).certificates
                         if certificate.thumbprint == thumbprint]
        assert certificate.services == ExchangeService.from_names("IMAP, POP, IIS, SMTP")
        assert int(certificate.services or 0) == 27


def test_multiple_smtp_matches_has_two_smtp_certificates() -> None:
    snapshot = _snapshot("e2019-multiple-smtp-matches.xml")
    with_smtp = [certificate for certificate in snapshot.certificates
                 if certificate.services is not None
                 and ExchangeService.SMTP in certificate.services]
    assert [certificate.thumbprint for certificate in with_smtp] == [SECOND_LOCALHOST, LOCALHOST]
    assert all(certificate.subject == "CN=localhost" for certificate in with_smtp)
    assert all(certificate.services == ExchangeService.SMTP for certificate in with_smtp)
    assert len(snapshot.certificates) == 5


def test_rawdata_only_certificates_have_unknown_services_said_plainly() -> None:
    snapshot = _snapshot("deserialized-rawdata-only.xml")
    assert len(snapshot.certificates) == 5
    for certificate in snapshot.certificates:
        assert certificate.services is None
        assert certificate.root_ca_type is None
        assert certificate.status is None
        assert certificate.services_source is ServicesSource.UNKNOWN
        assert certificate.identity is None
        assert certificate.computer_name == "e2k16-1.contoso.lab"
        assert any(certificate.thumbprint in note and "no SerializationData" in note
                   for note in snapshot.notes)
    assert snapshot.certificates[0].thumbprint == "8BFE845E6DCA42BBDC8F872672CDA1A4E0C3EBF1"
    assert snapshot.server.fqdn == "e2k16-1.contoso.lab"


def test_send_connector_mail_to_o365_is_cloud_and_pinned_to_localhost() -> None:
    [connector] = _snapshot("e2019-send-connectors.xml").send_connectors
    assert connector.name == "Mail to O365"
    assert connector.is_cloud
    assert connector.cloud_services_mail_enabled is True
    assert connector.enabled is True
    assert connector.require_tls is False
    assert connector.tls_certificate_name == TlsCertificateName(
        raw="<I>CN=localhost<S>CN=localhost", issuer="CN=localhost", subject="CN=localhost")
    assert connector.smart_hosts == ("microsoft-com.mail.protection.outlook.com",)
    assert connector.address_spaces == ("SMTP:*;1",)
    assert connector.source_transport_servers == ("WIN-CTD3L0RGEN4",)
    assert (connector.fqdn, connector.tls_auth_level, connector.tls_domain) == (None, None, None)


def test_hybrid_configuration_names_the_geotrust_certificate() -> None:
    hybrid = _snapshot("e2019-hybrid-configuration.xml").hybrid
    assert hybrid is not None
    assert hybrid.tls_certificate_name == TlsCertificateName(
        raw="<I>CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US"
            "<S>CN=mail.contoso.com",
        issuer="CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US",
        subject="CN=mail.contoso.com")
    assert hybrid.on_premises_smart_host == "mail.contoso.com"
    assert hybrid.domains == ("contoso.com",)
    assert hybrid.sending_transport_servers == ("ex-02",)


def test_exchange_server_fqdn_version_and_role() -> None:
    snapshot = _snapshot("e2019-exchange-server.xml")
    assert snapshot.server.name == "SOLO-E19A"
    assert snapshot.server.fqdn == "Solo-E19A.Solo.com"
    assert snapshot.server.version == "Version 15.2 (Build 986.5)"
    assert snapshot.server.roles == "Mailbox"


def test_receive_connectors_with_bindings_and_one_pinned_certificate() -> None:
    connectors = _snapshot("e2019-receive-connectors.xml").receive_connectors
    assert [connector.name for connector in connectors] == [
        "Default WIN-CTD3L0RGEN4", "Client Proxy WIN-CTD3L0RGEN4",
        "Default Frontend WIN-CTD3L0RGEN4", "Outbound Proxy Frontend WIN-CTD3L0RGEN4",
        "Client Frontend WIN-CTD3L0RGEN4"]
    frontend = connectors[2]
    assert frontend.bindings == ("[::]:25", "0.0.0.0:25")
    assert frontend.server == "WIN-CTD3L0RGEN4"
    assert frontend.fqdn == "WIN-CTD3L0RGEN4.exlab.dom"
    assert frontend.tls_certificate_name == TlsCertificateName.parse(
        "<I>CN=WIN-CTD3L0RGEN4<S>CN=WIN-CTD3L0RGEN4")
    assert [connector.tls_certificate_name for connector in connectors].count(None) == 4


def test_classify_each_kind() -> None:
    assert classify(_fixture("e2019-solo.xml")[0]) == "certificate"
    assert classify(_fixture("e2019-send-connectors.xml")[0]) == "send_connector"
    assert classify(_fixture("e2019-receive-connectors.xml")[0]) == "receive_connector"
    assert classify(_fixture("e2019-hybrid-configuration.xml")[0]) == "hybrid_configuration"
    assert classify(_fixture("e2019-exchange-server.xml")[0]) == "exchange_server"
    assert classify(_queue()) == "queue"
    assert classify(RemoteObject(("System.String",), {}, "x")) == "unknown"
    assert classify("text") == "unknown"
    assert classify(_selected(AUTH)) == "unknown"
    assert is_selected_certificate_row(_selected(AUTH))


# --- Services from Select-Object, unknown numbers, bad blobs --------------------------------

@pytest.mark.parametrize("services", [
    27, _enum(27, "IMAP, POP, IIS, SMTP"), "IMAP, POP, IIS, SMTP", "27"])
def test_select_object_row_supplies_services_when_the_blob_is_missing(services: object) -> None:
    obj = _fixture("deserialized-rawdata-only.xml")[1]
    thumbprint = "D003810EBE1624145889D031FBB77ED2BD280FD3"
    row = _selected(thumbprint.lower(), Services=services,
                    RootCAType=_enum(1, "ThirdParty", "CertificateAuthorityType"),
                    Status="Valid", Identity="E2k16-1.Contoso.lab\\" + thumbprint)
    outcome = parse_certificate_with_notes(obj, selected=row)
    certificate = outcome.value
    assert certificate.services == (ExchangeService.IMAP | ExchangeService.POP
                                    | ExchangeService.IIS | ExchangeService.SMTP)
    assert certificate.services_source is ServicesSource.SELECT_OBJECT
    assert certificate.root_ca_type is RootCAType.THIRD_PARTY
    assert certificate.status is CertificateStatus.VALID
    assert certificate.identity == "E2k16-1.Contoso.lab\\" + thumbprint
    assert outcome.notes == ()


def test_serialization_data_wins_over_a_select_object_row() -> None:
    obj = _certificate_object("e2019-four-certs.xml", SERVER_SELF_SIGNED)
    row = _selected(SERVER_SELF_SIGNED, Services=16)
    certificate = parse_certificate(obj, selected=row)
    assert certificate.services_source is ServicesSource.SERIALIZATION_DATA
    assert int(certificate.services or 0) == 11


def test_select_object_row_of_another_certificate_is_ignored_with_a_note() -> None:
    obj = _fixture("deserialized-rawdata-only.xml")[0]
    outcome = parse_certificate_with_notes(obj, selected=_selected(AUTH, Services=16))
    assert outcome.value.services is None
    assert any("another certificate" in note for note in outcome.notes)


@pytest.mark.parametrize(("field", "value", "attribute"), [
    ("Services", 4096, "services"),
    ("Services", -1, "services"),
    ("Services", "IMAP, Telepathy", "services"),
    ("RootCAType", 9, "root_ca_type"),
    ("RootCAType", "Galactic", "root_ca_type"),
    ("Status", 42, "status"),
    ("Status", 3.5, "status"),
])
def test_unknown_enum_values_become_none_with_a_note(field: str, value: object,
                                                     attribute: str) -> None:
    obj = _fixture("deserialized-rawdata-only.xml")[2]
    thumbprint = "2759456DC53C76E3DED093B567B6D8DAA42C0ADD"
    outcome = parse_certificate_with_notes(obj, selected=_selected(thumbprint, **{field: value}))
    assert getattr(outcome.value, attribute) is None
    assert any(field in note and thumbprint in note for note in outcome.notes)


def test_enum_name_wins_over_a_disagreeing_number() -> None:
    obj = _fixture("deserialized-rawdata-only.xml")[2]
    thumbprint = "2759456DC53C76E3DED093B567B6D8DAA42C0ADD"
    outcome = parse_certificate_with_notes(
        obj, selected=_selected(thumbprint, Services=_enum(16, "IIS"),
                                Status=_enum(3, "Untrusted", "CertificateStatus")))
    assert outcome.value.services == ExchangeService.IIS
    assert outcome.value.status is CertificateStatus.UNTRUSTED
    assert sum("disagree" in note for note in outcome.notes) == 2


def test_certificate_own_services_property_is_used() -> None:
    obj = _with(_fixture("deserialized-rawdata-only.xml")[2], Services=_enum(8, "IIS"))
    certificate = parse_certificate(obj)
    assert certificate.services == ExchangeService.IIS
    assert certificate.services_source is ServicesSource.SELECT_OBJECT


@pytest.mark.parametrize("blob", [
    b"garbage", b"", b"\x00" * 40, b"\x00\x01\x00\x00\x00\xff\xff\xff\xff\x01",
    bytes.fromhex("0001000000ffffffff01000000000000000e0a00000007ffffff7f"),
])
def test_garbage_serialization_data_is_a_note_not_a_crash(blob: bytes) -> None:
    obj = _with(_certificate_object("e2019-four-certs.xml", SERVER_SELF_SIGNED),
                SerializationData=blob)
    outcome = parse_certificate_with_notes(obj)
    assert outcome.value.services is None
    assert outcome.value.services_source is ServicesSource.UNKNOWN
    assert outcome.value.thumbprint == SERVER_SELF_SIGNED
    assert any("SerializationData" in note and "unreadable" in note for note in outcome.notes)


def test_huge_null_run_in_a_blob_is_refused_quickly() -> None:
    header = bytes.fromhex("0001000000ffffffff0100000000000000")
    array = bytes([16]) + (1).to_bytes(4, "little") + (4).to_bytes(4, "little")
    null_run = bytes([14]) + (0x7FFFFFFF).to_bytes(4, "little")
    with pytest.raises(ValueError, match="null run"):
        read_serialization_data(header + array + null_run)


def test_serialization_data_of_another_type_is_ignored_with_a_note() -> None:
    connector = _fixture("e2019-send-connectors.xml")[0]
    tls_name = connector.get("TlsCertificateName")
    assert isinstance(tls_name, RemoteObject)
    foreign_blob = tls_name.get("SerializationData")
    obj = _with(_certificate_object("e2019-four-certs.xml", AUTH), SerializationData=foreign_blob)
    outcome = parse_certificate_with_notes(obj)
    assert outcome.value.services is None
    assert any("not an ExchangeCertificate" in note for note in outcome.notes)


def test_serialization_data_of_the_wrong_type_is_ignored_with_a_note() -> None:
    obj = _with(_certificate_object("e2019-four-certs.xml", AUTH), SerializationData="AAEAAAD")
    outcome = parse_certificate_with_notes(obj)
    assert outcome.value.services is None
    assert any("should be bytes" in note for note in outcome.notes)


@pytest.mark.parametrize(("raw_data", "message"), [
    (None, "'RawData' is empty|'RawData' is missing"),
    ("MIIDKTCC", "'RawData' should be bytes"),
    (b"\x30\x82\x01", "'RawData' is not a readable certificate"),
])
def test_bad_raw_data_raises_snapshot_parse_error(raw_data: object, message: str) -> None:
    obj = _with(_certificate_object("e2019-four-certs.xml", AUTH), RawData=raw_data)
    with pytest.raises(SnapshotParseError, match=message):
        parse_certificate(obj)
    with pytest.raises(SnapshotParseError, match="'RawData' is missing"):
        parse_certificate(_without(obj, "RawData"))


def test_bad_certificate_in_a_file_is_skipped_with_a_note() -> None:
    objects = _fixture("e2019-four-certs.xml")
    objects[0] = _with(objects[0], RawData=b"broken")
    snapshot = snapshot_from_objects(objects, taken_at=TAKEN_AT)
    assert len(snapshot.certificates) == 3
    assert any(note.startswith("skipped: certificate") and "RawData" in note
               for note in snapshot.notes)


# --- wrong types and missing values ---------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"Enabled": "maybe"}, r"send connector 'Mail to O365': property 'Enabled' should be True"),
    ({"Enabled": None}, r"'Enabled' is empty"),
    ({"RequireTLS": 1}, r"'RequireTLS' should be True or False"),
    ({"Name": 42}, r"'Name' should be text"),
    ({"Name": ""}, r"'Name' is empty"),
    ({"SmartHosts": (1, 2)}, r"'SmartHosts' should hold text values"),
    ({"TlsCertificateName": 7}, r"'TlsCertificateName'"),
    ({"Fqdn": RemoteObject(("X",), {}, None)}, r"'Fqdn' should be text, got an object"),
])
def test_send_connector_wrong_types_raise_naming_object_and_property(
        change: dict[str, object], message: str) -> None:
    obj = _with(_fixture("e2019-send-connectors.xml")[0], **change)
    with pytest.raises(SnapshotParseError, match=message):
        parse_send_connector(obj)


def test_missing_required_values_raise_naming_the_property() -> None:
    connector = _fixture("e2019-send-connectors.xml")[0]
    with pytest.raises(SnapshotParseError, match="'Name' is missing"):
        parse_send_connector(_without(connector, "Name"))
    with pytest.raises(SnapshotParseError, match="'Enabled' is missing"):
        parse_receive_connector(_without(_fixture("e2019-receive-connectors.xml")[0], "Enabled"))
    with pytest.raises(SnapshotParseError, match=r"Exchange server.*'Name' is missing"):
        parse_exchange_server(_without(_fixture("e2019-exchange-server.xml")[0], "Name"))
    with pytest.raises(SnapshotParseError, match=r"queue.*'MessageCount' should be a whole"):
        parse_queue(_with(_queue(), MessageCount="many"))
    with pytest.raises(SnapshotParseError, match="'Identity' is missing"):
        parse_queue(_without(_queue(), "Identity"))
    with pytest.raises(SnapshotParseError, match="expected an Exchange object"):
        parse_hybrid_configuration("not an object")  # type: ignore[arg-type]


def test_optional_values_default_when_absent() -> None:
    connector = _without(_fixture("e2019-send-connectors.xml")[0], "CloudServicesMailEnabled",
                         "SmartHosts", "TlsCertificateName")
    parsed = parse_send_connector(connector)
    assert parsed.cloud_services_mail_enabled is False
    assert parsed.smart_hosts == ("microsoft-com.mail.protection.outlook.com",), \
        "falls back to SmartHostsString"
    assert parsed.is_cloud
    assert parsed.tls_certificate_name is None


# --- queues ---------------------------------------------------------------------------------

def _queue(**changes: object) -> RemoteObject:
    properties: dict[str, object] = {
        "Identity": RemoteObject(("Microsoft.Exchange.Data.QueueViewer.QueueIdentity",), {},
                                 "EX01\\3"),
        "DeliveryType": _enum(8, "SmartHostConnectorDelivery", "DeliveryType"),
        "NextHopDomain": "contoso.mail.protection.outlook.com",
        "Status": _enum(2, "Retry", "QueueStatus"),
        "MessageCount": 25,
        "LastError": "451 4.4.0 Primary target IP address responded with: \"454 4.7.0 ...\"",
    }
    properties.update(changes)
    return RemoteObject(("Deserialized.Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
                         "Deserialized.Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
                         "Deserialized.System.Object"), properties, "EX01\\3")


def test_queue_to_exchange_online() -> None:
    queue = parse_queue(_queue())
    assert queue.identity == "EX01\\3"
    assert queue.delivery_type == "SmartHostConnectorDelivery"
    assert queue.status == "Retry"
    assert queue.message_count == 25
    assert queue.is_to_exchange_online
    assert queue.last_error is not None
    assert "454 4.7.0" in queue.last_error


# --- TlsCertificateName ---------------------------------------------------------------------

def test_tls_certificate_name_from_every_shape() -> None:
    expected = TlsCertificateName(raw="<I>CN=Issuer, O=Org<S>CN=mail.contoso.com",
                                  issuer="CN=Issuer, O=Org", subject="CN=mail.contoso.com")
    identifier_type = ("Microsoft.Exchange.Data.SmtpX509Identifier", "System.Object")
    both = RemoteObject(identifier_type, {"CertificateIssuer": "CN=Issuer, O=Org",
                                          "CertificateSubject": "CN=mail.contoso.com"},
                        expected.raw)
    props_only = RemoteObject(identifier_type, {"CertificateIssuer": "CN=Issuer, O=Org",
                                                "CertificateSubject": "CN=mail.contoso.com"},
                              None)
    text_only = RemoteObject(identifier_type, {}, expected.raw)
    assert parse_tls_certificate_name(both) == expected
    assert parse_tls_certificate_name(props_only) == expected
    assert parse_tls_certificate_name(text_only) == expected
    assert parse_tls_certificate_name(expected.raw) == expected
    assert parse_tls_certificate_name(None) is None
    assert parse_tls_certificate_name("  ") is None
    malformed = parse_tls_certificate_name("CN=mail.contoso.com")
    assert malformed is not None
    assert not malformed.is_well_formed
    with pytest.raises(SnapshotParseError, match="neither a ToString"):
        parse_tls_certificate_name(RemoteObject(identifier_type, {}, None))
    with pytest.raises(SnapshotParseError, match="TlsCertificateName"):
        parse_tls_certificate_name(12)


# --- snapshot assembly ----------------------------------------------------------------------

def test_snapshot_keeps_the_requested_server_certificates() -> None:
    default = _snapshot("e2019-four-certs.xml", "e2019-solo.xml")
    assert default.server.name == "WIN-CTD3L0RGEN4"
    assert len(default.certificates) == 4
    assert any("Solo-E19A.Solo.com (3)" in note for note in default.notes)

    solo = _snapshot("e2019-four-certs.xml", "e2019-solo.xml", server_name="solo-e19a")
    assert solo.server.name == "solo-e19a"
    assert solo.server.fqdn == "Solo-E19A.Solo.com"
    assert [certificate.thumbprint for certificate in solo.certificates] == [
        "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7", "6C7DE09FB39A40144F57EFEBC3DF0148E3A9AB28",
        "38247AD2B76244411748274C508D13446311830B"]

    nowhere = _snapshot("e2019-four-certs.xml", server_name="EX99")
    assert nowhere.certificates == ()
    assert any("no certificates" in note for note in nowhere.notes)


def test_snapshot_uses_the_exchange_server_object_and_collects_everything() -> None:
    snapshot = _snapshot("e2019-exchange-server.xml", "e2019-solo.xml",
                         "e2019-send-connectors.xml", "e2019-hybrid-configuration.xml")
    assert snapshot.server.fqdn == "Solo-E19A.Solo.com"
    assert snapshot.server.version == "Version 15.2 (Build 986.5)"
    assert len(snapshot.certificates) == 3
    assert [connector.name for connector in snapshot.send_connectors] == ["Mail to O365"]
    assert snapshot.hybrid is not None


def test_snapshot_pairs_select_object_rows_and_skips_unknown_objects() -> None:
    objects: list[object] = [*_fixture("deserialized-rawdata-only.xml"),
                             _selected("D003810EBE1624145889D031FBB77ED2BD280FD3", Services=24),
                             _selected("00" * 20, Services=16),
                             RemoteObject(("System.String",), {}, "stray"),
                             "not even an object"]
    snapshot = snapshot_from_objects(objects, taken_at=TAKEN_AT)
    by_thumbprint = {certificate.thumbprint: certificate
                     for certificate in snapshot.certificates}
    paired = by_thumbprint["D003810EBE1624145889D031FBB77ED2BD280FD3"]
    assert paired.services == ExchangeService.IIS | ExchangeService.SMTP
    assert paired.services_source is ServicesSource.SELECT_OBJECT
    assert any("00" * 20 in note and "no matching" in note for note in snapshot.notes)
    assert any("System.String" in note for note in snapshot.notes)
    assert any("str" in note and "skipped" in note for note in snapshot.notes)


def test_snapshot_drops_duplicate_certificates_and_foreign_receive_connectors() -> None:
    snapshot = _snapshot("e2019-four-certs.xml", "e2019-multiple-smtp-matches.xml",
                         "e2019-receive-connectors.xml", server_name="WIN-CTD3L0RGEN4")
    assert len(snapshot.certificates) == 5
    assert len({certificate.thumbprint for certificate in snapshot.certificates}) == 5
    assert any("more than once" in note for note in snapshot.notes)
    assert len(snapshot.receive_connectors) == 5
    elsewhere = _snapshot("e2019-receive-connectors.xml", server_name="EX02")
    assert elsewhere.receive_connectors == ()
    assert any("receive connectors of other servers" in note for note in elsewhere.notes)


def test_snapshot_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        snapshot_from_objects([], taken_at=datetime(2025, 1, 1))


def test_parse_outcome_is_a_frozen_record() -> None:
    outcome = ParseOutcome(1, ("note",))
    with pytest.raises(AttributeError):
        outcome.value = 2  # type: ignore[misc]


# --- fuzz: random objects give records or the typed error -----------------------------------

_PROPERTY_NAMES = (
    "Name", "Enabled", "RawData", "SerializationData", "Services", "RootCAType", "Status",
    "Thumbprint", "Identity", "PSComputerName", "SmartHosts", "SmartHostsString",
    "AddressSpaces", "Fqdn", "RequireTLS", "CloudServicesMailEnabled", "TlsAuthLevel",
    "TlsDomain", "TlsCertificateName", "SourceTransportServers", "Server", "Bindings",
    "OnPremisesSmartHost", "Domains", "SendingTransportServers", "DeliveryType",
    "NextHopDomain", "MessageCount", "LastError", "AdminDisplayVersion", "ServerRole",
    "CertificateIssuer", "CertificateSubject", "IsSelfSigned",
)
_TYPE_NAMES = (
    CERTIFICATE_TYPE, "Deserialized." + CERTIFICATE_TYPE, "Selected." + CERTIFICATE_TYPE,
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.SmtpSendConnectorConfig",
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector",
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.HybridConfiguration",
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "Microsoft.Exchange.Data.SmtpX509Identifier", "System.Object",
)


def _real_blobs() -> list[bytes]:
    blobs: list[bytes] = []
    for name in ("e2019-four-certs.xml", "e2019-send-connectors.xml"):
        obj = _fixture(name)[0]
        blob = obj.get("SerializationData")
        if isinstance(blob, bytes):
            blobs.append(blob)
    return blobs


_REAL_DER = [raw for raw in (obj.get("RawData") for obj in
                             (_fixture("e2019-solo.xml") if FIXTURE_FILES else []))
             if isinstance(raw, bytes)]
_BLOBS = _real_blobs() if FIXTURE_FILES else [b""]
_SAMPLES = {"der": _REAL_DER, "blob": _BLOBS}


@st.composite
def _mangled(draw: st.DrawFn, kind: str) -> bytes:
    samples = _SAMPLES[kind]
    chosen = draw(st.integers(0, len(samples) - 1)) if samples else None
    data = bytearray(samples[chosen] if chosen is not None else b"")
    if data and draw(st.booleans()):
        del data[draw(st.integers(0, len(data) - 1)):]
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=20),
    st.binary(max_size=20), st.floats(allow_nan=False),
    st.sampled_from(["IMAP, POP", "Valid", "ThirdParty", "<I>CN=a<S>CN=b", "27", "True"]),
    _mangled("der"), _mangled("blob"),
)


def _objects(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.builds(
        RemoteObject,
        st.lists(st.sampled_from(_TYPE_NAMES), max_size=2).map(tuple),
        st.dictionaries(st.sampled_from(_PROPERTY_NAMES), children, max_size=8),
        st.one_of(st.none(), st.text(max_size=20)),
        st.one_of(st.none(), st.integers(-5, 200), st.text(max_size=10)),
    )


_VALUES = st.recursive(_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=3).map(tuple), _objects(children)), max_leaves=12)
_REMOTE_OBJECTS = _objects(_VALUES)

_PARSERS: tuple[Callable[[RemoteObject], object], ...] = (
    parse_certificate, parse_send_connector, parse_receive_connector,
    parse_hybrid_configuration, parse_queue, parse_exchange_server, parse_tls_certificate_name,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_REMOTE_OBJECTS)
def test_random_objects_give_records_or_snapshot_parse_error(obj: object) -> None:
    assert isinstance(obj, RemoteObject)
    assert classify(obj) in ("certificate", "send_connector", "receive_connector",
                             "hybrid_configuration", "queue", "exchange_server", "unknown")
    for parse in _PARSERS:
        with contextlib.suppress(SnapshotParseError):
            parse(obj)
    snapshot_from_objects([obj, obj], taken_at=TAKEN_AT)


@settings(max_examples=150, deadline=None)
@given(_mangled("der"), _mangled("blob"))
def test_mangled_certificates_and_blobs_never_crash(der: bytes, blob: bytes) -> None:
    obj = RemoteObject((CERTIFICATE_TYPE,), {"RawData": der, "SerializationData": blob}, None)
    try:
        outcome: ParseOutcome[ExchangeCertificate] | None = parse_certificate_with_notes(obj)
        message = ""
    except SnapshotParseError as error:
        outcome, message = None, str(error)
    if outcome is None:
        assert "RawData" in message


_REAL_OBJECTS: list[RemoteObject] = [
    obj for name in ("e2019-four-certs.xml", "e2019-send-connectors.xml",
                     "e2019-receive-connectors.xml", "e2019-hybrid-configuration.xml",
                     "e2019-exchange-server.xml") if FIXTURE_FILES
    for obj in _fixture(name)[:2]] + ([_queue()] if FIXTURE_FILES else [])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, max(len(_REAL_OBJECTS) - 1, 0)),
       st.dictionaries(st.sampled_from(_PROPERTY_NAMES), _VALUES, min_size=1, max_size=3))
def test_real_objects_with_random_property_values_give_records_or_the_typed_error(
        index: int, changes: dict[str, object]) -> None:
    obj = _with(_REAL_OBJECTS[index], **changes)
    parsers: dict[str, Callable[[RemoteObject], object]] = {
        "certificate": parse_certificate, "send_connector": parse_send_connector,
        "receive_connector": parse_receive_connector,
        "hybrid_configuration": parse_hybrid_configuration, "queue": parse_queue,
        "exchange_server": parse_exchange_server}
    try:
        parsers[classify(obj)](obj)
        message = ""
    except SnapshotParseError as error:
        message = str(error)
    if message:
        assert any(repr(name) in message for name in changes)
    snapshot_from_objects([obj], taken_at=TAKEN_AT)
