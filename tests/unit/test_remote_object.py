"""The neutral view: both adapters, CLIXML files in their encodings, and bad input."""

from __future__ import annotations

import copy
import pickle
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psrpcore.types import PSDict, PSGuid, PSInt, PSList, PSObject, PSString
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.serializer import Serializer

from bot.exchange.remote_object import (
    ClixmlError,
    RemoteObject,
    TolerantPypsrpSerializer,
    from_psrpcore,
    from_pypsrp,
    read_clixml,
    read_clixml_file,
    strip_deserialized,
    type_suffix_matches,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(),
                                    reason=f"Exchange CLIXML fixtures not found at {FIXTURES}")
CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"

MINIMAL = (
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj RefId="0"><TN RefId="0"><T>Microsoft.Exchange.Data.Directory.Management.'
    'ExchangeServer</T><T>System.Object</T></TN><ToString>EX01</ToString>'
    '<Props><S N="Name">EX01</S><S N="Fqdn">ex01.contoso.com</S>'
    '<Obj N="ServerRole" RefId="1"><TN RefId="1"><T>Microsoft.Exchange.Data.Directory.'
    'SystemConfiguration.ServerRole</T><T>System.Enum</T><T>System.ValueType</T>'
    '<T>System.Object</T></TN><ToString>Mailbox</ToString><I32>2</I32></Obj>'
    '</Props><MS><S N="PSComputerName">ex01.contoso.com</S></MS></Obj></Objs>'
)


def _element_children(text: str) -> list[ElementTree.Element]:
    root = ElementTree.fromstring(text.lstrip("\ufeff"))  # noqa: S314 - fixture
    for node in root.iter():
        if node.tag.startswith("{"):
            node.tag = node.tag.split("}", 1)[1]
    return list(root)


# --- reading CLIXML -------------------------------------------------------------------------

def test_read_clixml_gives_merged_properties_enum_and_to_string() -> None:
    [server] = read_clixml(MINIMAL, source="inline")
    assert server.to_string == "EX01"
    assert server.get("Name") == "EX01"
    assert server.get("pscomputername") == "ex01.contoso.com", "names are case-insensitive"
    role = server.get("ServerRole")
    assert isinstance(role, RemoteObject)
    assert (role.value, role.to_string) == (2, "Mailbox")
    assert type_suffix_matches(server,
                               "Microsoft.Exchange.Data.Directory.Management.ExchangeServer")
    assert server.type_names[0].startswith("Deserialized."), "psrpcore adds one prefix"


@needs_fixtures
def test_every_fixture_file_reads_into_remote_objects() -> None:
    for path in sorted(FIXTURES.glob("*.xml")):
        objects = read_clixml_file(path)
        assert objects, path.name
        assert all(isinstance(obj, RemoteObject) and obj.type_names for obj in objects)


@needs_fixtures
def test_rawdata_only_file_has_double_prefix_and_still_matches_by_suffix() -> None:
    objects = read_clixml_file(FIXTURES / "deserialized-rawdata-only.xml")
    assert len(objects) == 5
    first = objects[0]
    assert first.type_names[0] == "Deserialized.Deserialized." + CERTIFICATE_TYPE
    assert type_suffix_matches(first, CERTIFICATE_TYPE)
    assert type_suffix_matches(first, "Deserialized." + CERTIFICATE_TYPE)
    assert type_suffix_matches(first, "ExchangeCertificate")
    assert not type_suffix_matches(first, "Certificate"), "suffix means whole dotted parts"
    assert first.type_name == CERTIFICATE_TYPE
    assert first.get("SerializationData") is None
    assert isinstance(first.get("RawData"), bytes)


def test_strip_deserialized_removes_every_prefix() -> None:
    assert strip_deserialized("Deserialized.Deserialized.System.Object") == "System.Object"
    assert strip_deserialized("System.Object") == "System.Object"


@needs_fixtures
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le",
                                      "utf-16-be", "utf-32"])
def test_files_in_windows_encodings_read_the_same(tmp_path: Path, encoding: str) -> None:
    original = FIXTURES / "e2019-solo.xml"
    text = original.read_text(encoding="utf-8-sig")
    copy = tmp_path / f"solo-{encoding}.xml"
    copy.write_bytes(text.encode(encoding))
    assert read_clixml_file(copy) == read_clixml_file(original)


def test_clixml_header_and_xml_declaration_are_accepted() -> None:
    text = "#< CLIXML\r\n" + '<?xml version="1.0" encoding="utf-16"?>\r\n' + MINIMAL
    assert [obj.get("Name") for obj in read_clixml(text, source="x")] == ["EX01"]


def test_top_level_primitives_become_value_objects() -> None:
    text = '<Objs Version="1.1.0.1"><S>hello</S><I32>7</I32><Nil /></Objs>'
    values = read_clixml(text, source="x")
    assert [(obj.type_names, obj.value, obj.to_string) for obj in values] == [
        ((), "hello", "hello"), ((), 7, "7"), ((), None, None)]


@pytest.mark.parametrize(("text", "fragment"), [
    (MINIMAL[: len(MINIMAL) // 2], "not well-formed XML"),
    ("<html><body>hi</body></html>", "not a CLIXML file"),
    ("", "empty"),
    ("just some words", "not well-formed XML"),
    ('<!DOCTYPE Objs [<!ENTITY a "b">]><Objs>&a;</Objs>', "DTD"),
    ('<Objs Version="1.1.0.1"><Foo /></Objs>', "could not be read"),
    ('<Objs Version="1.1.0.1"><Obj RefId="0"><TNRef RefId="9" /></Obj></Objs>',
     "could not be read"),
    ('<Objs Version="1.1.0.1"><Ref RefId="3" /></Objs>', "could not be read"),
    ('<Objs Version="1.1.0.1"><I32>seven</I32></Objs>', "could not be read"),
])
def test_malformed_clixml_raises_clixml_error_naming_the_source(text: str,
                                                                  fragment: str) -> None:
    with pytest.raises(ClixmlError, match=fragment) as caught:
        read_clixml(text, source="export.xml")
    assert str(caught.value).startswith("export.xml: ")
    assert isinstance(caught.value, ValueError)


def test_unreadable_files_raise_clixml_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    with pytest.raises(ClixmlError, match=r"missing\.xml: cannot read"):
        read_clixml_file(missing)
    binary = tmp_path / "binary.xml"
    binary.write_bytes(b"\xff\xfe\x00\xd8\x00\xd8garbage")
    with pytest.raises(ClixmlError, match=r"binary\.xml"):
        read_clixml_file(binary)
    latin = tmp_path / "latin.xml"
    latin.write_bytes("<Objs><S>caf\u00e9</S></Objs>".encode("latin-1"))
    with pytest.raises(ClixmlError, match=r"latin\.xml: not text in UTF-8"):
        read_clixml_file(latin)
    truncated = tmp_path / "truncated.xml"
    truncated.write_text(MINIMAL[:200], encoding="utf-8")
    with pytest.raises(ClixmlError, match=r"truncated\.xml: not well-formed XML"):
        read_clixml_file(truncated)


# --- psrpcore adapter -----------------------------------------------------------------------

def test_from_psrpcore_normalises_primitives() -> None:
    guid = PSGuid("3c5ebdaf-1885-4f22-8f60-0e8c1667abed")
    assert from_psrpcore(guid) == "3c5ebdaf-1885-4f22-8f60-0e8c1667abed"
    assert type(from_psrpcore(PSString("x"))) is str
    assert type(from_psrpcore(PSInt(5))) is int
    assert from_psrpcore(PSList([PSInt(1), PSString("a")])) == (1, "a")
    assert from_psrpcore(None) is None
    assert from_psrpcore(True) is True


def test_from_psrpcore_turns_an_extended_primitive_into_a_value_object() -> None:
    flag = PSInt(27)
    flag.PSObject.type_names = ["Deserialized.Microsoft.Exchange.Management."
                                "SystemConfigurationTasks.AllowedServices", "System.Enum"]
    flag.PSObject.to_string = "IMAP, POP, IIS, SMTP"
    converted = from_psrpcore(flag)
    assert isinstance(converted, RemoteObject)
    assert (converted.value, converted.to_string) == (27, "IMAP, POP, IIS, SMTP")


def test_from_psrpcore_dict_becomes_object_with_string_keys() -> None:
    converted = from_psrpcore(PSDict({"a": PSInt(1), 2: PSString("b")}))
    assert isinstance(converted, RemoteObject)
    assert dict(converted.properties) == {"a": 1, "2": "b"}


def test_from_psrpcore_cuts_cycles() -> None:
    [obj] = read_clixml(
        '<Objs><Obj RefId="0"><TN RefId="0"><T>X</T></TN><MS><Ref N="Self" RefId="0" />'
        '</MS></Obj></Objs>', source="cycle")
    assert obj.get("Self") is None


# --- pypsrp adapter -------------------------------------------------------------------------

def _generic(types: list[str], to_string: str | None = None,
             adapted: dict[str, object] | None = None,
             extended: dict[str, object] | None = None,
             property_sets: list[object] | None = None) -> GenericComplexObject:
    obj = GenericComplexObject()
    obj.types = types
    obj.to_string = to_string
    obj.adapted_properties = adapted or {}
    obj.extended_properties = extended or {}
    obj.property_sets = property_sets or []
    return obj


def test_from_pypsrp_merges_properties_and_keeps_enum_number_and_name() -> None:
    services = _generic(["Microsoft.Exchange.Management.SystemConfigurationTasks."
                         "AllowedServices", "System.Enum"], "IMAP, POP, IIS, SMTP",
                        property_sets=[27])
    row = _generic(["Selected." + CERTIFICATE_TYPE], adapted={"Services": services},
                   extended={"Thumbprint": "ABC", "RunspaceId": uuid.UUID(int=1)})
    converted = from_pypsrp(row)
    assert isinstance(converted, RemoteObject)
    assert converted.get("Thumbprint") == "ABC"
    assert converted.get("RunspaceId") == "00000000-0000-0000-0000-000000000001"
    value = converted.get("Services")
    assert isinstance(value, RemoteObject)
    assert (value.value, value.to_string) == (27, "IMAP, POP, IIS, SMTP")


def test_from_pypsrp_reads_lists_pypsrp_left_as_raw_xml() -> None:
    raw_list = ('<LST><Obj RefId="3"><TN RefId="3"><T>Microsoft.Exchange.Data.SmartHost</T>'
                '<T>System.Object</T></TN><ToString>contoso.mail.protection.outlook.com</ToString></Obj>'
                '<Obj RefId="4"><TNRef RefId="99" /><ToString>second.example</ToString></Obj>'
                '<S>plain</S><Ref RefId="77" /></LST>\n   ')
    multi_valued = _generic(["Microsoft.Exchange.Data.MultiValuedProperty`1[[...]]"],
                            property_sets=[raw_list])
    converted = from_pypsrp(multi_valued)
    assert isinstance(converted, tuple)
    first, second, third, fourth = converted
    assert isinstance(first, RemoteObject)
    assert first.type_names == ("Microsoft.Exchange.Data.SmartHost", "System.Object")
    assert first.to_string == "contoso.mail.protection.outlook.com"
    assert isinstance(second, RemoteObject)
    assert second.to_string == "second.example"
    assert (third, fourth) == ("plain", None)


def test_from_pypsrp_keeps_iso_datetime_strings_and_plain_values() -> None:
    obj = _generic(["X"], adapted={"When": "2021-09-28T10:32:01.1234567-07:00", "N": 5,
                                   "B": b"\x01", "L": [1, "a"], "D": {"k": 1}})
    converted = from_pypsrp(obj)
    assert isinstance(converted, RemoteObject)
    assert converted.get("When") == "2021-09-28T10:32:01.1234567-07:00"
    assert converted.get("L") == (1, "a")
    nested = converted.get("D")
    assert isinstance(nested, RemoteObject)
    assert nested.get("k") == 1
    assert from_pypsrp(datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 1, 1, tzinfo=UTC)


def test_from_pypsrp_cuts_cycles() -> None:
    obj = _generic(["X"], "x")
    obj.adapted_properties["Self"] = obj
    converted = from_pypsrp(obj)
    assert isinstance(converted, RemoteObject)
    assert converted.get("Self") is None


@needs_fixtures
@pytest.mark.parametrize("file_name", ["e2019-send-connectors.xml",
                                       "e2019-hybrid-configuration.xml"])
def test_stock_pypsrp_09_loses_objects_that_refer_into_lists(file_name: str) -> None:
    """Why the client must install TolerantPypsrpSerializer (real Exchange output does this)."""
    elements = _element_children((FIXTURES / file_name).read_text(encoding="utf-8-sig"))
    with pytest.raises(KeyError):
        Serializer().deserialize(elements[0])
    wire_text = ElementTree.tostring(elements[0], encoding="unicode")
    tolerant = TolerantPypsrpSerializer().deserialize(wire_text)  # as Message.unpack calls it
    converted = from_pypsrp(tolerant)
    assert isinstance(converted, RemoteObject)
    tls_name = converted.get("TlsCertificateName")
    assert isinstance(tls_name, RemoteObject)
    assert tls_name.to_string is not None


def test_remote_object_pickles_and_copies() -> None:
    obj = RemoteObject(("X",), {"A": 1, "Nested": RemoteObject((), {"b": (1, 2)}, "n", 3)}, "x")
    assert pickle.loads(pickle.dumps(obj)) == obj  # noqa: S301 - our own bytes
    assert copy.deepcopy(obj) == obj
    assert repr(obj).startswith("RemoteObject(type_names=('X',), properties={'A': 1")


def test_remote_object_is_immutable() -> None:
    obj = RemoteObject(("X",), {"a": 1}, None)
    with pytest.raises(TypeError):
        obj.properties["a"] = 2  # type: ignore[index]
    assert obj == RemoteObject(("X",), {"a": 1}, None)
    assert not obj.has("b")
    assert obj.has("A")
    assert obj.get("missing", "default") == "default"


def test_psobject_without_to_string_has_none() -> None:
    obj = PSObject()
    obj.PSObject.type_names = ["Custom"]
    converted = from_psrpcore(obj)
    assert isinstance(converted, RemoteObject)
    assert converted.to_string is None
    assert converted.type_names == ("Custom",)
