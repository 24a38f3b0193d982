"""The wire shapes of lab objects against real Exchange exports, psrpcore and pypsrp."""

from __future__ import annotations

import hashlib
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

import nrbf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from psrpcore.types import PSCryptoProvider, deserialize_clixml, serialize, serialize_clixml
from pypsrp.complex_objects import ObjectMeta
from pypsrp.messages import ErrorRecordMessage
from pypsrp.serializer import Serializer

from bot.exchange.snapshot import CertificateStatus, ExchangeService, RootCAType
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
from bot.lab.wire import error_record, to_psobject

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "exchange-clixml"
RUNSPACE_ID = uuid.UUID("3e7c2964-a6ef-4f43-b318-b3a23880dcbc")
COMPUTER = "ex01.contoso.com"
CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
DOTNET_DATE = r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d"
X509_TO_STRING = re.compile(
    r"\[Subject\]\r\n  (?P<subject>[^\r\n]+)\r\n\r\n"
    r"\[Issuer\]\r\n  (?P<issuer>[^\r\n]+)\r\n\r\n"
    r"\[Serial Number\]\r\n  (?P<serial>[0-9A-F]+)\r\n\r\n"
    rf"\[Not Before\]\r\n  (?P<not_before>{DOTNET_DATE})\r\n\r\n"
    rf"\[Not After\]\r\n  (?P<not_after>{DOTNET_DATE})\r\n\r\n"
    r"\[Thumbprint\]\r\n  (?P<thumbprint>[0-9A-F]{40})\r\n"
)
NO_CIPHER = cast(PSCryptoProvider, None)
"""The objects here hold no SecureString, so no session cipher is needed."""
GEOTRUST = SmtpX509IdentifierRecord(
    certificate_issuer="CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US",
    certificate_subject="CN=mail.contoso.com",
    subject_common_name="mail.contoso.com",
)


# --- helpers ------------------------------------------------------------------------------


class Clixml:
    """A CLIXML document with the namespace stripped and TN/TNRef resolvable."""

    def __init__(self, text: str) -> None:
        text = text.lstrip("\ufeff").replace(
            ' xmlns="http://schemas.microsoft.com/powershell/2004/04"', "")
        self.root = ET.fromstring(text)  # noqa: S314  (trusted fixtures and own output)
        self.type_names = {
            tn.attrib["RefId"]: [t.text or "" for t in tn.findall("T")]
            for tn in self.root.iter("TN")
        }

    @classmethod
    def fixture(cls, name: str) -> Clixml:
        return cls((FIXTURES / name).read_text(encoding="utf-8-sig"))

    def types(self, element: ET.Element) -> list[str]:
        reference = element.find("TN")
        if reference is None:
            reference = element.find("TNRef")
        return [] if reference is None else self.type_names[reference.attrib["RefId"]]

    def objects(self) -> list[ET.Element]:
        return list(self.root)


@cache
def fixture_doc(name: str) -> Clixml:
    return Clixml.fixture(name)


def lab_doc(value: object) -> Clixml:
    return Clixml(serialize_clixml(value, NO_CIPHER))


def round_trip(value: object) -> Any:
    """``value`` after psrpcore serializes and deserializes it (as a PowerShell client would)."""
    return deserialize_clixml(serialize_clixml(value, NO_CIPHER), NO_CIPHER)[0]


def read_fixture(name: str) -> list[Any]:
    return deserialize_clixml((FIXTURES / name).read_text(encoding="utf-8-sig"), NO_CIPHER)


def wire(record: object) -> object:
    return to_psobject(record, computer_name=COMPUTER, runspace_id=RUNSPACE_ID)


def strip_deserialized(names: list[str]) -> list[str]:
    return [name.removeprefix("Deserialized.") for name in names]


def property_names(element: ET.Element, group: str) -> list[str]:
    props = element.find(group)
    return [] if props is None else [child.attrib["N"] for child in props]


def pypsrp_view(value: object) -> Any:
    """What pypsrp 0.9's PipelineOutput deserializer makes of ``value`` on the wire."""
    return Serializer().deserialize(ET.tostring(serialize(value, NO_CIPHER), encoding="unicode"))


def pypsrp_outcome(element: ET.Element) -> str:
    try:
        Serializer().deserialize(ET.tostring(element, encoding="unicode"))
    except KeyError:
        return "KeyError"
    return "ok"


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def lab_certificate(
    services: ExchangeService = ExchangeService.IMAP | ExchangeService.POP
    | ExchangeService.IIS | ExchangeService.SMTP,
) -> LabCertificateRecord:
    key = rsa_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.contoso.com")])
    issuer = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DigiCert Inc"),
        x509.NameAttribute(NameOID.COMMON_NAME, "GeoTrust TLS RSA CA G1"),
    ])
    not_before = datetime(2025, 8, 6, 13, 59, 5, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(0x6C20C91ACF6A87BE)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.contoso.com")]), False)
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(Encoding.DER)
    return LabCertificateRecord(
        server="EX01",
        server_fqdn="EX01.contoso.com",
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        der=der,
        services=services,
        root_ca_type=RootCAType.THIRD_PARTY,
        status=CertificateStatus.VALID,
        self_signed=False,
        private_key_exportable=True,
        subject="CN=mail.contoso.com",
        issuer="CN=GeoTrust TLS RSA CA G1, O=DigiCert Inc, C=US",
        serial_number="6C20C91ACF6A87BE",
        not_before=not_before,
        not_after=not_before + timedelta(days=397),
        domains=("mail.contoso.com",),
        friendly_name="mail.contoso.com",
        public_key_size=2048,
        signature_algorithm="sha256RSA",
    )


def fixture_send_connector() -> LabSendConnectorRecord:
    return LabSendConnectorRecord(
        name="Mail to O365",
        identity="Mail to O365",
        enabled=True,
        cloud_services_mail_enabled=True,
        smart_hosts=("microsoft-com.mail.protection.outlook.com",),
        address_spaces=("*",),
        fqdn=None,
        require_tls=False,
        tls_auth_level=None,
        tls_domain=None,
        tls_certificate_name=SmtpX509IdentifierRecord("CN=localhost", "CN=localhost", "localhost"),
        source_transport_servers=("WIN-CTD3L0RGEN4",),
    )


def hybrid_send_connector() -> LabSendConnectorRecord:
    return LabSendConnectorRecord(
        name="Outbound to Office 365 - 6d5d3c0e",
        identity="Outbound to Office 365 - 6d5d3c0e",
        enabled=True,
        cloud_services_mail_enabled=True,
        smart_hosts=("contoso.mail.protection.outlook.com",),
        address_spaces=("contoso.mail.onmicrosoft.com",),
        fqdn="mail.contoso.com",
        require_tls=True,
        tls_auth_level="DomainValidation",
        tls_domain="mail.protection.outlook.com",
        tls_certificate_name=GEOTRUST,
        source_transport_servers=("EX01", "EX02"),
    )


def receive_connector() -> LabReceiveConnectorRecord:
    return LabReceiveConnectorRecord(
        name="Default Frontend WIN-CTD3L0RGEN4",
        identity="WIN-CTD3L0RGEN4\\Default Frontend WIN-CTD3L0RGEN4",
        server="WIN-CTD3L0RGEN4",
        fqdn="WIN-CTD3L0RGEN4.exlab.dom",
        enabled=True,
        bindings=("0.0.0.0:25", "[::]:25"),
        tls_certificate_name=SmtpX509IdentifierRecord(
            "CN=WIN-CTD3L0RGEN4", "CN=WIN-CTD3L0RGEN4", "WIN-CTD3L0RGEN4"),
    )


def hybrid_configuration() -> LabHybridConfigurationRecord:
    return LabHybridConfigurationRecord(
        tls_certificate_name=GEOTRUST,
        on_premises_smart_host="mail.contoso.com",
        domains=("contoso.com",),
        sending_transport_servers=("ex-02",),
    )


def exchange_server() -> LabServerRecord:
    return LabServerRecord(
        name="SOLO-E19A",
        fqdn="Solo-E19A.Solo.com",
        admin_display_version="Version 15.2 (Build 986.5)",
        site="Solo.com/Configuration/Sites/Default-First-Site-Name",
        server_role="Mailbox",
    )


def assert_props_mirror_fixture(
    lab: Clixml, ours: ET.Element, fixture: Clixml, theirs: ET.Element
) -> None:
    """Every emitted property exists in the fixture, in the same order, with the same shape."""
    assert lab.types(ours) == fixture.types(theirs)
    their_props = {child.attrib["N"]: child for child in theirs.find("Props") or []}
    our_names = property_names(ours, "Props")
    assert set(our_names) <= set(their_props), set(our_names) - set(their_props)
    their_order = [name for name in property_names(theirs, "Props") if name in our_names]
    assert our_names == their_order
    for child in ours.find("Props") or []:
        theirs_child = their_props[child.attrib["N"]]
        if "Nil" in (child.tag, theirs_child.tag) or "Ref" in (child.tag, theirs_child.tag):
            continue
        assert child.tag == theirs_child.tag, child.attrib["N"]
        if child.tag == "Obj":
            assert lab.types(child)[:1] == fixture.types(theirs_child)[:1], child.attrib["N"]
    assert property_names(ours, "MS")[:3] == ["PSComputerName", "RunspaceId",
                                              "PSShowComputerName"]
    assert property_names(theirs, "MS")[:3] == ["PSComputerName", "RunspaceId",
                                                "PSShowComputerName"]


# --- certificates -------------------------------------------------------------------------


def test_certificate_has_the_fixture_shape() -> None:
    fixture = fixture_doc("e2019-four-certs.xml")
    theirs = fixture.objects()[0]
    lab = lab_doc(wire(lab_certificate()))
    ours = lab.objects()[0]

    assert strip_deserialized(lab.types(ours)) == fixture.types(theirs)
    assert lab.types(ours)[0] == CERTIFICATE_TYPE
    assert property_names(ours, "Props") == property_names(theirs, "Props") == ["RawData"]
    assert property_names(ours, "MS") == property_names(theirs, "MS") == [
        "PSComputerName", "RunspaceId", "PSShowComputerName", "SerializationData"]
    assert [child.tag for child in ours.find("MS") or []] == [
        child.tag for child in theirs.find("MS") or []]
    assert ours.findtext("ToString", "").startswith("[Subject]_x000D__x000A_  CN=")


def test_certificate_serialization_data_parses_like_the_fixture() -> None:
    record = lab_certificate()
    ours = round_trip(wire(record))
    theirs = read_fixture("e2019-four-certs.xml")[1]

    our_blob = nrbf.loads(bytes(ours.SerializationData))
    their_blob = nrbf.loads(bytes(theirs.SerializationData))

    assert {k: type(v) for k, v in our_blob.items()} == {
        k: type(v) for k, v in their_blob.items()}
    assert our_blob["Services"] == 27
    assert our_blob["RootCAType"] == 1
    assert our_blob["Status"] == 1
    assert our_blob["Identity"] == f"EX01.contoso.com\\{record.thumbprint}"
    assert [s["serviceName"] for s in our_blob["IISServices"]] == ["IIS://EX01/W3SVC/1"]


def test_certificate_without_iis_lists_no_iis_site() -> None:
    ours = round_trip(wire(lab_certificate(ExchangeService.SMTP)))
    blob = nrbf.loads(bytes(ours.SerializationData))
    assert blob["Services"] == 16
    assert blob["IISServices"] == []


def test_certificate_to_string_has_the_fixture_format() -> None:
    record = lab_certificate()
    ours = round_trip(wire(record))
    fixture_strings = [
        obj.PSObject.to_string for obj in read_fixture("e2019-four-certs.xml")]

    assert all(X509_TO_STRING.fullmatch(text) for text in fixture_strings)
    match = X509_TO_STRING.fullmatch(ours.PSObject.to_string)
    assert match is not None
    assert match.groupdict() == {
        "subject": "CN=mail.contoso.com",
        "issuer": "CN=GeoTrust TLS RSA CA G1, O=DigiCert Inc, C=US",
        "serial": "6C20C91ACF6A87BE",
        "not_before": "08/06/2025 13:59:05",
        "not_after": "09/07/2026 13:59:05",
        "thumbprint": record.thumbprint,
    }


def test_certificate_round_trips_through_psrpcore() -> None:
    record = lab_certificate()
    ours = round_trip(wire(record))

    assert ours.PSTypeNames == [f"Deserialized.{name}" for name in (
        CERTIFICATE_TYPE,
        "System.Security.Cryptography.X509Certificates.X509Certificate2",
        "System.Security.Cryptography.X509Certificates.X509Certificate",
        "System.Object",
    )]
    assert bytes(ours.RawData) == record.der
    assert ours.PSComputerName == COMPUTER
    assert ours.RunspaceId == RUNSPACE_ID
    assert ours.PSShowComputerName is False
    assert [p.name for p in ours.PSObject.adapted_properties] == ["RawData"]


def test_pypsrp_sees_raw_data_and_serialization_data() -> None:
    record = lab_certificate()
    seen = pypsrp_view(wire(record))

    assert seen.types[0] == CERTIFICATE_TYPE
    assert seen.adapted_properties["RawData"] == record.der
    assert nrbf.loads(seen.extended_properties["SerializationData"])["Services"] == 27
    assert seen.extended_properties["PSComputerName"] == COMPUTER
    assert seen.extended_properties["RunspaceId"] == RUNSPACE_ID
    assert X509_TO_STRING.fullmatch(str(seen))


def test_remoting_properties_can_be_left_out() -> None:
    element = serialize(
        to_psobject(lab_certificate(), computer_name=COMPUTER, runspace_id=RUNSPACE_ID,
                    remoting_properties=False), NO_CIPHER)
    assert property_names(element, "MS") == ["SerializationData"]


# --- Select-Object output -----------------------------------------------------------------


def selected_certificate() -> SelectedObject:
    return SelectedObject(
        source_type_names=(CERTIFICATE_TYPE, "System.Object"),
        properties={
            "Thumbprint": "2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7",
            "Services": ExchangeService.IMAP | ExchangeService.POP | ExchangeService.IIS
            | ExchangeService.SMTP,
            "RootCAType": RootCAType.ENTERPRISE,
            "Status": CertificateStatus.VALID,
            "NotAfter": datetime(2026, 7, 11, 13, 59, 5, tzinfo=UTC),
            "FriendlyName": None,
        },
    )


def test_selected_services_arrive_at_pypsrp_as_a_flags_enum() -> None:
    seen = pypsrp_view(wire(selected_certificate()))

    assert seen.types == [f"Selected.{CERTIFICATE_TYPE}",
                          "System.Management.Automation.PSCustomObject", "System.Object"]
    services = seen.extended_properties["Services"]
    assert str(services) == "IMAP, POP, IIS, SMTP"
    assert services.property_sets == [27]
    assert services.types[0] == (
        "Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices")
    assert str(seen.extended_properties["RootCAType"]) == "Enterprise"
    assert seen.extended_properties["RootCAType"].property_sets == [2]
    assert str(seen.extended_properties["Status"]) == "Valid"
    assert datetime.fromisoformat(seen.extended_properties["NotAfter"]) == datetime(
        2026, 7, 11, 13, 59, 5, tzinfo=UTC)
    assert seen.extended_properties["FriendlyName"] is None
    assert seen.extended_properties["Thumbprint"] == "2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7"


def test_selected_enum_xml_is_powershells_flags_enum() -> None:
    element = serialize(wire(selected_certificate()), NO_CIPHER)
    services = element.find("MS/Obj[@N='Services']")
    assert services is not None
    assert [t.text for t in services.findall("TN/T")] == [
        "Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices",
        "System.Enum", "System.ValueType", "System.Object"]
    assert services.findtext("ToString") == "IMAP, POP, IIS, SMTP"
    assert services.findtext("I32") == "27"
    assert element.findtext("ToString") == (
        "@{Thumbprint=2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7; Services=IMAP, POP, IIS, SMTP; "
        "RootCAType=Enterprise; Status=Valid; NotAfter=07/11/2026 13:59:05; FriendlyName=}")


def test_no_services_reads_none() -> None:
    seen = pypsrp_view(wire(SelectedObject((CERTIFICATE_TYPE,),
                                           {"Services": ExchangeService.NONE})))
    assert str(seen.extended_properties["Services"]) == "None"


# --- connectors, hybrid configuration, server, queue ---------------------------------------


def test_smtp_x509_identifier_matches_the_hybrid_configuration_fixture() -> None:
    fixture = fixture_doc("e2019-hybrid-configuration.xml")
    theirs = fixture.objects()[0].find("Props/Obj[@N='TlsCertificateName']")
    assert theirs is not None
    lab = lab_doc(wire(GEOTRUST))
    ours = lab.objects()[0]

    assert lab.types(ours) == fixture.types(theirs)
    assert ours.findtext("ToString") == theirs.findtext("ToString")
    assert [(c.tag, c.attrib["N"], c.text) for c in ours.find("Props") or []] == [
        (c.tag, c.attrib["N"], c.text) for c in theirs.find("Props") or []]


def test_send_connector_mirrors_the_fixture() -> None:
    fixture = fixture_doc("e2019-send-connectors.xml")
    lab = lab_doc(wire(fixture_send_connector()))
    assert_props_mirror_fixture(lab, lab.objects()[0], fixture, fixture.objects()[0])

    ours = lab.objects()[0]
    theirs = fixture.objects()[0]
    for name in ("SmartHosts", "AddressSpaces", "SourceTransportServers"):
        our_items = ours.findall(f"Props/Obj[@N='{name}']/LST/Obj")
        their_items = theirs.findall(f"Props/Obj[@N='{name}']/LST/Obj")
        assert [i.findtext("ToString") for i in our_items] == [
            i.findtext("ToString") for i in their_items]
        assert [lab.types(i) for i in our_items] == [fixture.types(i) for i in their_items]
    assert ours.findtext("Props/Obj[@N='TlsCertificateName']/ToString") == (
        "<I>CN=localhost<S>CN=localhost")


def test_hybrid_send_connector_reads_back_through_psrpcore() -> None:
    ours = round_trip(wire(hybrid_send_connector()))

    assert ours.PSObject.to_string == "Outbound to Office 365 - 6d5d3c0e"
    assert ours.TlsCertificateName.PSObject.to_string == GEOTRUST.to_string()
    assert ours.TlsCertificateName.CertificateIssuer == GEOTRUST.certificate_issuer
    assert [h.PSObject.to_string for h in ours.SmartHosts] == [
        "contoso.mail.protection.outlook.com"]
    assert [a.PSObject.to_string for a in ours.AddressSpaces] == [
        "SMTP:contoso.mail.onmicrosoft.com;1"]
    assert ours.TlsAuthLevel.PSObject.to_string == "DomainValidation"
    assert ours.TlsDomain.PSObject.to_string == "mail.protection.outlook.com"
    assert ours.Fqdn.PSObject.to_string == "mail.contoso.com"
    assert ours.CloudServicesMailEnabled is True
    assert ours.RequireTLS is True
    assert [s.PSObject.to_string for s in ours.SourceTransportServers] == ["EX01", "EX02"]
    assert ours.Identity.PSObject.to_string == "Outbound to Office 365 - 6d5d3c0e"


def test_receive_connector_mirrors_the_fixture() -> None:
    fixture = fixture_doc("e2019-receive-connectors.xml")
    theirs = fixture.objects()[2]
    lab = lab_doc(wire(receive_connector()))
    ours = lab.objects()[0]
    assert_props_mirror_fixture(lab, ours, fixture, theirs)
    assert ours.findtext("ToString") == theirs.findtext("ToString")
    for name in ("TlsCertificateName", "Fqdn", "Server", "Identity"):
        assert ours.findtext(f"Props/Obj[@N='{name}']/ToString") == theirs.findtext(
            f"Props/Obj[@N='{name}']/ToString"), name


def test_hybrid_configuration_mirrors_the_fixture() -> None:
    fixture = fixture_doc("e2019-hybrid-configuration.xml")
    lab = lab_doc(wire(hybrid_configuration()))
    ours, theirs = lab.objects()[0], fixture.objects()[0]
    assert_props_mirror_fixture(lab, ours, fixture, theirs)
    for name in ("TlsCertificateName", "OnPremisesSmartHost", "Identity"):
        assert ours.findtext(f"Props/Obj[@N='{name}']/ToString") == theirs.findtext(
            f"Props/Obj[@N='{name}']/ToString"), name


def test_exchange_server_mirrors_the_fixture() -> None:
    fixture = fixture_doc("e2019-exchange-server.xml")
    lab = lab_doc(wire(exchange_server()))
    ours, theirs = lab.objects()[0], fixture.objects()[0]
    assert_props_mirror_fixture(lab, ours, fixture, theirs)
    for name in ("AdminDisplayVersion", "Site", "ServerRole", "Identity"):
        assert ours.findtext(f"Props/Obj[@N='{name}']/ToString") == theirs.findtext(
            f"Props/Obj[@N='{name}']/ToString"), name
    assert ours.findtext("Props/Obj[@N='ServerRole']/I32") == "2"
    version = ours.find("Props/Obj[@N='AdminDisplayVersion']/Props")
    assert [(c.attrib["N"], c.text) for c in version or []] == [
        ("Major", "15"), ("Minor", "2"), ("Build", "986"), ("Revision", "5"),
        ("FilePatchLevelDescription", None)]
    for name in ("Name", "Fqdn", "Domain", "IsHubTransportServer", "IsEdgeServer"):
        assert ours.findtext(f"Props/*[@N='{name}']") == theirs.findtext(
            f"Props/*[@N='{name}']"), name


@pytest.mark.parametrize(
    ("fixture_name", "index", "record"),
    [
        ("e2019-send-connectors.xml", 0, fixture_send_connector()),
        ("e2019-hybrid-configuration.xml", 0, hybrid_configuration()),
        ("e2019-receive-connectors.xml", 0, receive_connector()),
        ("e2019-exchange-server.xml", 0, exchange_server()),
        ("e2019-four-certs.xml", 0, None),
    ],
    ids=["send-connector", "hybrid-configuration", "receive-connector", "server", "certificate"],
)
def test_pypsrp_copes_exactly_as_well_as_with_the_real_export(
    fixture_name: str, index: int, record: object
) -> None:
    """pypsrp 0.9 cannot resolve a TNRef/Ref into a <LST> it skipped (pypsrp issue 155):
    the lab reproduces that where the real export does, and only there."""
    real = fixture_doc(fixture_name).objects()[index]
    ours = serialize(wire(record if record is not None else lab_certificate()), NO_CIPHER)
    assert pypsrp_outcome(ours) == pypsrp_outcome(real)


def test_queue_has_exchange_enums_and_fields() -> None:
    record = LabQueueRecord(
        identity="EX01\\12",
        server="EX01",
        delivery_type="SmartHostConnectorDelivery",
        next_hop_domain="contoso.mail.protection.outlook.com",
        status="Retry",
        message_count=42,
        last_error="454 4.7.0 Temporary authentication failure ... UntrustedRoot",
    )
    seen = pypsrp_view(wire(record))

    assert seen.types[0] == "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo"
    assert str(seen) == "EX01\\12"
    assert str(seen.adapted_properties["DeliveryType"]) == "SmartHostConnectorDelivery"
    assert str(seen.adapted_properties["Status"]) == "Retry"
    assert seen.adapted_properties["MessageCount"] == 42
    assert seen.adapted_properties["NextHopDomain"] == "contoso.mail.protection.outlook.com"
    assert "UntrustedRoot" in seen.adapted_properties["LastError"]
    assert str(seen.adapted_properties["Identity"]) == "EX01\\12"


def test_unknown_enum_names_are_refused() -> None:
    with pytest.raises(ValueError, match="QueueStatus"):
        wire(LabQueueRecord("EX01\\1", "EX01", "SmartHostConnectorDelivery", "x", "Stuck", 0,
                            None))
    with pytest.raises(ValueError, match="TlsAuthLevel"):
        wire(LabSendConnectorRecord("c", "c", True, False, (), (), None, True, "Strict", None,
                                    None, ()))


def test_server_roles_combine_as_flags() -> None:
    record = LabServerRecord("EX01", "EX01.contoso.com", "Version 15.1 (Build 2507.6)",
                             "contoso.com/Configuration/Sites/Default-First-Site-Name",
                             "Mailbox, ClientAccess")
    seen = pypsrp_view(wire(record))
    assert str(seen.adapted_properties["ServerRole"]) == "Mailbox, ClientAccess"
    assert seen.adapted_properties["ServerRole"].property_sets == [6]


# --- other values -------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandInfoLike:
    name: str
    command_type: str
    module_name: str | None
    parameter_names: tuple[str, ...]
    certificate_name: SmtpX509IdentifierRecord | None = None


def test_unknown_dataclass_becomes_a_pscustomobject_of_its_fields() -> None:
    record = CommandInfoLike("Select-Object", "Cmdlet", None, ("Property", "First"), GEOTRUST)
    seen = pypsrp_view(wire(record))

    assert seen.types == ["System.Management.Automation.PSCustomObject", "System.Object"]
    assert seen.extended_properties["Name"] == "Select-Object"
    assert seen.extended_properties["CommandType"] == "Cmdlet"
    assert seen.extended_properties["ModuleName"] is None
    assert str(seen) == (
        "@{Name=Select-Object; CommandType=Cmdlet; ModuleName=; ParameterNames=System.Object[]; "
        f"CertificateName={GEOTRUST.to_string()}}}")
    assert seen.extended_properties["CertificateName"].types[0] == (
        "Microsoft.Exchange.Data.SmtpX509Identifier")
    assert list(seen.extended_properties)[-3:] == [
        "PSComputerName", "RunspaceId", "PSShowComputerName"]
    read_back = round_trip(wire(record))
    assert list(read_back.ParameterNames) == ["Property", "First"]


@pytest.mark.parametrize("value", ["text", 7, True, None, 2.5, b"\x01"])
def test_primitives_pass_through(value: object) -> None:
    assert wire(value) == value


def test_unsupported_objects_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        wire(object())


# --- errors -------------------------------------------------------------------------------


def not_found() -> ErrorSpec:
    return ErrorSpec(
        message="The certificate with thumbprint ABC was not found.",
        category="ObjectNotFound",
        fully_qualified_error_id="4B4C1B7F,Microsoft.Exchange.Management."
                                 "SystemConfigurationTasks.GetExchangeCertificate",
        target="ABC",
    )


def test_pypsrp_error_stream_shows_message_and_category() -> None:
    record = error_record(not_found(), command_name="Get-ExchangeCertificate")
    element = serialize(record, NO_CIPHER)
    seen = Serializer().deserialize(ET.tostring(element, encoding="unicode"),
                                    ObjectMeta("Obj", object=ErrorRecordMessage))

    assert str(seen) == "The certificate with thumbprint ABC was not found."
    assert seen.exception.adapted_properties["Message"] == str(seen)
    assert seen.exception.types[0] == (
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException")
    assert seen.category == 13
    assert seen.activity == "Get-ExchangeCertificate"
    assert seen.reason == "ManagementObjectNotFoundException"
    assert seen.target_name == "ABC"
    assert seen.message == (
        "ObjectNotFound: (ABC:String) [Get-ExchangeCertificate], "
        "ManagementObjectNotFoundException")
    assert seen.fq_error.startswith("4B4C1B7F,")
    assert seen.target_object == "ABC"


def test_error_without_command_or_target() -> None:
    spec = ErrorSpec("Boom", "InvalidOperation", "X,Y")
    element = serialize(error_record(spec, command_name=None), NO_CIPHER)
    seen = Serializer().deserialize(ET.tostring(element, encoding="unicode"),
                                    ObjectMeta("Obj", object=ErrorRecordMessage))
    assert seen.message == "InvalidOperation: (:) [], ManagementObjectNotFoundException"
    assert seen.target_object is None


def test_unknown_error_category_is_refused() -> None:
    with pytest.raises(ValueError, match="Bogus"):
        error_record(ErrorSpec("m", "Bogus", "x"), command_name=None)
