"""Fuzz the lab state parser: ``parse_state`` -> ``LabState`` or ``LabStateError``, never more.

Inputs: random YAML documents (hypothesis recursive strategies); the packaged states with
values replaced, keys removed or added and list items duplicated at random paths; the same as
text with hostile lines spliced in; and hostile YAML: Python object tags (refused, never
constructed), custom tags and directives, alias and merge-key bombs and self-including merges
(bounded), deep nesting, dates beyond datetime's range.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from bot.lab.state import LabState, LabStateError, packaged_state_names, parse_state
from tests.fuzz import assert_readable, bounded, fuzz_settings, hostile_text, mutated_text, record

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
SOURCE = "state.yaml"


def check_state(text: str) -> LabState | None:
    try:
        state = bounded(lambda: parse_state(text, source=SOURCE, now=NOW), "parse_state")
    except LabStateError as error:
        check_state_error(error, text)
        return None
    assert isinstance(state, LabState)
    assert state.servers
    assert state.users
    record("LabState")
    return state


def check_state_error(error: LabStateError, text: str) -> None:
    """Names the source and, when it has one, a line inside the text; reads well."""
    message = str(error)
    assert message.startswith(SOURCE), message
    assert_readable(message)
    assert error.source == SOURCE
    if error.line is not None:
        assert 1 <= error.line <= text.count("\n") + 2, (error.line, message)
        assert message.startswith(f"{SOURCE}:{error.line}: ")
    record("LabStateError with a line" if error.line is not None else "LabStateError")


@cache
def packaged_documents() -> tuple[tuple[str, Any], ...]:
    """(text, loaded data) of each state shipped with the lab."""
    folder = Path(__file__).resolve().parents[2] / "bot" / "lab" / "states"
    documents = []
    for name in packaged_state_names():
        text = (folder / f"{name}.yaml").read_text(encoding="utf-8")
        documents.append((text, yaml.safe_load(text)))
    return tuple(documents)


def test_packaged_states_parse() -> None:
    for text, _ in packaged_documents():
        assert check_state(text) is not None


# ---------------------------------------------------------------------------------------------
# Random YAML
# ---------------------------------------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=30), st.dates(), st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(["-60d", "+300d", "+99999999999999999999d", "0001-01-01",
                     "9999-12-31T23:59:59-14:00", "self", "CN=a, O=b", "<I>x<S>y", "IIS",
                     "SMTP", "0x80338012", "Get-Queue", "EX01", "ex01.contoso.com", "*.x",
                     "additive", "replace", ""]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(
            ["tenant", "servers", "cas", "users", "hybrid", "faults", "behaviour", "name",
             "fqdn", "id", "public", "certificates", "issuer", "subject", "domains",
             "not_before", "not_after", "send_connectors", "cloud", "tls_certificate_name",
             "latency_ms", "slow_cmdlets", "wsman_fault", "code", "cmdlet", "password"])),
            children, max_size=5),
    ),
    max_leaves=25,
)


@given(yaml_values)
@fuzz_settings()
def test_random_yaml_documents(document: object) -> None:
    check_state(yaml.safe_dump(document, allow_unicode=True))


@given(st.text(max_size=400))
@example("")
@example("---\n...\n")
@example("\t")
@example("tenant: x\nservers: [a]\n---\nsecond: document")
@fuzz_settings()
def test_random_text(text: str) -> None:
    check_state(text)


# ---------------------------------------------------------------------------------------------
# Packaged states, mutated
# ---------------------------------------------------------------------------------------------

def _containers(document: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value in the document."""
    found: list[tuple[Any, Any]] = []
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                found.append((item, key))
                stack.append(value)
        elif isinstance(item, list):
            for index, value in enumerate(item):
                found.append((item, index))
                stack.append(value)
    return found


hostile_values = st.one_of(
    yaml_values,
    hostile_text.filter(lambda text: not any(0xD800 <= ord(char) <= 0xDFFF for char in text)),
    st.sampled_from(["x" * 10_000, "CN=" + "a" * 5000, "<I>ß<S>CN=x", "0x" + "f" * 8,
                     "-0d", "+0d", "2025-02-30", "Get-ExchangeCertificate", "Remove-Item"]),
)


@st.composite
def mutated_document(draw: st.DrawFn) -> str:
    _, loaded = draw(st.sampled_from(packaged_documents()))
    document = copy.deepcopy(loaded)
    for _ in range(draw(st.integers(1, 4))):
        container, key = draw(st.sampled_from(_containers(document)))
        operation = draw(st.sampled_from(["replace", "delete", "add", "duplicate", "empty"]))
        if operation == "replace":
            container[key] = draw(hostile_values)
        elif operation == "delete":
            del container[key]
        elif operation == "add" and isinstance(container, dict):
            container[draw(st.text(min_size=1, max_size=10))] = draw(hostile_values)
        elif operation == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        elif operation == "empty":
            container[key] = type(container[key])() if isinstance(
                container[key], dict | list | str) else None
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@given(mutated_document())
@fuzz_settings()
def test_mutated_packaged_states(text: str) -> None:
    check_state(text)


HOSTILE_LINES = (
    "tenant: !!python/object/apply:os.system ['echo pwned']",
    "  - !!python/object:os.system {}",
    "!!python/name:os.system",
    "x: !custom value",
    "%TAG ! tag:evil.example,2000:",
    "<<: *undefined",
    "<<: {tenant: other}",
    "- &anchor {id: a}",
    "- *anchor",
    "? complex key\n: value",
    "tenant: &t contoso\nalias: *t",
    "\t- tab",
    "servers: !!set {a, b}",
    "servers: !!omap [a: 1]",
    "not_before: !!timestamp 2020-01-01",
    "key: !!binary aGVsbG8=",
)


@given(mutated_text(st.sampled_from(packaged_documents()).map(lambda pair: pair[0])),
       st.lists(st.sampled_from(HOSTILE_LINES), max_size=2), st.integers(0, 200))
@fuzz_settings()
def test_packaged_state_text_with_hostile_lines(text: str, lines: list[str],
                                                at: int) -> None:
    rows = text.split("\n")
    position = at % (len(rows) + 1)
    check_state("\n".join(rows[:position] + lines + rows[position:]))


# ---------------------------------------------------------------------------------------------
# Hostile YAML, one by one
# ---------------------------------------------------------------------------------------------

MINIMAL = """tenant: contoso
servers:
  - name: EX01
    fqdn: ex01.contoso.com
"""


def test_python_tags_are_refused_and_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    for tag in ("!!python/object/apply:os.system", "!!python/object/apply:subprocess.call",
                "!!python/object/new:os.system"):
        for text in (f"tenant: {tag} [['touch', '{marker}']]\nservers: []",
                     f"{tag} ['touch {marker}']",
                     MINIMAL + f"faults:\n  latency_ms: {tag} ['touch {marker}']"):
            with pytest.raises(LabStateError):
                parse_state(text, source=SOURCE, now=NOW)
    assert not marker.exists()


def _sequence_bomb(levels: int = 12) -> str:
    lines = ["tenant: contoso", "cas:", "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 8)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nservers: []\n"


def _merge_bomb(levels: int = 30) -> str:
    lines = ["tenant: contoso", "cas:", "  - &m0 {id: ca0, public: true}"]
    lines += [f"  - &m{i} {{<<: [*m{i - 1}, *m{i - 1}], id: ca{i}}}" for i in range(1, levels)]
    return "\n".join(lines) + "\nservers: []\n"


BOMBS = {
    "sequence alias bomb": _sequence_bomb(),
    "merge key bomb": _merge_bomb(),
    "self-including merge": "tenant: x\nservers:\n  - &s {<<: *s}\n",
    "mutually including merges": "tenant: x\ncas:\n  - &a {<<: *b}\n  - &b {<<: *a}\n",
    "merge of own list": "tenant: x\nservers:\n  - &s {name: EX01, fqdn: a.b, <<: [*s]}\n",
    "recursive list": "tenant: x\nservers: &l [*l]\n",
    "recursive server list": "tenant: x\nservers:\n  - &s {name: EX01, fqdn: a.b, "
                             "certificates: [*s]}\n",
    "deep flow nesting": "tenant: x\nservers: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep block nesting": "tenant: x\nservers:\n" + "".join(
        "  " * depth + "- \n" for depth in range(1, 3000)),
    "deep mappings": "tenant: x\nservers: " + "{a: " * 3000 + "b" + "}" * 3000 + "\n",
    "ancient relative date": MINIMAL + "    certificates:\n      - {id: c, issuer: self, "
                             "subject: CN=a, not_before: -99999999999999999999d, "
                             "not_after: +1d}\n",
    "date beyond 9999": MINIMAL + "    certificates:\n      - {id: c, issuer: self, "
                        "subject: CN=a, not_before: 0001-01-01, "
                        "not_after: 9999-12-31T23:59:59-14:00}\n",
    "huge integer": MINIMAL + "    queue_messages: " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_bombs_and_recursion_are_bounded_errors(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LabStateError) as raised:
        bounded(lambda: parse_state(text, source=SOURCE, now=NOW), "parse_state", seconds=10)
    assert time.perf_counter() - started < 3
    assert_readable(str(raised.value))


def test_merge_keys_still_share_templates() -> None:
    """The cycle check does not refuse legitimate merges."""
    state = parse_state("tenant: x\nservers:\n  - &a {name: EX01, fqdn: a.b}\n"
                        "  - {<<: *a, name: EX02, fqdn: b.c}\n", source=SOURCE, now=NOW)
    assert [server.name for server in state.servers] == ["EX01", "EX02"]


def test_tls_certificate_name_with_sharp_s() -> None:
    from bot.exchange.snapshot import split_tls_certificate_name

    assert split_tls_certificate_name("<I>CN=CA, O=Großhandel GmbH<S>CN=mail.contoso.com") == (
        "CN=CA, O=Großhandel GmbH", "CN=mail.contoso.com")


def test_yaml_dates_are_accepted_as_dates() -> None:
    """Dates YAML itself types (timestamps) still read; guards the random-YAML test."""
    text = MINIMAL + ("    certificates:\n      - {id: c, issuer: self, subject: CN=a, "
                      f"not_before: {date(2025, 1, 1).isoformat()}, not_after: +1d}}\n")
    assert check_state(text) is not None
