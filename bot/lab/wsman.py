"""WS-Management (MS-WSMV) for the lab's shell: parse SOAP requests, build responses and faults.

Pure: no sockets, no clock, no randomness. Callers pass message ids and durations in. Responses
copy the shapes Windows (and Exchange's ``/PowerShell/`` endpoint) sends, with the same
namespace prefixes, so that the unmodified pypsrp client accepts them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_EVENTING = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_WSMAN_MS = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_POWERSHELL = "http://schemas.microsoft.com/powershell"

EXCHANGE_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
"""The only PowerShell configuration Exchange's ``/PowerShell/`` endpoint serves."""
SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
"""The generic shell resource URI: pypsrp's ``is_alive()`` sends its Get there."""

MAX_OPERATION_TIMEOUT = 86400.0
"""Seconds; longer OperationTimeouts (up to infinite ones) are refused, not waited for."""

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
WSMAN_FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ADDRESSING_FAULT_ACTION = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"

COMMAND_STATE_DONE = f"{NS_SHELL}/CommandState/Done"
COMMAND_STATE_RUNNING = f"{NS_SHELL}/CommandState/Running"

SIGNAL_TERMINATE = f"{NS_SHELL}/signal/terminate"
SIGNAL_CTRL_C = f"{NS_SHELL}/signal/ctrl_c"
SIGNAL_PS_CTRL_C = "powershell/signal/crtl_c"
"""PowerShell's stop signal, spelt as in MS-PSRP; pypsrp 0.9 sends ``powershell/signal/ctrl_c``."""
SIGNAL_PS_CTRL_C_ALT = "powershell/signal/ctrl_c"

_ENVELOPE_NAMESPACES = (
    f'xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}" xmlns:x="{NS_TRANSFER}" '
    f'xmlns:e="{NS_EVENTING}" xmlns:n="{NS_ENUMERATION}" xmlns:w="{NS_WSMAN}" '
    f'xmlns:p="{NS_WSMAN_MS}"'
)
_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class Action(enum.StrEnum):
    """The WS-Management actions the lab serves."""

    CREATE = f"{NS_TRANSFER}/Create"
    DELETE = f"{NS_TRANSFER}/Delete"
    GET = f"{NS_TRANSFER}/Get"
    COMMAND = f"{NS_SHELL}/Command"
    RECEIVE = f"{NS_SHELL}/Receive"
    SEND = f"{NS_SHELL}/Send"
    SIGNAL = f"{NS_SHELL}/Signal"

    @property
    def response(self) -> str:
        return f"{self.value}Response"


class WSManFault(Exception):
    """A WS-Management fault: HTTP 500 with ``s:Fault`` and ``wsmanfault:WSManFault Code=...``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: str = "w:InternalError",
        receiver: bool = False,
        action: str = WSMAN_FAULT_ACTION,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.receiver = receiver
        self.action = action
        self.reason = reason if reason is not None else message

    def __repr__(self) -> str:
        return f"WSManFault(0x{self.code:08X}, {self.message!r})"


def operation_timed_out() -> WSManFault:
    """``0x80338029``: a Receive found no data within the request's OperationTimeout."""
    text = (
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.  "
    )
    return WSManFault(0x80338029, text, subcode="w:TimedOut", receiver=True)


def shell_not_found(shell_id: str) -> WSManFault:
    """``0x8033805B``: no shell with that ShellId (or it belongs to someone else)."""
    text = (
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Provide the correct ShellId or "
        "create a new shell and retry the operation. "
    )
    return WSManFault(0x8033805B, text, subcode="w:InvalidSelectors", reason=_INVALID_SELECTORS)


def command_not_found() -> WSManFault:
    """``0x8033805B`` as Windows words it for an unknown CommandId."""
    text = (
        "The Windows Remote Shell received a request to perform an operation on a command "
        "identifier that does not exist. Either the command has completed execution or the "
        "client specified an invalid command identifier."
    )
    return WSManFault(0x8033805B, text, subcode="w:InvalidSelectors", reason=_INVALID_SELECTORS)


_INVALID_SELECTORS = (
    "The WS-Management service cannot process the request because the request contained "
    "invalid selectors for the resource."
)


def resource_uri_not_found(resource_uri: str) -> WSManFault:
    """``0x8033803B``: e.g. a configuration name other than ``Microsoft.Exchange``."""
    text = (
        f"The WS-Management service cannot process the request. The resource URI ({resource_uri}) "
        "was not found in the WS-Management catalog. The catalog contains the metadata that "
        "describes resources, or logical endpoints."
    )
    return WSManFault(0x8033803B, text, subcode="a:DestinationUnreachable",
                      action=ADDRESSING_FAULT_ACTION)


def action_not_supported(action: str) -> WSManFault:
    """``0x80338013``: an action the lab does not serve (Enumerate, Connect, ...)."""
    text = "The WS-Management service does not support the action specified in the request."
    return WSManFault(0x80338013, text, subcode="a:ActionNotSupported",
                      action=ADDRESSING_FAULT_ACTION, reason=f"{text} ({action})")


def invalid_xml() -> WSManFault:
    """``0x80338043``: the body is not a SOAP envelope we can read."""
    text = "The WS-Management service cannot process the request because the XML is invalid."
    return WSManFault(0x80338043, text, subcode="w:SchemaValidationError")


def missing_header(name: str) -> WSManFault:
    """``0x80338011``: a required SOAP header (Action, MessageID, ResourceURI...) is missing."""
    text = (
        "The WS-Management service cannot process the request. The request does not have all "
        f"the expected SOAP headers. ({name})"
    )
    return WSManFault(0x80338011, text, subcode="a:MessageInformationHeaderRequired",
                      action=ADDRESSING_FAULT_ACTION)


def invalid_parameter(detail: str) -> WSManFault:
    """``0x8033803A``: a malformed operation body (bad base64, missing element...)."""
    text = (
        "The WS-Management service cannot process the request because a parameter for the "
        f"operation is not valid. {detail}"
    )
    return WSManFault(0x8033803A, text, subcode="w:InvalidParameter")


def provider_failure(detail: str) -> WSManFault:
    """``0x80338003``: the PowerShell plugin could not process the request."""
    return WSManFault(0x80338003, f"An error was encountered inside the plugin. {detail}".strip(),
                      subcode="w:InternalError", receiver=True)


def custom_fault(code: int | str, message: str) -> WSManFault:
    """A fault with a given code (``0x80338012`` or an int) and message, for fault injection."""
    value = int(code, 0) if isinstance(code, str) else int(code)
    return WSManFault(value & 0xFFFFFFFF, message, subcode="w:InternalError", receiver=True)


@dataclass(frozen=True)
class WSManRequest:
    """The header fields of one WS-Management request and its ``s:Body``."""

    action: str
    message_id: str
    resource_uri: str | None
    selectors: Mapping[str, str]
    options: Mapping[str, str]
    operation_timeout: float | None
    max_envelope_size: int | None
    body: ET.Element

    @property
    def shell_id(self) -> str | None:
        return self.selectors.get("ShellId")


@dataclass(frozen=True)
class CreateShellRequest:
    shell_id: str | None
    input_streams: str
    output_streams: str
    creation_data: bytes


@dataclass(frozen=True)
class CommandRequest:
    command_id: str | None
    arguments: tuple[bytes, ...]


@dataclass(frozen=True)
class ReceiveRequest:
    command_id: str | None
    streams: tuple[str, ...]


@dataclass(frozen=True)
class SendStream:
    name: str
    command_id: str | None
    data: bytes


@dataclass(frozen=True)
class SignalRequest:
    command_id: str | None
    code: str


@dataclass(frozen=True)
class ReceivedStream:
    """One ``rsp:Stream`` of a ReceiveResponse."""

    name: str
    command_id: str | None
    data: bytes


@dataclass(frozen=True)
class CommandState:
    command_id: str
    state: str
    exit_code: int | None = None


@dataclass(frozen=True)
class ShellDescription:
    """What Create and Get report about a shell."""

    shell_id: str
    resource_uri: str
    owner: str
    client_ip: str
    input_streams: str
    output_streams: str
    idle_timeout_seconds: float
    run_time_seconds: float
    inactivity_seconds: float
    state: str = "Connected"


def parse_duration(text: str) -> float:
    """Seconds in an xs:duration such as ``PT20S``, ``PT60.000S`` or ``P0DT0H1M``."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise ValueError(f"not an xs:duration: {text!r}")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return (parts.get("days", 0.0) * 86400 + parts.get("hours", 0.0) * 3600
            + parts.get("minutes", 0.0) * 60 + parts.get("seconds", 0.0))


def format_duration(seconds: float) -> str:
    """``P0DT0H0M12S`` as Windows writes ShellRunTime and ShellInactivity."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


def message_id_of(body: bytes) -> str | None:
    """The request's MessageID if the body parses at all, for a fault's RelatesTo."""
    try:
        root = _parse_xml(body)
    except WSManFault:
        return None
    element = root.find(f"{{{NS_SOAP}}}Header/{{{NS_ADDRESSING}}}MessageID")
    return element.text.strip() if element is not None and element.text else None


def parse_request(body: bytes) -> WSManRequest:
    """Parse a SOAP envelope's WS-Management headers; raise :class:`WSManFault` if unusable."""
    root = _parse_xml(body)
    if root.tag != f"{{{NS_SOAP}}}Envelope":
        raise invalid_xml()
    header = root.find(f"{{{NS_SOAP}}}Header")
    soap_body = root.find(f"{{{NS_SOAP}}}Body")
    if header is None or soap_body is None:
        raise invalid_xml()

    action = _text(header, f"{{{NS_ADDRESSING}}}Action")
    message_id = _text(header, f"{{{NS_ADDRESSING}}}MessageID")
    if not message_id:
        raise missing_header("MessageID")
    if not action:
        raise missing_header("Action")

    selectors = {
        element.get("Name", ""): (element.text or "").strip()
        for element in header.iterfind(f"{{{NS_WSMAN}}}SelectorSet/{{{NS_WSMAN}}}Selector")
    }
    options = {
        element.get("Name", ""): (element.text or "").strip()
        for element in header.iterfind(f"{{{NS_WSMAN}}}OptionSet/{{{NS_WSMAN}}}Option")
    }
    timeout_text = _text(header, f"{{{NS_WSMAN}}}OperationTimeout")
    envelope_text = _text(header, f"{{{NS_WSMAN}}}MaxEnvelopeSize")
    try:
        operation_timeout = parse_duration(timeout_text) if timeout_text else None
        max_envelope_size = int(envelope_text) if envelope_text else None
    except ValueError:
        raise invalid_parameter("OperationTimeout or MaxEnvelopeSize") from None
    if operation_timeout is not None and not operation_timeout <= MAX_OPERATION_TIMEOUT:
        raise invalid_parameter("OperationTimeout or MaxEnvelopeSize")

    return WSManRequest(
        action=action,
        message_id=message_id,
        resource_uri=_text(header, f"{{{NS_WSMAN}}}ResourceURI"),
        selectors=selectors,
        options=options,
        operation_timeout=operation_timeout,
        max_envelope_size=max_envelope_size,
        body=soap_body,
    )


def parse_create(request: WSManRequest) -> CreateShellRequest:
    """The ``rsp:Shell`` of a Create: ShellId, streams and the PSRP ``creationXml``."""
    shell = request.body.find(f"{{{NS_SHELL}}}Shell")
    if shell is None:
        raise invalid_parameter("Create has no rsp:Shell")
    creation = shell.find(f"{{{NS_POWERSHELL}}}creationXml")
    if creation is None or not (creation.text or "").strip():
        raise invalid_parameter("Create has no creationXml")
    return CreateShellRequest(
        shell_id=shell.get("ShellId"),
        input_streams=_text(shell, f"{{{NS_SHELL}}}InputStreams") or "stdin pr",
        output_streams=_text(shell, f"{{{NS_SHELL}}}OutputStreams") or "stdout",
        creation_data=_b64(creation.text or ""),
    )


def parse_command(request: WSManRequest) -> CommandRequest:
    """The ``rsp:CommandLine`` of a Command: CommandId and the base64 Arguments."""
    line = request.body.find(f"{{{NS_SHELL}}}CommandLine")
    if line is None:
        raise invalid_parameter("Command has no rsp:CommandLine")
    arguments = tuple(
        _b64(element.text or "") for element in line.iterfind(f"{{{NS_SHELL}}}Arguments")
    )
    return CommandRequest(command_id=line.get("CommandId"), arguments=arguments)


def parse_receive(request: WSManRequest) -> ReceiveRequest:
    """The ``rsp:DesiredStream`` of a Receive; CommandId absent for the pool's own stream."""
    desired = request.body.find(f"{{{NS_SHELL}}}Receive/{{{NS_SHELL}}}DesiredStream")
    if desired is None:
        raise invalid_parameter("Receive has no rsp:DesiredStream")
    streams = tuple((desired.text or "stdout").split()) or ("stdout",)
    return ReceiveRequest(command_id=desired.get("CommandId"), streams=streams)


def parse_send(request: WSManRequest) -> tuple[SendStream, ...]:
    """The ``rsp:Stream`` elements of a Send, decoded."""
    send = request.body.find(f"{{{NS_SHELL}}}Send")
    if send is None:
        raise invalid_parameter("Send has no rsp:Send")
    return tuple(
        SendStream(name=element.get("Name", "stdin"), command_id=element.get("CommandId"),
                   data=_b64(element.text or ""))
        for element in send.iterfind(f"{{{NS_SHELL}}}Stream")
    )


def parse_signal(request: WSManRequest) -> SignalRequest:
    """The ``rsp:Signal`` of a Signal: CommandId and Code."""
    signal = request.body.find(f"{{{NS_SHELL}}}Signal")
    if signal is None:
        raise invalid_parameter("Signal has no rsp:Signal")
    return SignalRequest(command_id=signal.get("CommandId"),
                         code=_text(signal, f"{{{NS_SHELL}}}Code") or "")


def envelope(action: str, *, message_id: str, relates_to: str | None, body: str,
             extra_headers: str = "") -> bytes:
    """A response envelope; ``a:RelatesTo`` echoes the request's MessageID."""
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    text = (
        f'<s:Envelope xml:lang="en-US" {_ENVELOPE_NAMESPACES}>'
        f"<s:Header><a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>{escape(message_id)}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}{extra_headers}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )
    return text.encode("utf-8")


def build_fault(fault: WSManFault, *, message_id: str, relates_to: str | None,
                machine: str) -> bytes:
    """The ``s:Fault`` envelope Windows sends with HTTP 500."""
    code_value = "s:Receiver" if fault.receiver else "s:Sender"
    body = (
        f"<s:Fault><s:Code><s:Value>{code_value}</s:Value>"
        f"<s:Subcode><s:Value>{escape(fault.subcode)}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason>'
        f"<s:Detail><f:WSManFault xmlns:f={quoteattr(NS_FAULT)} Code=\"{fault.code}\" "
        f"Machine={quoteattr(machine)}><f:Message>{escape(fault.message)}</f:Message>"
        f"</f:WSManFault></s:Detail></s:Fault>"
    )
    return envelope(fault.action, message_id=message_id, relates_to=relates_to, body=body)


def build_create_response(request: WSManRequest, shell: ShellDescription, *, message_id: str,
                          address: str) -> bytes:
    """CreateResponse with the ShellId selector pypsrp needs for every later request."""
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{escape(shell.resource_uri)}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{escape(shell.shell_id)}</w:Selector></w:SelectorSet>'
        f"</a:ReferenceParameters></x:ResourceCreated>{_shell_xml(shell)}"
    )
    return envelope(Action.CREATE.response, message_id=message_id,
                    relates_to=request.message_id, body=body)


def build_get_response(request: WSManRequest, shell: ShellDescription, *,
                       message_id: str) -> bytes:
    """GetResponse: the shell's properties, State included (pypsrp's ``is_alive``)."""
    return envelope(Action.GET.response, message_id=message_id, relates_to=request.message_id,
                    body=_shell_xml(shell))


def build_command_response(request: WSManRequest, command_id: str, *, message_id: str) -> bytes:
    body = (f'<rsp:CommandResponse xmlns:rsp="{NS_SHELL}">'
            f"<rsp:CommandId>{escape(command_id)}</rsp:CommandId></rsp:CommandResponse>")
    return envelope(Action.COMMAND.response, message_id=message_id,
                    relates_to=request.message_id, body=body)


def build_receive_response(request: WSManRequest, streams: Sequence[ReceivedStream],
                           state: CommandState | None, *, message_id: str) -> bytes:
    """ReceiveResponse: base64 PSRP fragments per stream and, for a pipeline, its CommandState."""
    parts = [f'<rsp:ReceiveResponse xmlns:rsp="{NS_SHELL}">']
    for stream in streams:
        command = f" CommandId={quoteattr(stream.command_id)}" if stream.command_id else ""
        parts.append(f"<rsp:Stream Name={quoteattr(stream.name)}{command}>"
                     f"{base64.b64encode(stream.data).decode('ascii')}</rsp:Stream>")
    if state is not None:
        exit_code = (f"<rsp:ExitCode>{state.exit_code}</rsp:ExitCode>"
                     if state.exit_code is not None else "")
        parts.append(f"<rsp:CommandState CommandId={quoteattr(state.command_id)} "
                     f"State={quoteattr(state.state)}>{exit_code}</rsp:CommandState>")
    parts.append("</rsp:ReceiveResponse>")
    return envelope(Action.RECEIVE.response, message_id=message_id,
                    relates_to=request.message_id, body="".join(parts))


def build_send_response(request: WSManRequest, *, message_id: str) -> bytes:
    return envelope(Action.SEND.response, message_id=message_id, relates_to=request.message_id,
                    body=f'<rsp:SendResponse xmlns:rsp="{NS_SHELL}"/>')


def build_signal_response(request: WSManRequest, *, message_id: str) -> bytes:
    return envelope(Action.SIGNAL.response, message_id=message_id,
                    relates_to=request.message_id,
                    body=f'<rsp:SignalResponse xmlns:rsp="{NS_SHELL}"/>')


def build_delete_response(request: WSManRequest, *, message_id: str) -> bytes:
    return envelope(Action.DELETE.response, message_id=message_id,
                    relates_to=request.message_id, body="")


def receive_budget(max_envelope_size: int | None) -> int:
    """Raw PSRP bytes that fit one ReceiveResponse (base64 inside the envelope limit)."""
    envelope_size = max_envelope_size or 153600
    return max(4096, (envelope_size - 2048) * 3 // 4)


def _shell_xml(shell: ShellDescription) -> str:
    return (
        f'<rsp:Shell xmlns:rsp="{NS_SHELL}">'
        f"<rsp:ShellId>{escape(shell.shell_id)}</rsp:ShellId>"
        f"<rsp:Name>WinRM1</rsp:Name>"
        f"<rsp:ResourceUri>{escape(shell.resource_uri)}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(shell.owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(shell.client_ip)}</rsp:ClientIP>"
        f"<rsp:IdleTimeOut>PT{shell.idle_timeout_seconds:.3f}S</rsp:IdleTimeOut>"
        f"<rsp:InputStreams>{escape(shell.input_streams)}</rsp:InputStreams>"
        f"<rsp:OutputStreams>{escape(shell.output_streams)}</rsp:OutputStreams>"
        f"<rsp:State>{escape(shell.state)}</rsp:State>"
        f"<rsp:ShellRunTime>{format_duration(shell.run_time_seconds)}</rsp:ShellRunTime>"
        f"<rsp:ShellInactivity>{format_duration(shell.inactivity_seconds)}</rsp:ShellInactivity>"
        f"</rsp:Shell>"
    )


def _parse_xml(body: bytes) -> ET.Element:
    """Parse UTF-8 XML that has no DTD: without one there are no entity expansion attacks."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_xml() from None
    if "<!doctype" in text.casefold() or "<!entity" in text.casefold():
        raise invalid_xml()
    try:
        return ET.fromstring(body)  # noqa: S314 - UTF-8 without a DTD, checked above
    except (ET.ParseError, ValueError, LookupError):  # declared encodings expat cannot use
        raise invalid_xml() from None


def _text(parent: ET.Element, path: str) -> str | None:
    element = parent.find(path)
    if element is None or element.text is None:
        return None
    return element.text.strip()


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_parameter("a stream is not valid base64") from None
