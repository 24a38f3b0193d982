"""Fuzz the MS-NRBF reader and the certificate parser that uses it.

``read_serialization_data(blob)`` -> dict or ``ValueError``, in bounded time and memory: the
fixtures' real SerializationData blobs mutated as bytes, blobs assembled from random NRBF
records (object ids, lengths and null runs chosen to collide and overflow), and random bytes.

``parse_certificate_with_notes`` on real certificate objects whose SerializationData or RawData
is mutated or of the wrong type -> a certificate or ``SnapshotParseError``. Its documented
behaviour: an unreadable SerializationData blob is a note (services unknown), never an error;
an unreadable RawData is a ``SnapshotParseError`` naming RawData.
"""

from __future__ import annotations

import hashlib
import struct
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.exchange.parse import (
    ParseOutcome,
    SnapshotParseError,
    parse_certificate_with_notes,
    read_serialization_data,
)
from bot.exchange.remote_object import RemoteObject
from bot.exchange.snapshot import ExchangeCertificate, ServicesSource
from tests.fuzz import (
    assert_readable,
    bounded,
    certificate_objects,
    fuzz_settings,
    mutated_der,
    real_certificates,
    real_serialization_data,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive")  # mutated serials; cryptography warns


def i32(value: int) -> bytes:
    return struct.pack("<i", value)


def lps(text: bytes) -> bytes:
    """A .NET length-prefixed string (7-bit encoded length)."""
    size, prefix = len(text), bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        prefix.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(prefix) + text


def header(root_id: int = 1) -> bytes:
    return b"\x00" + i32(root_id) + i32(-1) + i32(1) + i32(0)


MESSAGE_END = b"\x0b"


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

object_id = st.one_of(st.integers(-2, 6), st.sampled_from([2**31 - 1, -(2**31)]))
count = st.one_of(st.integers(0, 4), st.sampled_from([255, 65536, 2**31 - 1, -1, -(2**31)]))
name = st.one_of(st.sampled_from([b"value__", b"_items", b"_size", b"Services", b"__class__",
                                  b"System.Collections.Generic.List`1[[x]]",
                                  b"Microsoft.Exchange.Management.SystemConfigurationTasks."
                                  b"ExchangeCertificate"]),
                 st.binary(max_size=12))


@st.composite
def nrbf_record(draw: st.DrawFn) -> bytes:
    """One MS-NRBF record (or a fragment of one), with colliding ids and extreme lengths."""
    kind = draw(st.sampled_from([
        "library", "class", "system_class", "class_with_id", "string", "reference", "null",
        "null_256", "null_multiple", "primitive_array", "object_array", "string_array",
        "binary_array", "primitive_typed", "end", "junk",
    ]))
    if kind == "library":
        return b"\x0c" + i32(draw(object_id)) + lps(draw(name))
    if kind in ("class", "system_class"):
        members = draw(st.lists(name, max_size=3))
        types = draw(st.lists(st.integers(0, 8), min_size=len(members), max_size=len(members)))
        extra = b"".join(
            bytes([draw(st.integers(0, 18))]) if bt in (0, 7)
            else lps(draw(name)) if bt == 3
            else lps(draw(name)) + i32(draw(object_id)) if bt == 4
            else b""
            for bt in types)
        body = (i32(draw(object_id)) + lps(draw(name)) + i32(len(members))
                + b"".join(lps(member) for member in members) + bytes(types) + extra)
        if kind == "class":
            return b"\x05" + body + i32(draw(object_id))
        return b"\x04" + body
    if kind == "class_with_id":
        return b"\x01" + i32(draw(object_id)) + i32(draw(object_id))
    if kind == "string":
        return b"\x06" + i32(draw(object_id)) + lps(draw(name))
    if kind == "reference":
        return b"\x09" + i32(draw(object_id))
    if kind == "null":
        return b"\x0a"
    if kind == "null_256":
        return b"\x0d" + bytes([draw(st.integers(0, 255))])
    if kind == "null_multiple":
        return b"\x0e" + i32(draw(count))
    if kind == "primitive_array":
        return (b"\x0f" + i32(draw(object_id)) + i32(draw(count))
                + bytes([draw(st.integers(0, 19))]))
    if kind in ("object_array", "string_array"):
        return bytes([0x10 if kind == "object_array" else 0x11]) + i32(draw(object_id)) + i32(
            draw(count))
    if kind == "binary_array":
        rank = draw(st.integers(0, 3))
        return (b"\x07" + i32(draw(object_id)) + bytes([draw(st.integers(0, 5))]) + i32(rank)
                + b"".join(i32(draw(count)) for _ in range(rank))
                + bytes([draw(st.integers(0, 8))]))
    if kind == "primitive_typed":
        return b"\x08" + bytes([draw(st.integers(0, 19))]) + draw(st.binary(max_size=8))
    if kind == "end":
        return MESSAGE_END
    return draw(st.binary(min_size=1, max_size=6))


synthetic_blob = st.builds(
    lambda root, records, end: header(root) + b"".join(records) + (MESSAGE_END if end else b""),
    object_id, st.lists(nrbf_record(), max_size=24), st.booleans())


@st.composite
def mutated_blob(draw: st.DrawFn) -> bytes:
    """A real SerializationData blob with byte-level and record-level mutations."""
    data = draw(st.sampled_from(real_serialization_data()))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(
            ["flip", "truncate", "insert", "delete", "duplicate", "int32", "record"]))
        if operation == "flip" and position < len(data):
            data = (data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))])
                    + data[position + 1:])
        elif operation == "truncate":
            data = data[:position]
        elif operation == "insert":
            data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
        elif operation == "delete":
            data = data[:position] + data[position + draw(st.integers(1, 64)):]
        elif operation == "duplicate":
            width = draw(st.integers(1, 64))
            data = data[:position + width] + data[position:position + width] + data[position:]
        elif operation == "int32":
            data = data[:position] + i32(draw(count)) + data[position + 4:]
        else:
            data = data[:position] + draw(nrbf_record()) + data[position:]
    return data


# ---------------------------------------------------------------------------------------------
# read_serialization_data
# ---------------------------------------------------------------------------------------------

def value_count(value: object, seen: set[int] | None = None) -> int:
    """Values reachable in a parse result (shared ones counted once; cycles safe)."""
    seen = set() if seen is None else seen
    stack, total = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
        total += 1
    return total


def check_blob(blob: bytes) -> dict[str, object] | None:
    started = time.perf_counter()
    try:
        fields = bounded(lambda: read_serialization_data(blob), "read_serialization_data")
    except ValueError as error:
        assert_readable(str(error))
        return None
    assert isinstance(fields, dict)
    assert all(isinstance(key, str) for key in fields)
    assert value_count(fields) <= 100_000 + 64 * len(blob), "unbounded result"
    assert time.perf_counter() - started < 5
    return fields


def test_real_blobs_read() -> None:
    for blob in real_serialization_data():
        fields = check_blob(blob)
        assert fields is not None
        assert str(fields["__class__"]).endswith("ExchangeCertificate")


@given(mutated_blob())
@fuzz_settings()
def test_mutated_blobs_read_or_fail_cleanly(blob: bytes) -> None:
    check_blob(blob)


@given(synthetic_blob)
@example(header(1) + b"\x10" + i32(1) + i32(2**31 - 1) + b"\x0e" + i32(2**31 - 1))
@example(header(1) + b"\x09" + i32(1))
@example(header(1) + b"\x10" + i32(1) + i32(1) + b"\x09" + i32(1) + MESSAGE_END)
@fuzz_settings()
def test_synthetic_blobs_read_or_fail_cleanly(blob: bytes) -> None:
    check_blob(blob)


@given(st.binary(max_size=1024))
@example(b"")
@example(b"\x00")
@example(header(1) + b"\xff" * 64)
@fuzz_settings()
def test_random_bytes(blob: bytes) -> None:
    check_blob(blob)


def shared_reference_chain(levels: int) -> bytes:
    """Arrays of two references each to the next: 2**levels paths through ~20*levels bytes."""
    blob = header(1)
    for level in range(levels):
        blob += (b"\x10" + i32(level + 1) + i32(2)
                 + b"\x09" + i32(level + 2) + b"\x09" + i32(level + 2))
    return blob + b"\x10" + i32(levels + 1) + i32(0) + MESSAGE_END


def test_shared_references_do_not_blow_up_exponentially() -> None:
    """Found by fuzzing: nrbf resolves references without memo, so 800 bytes took ~forever."""
    started = time.perf_counter()
    with pytest.raises(ValueError, match="not a readable BinaryFormatter stream"):
        bounded(lambda: read_serialization_data(shared_reference_chain(40)),
                "read_serialization_data", seconds=10)
    assert time.perf_counter() - started < 3


def test_null_runs_cannot_allocate_beyond_a_budget() -> None:
    """Found by fuzzing: a 20-byte blob declaring a 2**31 array could ask for 2**31 Nones."""
    blob = (header(1) + b"\x10" + i32(1) + i32(2**31 - 1)
            + b"\x0e" + i32(20_000_000) + MESSAGE_END)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="not a readable BinaryFormatter stream"):
        read_serialization_data(blob)
    assert time.perf_counter() - started < 0.5


def test_self_reference_is_an_error() -> None:
    blob = header(1) + b"\x10" + i32(1) + i32(1) + b"\x09" + i32(1) + MESSAGE_END
    with pytest.raises(ValueError, match="not a readable BinaryFormatter stream"):
        read_serialization_data(blob)


# ---------------------------------------------------------------------------------------------
# parse_certificate with mutated RawData / SerializationData
# ---------------------------------------------------------------------------------------------

def with_properties(obj: RemoteObject, **changes: object) -> RemoteObject:
    properties = dict(obj.properties)
    for key, value in changes.items():
        if value is _ABSENT:
            properties.pop(key, None)
        else:
            properties[key] = value
    return RemoteObject(obj.type_names, properties, obj.to_string, obj.value)


_ABSENT = object()
wrong_types = st.sampled_from([
    None, _ABSENT, "", "AAEAAAD/////", 0, -1, True, 3.5, (), (b"\x00",),
    RemoteObject(("System.Byte[]",), {}, "System.Byte[]"),
    RemoteObject((), {}, None, b"\x00\x01"),
])


def outcome_of(obj: RemoteObject) -> ParseOutcome[ExchangeCertificate] | SnapshotParseError:
    try:
        outcome = bounded(lambda: parse_certificate_with_notes(obj), "parse_certificate")
    except SnapshotParseError as error:
        assert_readable(str(error))
        return error
    assert isinstance(outcome.value, ExchangeCertificate)
    assert all(isinstance(note, str) for note in outcome.notes)
    for note in outcome.notes:
        assert_readable(note)
    return outcome


@given(st.sampled_from(certificate_objects()),
       st.one_of(mutated_blob(), synthetic_blob, st.binary(max_size=256), wrong_types))
@fuzz_settings()
def test_bad_serialization_data_is_a_note_never_an_error(obj: RemoteObject,
                                                         blob: object) -> None:
    """Exchange's own view (Services, Status...) is lost, the certificate itself is not."""
    outcome = outcome_of(with_properties(obj, SerializationData=blob))
    assert isinstance(outcome, ParseOutcome), outcome
    raw = obj.get("RawData")
    assert isinstance(raw, bytes)
    assert outcome.value.thumbprint == hashlib.sha1(raw, usedforsecurity=False).hexdigest().upper()
    if outcome.value.services_source != ServicesSource.SERIALIZATION_DATA and isinstance(
            blob, bytes) and blob not in real_serialization_data():
        assert outcome.notes, "a lost SerializationData view should be explained"


@given(st.sampled_from(certificate_objects()),
       st.one_of(mutated_der(real_certificates()), st.binary(max_size=256), wrong_types))
@fuzz_settings()
def test_bad_raw_data_is_a_snapshot_parse_error_naming_it(obj: RemoteObject,
                                                          raw: object) -> None:
    outcome = outcome_of(with_properties(obj, RawData=raw))
    if isinstance(outcome, SnapshotParseError):
        assert "'RawData'" in str(outcome)
    else:
        assert isinstance(raw, bytes)
        assert outcome.value.thumbprint == hashlib.sha1(
            raw, usedforsecurity=False).hexdigest().upper()


@given(st.sampled_from(certificate_objects()),
       st.dictionaries(st.sampled_from(["Services", "Status", "RootCAType", "IsSelfSigned",
                                        "Identity", "PSComputerName", "Thumbprint", "Name"]),
                       wrong_types | st.text(max_size=20) | st.integers()))
@fuzz_settings()
def test_odd_exchange_properties_never_crash(obj: RemoteObject,
                                             changes: dict[str, object]) -> None:
    outcome_of(with_properties(obj, **changes))


@pytest.mark.parametrize("services", ["0\x1f", "\x1c4", "1\u2028", "\u0663", " 27 ", "-1"])
def test_services_text_with_odd_white_space_or_digits(services: str) -> None:
    """Found by the deep fuzz run: ``re``'s ``\\s`` matched "\\x1f", then ``int("0\\x1f")``
    raised ValueError out of the certificate parser."""
    outcome = outcome_of(with_properties(certificate_objects()[0], Services=services,
                                         SerializationData=_ABSENT))
    assert isinstance(outcome, ParseOutcome)
