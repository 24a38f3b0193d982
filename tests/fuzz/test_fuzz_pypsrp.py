"""Fuzz the live road in: pypsrp output read by ``TolerantPypsrpSerializer``, then ``from_pypsrp``.

A PIPELINE_OUTPUT message carries one object's CLIXML (an ``<Obj>`` without namespace);
pypsrp 0.9 deserializes it with the pool's serializer and, on ``SerializationError``, again as
a dynamic object. Here the real exports' objects are mutated as trees and as text and read the
same way. The serializer may raise (the session turns any exception from pypsrp into
``ExchangeUnavailable``); what it returns must then convert with ``from_pypsrp`` into plain
values without an exception, and the snapshot parsers must give a record or
``SnapshotParseError``. Nothing may hang.
"""

from __future__ import annotations

import copy
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from functools import cache

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pypsrp.complex_objects import GenericComplexObject, ObjectMeta
from pypsrp.exceptions import SerializationError

from bot.exchange.parse import (
    SnapshotParseError,
    classify,
    parse_certificate_with_notes,
    parse_exchange_server,
    parse_hybrid_configuration,
    parse_queue,
    parse_receive_connector,
    parse_send_connector,
    parse_tls_certificate_name,
    snapshot_from_objects,
)
from bot.exchange.remote_object import RemoteObject, TolerantPypsrpSerializer, from_pypsrp
from bot.exchange.snapshot import ServerSnapshot
from tests.fuzz import (
    CERTIFICATE_FIXTURES,
    LARGE_FIXTURES,
    OTHER_FIXTURES,
    Hang,
    assert_plain,
    assert_readable,
    bounded,
    fixture_tree,
    fuzz_settings,
    mutate_clixml_tree,
    mutated_text,
    record,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive")  # mutated serials; cryptography warns

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PARSERS = {
    "certificate": lambda obj: parse_certificate_with_notes(obj).value,
    "send_connector": parse_send_connector,
    "receive_connector": parse_receive_connector,
    "hybrid_configuration": parse_hybrid_configuration,
    "queue": parse_queue,
    "exchange_server": parse_exchange_server,
}


@cache
def output_objects() -> tuple[ElementTree.Element, ...]:
    """Each top-level ``<Obj>`` of the exports, as one PIPELINE_OUTPUT message would hold it."""
    names = CERTIFICATE_FIXTURES + OTHER_FIXTURES + ("e2019-exchange-server.xml",)
    objects = [element for name in names for element in fixture_tree(name)]
    return tuple(objects[:60])


def message_text(element: ElementTree.Element) -> str:
    return ElementTree.tostring(element, encoding="unicode")


@st.composite
def mutated_message(draw: st.DrawFn) -> str:
    element = copy.deepcopy(draw(st.sampled_from(output_objects())))
    wrapper = ElementTree.Element("wrapper")
    wrapper.append(element)
    mutate_clixml_tree(draw, wrapper, most=3)
    return "".join(message_text(child) for child in wrapper) or "<Obj/>"


def read_like_pypsrp(text: str) -> object:
    """What pypsrp 0.9's ``Message.unpack`` does with a PIPELINE_OUTPUT payload."""
    serializer = TolerantPypsrpSerializer()
    try:
        return serializer.deserialize(text)
    except SerializationError:
        return serializer.deserialize(text, ObjectMeta("ObjDynamic",
                                                       object=GenericComplexObject))


def check_message(text: str) -> None:
    try:
        value = bounded(lambda: read_like_pypsrp(text), "pypsrp deserialize")
    except Hang:
        raise
    except Exception as error:  # pypsrp's own; the session wraps any in ExchangeUnavailable
        record(f"pypsrp raised {type(error).__name__}")
        str(error)  # the session quotes it to the user
        return
    record(f"read as {type(value).__name__}")
    converted = bounded(lambda: from_pypsrp(value), "from_pypsrp")
    assert_plain(converted)
    objects = [converted] if isinstance(converted, RemoteObject) else []
    for obj in objects:
        kind = classify(obj)
        parser = PARSERS.get(kind)
        if parser is None:
            continue
        try:
            parser(obj)
        except SnapshotParseError as error:
            assert_readable(str(error))
    snapshot = bounded(lambda: snapshot_from_objects(objects, taken_at=NOW), "snapshot")
    assert isinstance(snapshot, ServerSnapshot)


def test_unmutated_objects_convert() -> None:
    for element in output_objects():
        converted = from_pypsrp(read_like_pypsrp(message_text(element)))
        assert isinstance(converted, RemoteObject)
        assert_plain(converted)


@given(mutated_message())
@fuzz_settings()
def test_mutated_objects_convert_or_fail_in_pypsrp(text: str) -> None:
    check_message(text)


@given(mutated_text(st.sampled_from(output_objects()).map(message_text)))
@example("")
@example("<Obj")
@example('<?xml version="1.0" encoding="bogus"?><Obj RefId="0"/>')
@example('<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN>'
         '<S>&lt;?xml version="1.0" encoding="bogus"?&gt;&lt;LST/&gt;</S></Obj>')
@example('<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN>'
         '<MS><S N="a">&lt;LST&gt;&lt;S&gt;_xD800_&lt;/S&gt;&lt;/LST&gt;</S></MS></Obj>')
@fuzz_settings()
def test_text_mutations_convert_or_fail_in_pypsrp(text: str) -> None:
    check_message(text)


@given(st.sampled_from([element for name in LARGE_FIXTURES[:2] for element in
                        fixture_tree(name)][:8]).map(message_text).map(str),
       st.data())
@fuzz_settings(scale=0.1, deadline_ms=5000)
def test_large_objects_with_text_mutations(text: str, data: st.DataObject) -> None:
    check_message(data.draw(mutated_text(st.just(text))))


@given(st.text(max_size=300))
@fuzz_settings()
def test_random_text(text: str) -> None:
    check_message(text)


LIVE_ENTITY_ATTACKS = {
    "billion laughs": (
        '<!DOCTYPE Obj [<!ENTITY a0 "lol">'
        + "".join(f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
        + ']><Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><ToString>&a9;</ToString>'
          "</Obj>"),
    "external entity": (
        '<!DOCTYPE Obj [<!ENTITY x SYSTEM "file:///etc/passwd">]><Obj RefId="0"><TN RefId="0">'
        "<T>System.Object</T></TN><ToString>&x;</ToString></Obj>"),
}


@pytest.mark.parametrize("text", LIVE_ENTITY_ATTACKS.values(), ids=LIVE_ENTITY_ATTACKS.keys())
def test_entity_attacks_over_the_wire_are_not_expanded(text: str) -> None:
    """pypsrp parses the message with ElementTree: expat refuses amplification and never
    fetches external entities; pypsrp then hands back the raw text, which stays text."""
    started = time.perf_counter()
    converted = from_pypsrp(bounded(lambda: read_like_pypsrp(text), "pypsrp", seconds=5))
    assert time.perf_counter() - started < 2
    for value in (converted, *getattr(converted, "properties", {}).values()):
        assert "lollollol" not in str(value)
        assert "root:x:" not in str(value)


# ---------------------------------------------------------------------------------------------
# TlsCertificateName text (<I>issuer<S>subject), as connectors and the hybrid config send it
# ---------------------------------------------------------------------------------------------

name_part = st.text(st.characters(codec="ascii", exclude_characters="<>"), min_size=1,
                    max_size=40).filter(str.strip)


@given(name_part, name_part, st.sampled_from(["<I>", "<i>"]), st.sampled_from(["<S>", "<s>"]))
@fuzz_settings()
def test_tls_certificate_names_split_where_sent(issuer: str, subject: str, i_tag: str,
                                               s_tag: str) -> None:
    name = bounded(lambda: parse_tls_certificate_name(f"{i_tag}{issuer}{s_tag}{subject}"),
                   "parse_tls_certificate_name")
    assert name is not None
    assert (name.issuer, name.subject) == (issuer.strip(), subject.strip())


def test_tls_certificate_name_with_characters_that_grow_in_upper_case() -> None:
    name = parse_tls_certificate_name("<I>CN=CA, O=Großhandel GmbH<S>CN=mail.contoso.com")
    assert name is not None
    assert (name.issuer, name.subject) == ("CN=CA, O=Großhandel GmbH", "CN=mail.contoso.com")
