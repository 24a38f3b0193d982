"""Fuzz tests (hypothesis) of every parser that reads what servers, files, users or Slack send.

Each test asserts "no crash other than the parser's clean, typed error with a readable message,
and no hang". The CI run is bounded: ``FUZZ_EXAMPLES`` examples per test (default 200); set
``FUZZ_EXAMPLES=5000`` for a deeper local run::

    FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz -q

Shared helpers live here: the example budget, hypothesis settings, a hard watchdog against
hangs (hypothesis' ``deadline`` only judges examples that finish), the real fixtures, and
checks on error messages.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from types import FrameType
from typing import TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from bot.exchange.remote_object import RemoteObject, read_clixml_file

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
"""Real ``Export-Clixml`` output of Exchange 2016/2019 (read-only, shared)."""

DEFAULT_EXAMPLES = 200


def fuzz_examples(default: int = DEFAULT_EXAMPLES) -> int:
    """Examples per test: ``$FUZZ_EXAMPLES`` when set (a deeper local run), else ``default``."""
    text = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return max(1, int(text)) if text else default


def fuzz_settings(*, examples: int | None = None, deadline_ms: int | None = 2000,
                  scale: float = 1.0) -> settings:
    """Hypothesis settings for one fuzz test.

    ``scale`` shrinks the budget of costly tests (network round trips) relative to the
    others; ``deadline_ms`` flags an example far slower than a parse should be (parsers take
    milliseconds here; the watchdog, not the deadline, stops a real hang).
    """
    count = examples if examples is not None else max(1, int(fuzz_examples() * scale))
    return settings(
        max_examples=count,
        deadline=None if deadline_ms is None else timedelta(milliseconds=deadline_ms),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


class Hang(AssertionError):
    """A parser call outlived the watchdog."""


T = TypeVar("T")


@contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Fail with :class:`Hang` when the block runs longer than ``seconds`` (main thread only).

    SIGALRM interrupts pure-Python loops (nrbf, YAML composition, our own walkers), which is
    where an unbounded loop would be; C code (expat, cryptography) returns first.
    """
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"{what} still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def bounded(call: Callable[[], T], what: str, seconds: float = 10.0) -> T:
    """``call()`` under :func:`watchdog`."""
    with watchdog(seconds, what):
        return call()


def assert_readable(message: str, *, max_length: int | None = None) -> None:
    """An error message fit for a person: text, not empty, no traceback, no raw control
    characters (line breaks excepted)."""
    assert isinstance(message, str)
    assert message.strip(), "empty error message"
    assert "Traceback (most recent call last)" not in message
    raw_controls = {c for c in message if unicodedata.category(c) == "Cc" and c not in "\n\t"}
    assert not raw_controls, f"raw control characters in {message!r}"
    if max_length is not None:
        assert len(message) <= max_length, f"{len(message)} characters: {message[:200]!r}..."


@cache
def fixture_text(name: str) -> str:
    """A fixture decoded as the reader decodes it (UTF-8 with BOM)."""
    return (FIXTURES / name).read_bytes().decode("utf-8-sig")


@cache
def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


CERTIFICATE_FIXTURES = (
    "e2019-solo.xml",
    "e2016-solo.xml",
    "e2019-four-certs.xml",
    "e2016-azure.xml",
    "deserialized-rawdata-only.xml",
)
OTHER_FIXTURES = (
    "e2019-send-connectors.xml",
    "e2019-hybrid-configuration.xml",
)
LARGE_FIXTURES = (
    "e2016-eight-certs.xml",
    "e2019-multiple-smtp-matches.xml",
    "e2019-exchange-server.xml",
    "e2019-receive-connectors.xml",
)
"""Fixtures mutated less often (larger: each example costs more)."""


# ---------------------------------------------------------------------------------------------
# DER (X.509) as a tree, for structure-aware mutations
# ---------------------------------------------------------------------------------------------

@dataclass
class DerNode:
    """One TLV: primitive ``content`` or constructed ``children`` (single-byte tags only)."""

    tag: int
    content: bytes = b""
    children: list[DerNode] | None = None


def _read_der(data: bytes, position: int) -> tuple[DerNode, int]:
    if position + 2 > len(data):
        raise ValueError("truncated TLV")
    tag, length = data[position], data[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[position:position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise ValueError("content overruns")
    content = data[position:end]
    if not tag & 0x20:
        return DerNode(tag, content), end
    children: list[DerNode] = []
    at = 0
    while at < len(content):
        child, at = _read_der(content, at)
        children.append(child)
    return DerNode(tag, children=children), end


def der_decode(data: bytes) -> DerNode:
    """Parse trusted DER (the fixtures' certificates) into a tree."""
    node, _ = _read_der(data, 0)
    return node


def der_encode(node: DerNode) -> bytes:
    """Encode a tree back, with correct (definite, minimal) lengths."""
    body = (b"".join(der_encode(child) for child in node.children)
            if node.children is not None else node.content)
    size = len(body)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([node.tag]) + length + body


def der_nodes(node: DerNode, parent: DerNode | None = None
              ) -> Iterator[tuple[DerNode, DerNode | None]]:
    """Every node with its parent, depth first."""
    yield node, parent
    for child in node.children or ():
        yield from der_nodes(child, node)


@st.composite
def mutated_der(draw: st.DrawFn, originals: Sequence[bytes]) -> bytes:
    """A real certificate with TLV-aware mutations (lengths stay consistent), then maybe a
    few raw byte mutations (which break lengths)."""
    root = copy.deepcopy(der_decode(draw(st.sampled_from(list(originals)))))
    for _ in range(draw(st.integers(0, 3))):
        nodes = list(der_nodes(root))
        node, parent = nodes[draw(st.integers(0, len(nodes) - 1))]
        operation = draw(st.sampled_from(
            ["delete", "duplicate", "retag", "content", "integer", "wrap", "swap"]))
        if operation in ("delete", "duplicate", "swap") and parent is not None:
            assert parent.children is not None
            index = next(i for i, child in enumerate(parent.children) if child is node)
            if operation == "delete":
                del parent.children[index]
            elif operation == "duplicate":
                parent.children.insert(index, copy.deepcopy(node))
            elif index + 1 < len(parent.children):
                parent.children[index], parent.children[index + 1] = (
                    parent.children[index + 1], parent.children[index])
        elif operation == "retag":
            node.tag = draw(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13,
                                             0x14, 0x16, 0x17, 0x18, 0x1E, 0x30, 0x31, 0x80,
                                             0x82, 0x86, 0x87, 0xA0, 0xA3, 0x00, 0xFF]))
            if node.tag & 0x20 and node.children is None:
                node.content = b""
                node.children = []
            elif not node.tag & 0x20 and node.children is not None:
                node.content = der_encode(DerNode(0x30, children=node.children))[2:]
                node.children = None
        elif operation == "content" and node.children is None:
            node.content = draw(st.one_of(
                st.binary(max_size=64),
                st.sampled_from([b"", b"\x00", b"\xff" * 9, b"\x80", "é\u202e\x00".encode(),
                                 b"\xed\xa0\x80", b"*.", b"a" * 300, b"20991231235959Z",
                                 b"00000000000000Z", b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"]),
            ))
        elif operation == "integer":
            node.tag = 0x02
            node.children = None
            node.content = draw(st.sampled_from(
                [b"", b"\x00", b"\x00\x01", b"\xff", b"\x80" + b"\x00" * 40, b"\x7f" * 200]))
        elif operation == "wrap" and parent is not None:
            assert parent.children is not None
            index = next(i for i, child in enumerate(parent.children) if child is node)
            parent.children[index] = DerNode(draw(st.sampled_from([0x30, 0x31, 0xA0, 0x04])),
                                             children=[node])
    data = der_encode(root)
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        operation = draw(st.sampled_from(["flip", "truncate", "append"]))
        if operation == "flip" and data:
            data = (data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))])
                    + data[position + 1:])
        elif operation == "truncate":
            data = data[:position]
        else:
            data = data + draw(st.binary(min_size=1, max_size=16))
    return data


# ---------------------------------------------------------------------------------------------
# Real certificates and SerializationData blobs from the fixtures
# ---------------------------------------------------------------------------------------------

@cache
def certificate_objects() -> tuple[RemoteObject, ...]:
    """Every ``Get-ExchangeCertificate`` object of the certificate fixtures."""
    found: list[RemoteObject] = []
    for name in (*CERTIFICATE_FIXTURES, "e2016-eight-certs.xml"):
        found.extend(obj for obj in read_clixml_file(FIXTURES / name)
                     if isinstance(obj.get("RawData"), bytes))
    return tuple(found)


@cache
def real_certificates() -> tuple[bytes, ...]:
    """Distinct DER certificates (RawData) of the fixtures."""
    ders = (obj.get("RawData") for obj in certificate_objects())
    return tuple(dict.fromkeys(der for der in ders if isinstance(der, bytes)))


@cache
def real_serialization_data() -> tuple[bytes, ...]:
    """Distinct SerializationData blobs (MS-NRBF) of the fixtures."""
    blobs = (obj.get("SerializationData") for obj in certificate_objects())
    return tuple(dict.fromkeys(blob for blob in blobs if isinstance(blob, bytes)))


# ---------------------------------------------------------------------------------------------
# CLIXML trees and hostile text, for the file reader and the live (pypsrp) reader
# ---------------------------------------------------------------------------------------------

PS_NAMESPACE = "http://schemas.microsoft.com/powershell/2004/04"
CLIXML_TAGS = (
    "Obj", "Ref", "TN", "TNRef", "T", "ToString", "Props", "MS", "LST", "IE", "STK", "QUE",
    "DCT", "En", "S", "I32", "I64", "U64", "U32", "I16", "By", "SB", "B", "C", "Db", "Sg", "D",
    "DT", "TS", "BA", "G", "URI", "Version", "XD", "SBK", "SS", "Nil", "PR", "Objs",
)
HOSTILE_SNIPPETS = (
    "&amp;", "&lt;", "&#0;", "&#xD800;", "&#x10FFFF;", "&undefined;", "&xxe;", "]]>",
    "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>", "<", ">", '"', "'", "\x00", "\x1b[31m",
    "_x0000_", "_xD800_", "_x", "\ufeff", "\u202e", '<Obj RefId="0">', "</Obj>",
    '<Ref RefId="0"/>', '<TNRef RefId="0"/>', "<!DOCTYPE Objs>", '<!ENTITY a "b">',
    'xmlns="urn:x"', '<?xml version="1.0" encoding="bogus"?>', "#< CLIXML\r\n", "<!channel>",
)
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(HOSTILE_SNIPPETS),
    st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=20),
    st.sampled_from(["\ud800", "\udfff", "a\udc80b"]),
)
"""Text with markup, entities, control and format characters, and lone surrogates."""
value_text = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.sampled_from([
        "", "-1", "0", "2147483648", "-2147483649", "18446744073709551616", "9" * 400,
        "1" * 5000, "NaN", "Infinity", "-0", "1e309", "true", "True", "fAlse",
        "2019-12-03T14:47:32.1234567-08:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59Z",
        "P99999999999999D", "PT-1S", "-P1D", "P1Y2M3DT4H5M6.789S", "P", "PT",
        "00000000-0000-0000-0000-000000000000", "not-a-guid", "1.2.3.4.5", "1", "65536",
        "AAEAAAD/////", "!!!notbase64", "====", "MIIDKTCC", "\u0661\u0662",
    ]),
)
"""Values for CLIXML primitives: out-of-range numbers, odd dates, durations, GUIDs, base64."""
ref_id = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1", "00", " 0", "x", "9" * 300, "-0", "0x1", "1e3"]),
)


def strip_namespaces(root: ElementTree.Element) -> ElementTree.Element:
    for node in root.iter():
        node.tag = node.tag.split("}", 1)[-1]
    return root


@cache
def fixture_tree(name: str) -> ElementTree.Element:
    """A fixture as a namespace-free tree (mutations add plain tags); copy before changing."""
    return strip_namespaces(ElementTree.fromstring(fixture_text(name)))  # noqa: S314 - fixture


MAX_MUTATED_ELEMENTS = 5_000
"""Elements a mutated CLIXML tree may grow to (the largest fixture has about 2,000)."""


def mutate_clixml_tree(draw: st.DrawFn, root: ElementTree.Element, *,
                       most: int = 4) -> ElementTree.Element:
    """Up to ``most`` tree-level mutations of ``root`` in place: elements deleted, duplicated,
    moved, re-tagged, nested deeply or repeated; attributes and RefIds set to hostile values;
    text replaced. Growth stops at :data:`MAX_MUTATED_ELEMENTS` (input sizes stay bounded:
    repeated duplications once made 300 MB documents, which only measured expat's speed)."""
    for _ in range(draw(st.integers(min_value=0, max_value=most))):
        pairs = [(parent, child) for parent in root.iter() for child in parent]
        if not pairs:
            break
        parent, child = pairs[draw(st.integers(0, len(pairs) - 1))]
        operation = draw(st.sampled_from(
            ["delete", "duplicate", "move", "attribute", "refid", "text", "retag", "nest",
             "wide"]))
        room = MAX_MUTATED_ELEMENTS - len(pairs)
        if operation in ("duplicate", "move", "wide") and len(list(child.iter())) > room:
            operation = "delete"
        if operation == "delete":
            parent.remove(child)
        elif operation == "duplicate":
            parent.insert(list(parent).index(child), copy.deepcopy(child))
        elif operation == "move":
            target = draw(st.sampled_from(list(root.iter())))
            target.append(copy.deepcopy(child))
        elif operation == "attribute":
            name = draw(st.sampled_from(["N", "RefId", "Version", "xsi:nil", "Z"]))
            child.set(name, draw(st.one_of(value_text, hostile_text)))
        elif operation == "refid":
            tag = draw(st.sampled_from(["Obj", "Ref", "TN", "TNRef"]))
            for node in root.iter(tag):
                if draw(st.booleans()):
                    node.set("RefId", draw(ref_id))
        elif operation == "text":
            child.text = draw(st.one_of(value_text, hostile_text))
        elif operation == "retag":
            child.tag = draw(st.sampled_from(CLIXML_TAGS))
        elif operation == "nest":
            depth = draw(st.sampled_from([2, 10, 63, 64, 65, 150]))
            wrapper = draw(st.sampled_from(["Obj", "LST", "MS", "DCT"]))
            replacement = copy.deepcopy(child)
            for level in range(depth):
                outer = ElementTree.Element(wrapper, {"N": f"n{level}",
                                                      "RefId": str(9000 + level)})
                outer.append(replacement)
                replacement = outer
            parent.insert(list(parent).index(child), replacement)
            parent.remove(child)
        else:
            copies = min(draw(st.sampled_from([20, 100])), room // len(list(child.iter())))
            parent.extend([copy.deepcopy(child) for _ in range(copies)])
    return root


@st.composite
def mutated_text(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """Text-level mutations on top of ``base``: truncation, replaced characters, insertions."""
    text = draw(base)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        operation = draw(st.sampled_from(["truncate", "replace", "insert", "none"]))
        position = draw(st.integers(0, max(0, len(text))))
        if operation == "truncate":
            text = text[:position]
        elif operation == "replace":
            width = draw(st.integers(1, 8))
            text = text[:position] + draw(hostile_text) + text[position + width:]
        elif operation == "insert":
            text = text[:position] + draw(hostile_text) + text[position:]
    return text


PLAIN_VALUE_TYPES = (str, int, bool, float, bytes, datetime, timedelta, type(None), tuple,
                     RemoteObject)
"""What ``remote_object`` promises to normalise every value to."""


def reachable_values(value: object) -> Iterator[object]:
    """Every value reachable from ``value`` through RemoteObjects and tuples (cycle-safe)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, RemoteObject):
            stack.extend(item.properties.values())
            stack.append(item.value)
        elif isinstance(item, tuple):
            stack.extend(item)


def assert_plain(value: object) -> None:
    """``value`` holds only the normalised types of :mod:`bot.exchange.remote_object`."""
    for item in reachable_values(value):
        assert isinstance(item, PLAIN_VALUE_TYPES), type(item)
        if isinstance(item, RemoteObject):
            assert all(isinstance(name, str) for name in item.type_names)
            assert item.to_string is None or isinstance(item.to_string, str)
            assert all(isinstance(name, str) for name in item.properties)


def record(label: str) -> None:
    """``hypothesis.event`` (statistics with ``--hypothesis-show-statistics``), a no-op when
    called outside a hypothesis test."""
    with contextlib.suppress(InvalidArgument):
        event(label)
