"""The lab's WS-Management layer without sockets: parsing, responses, faults, PSRP plumbing."""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET

import pytest
from psrpcore import (
    ClientRunspacePool,
    Command,
    PSRPPayload,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore.types import PSInt, PSRPMessageType, PSString
from pypsrp.complex_objects import ComplexObject
from pypsrp.messages import SetMaxRunspaces, SetMinRunspaces
from pypsrp.powershell import Fragmenter
from pypsrp.serializer import Serializer
from pypsrp.wsman import NAMESPACES, WSMan

from bot.lab import wsman
from bot.lab.psrp_session import command_calls, normalise_call_ids

MESSAGE_ID = "uuid:11111111-2222-3333-4444-555555555555"


def parse_xml(data: bytes) -> ET.Element:
    """Parse XML the lab itself produced."""
    return ET.fromstring(data)  # noqa: S314 - the lab's own responses


def request_xml(action: str, body: str = "", *, resource_uri: str = wsman.EXCHANGE_RESOURCE_URI,
                selectors: dict[str, str] | None = None, timeout: str = "PT20S") -> bytes:
    selector_xml = ""
    if selectors:
        selector_xml = "<w:SelectorSet>" + "".join(
            f'<w:Selector Name="{k}">{v}</w:Selector>' for k, v in selectors.items()
        ) + "</w:SelectorSet>"
    return (
        f'<s:Envelope xmlns:s="{wsman.NS_SOAP}" xmlns:a="{wsman.NS_ADDRESSING}" '
        f'xmlns:w="{wsman.NS_WSMAN}" xmlns:rsp="{wsman.NS_SHELL}">'
        f"<s:Header><a:Action>{action}</a:Action><a:MessageID>{MESSAGE_ID}</a:MessageID>"
        f"<w:MaxEnvelopeSize>512000</w:MaxEnvelopeSize>"
        f"<w:OperationTimeout>{timeout}</w:OperationTimeout>"
        f"<w:ResourceURI>{resource_uri}</w:ResourceURI>{selector_xml}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def test_parse_request_reads_the_headers_pypsrp_sends() -> None:
    request = wsman.parse_request(request_xml(
        wsman.Action.RECEIVE, '<rsp:Receive><rsp:DesiredStream CommandId="ABC">stdout'
        "</rsp:DesiredStream></rsp:Receive>", selectors={"ShellId": "S-1"}, timeout="PT1.500S"))

    assert request.action == wsman.Action.RECEIVE
    assert request.message_id == MESSAGE_ID
    assert request.shell_id == "S-1"
    assert request.operation_timeout == pytest.approx(1.5)
    assert request.max_envelope_size == 512000
    assert wsman.parse_receive(request) == wsman.ReceiveRequest("ABC", ("stdout",))


@pytest.mark.parametrize("body", [
    b"not xml at all",
    b"<a>unclosed",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
    b"<root/>",
    "<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'/>".encode("utf-16"),
])
def test_unreadable_bodies_are_invalid_xml_faults(body: bytes) -> None:
    with pytest.raises(wsman.WSManFault) as raised:
        wsman.parse_request(body)
    assert raised.value.code == 0x80338043


def test_missing_message_id_is_a_header_fault() -> None:
    body = request_xml(wsman.Action.GET).replace(f"<a:MessageID>{MESSAGE_ID}</a:MessageID>"
                                                 .encode(), b"")
    with pytest.raises(wsman.WSManFault) as raised:
        wsman.parse_request(body)
    assert raised.value.code == 0x80338011


def test_fault_envelope_is_what_pypsrp_parses_as_a_wsman_fault() -> None:
    xml = wsman.build_fault(wsman.operation_timed_out(), message_id="uuid:X",
                            relates_to=MESSAGE_ID, machine="ex01.contoso.com")

    error = WSMan._parse_wsman_fault(xml.decode())
    root = parse_xml(xml)

    assert error.code == 0x80338029 == 2150858793
    assert error.machine == "ex01.contoso.com"
    assert "OperationTimeout" in (error.reason or "")
    assert root.findtext("s:Header/wsa:RelatesTo", namespaces=NAMESPACES) == MESSAGE_ID
    assert root.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=NAMESPACES) == "s:Receiver"


def test_custom_fault_codes_accept_hex_text() -> None:
    fault = wsman.custom_fault("0x80338012", "The client cannot connect.")
    assert (fault.code, fault.message) == (0x80338012, "The client cannot connect.")


def test_create_response_carries_the_shell_id_selector() -> None:
    request = wsman.parse_request(request_xml(wsman.Action.CREATE))
    shell = wsman.ShellDescription(
        shell_id="ABC", resource_uri=wsman.EXCHANGE_RESOURCE_URI, owner="CONTOSO\\admin",
        client_ip="127.0.0.1", input_streams="stdin pr", output_streams="stdout",
        idle_timeout_seconds=7200, run_time_seconds=61, inactivity_seconds=0)

    root = parse_xml(wsman.build_create_response(request, shell, message_id="uuid:R",
                                                     address="http://x/PowerShell/"))

    selector = root.find("s:Body/wst:ResourceCreated/wsa:ReferenceParameters/wsman:SelectorSet/"
                         "wsman:Selector", NAMESPACES)
    assert selector is not None
    assert selector.get("Name") == "ShellId"
    assert selector.text == "ABC"
    assert root.findtext("s:Body/rsp:Shell/rsp:Owner", namespaces=NAMESPACES) == "CONTOSO\\admin"
    assert root.findtext("s:Body/rsp:Shell/rsp:ShellRunTime", namespaces=NAMESPACES) \
        == "P0DT0H1M1S"
    assert root.findtext("s:Header/wsa:RelatesTo", namespaces=NAMESPACES) == MESSAGE_ID


def test_receive_response_streams_and_done_state() -> None:
    request = wsman.parse_request(request_xml(wsman.Action.RECEIVE))
    xml = wsman.build_receive_response(
        request, [wsman.ReceivedStream("stdout", "C1", b"\x00\x01"),
                  wsman.ReceivedStream("stdout", "C1", b"\x02")],
        wsman.CommandState("C1", wsman.COMMAND_STATE_DONE, 0), message_id="uuid:R")
    root = parse_xml(xml)

    streams = root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", NAMESPACES)
    state = root.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", NAMESPACES)
    assert b"".join(base64.b64decode(s.text or "") for s in streams) == b"\x00\x01\x02"
    assert state is not None
    assert state.get("State") == wsman.COMMAND_STATE_DONE
    assert state.findtext("rsp:ExitCode", namespaces=NAMESPACES) == "0"


def test_bad_base64_in_a_send_is_an_invalid_parameter_fault() -> None:
    request = wsman.parse_request(request_xml(
        wsman.Action.SEND, '<rsp:Send><rsp:Stream Name="stdin">***</rsp:Stream></rsp:Send>'))
    with pytest.raises(wsman.WSManFault) as raised:
        wsman.parse_send(request)
    assert raised.value.code == 0x8033803A


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT20S", 20.0), ("PT60.000S", 60.0), ("P0DT0H1M", 60.0), ("P1DT1H", 90000.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert wsman.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "20S", "PTxS"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="xs:duration"):
        wsman.parse_duration(text)


def test_receive_budget_fits_base64_into_the_envelope() -> None:
    budget = wsman.receive_budget(153600)
    assert len(base64.b64encode(b"x" * budget)) + 2048 <= 153600


def _opened_pool() -> tuple[ClientRunspacePool, ServerRunspacePool]:
    client = ClientRunspacePool()
    server = ServerRunspacePool()
    client.open()
    payload = client.data_to_send()
    assert payload is not None
    server.receive_data(payload)
    while server.next_event() is not None:
        pass
    return client, server


@pytest.mark.parametrize(("message", "count"), [
    (SetMaxRunspaces(max_runspaces=4, ci=7), 4),
    (SetMinRunspaces(min_runspaces=2, ci=7), 2),
])
def test_pypsrp_upper_case_call_ids_reach_psrpcore(message: ComplexObject, count: int) -> None:
    client, server = _opened_pool()
    data = Fragmenter(150000, Serializer()).fragment(
        message, str(client.runspace_pool_id).upper())[0]
    fixed = normalise_call_ids(data)

    server.receive_data(PSRPPayload(fixed, StreamType.default, None))
    event = server.next_event()

    assert b'N="CI"' in data
    assert len(fixed) == len(data)
    assert isinstance(event, SetMaxRunspacesEvent | SetMinRunspacesEvent)
    assert (event.ci, event.count) == (7, count)


def test_psrpcore_alone_cannot_read_pypsrp_call_ids() -> None:
    client, server = _opened_pool()
    data = Fragmenter(150000, Serializer()).fragment(
        SetMaxRunspaces(max_runspaces=4, ci=7), str(client.runspace_pool_id).upper())[0]
    server.receive_data(PSRPPayload(data, StreamType.default, None))
    with pytest.raises(AttributeError):
        server.next_event()


def test_call_id_rewrite_leaves_other_messages_alone() -> None:
    header = struct.pack("<II", 0x00010002, int(PSRPMessageType.CreatePipeline))
    body = header + b"\x00" * 32 + b'<Obj><S N="CI">kept</S></Obj>'
    fragment = struct.pack(">QQBI", 1, 0, 3, len(body)) + body
    assert normalise_call_ids(fragment) == fragment


def test_command_calls_turn_psrpcore_values_into_plain_python() -> None:
    command = Command("Get-ExchangeCertificate")
    command.add_parameter("Thumbprint", PSString("ABC"))
    command.add_parameter("Count", PSInt(3))
    command.add_parameter("Force", None)
    command.add_argument([PSString("a"), PSInt(1)])

    (call,) = command_calls([command])

    assert call.name == "Get-ExchangeCertificate"
    assert call.parameters == (("Thumbprint", "ABC"), ("Count", 3), ("Force", None),
                               (None, ["a", 1]))
    assert type(call.parameters[0][1]) is str
    assert type(call.parameters[1][1]) is int
