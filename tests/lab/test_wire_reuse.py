"""Lab wire objects: built once per record value, reused, and cheap for psrpcore to walk.

Both are pure optimisations: the CLIXML must stay exactly what plain psrpcore objects give.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import cast

import pytest
from psrpcore.types import PSCryptoProvider, PSList, PSNoteProperty, PSObject, serialize_clixml

from bot.lab import wire
from bot.lab.model import ExchangeOrganisation
from bot.lab.records import CommandCall, LabSendConnectorRecord
from bot.lab.state import packaged_state

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


def records(state_name: str) -> list[object]:
    organisation = ExchangeOrganisation(packaged_state(state_name, now=NOW), clock=lambda: NOW)
    found: list[object] = []
    for call in READ_COMMANDS:
        found += organisation.run((call,), user="CONTOSO\\admin", connected_server="EX01").output
    return found


def remoting(runspace_id: uuid.UUID) -> list[tuple[str, object]]:
    return [("PSComputerName", "ex01.contoso.com"), ("RunspaceId", runspace_id),
            ("PSShowComputerName", False)]


def clixml(value: object) -> str:
    return serialize_clixml(value, NO_CIPHER)


@pytest.mark.parametrize("state_name", ["kb-2888788", "healthy-pinned"])
def test_reused_objects_serialise_exactly_like_freshly_built_ones(state_name: str) -> None:
    for record in records(state_name):
        for runspace_id in (uuid.UUID(int=1), uuid.UUID(int=2)):  # the second call reuses
            reused = wire.to_psobject(record, computer_name="ex01.contoso.com",
                                      runspace_id=runspace_id)
            fresh = wire._complex(record, remoting(runspace_id))
            assert clixml(reused) == clixml(fresh), type(record).__name__


def test_each_call_gets_its_own_remoting_properties() -> None:
    record = next(r for r in records("kb-2888788") if isinstance(r, LabSendConnectorRecord))
    first = wire.to_psobject(record, computer_name="ex01.contoso.com",
                             runspace_id=uuid.UUID(int=1))
    before = clixml(first)
    second = wire.to_psobject(record, computer_name="ex02.contoso.com",
                              runspace_id=uuid.UUID(int=2))
    assert clixml(first) == before
    assert str(uuid.UUID(int=1)) in before
    assert str(uuid.UUID(int=2)) not in before
    assert "ex02.contoso.com" in clixml(second)
    assert isinstance(first, PSObject)
    assert isinstance(second, PSObject)
    assert first is not second
    nested_first = first.PSObject.adapted_properties[0].get_value(first)
    nested_second = second.PSObject.adapted_properties[0].get_value(second)
    assert nested_first is nested_second


def test_without_remoting_properties_the_ms_has_only_the_record_s_own() -> None:
    certificate = records("kb-2888788")[1]
    value = wire.to_psobject(certificate, computer_name="x", runspace_id=uuid.UUID(int=1),
                             remoting_properties=False)
    assert isinstance(value, PSObject)
    assert [p.name for p in value.PSObject.extended_properties] == ["SerializationData"]


def plain_psrpcore_clixml(monkeypatch: pytest.MonkeyPatch, record: object) -> str:
    """The CLIXML of ``record`` built from psrpcore's own PSObject, PSList, PSNoteProperty."""
    with monkeypatch.context() as patched:
        patched.setattr(wire, "_WireObject", PSObject)
        patched.setattr(wire, "_WireList", PSList)
        patched.setattr(wire, "_note", lambda name, value, owner: PSNoteProperty(name, value))
        wire._exchange_object.cache_clear()
        text = clixml(wire.to_psobject(record, computer_name="ex01.contoso.com",
                                       runspace_id=uuid.UUID(int=3)))
    wire._exchange_object.cache_clear()
    return text


@pytest.mark.parametrize("state_name", ["kb-2888788", "healthy-pinned"])
def test_lab_objects_serialise_like_plain_psrpcore_objects(
        monkeypatch: pytest.MonkeyPatch, state_name: str) -> None:
    for record in records(state_name):
        plain = plain_psrpcore_clixml(monkeypatch, record)
        lab = clixml(wire.to_psobject(record, computer_name="ex01.contoso.com",
                                      runspace_id=uuid.UUID(int=3)))
        assert lab == plain, type(record).__name__


def test_wire_objects_still_expose_ps_properties_as_attributes() -> None:
    record = next(r for r in records("kb-2888788") if isinstance(r, LabSendConnectorRecord))
    value = wire.to_psobject(record, computer_name="ex01.contoso.com",
                             runspace_id=uuid.UUID(int=1))
    assert isinstance(value, PSObject)
    assert value.Name == record.name
    assert value.PSComputerName == "ex01.contoso.com"
    assert value.__class__ is type(value)
