"""TolerantPypsrpSerializer reads exactly what pypsrp 0.9's own deserializer reads.

The subclass re-implements ``Serializer.deserialize`` for nested elements (to skip pypsrp's
per-element ``ElementTree.tostring``); these tests compare it with the stock method (plus the
same tolerance for unresolvable references) on real Exchange exports, on everything the lab
sends, and on pypsrp's corner cases.
"""

from __future__ import annotations

import queue
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from psrpcore.types import PSCryptoProvider, serialize
from pypsrp.complex_objects import ComplexObject, GenericComplexObject, ObjectMeta
from pypsrp.serializer import Serializer

from bot.exchange.remote_object import TolerantPypsrpSerializer, from_pypsrp
from bot.lab.model import ExchangeOrganisation
from bot.lab.records import CommandCall, ErrorSpec
from bot.lab.state import packaged_state
from bot.lab.wire import error_record, to_psobject

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
NO_CIPHER = cast("PSCryptoProvider", None)
READ_COMMANDS = (
    CommandCall("Get-ExchangeServer", (("Identity", "EX01"),)),
    CommandCall("Get-ExchangeCertificate", (("Server", "EX01"),)),
    CommandCall("Get-SendConnector"),
    CommandCall("Get-ReceiveConnector", (("Server", "EX01"),)),
    CommandCall("Get-HybridConfiguration"),
    CommandCall("Get-Queue", (("Server", "EX01"),)),
)


UNRESOLVED = "<unresolved reference>"


class StockTolerantSerializer(Serializer):
    """pypsrp's own ``deserialize`` with only the unresolvable-reference tolerance."""

    def _clear(self) -> None:
        super()._clear()
        self.obj = _Missing(UNRESOLVED)
        self.tn = _UnresolvedTypeNames()


class _UnresolvedTypes(list[str]):
    """The (empty) type names stock pypsrp gives a ``<TNRef>`` it cannot resolve."""


class _UnresolvedTypeNames(dict[str, Any]):
    def __missing__(self, key: str) -> list[str]:
        return _UnresolvedTypes()


class _Missing(dict[str, Any]):
    def __init__(self, default: object) -> None:
        super().__init__()
        self._default = default

    def __missing__(self, key: str) -> object:
        return list(self._default) if isinstance(self._default, list) else self._default


def shape(value: object, depth: int = 0) -> object:
    """A comparable picture of a pypsrp result (``_xml`` of nested objects left out)."""
    if depth > 40:
        return "..."
    if isinstance(value, GenericComplexObject):
        types = UNRESOLVED if isinstance(value.types, _UnresolvedTypes) else list(value.types)
        return ("object", types, value.to_string,
                {k: shape(v, depth + 1) for k, v in value.adapted_properties.items()},
                {k: shape(v, depth + 1) for k, v in value.extended_properties.items()},
                [shape(v, depth + 1) for v in value.property_sets])
    if isinstance(value, ObjectMeta):
        return (type(value).__name__, {k: shape(v, depth + 1) for k, v in vars(value).items()})
    if isinstance(value, ComplexObject):
        fields = {k: shape(v, depth + 1) for k, v in sorted(vars(value).items()) if k != "_xml"}
        return (type(value).__name__, fields)
    if isinstance(value, list | tuple):
        return [shape(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {shape(k, depth + 1): shape(v, depth + 1) for k, v in value.items()}
    if isinstance(value, queue.Queue):
        return ("queue", [shape(item, depth + 1) for item in list(value.queue)])
    if isinstance(value, ElementTree.Element):
        return ("element", ElementTree.tostring(value, encoding="unicode"))
    return value


def assert_reads_like_pypsrp(text: str) -> None:
    expected = shape(StockTolerantSerializer().deserialize(text))
    actual = shape(TolerantPypsrpSerializer().deserialize(text))
    assert matches(expected, actual), f"{expected!r}\n!=\n{actual!r}"


def matches(expected: object, actual: object) -> bool:
    """``expected == actual``, but where stock pypsrp lost a reference anything may stand.

    Stock pypsrp keeps Exchange's untyped lists as XML text (we read them), so a reference
    to an object or type names defined inside one is unresolved there and resolved here.
    """
    if expected is UNRESOLVED:
        return True
    if isinstance(expected, str) and expected.lstrip().startswith(UNTYPED_CONTAINER_TEXT):
        return isinstance(actual, list | dict)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            matches(value, actual[key]) for key, value in expected.items())
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        return (type(expected) is type(actual) and len(expected) == len(actual)
                and all(matches(e, a) for e, a in zip(expected, actual, strict=True)))
    return expected == actual


UNTYPED_CONTAINER_TEXT = ("<LST", "<DCT", "<IE", "<QUE", "<STK")


def fixture_objects() -> list[tuple[str, str]]:
    if not FIXTURES.is_dir():
        return []
    texts = []
    for path in sorted(FIXTURES.glob("*.xml")):
        root = ElementTree.fromstring(path.read_text(encoding="utf-8-sig"))  # noqa: S314
        for node in root.iter():
            node.tag = node.tag.split("}", 1)[-1]
        texts += [(f"{path.name}[{index}]", ElementTree.tostring(element, encoding="unicode"))
                  for index, element in enumerate(root)]
    return texts


def lab_objects() -> list[tuple[str, str]]:
    texts = []
    for state_name in ("kb-2888788", "healthy-pinned"):
        organisation = ExchangeOrganisation(packaged_state(state_name, now=NOW),
                                            clock=lambda: NOW)
        for call in READ_COMMANDS:
            result = organisation.run((call,), user="CONTOSO\\admin", connected_server="EX01")
            for index, record in enumerate(result.output):
                value = to_psobject(record, computer_name="ex01.contoso.com",
                                    runspace_id=uuid.UUID(int=7))
                element = serialize(value, NO_CIPHER)
                texts.append((f"{state_name} {call.name}[{index}]",
                              ElementTree.tostring(element, encoding="unicode")))
    error = error_record(ErrorSpec(message="not found", category="ObjectNotFound",
                                   fully_qualified_error_id="X,Get-Thing",
                                   exception_type="System.Exception", target="abc"),
                         command_name="Get-Thing")
    texts.append(("error record", ElementTree.tostring(serialize(error, NO_CIPHER),
                                                       encoding="unicode")))
    return texts


CORNER_CASES = {
    # pypsrp lets a list's item metadata take the first item's tag: the untyped <Obj> after
    # an <S> then stays XML text. The same quirk must not leak into the next list.
    "array with mixed items": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Object[]</T><T>System.Array</T>'
        '<T>System.Object</T></TN><LST><S>a</S><Obj RefId="1"><ToString>b</ToString></Obj>'
        '<I32>3</I32></LST></Obj>'
    ),
    "array after the mixed one": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Object[]</T><T>System.Array</T>'
        '<T>System.Object</T></TN><LST><Obj RefId="1"><ToString>b</ToString></Obj>'
        '</LST></Obj>'
    ),
    "generic list of strings": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Generic.List`1[[System.String, '
        'mscorlib]]</T><T>System.Object</T></TN><LST><S>a</S><S>b_x000A_c</S></LST></Obj>'
    ),
    "typed arrays and collections": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><Props>'
        '<Obj N="A" RefId="1"><TN RefId="1"><T>System.String[]</T><T>System.Array</T>'
        '<T>System.Object</T></TN><LST><S>a</S><S>b</S></LST></Obj>'
        '<Obj N="C" RefId="2"><TN RefId="2"><T>System.Collections.ObjectModel.'
        'ReadOnlyCollection`1[[System.Int32, mscorlib]]</T><T>System.Object</T></TN>'
        '<LST><I32>1</I32></LST></Obj>'
        '<Obj N="D" RefId="3"><TN RefId="3"><T>Deserialized.System.Collections.ObjectModel.'
        'Collection`1[[System.Guid, mscorlib]]</T></TN><LST>'
        '<G>5f6f1b2e-0000-4000-8000-000000000001</G></LST></Obj>'
        '</Props></Obj>'
    ),
    "multi-valued list kept as text, with escapes and non-ASCII": (
        '<Obj RefId="0"><TN RefId="0"><T>Thing</T><T>System.Object</T></TN><Props>'
        '<Obj N="L" RefId="1"><TN RefId="1"><T>Microsoft.Exchange.Data.MultiValuedProperty`1'
        '[[System.String]]</T><T>System.Object</T></TN><LST><S>Z\u00fcrich &amp; &lt;co&gt; '
        '"q" \u65e5\u672c\t</S><S N="a&quot;b&#10;">x</S><Nil /></LST></Obj></Props></Obj>'
    ),
    "typed dictionary": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Generic.Dictionary`2[['
        'System.String, mscorlib],[System.Int32, mscorlib]]</T><T>System.Object</T></TN>'
        '<DCT><En><S N="Key">a</S><I32 N="Value">1</I32></En></DCT></Obj>'
    ),
    "hashtable, queue and stack": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><Props>'
        '<Obj N="H" RefId="1"><TN RefId="1"><T>System.Collections.Hashtable</T>'
        '<T>System.Object</T></TN><DCT><En><S N="Key">k</S><Nil N="Value" /></En></DCT></Obj>'
        '<Obj N="Q" RefId="2"><TN RefId="2"><T>System.Collections.Queue</T>'
        '<T>System.Object</T></TN><QUE><I64>1</I64><U16>2</U16></QUE></Obj>'
        '<Obj N="K" RefId="3"><TN RefId="3"><T>System.Collections.Stack</T>'
        '<T>System.Object</T></TN><STK><Db>1.5</Db><C>65</C></STK></Obj>'
        '</Props></Obj>'
    ),
    "every primitive": (
        '<Obj RefId="0"><TN RefId="0"><T>Thing</T><T>System.Object</T></TN><MS>'
        '<S N="s">x_x000D__x000A_y</S><C N="c">97</C><B N="b">true</B><B N="b2">True</B>'
        '<DT N="dt">2024-01-01T00:00:00Z</DT><TS N="ts">PT1S</TS><By N="by">1</By>'
        '<SB N="sb">-1</SB><U16 N="u16">2</U16><I16 N="i16">-2</I16><U32 N="u32">3</U32>'
        '<I32 N="i32">-3</I32><U64 N="u64">4</U64><I64 N="i64">-4</I64><Sg N="sg">1.5</Sg>'
        '<Db N="db">2.5</Db><D N="d">3.5</D><BA N="ba">AQID</BA>'
        '<G N="g">5f6f1b2e-0000-4000-8000-000000000001</G><URI N="uri">http://x/</URI>'
        '<Nil N="nil" /><Version N="v">1.2.3</Version><XD N="xd">&lt;a/&gt;</XD>'
        '<SBK N="sbk">{ 1 }</SBK><SS N="ss">AAAA</SS><Ref N="self" RefId="0" />'
        '<Ref N="dangling" RefId="42" /></MS></Obj>'
    ),
    "enum and unknown type without System.Object": (
        '<Obj RefId="0"><TN RefId="0"><T>Thing</T><T>System.Object</T></TN><Props>'
        '<Obj N="E" RefId="1"><TN RefId="1"><T>Some.Enum</T><T>System.Enum</T>'
        '<T>System.ValueType</T><T>System.Object</T></TN><ToString>A, B</ToString>'
        '<I32>3</I32></Obj><Obj N="U" RefId="2"><TN RefId="2"><T>Deserialized.Only</T></TN>'
        '<ToString>u</ToString></Obj><Obj N="R" RefId="3"><TNRef RefId="2" /></Obj>'
        '<Obj N="D" RefId="4"><TNRef RefId="77" /><ToString>dangling</ToString></Obj>'
        '</Props></Obj>'
    ),
    "pypsrp's own record types": (
        '<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCredential</T>'
        '<T>System.Object</T></TN><Props><S N="UserName">u</S><SS N="Password">AAAA</SS>'
        '</Props></Obj>'
    ),
}


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")
@pytest.mark.parametrize(("name", "text"), fixture_objects(), ids=lambda v: str(v)[:40])
def test_exchange_exports_read_as_pypsrp_reads_them(name: str, text: str) -> None:
    assert_reads_like_pypsrp(text)


@pytest.mark.parametrize(("name", "text"), lab_objects(), ids=lambda v: str(v)[:40])
def test_lab_output_reads_as_pypsrp_reads_it(name: str, text: str) -> None:
    assert_reads_like_pypsrp(text)


@pytest.mark.parametrize("name", sorted(CORNER_CASES))
def test_corner_cases_read_as_pypsrp_reads_them(name: str) -> None:
    assert_reads_like_pypsrp(CORNER_CASES[name])


def test_one_serializer_reads_both_arrays_in_turn_as_pypsrp_does() -> None:
    stock, tolerant = StockTolerantSerializer(), TolerantPypsrpSerializer()
    for name in ("array with mixed items", "array after the mixed one"):
        text = CORNER_CASES[name]
        assert shape(tolerant.deserialize(text)) == shape(stock.deserialize(text))


def lab_send_connector() -> str:
    return next(text for name, text in lab_objects()
                if name.startswith("kb-2888788 Get-SendConnector"))


def test_no_nested_element_is_turned_back_into_xml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = ElementTree.tostring

    def counting(element: ElementTree.Element, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(element.tag))
        return original(element, *args, **kwargs)

    text = lab_send_connector()
    monkeypatch.setattr(ElementTree, "tostring", counting)
    TolerantPypsrpSerializer().deserialize(text)
    assert calls == []
    StockTolerantSerializer().deserialize(text)
    assert len(calls) > 20


def test_multi_valued_lists_are_read_in_place_with_references_into_them() -> None:
    obj = TolerantPypsrpSerializer().deserialize(lab_send_connector())
    smart_hosts = obj.adapted_properties["SmartHosts"]
    assert isinstance(smart_hosts, GenericComplexObject)
    assert isinstance(smart_hosts.property_sets[0], list)
    converted = from_pypsrp(obj)
    first = converted.get("SmartHosts")[0]
    assert first.type_name == "Microsoft.Exchange.Data.SmartHost"
    assert first.to_string.endswith(".mail.protection.outlook.com")
    # Defined inside the SmartHosts list, referenced after it: stock pypsrp loses it.
    assert StockTolerantSerializer().deserialize(lab_send_connector()).adapted_properties[
        "SourceIPAddress"] is UNRESOLVED
    source = converted.get("SourceIPAddress")
    assert source.type_name == "System.Net.IPAddress"
    assert source.to_string == "0.0.0.0"  # noqa: S104 - Exchange output, not a bind


def test_plain_pypsrp_lists_kept_as_text_still_convert() -> None:
    obj = Serializer().deserialize(CORNER_CASES["multi-valued list kept as text, with escapes "
                                                "and non-ASCII"])
    assert obj.adapted_properties["L"].property_sets[0].startswith("<LST>")
    assert from_pypsrp(obj).get("L") == (
        'Z\u00fcrich & <co> "q" \u65e5\u672c\t', "x", None)


def test_top_level_objects_keep_their_text_as_pypsrp_s_xml() -> None:
    text = CORNER_CASES["every primitive"]
    obj = TolerantPypsrpSerializer().deserialize(text)
    assert isinstance(obj, GenericComplexObject)
    assert obj._xml == text
    assert StockTolerantSerializer().deserialize(text)._xml == text


def test_text_that_is_not_xml_comes_back_unchanged() -> None:
    assert TolerantPypsrpSerializer().deserialize("<Obj") == "<Obj"
    assert StockTolerantSerializer().deserialize("<Obj") == "<Obj"
