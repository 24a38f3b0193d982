"""Fuzz the CLIXML readers: ``read_clixml`` -> RemoteObjects or ``ClixmlError``, never more.

Inputs are the real Exchange exports, mutated as a tree (elements deleted, duplicated,
moved, re-tagged, nested deeply; attributes such as RefId set to huge or foreign values; text
replaced) and then as text (truncated, characters replaced, fragments inserted), plus DTDs and
entity references, which must be refused rather than expanded. ``read_clixml_file`` gets
mutated and random bytes in every encoding Windows writes. Whatever reads successfully must
also go through :func:`snapshot_from_objects` without an exception.
"""

from __future__ import annotations

import codecs
import copy
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.exchange.parse import snapshot_from_objects
from bot.exchange.remote_object import (
    ClixmlError,
    RemoteObject,
    read_clixml,
    read_clixml_file,
)
from bot.exchange.snapshot import ServerSnapshot
from tests.fuzz import (
    CERTIFICATE_FIXTURES,
    LARGE_FIXTURES,
    OTHER_FIXTURES,
    PS_NAMESPACE,
    assert_plain,
    assert_readable,
    bounded,
    fixture_bytes,
    fixture_text,
    fixture_tree,
    fuzz_settings,
    mutate_clixml_tree,
    mutated_text,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive")  # mutated serials; cryptography warns

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
SOURCE = "fuzz.xml"


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

def to_text(root: ElementTree.Element) -> str:
    document = copy.copy(root)
    document.set("xmlns", PS_NAMESPACE)
    return ElementTree.tostring(document, encoding="unicode")


@st.composite
def mutated_tree_text(draw: st.DrawFn, names: tuple[str, ...]) -> str:
    """A fixture with a few tree-level mutations, serialised back to CLIXML text."""
    root = copy.deepcopy(fixture_tree(draw(st.sampled_from(names))))
    return to_text(mutate_clixml_tree(draw, root))


any_fixture_text = st.sampled_from(CERTIFICATE_FIXTURES + OTHER_FIXTURES).map(fixture_text)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def check_read(text: str) -> list[RemoteObject] | None:
    """``read_clixml`` gives normalised RemoteObjects or a ClixmlError naming the source."""
    try:
        objects = bounded(lambda: read_clixml(text, source=SOURCE), "read_clixml")
    except ClixmlError as error:
        message = str(error)
        assert message.startswith(f"{SOURCE}: "), message
        assert_readable(message)
        return None
    assert isinstance(objects, list)
    for obj in objects:
        assert isinstance(obj, RemoteObject)
        assert_plain(obj)
    snapshot = bounded(lambda: snapshot_from_objects(objects, taken_at=NOW), "snapshot")
    assert isinstance(snapshot, ServerSnapshot)
    return objects


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def test_every_fixture_reads_unmutated() -> None:
    """The baseline: the real exports read, so that mutations start from something valid."""
    for name in CERTIFICATE_FIXTURES + OTHER_FIXTURES + LARGE_FIXTURES:
        objects = check_read(fixture_text(name))
        assert objects, name


@given(mutated_tree_text(CERTIFICATE_FIXTURES + OTHER_FIXTURES))
@fuzz_settings()
def test_tree_mutations_read_or_fail_cleanly(text: str) -> None:
    check_read(text)


@given(mutated_tree_text(LARGE_FIXTURES))
@fuzz_settings(scale=0.1, deadline_ms=5000)
def test_tree_mutations_of_large_exports(text: str) -> None:
    check_read(text)


@given(mutated_text(any_fixture_text))
@example("\ufeff#< CLIXML\r\n" + fixture_text("e2019-solo.xml"))
@example('<Objs xmlns="http://schemas.microsoft.com/powershell/2004/04"><S>\ud800</S></Objs>')
@example("")
@example("#< CLIXML")
@example("<ns0:Objs xmlns:ns0='urn:x'/>")
@fuzz_settings()
def test_text_mutations_read_or_fail_cleanly(text: str) -> None:
    check_read(text)


@given(mutated_text(mutated_tree_text(CERTIFICATE_FIXTURES)))
@fuzz_settings()
def test_tree_then_text_mutations(text: str) -> None:
    check_read(text)


@given(st.text(max_size=2000))
@fuzz_settings()
def test_random_text(text: str) -> None:
    check_read(text)


NESTING_WRAPPERS = {
    "Obj": ('<Obj N="p" RefId="{i}"><MS>', "</MS></Obj>"),
    "LST": ('<Obj N="p" RefId="{i}"><LST>', "</LST></Obj>"),
    "DCT": ('<Obj N="Value" RefId="{i}"><DCT><En><S N="Key">k</S>', "</En></DCT></Obj>"),
    "Props": ('<Obj N="p" RefId="{i}"><Props>', "</Props></Obj>"),
    "bare": ("<Obj>", "</Obj>"),
}


@given(st.sampled_from(sorted(NESTING_WRAPPERS)), st.integers(1, 5000), st.booleans())
@example("Obj", 5000, True)
@example("LST", 3000, False)
@fuzz_settings(scale=0.25)
def test_deep_nesting(wrapper: str, depth: int, closed: bool) -> None:
    """Deep documents are read (depth-limited) or refused; never a RecursionError escaping."""
    opening, closing = NESTING_WRAPPERS[wrapper]
    inner = "".join(opening.format(i=i + 1) for i in range(depth))
    outer = "".join(closing for _ in range(depth)) if closed else ""
    check_read(f'<Objs xmlns="{PS_NAMESPACE}"><Obj RefId="0"><MS>{inner}'
               f"{outer}</MS></Obj></Objs>")


def _billion_laughs(levels: int = 10) -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{("&lol" + str(level - 1) + ";") * 10}">'
        for level in range(1, levels)
    ]
    return (f'<?xml version="1.0"?><!DOCTYPE Objs [{"".join(entities)}]>'
            f'<Objs xmlns="{PS_NAMESPACE}"><S>&lol{levels - 1};</S></Objs>')


ENTITY_ATTACKS = {
    "billion laughs": _billion_laughs(),
    "quadratic blowup": (f'<!DOCTYPE Objs [<!ENTITY a "{"x" * 50_000}">]>'
                         f'<Objs xmlns="{PS_NAMESPACE}"><S>{"&a;" * 5_000}</S></Objs>'),
    "external entity": ('<!DOCTYPE Objs [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                        f'<Objs xmlns="{PS_NAMESPACE}"><S>&xxe;</S></Objs>'),
    "parameter entity": ('<!DOCTYPE Objs [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
                         f'<Objs xmlns="{PS_NAMESPACE}"/>'),
    "external DTD": (f'<!DOCTYPE Objs SYSTEM "file:///etc/passwd"><Objs xmlns="{PS_NAMESPACE}"/>'),
    "after the CLIXML header": "#< CLIXML\r\n" + _billion_laughs(),
    "after a comment": "<!-- x --><!DOCTYPE Objs [<!ENTITY a 'b'>]><Objs><S>&a;</S></Objs>",
    "undefined entity without DTD": f'<Objs xmlns="{PS_NAMESPACE}"><S>&xxe;</S></Objs>',
    "lower-case doctype": '<!doctype Objs [<!ENTITY a "b">]><Objs><S>&a;</S></Objs>',
}


@pytest.mark.parametrize("text", ENTITY_ATTACKS.values(), ids=ENTITY_ATTACKS.keys())
def test_entities_are_refused_not_expanded(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ClixmlError) as raised:
        bounded(lambda: read_clixml(text, source=SOURCE), "read_clixml", seconds=5)
    assert time.perf_counter() - started < 2
    message = str(raised.value)
    assert_readable(message)
    assert "root:" not in message
    assert "lollol" not in message


@given(any_fixture_text, st.sampled_from(list(ENTITY_ATTACKS.values())[:5]),
       st.integers(0, 10**6))
@fuzz_settings()
def test_dtds_anywhere_in_an_export_are_refused(base: str, attack: str, at: int) -> None:
    """A DTD spliced in anywhere never reads successfully (and is never expanded)."""
    dtd = attack[attack.index("<!DOCTYPE"):attack.index("<Objs")]
    position = at % (len(base) + 1)
    text = base[:position] + dtd + base[position:]
    with pytest.raises(ClixmlError):
        bounded(lambda: read_clixml(text, source=SOURCE), "read_clixml")


# ---------------------------------------------------------------------------------------------
# Files: bytes in any encoding
# ---------------------------------------------------------------------------------------------

ENCODINGS = {
    "utf-8": b"",
    "utf-8-sig": b"",
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}


@st.composite
def file_bytes(draw: st.DrawFn) -> bytes:
    """A fixture encoded as Windows may write it (BOM or not), then mutated as bytes."""
    text = fixture_bytes(draw(st.sampled_from(CERTIFICATE_FIXTURES))).decode("utf-8-sig")
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    data = text.encode(encoding)
    if draw(st.booleans()):
        data = ENCODINGS[encoding] + data
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "bom"]))
        position = draw(st.integers(0, len(data)))
        if operation == "flip" and data:
            index = min(position, len(data) - 1)
            flipped = bytes([data[index] ^ draw(st.integers(1, 255))])
            data = data[:index] + flipped + data[index + 1:]
        elif operation == "truncate":
            data = data[:position]
        elif operation == "insert":
            data = data[:position] + draw(st.binary(max_size=8)) + data[position:]
        else:
            data = draw(st.sampled_from([*list(ENCODINGS.values()), b"\xff", b"\x00\x00"])) + data
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clixml-fuzz") / "export.xml"


def check_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        objects = bounded(lambda: read_clixml_file(path), "read_clixml_file")
    except ClixmlError as error:
        message = str(error)
        assert message.startswith(f"{path}: "), message
        assert_readable(message)
        return
    assert all(isinstance(obj, RemoteObject) for obj in objects)
    assert isinstance(snapshot_from_objects(objects, taken_at=NOW), ServerSnapshot)


@given(data=file_bytes())
@fuzz_settings()
def test_mutated_files_read_or_fail_cleanly(scratch: Path, data: bytes) -> None:
    check_file(scratch, data)


@given(data=st.one_of(
    st.binary(max_size=512),
    st.tuples(st.sampled_from(list(ENCODINGS.values())), st.binary(max_size=256)).map(
        lambda parts: parts[0] + parts[1]),
))
@example(data=codecs.BOM_UTF16_LE + b"\x00\xd8")  # a lone surrogate in UTF-16
@example(data=codecs.BOM_UTF8 + b"\xc0\xaf")  # an overlong UTF-8 sequence
@example(data=codecs.BOM_UTF32_LE + b"\x00\x00\x11\x00")  # beyond U+10FFFF
@example(data=b"<\x00O\x00b\x00")  # UTF-16-LE without a BOM, odd length
@fuzz_settings()
def test_random_bytes_as_a_file(scratch: Path, data: bytes) -> None:
    check_file(scratch, data)


def test_a_missing_file_is_a_clixml_error(tmp_path: Path) -> None:
    with pytest.raises(ClixmlError, match="cannot read the file"):
        read_clixml_file(tmp_path / "absent.xml")
    with pytest.raises(ClixmlError, match="cannot read the file"):
        read_clixml_file(tmp_path)
