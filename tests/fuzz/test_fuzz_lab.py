"""Fuzz the lab server: its WS-Management parser, and its HTTP surface end to end.

The envelopes are real: captured from the unmodified pypsrp client running a command against
a lab (Create, Receive, Command, Signal, Delete). ``parse_request`` and the operation parsers
get them mutated (headers deleted, duplicated or given hostile values, namespaces changed,
base64 streams broken, bytes flipped) -> a parsed request or the module's ``WSManFault``;
the fault envelope built for it is well-formed XML.

End to end, a running lab gets a bounded number of malformed raw HTTP requests over a socket
(garbage request lines, bad Content-Length, huge headers, chunked bodies, bad Authorization
and Negotiate tokens, truncated and non-XML bodies, mutated envelopes): every answer is an
HTTP error status or a WSManFault (never a traceback), nothing hangs (socket timeouts), no
handler fails with an exception (logged ones included), and a real pypsrp client is served
afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import logging
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from bot.lab import wsman
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state
from tests.fuzz import assert_readable, bounded, fuzz_settings, hostile_text, record

SOCKET_TIMEOUT = 10.0
NAMESPACES = {
    "s": wsman.NS_SOAP, "a": wsman.NS_ADDRESSING, "w": wsman.NS_WSMAN, "p": wsman.NS_WSMAN_MS,
    "rsp": wsman.NS_SHELL, "x": wsman.NS_TRANSFER,
}
for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


# ---------------------------------------------------------------------------------------------
# Labs and real envelopes
# ---------------------------------------------------------------------------------------------

def organisation() -> ExchangeOrganisation:
    now = datetime.now(UTC)
    return ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))


@pytest.fixture(scope="module")
def basic_lab() -> Iterator[LabServer]:
    with LabServer(organisation(), auth="basic") as lab:
        yield lab


@pytest.fixture(scope="module")
def negotiate_lab() -> Iterator[LabServer]:
    with LabServer(organisation(), auth="negotiate") as lab:
        yield lab


def client(lab: LabServer) -> WSMan:
    user = lab.users[0]
    return WSMan(lab.host, port=lab.port, path="PowerShell/", ssl=False, auth=lab.auth,
                 username=user.qualified_name, password=user.password,
                 encryption="never" if lab.auth == "basic" else "auto",
                 operation_timeout=5, read_timeout=15)


def run_a_command(lab: LabServer, wsman_client: WSMan | None = None) -> list[Any]:
    """A real pypsrp session: open a pool, run Get-ExchangeServer, close."""
    with RunspacePool(wsman_client or client(lab), configuration_name="Microsoft.Exchange") \
            as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet("Get-ExchangeServer")
        output: list[Any] = shell.invoke()
        assert not shell.had_errors
        return output


@pytest.fixture(scope="module")
def envelopes(basic_lab: LabServer) -> tuple[bytes, ...]:
    """The SOAP envelopes pypsrp sent during one real session, in order."""
    wsman_client = client(basic_lab)
    captured: list[bytes] = []
    send = wsman_client.transport.send

    def recording(message: bytes, **options: Any) -> bytes:
        captured.append(message)
        return bytes(send(message, **options))

    wsman_client.transport.send = recording  # type: ignore[method-assign]
    assert run_a_command(basic_lab, wsman_client)
    actions = {wsman.parse_request(body).action for body in captured}
    assert {wsman.Action.CREATE, wsman.Action.RECEIVE, wsman.Action.COMMAND,
            wsman.Action.DELETE} <= actions
    return tuple(captured)


@pytest.fixture(scope="module")
def live_shell(basic_lab: LabServer) -> Iterator[str]:
    """The ShellId of a runspace pool kept open while the HTTP fuzz runs (mutated requests
    then reach a real shell: long-polls, commands, signals)."""
    pool = RunspacePool(client(basic_lab), configuration_name="Microsoft.Exchange")
    pool.open()
    try:
        yield str(pool.shell.id).upper()
    finally:
        with contextlib.suppress(Exception):  # the fuzz may have deleted the shell
            pool.close()


# ---------------------------------------------------------------------------------------------
# The WS-Management parser
# ---------------------------------------------------------------------------------------------

OPERATION_PARSERS = {
    wsman.Action.CREATE: wsman.parse_create,
    wsman.Action.COMMAND: wsman.parse_command,
    wsman.Action.RECEIVE: wsman.parse_receive,
    wsman.Action.SEND: wsman.parse_send,
    wsman.Action.SIGNAL: wsman.parse_signal,
}
HEADER_VALUES = st.one_of(
    hostile_text,
    st.sampled_from([
        "", " ", "PT0S", "PT-1S", "P" + "9" * 400 + "D", "PT1E9S", "PT60.000S", "P1Y", "-1",
        "0", "2147483648", "9" * 5000, "\u0661\u0662", "uuid:", "not-a-uuid", "x" * 10_000,
        *[action.value for action in wsman.Action], wsman.EXCHANGE_RESOURCE_URI,
        wsman.SHELL_RESOURCE_URI, "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
        "!!!", "QUJD", "=" * 9, base64.b64encode(b"\x00" * 64).decode(),
    ]),
)


@st.composite
def mutated_envelope(draw: st.DrawFn, envelopes: tuple[bytes, ...]) -> bytes:
    """A captured envelope with tree mutations, then maybe byte mutations."""
    root = ET.fromstring(draw(st.sampled_from(envelopes)))  # noqa: S314 - pypsrp's output
    for _ in range(draw(st.integers(0, 4))):
        pairs = [(parent, child) for parent in root.iter() for child in parent]
        if not pairs:
            break
        parent, child = pairs[draw(st.integers(0, len(pairs) - 1))]
        operation = draw(st.sampled_from(["delete", "duplicate", "text", "attribute",
                                          "namespace", "empty", "action"]))
        if operation == "delete":
            parent.remove(child)
        elif operation == "duplicate":
            parent.append(copy.deepcopy(child))
        elif operation == "text":
            child.text = draw(HEADER_VALUES)
        elif operation == "attribute":
            child.set(draw(st.sampled_from(["Name", "CommandId", "ShellId", "MustUnderstand"])),
                      draw(HEADER_VALUES))
        elif operation == "namespace":
            local = child.tag.split("}", 1)[-1]
            child.tag = draw(st.sampled_from([local, "{urn:other}" + local,
                                              f"{{{wsman.NS_SOAP}}}{local}"]))
        elif operation == "empty":
            for grandchild in list(child):
                child.remove(grandchild)
            child.text = None
        else:
            action = root.find("s:Header/a:Action", NAMESPACES)
            if action is not None:
                action.text = draw(st.sampled_from([a.value for a in wsman.Action]))
    data = ET.tostring(root)
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "truncate", "insert"]))
        if operation == "flip" and position < len(data):
            data = (data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))])
                    + data[position + 1:])
        elif operation == "truncate":
            data = data[:position]
        else:
            data = data[:position] + draw(st.one_of(
                st.binary(max_size=8), hostile_text.map(
                    lambda text: text.encode("utf-8", "surrogatepass")))) + data[position:]
    return data


def check_parse(body: bytes) -> None:
    """Parsed request or WSManFault; and the fault envelope for it is well-formed."""
    relates_to = bounded(lambda: wsman.message_id_of(body), "message_id_of")
    assert relates_to is None or isinstance(relates_to, str)
    try:
        request = bounded(lambda: wsman.parse_request(body), "parse_request")
        parser = OPERATION_PARSERS.get(wsman.Action(request.action)) \
            if request.action in set(wsman.Action) else None
        if parser is not None:
            parser(request)
        record("parsed")
    except wsman.WSManFault as fault:
        record(f"fault 0x{fault.code:08X}")
        assert_readable(fault.message)
        envelope = wsman.build_fault(fault, message_id="uuid:1", relates_to=relates_to,
                                     machine="EX01")
        parsed = ET.fromstring(envelope)  # noqa: S314 - the lab's own output
        assert parsed.find("s:Body/s:Fault", NAMESPACES) is not None


def test_captured_envelopes_parse(envelopes: tuple[bytes, ...]) -> None:
    for body in envelopes:
        request = wsman.parse_request(body)
        parser = OPERATION_PARSERS.get(wsman.Action(request.action))
        if parser is not None:
            parser(request)


@given(data=st.data())
@fuzz_settings()
def test_mutated_envelopes_parse_or_fault(envelopes: tuple[bytes, ...],
                                          data: st.DataObject) -> None:
    check_parse(data.draw(mutated_envelope(envelopes)))


@given(st.one_of(st.binary(max_size=512), hostile_text.map(
    lambda text: text.encode("utf-8", "surrogatepass"))))
@example(b'<?xml version="1.0" encoding="bogus"?><s:Envelope/>')
@example(b'<?xml version="1.0" encoding="utf-7"?><a/>')
@example(b'<?xml version="1.0" encoding="idna"?><a/>')
@example(b'<!DOCTYPE s [<!ENTITY a "b">]><a>&a;</a>')
@example(b"\xef\xbb\xbf<a/>")
@fuzz_settings()
def test_random_bodies_parse_or_fault(body: bytes) -> None:
    check_parse(body)


@pytest.mark.parametrize("timeout", ["P" + "9" * 400 + "D", "PT99999999999S", "PT9223372037S",
                                     "PT86401S"])
def test_operation_timeouts_no_wait_can_take_are_refused(envelopes: tuple[bytes, ...],
                                                         timeout: str) -> None:
    """Found by fuzzing: the lab waited with ``Condition.wait(timeout)``, which raises
    OverflowError beyond ``threading.TIMEOUT_MAX`` (infinite for ``P999...D``)."""
    receive = next(body for body in envelopes
                   if wsman.parse_request(body).action == wsman.Action.RECEIVE)
    body = re.sub(rb"PT5S", timeout.encode(), receive)
    with pytest.raises(wsman.WSManFault) as raised:
        wsman.parse_request(body)
    assert raised.value.code == 0x8033803A
    assert wsman.parse_request(re.sub(rb"PT5S", b"PT86400S", receive)).operation_timeout == 86400


# ---------------------------------------------------------------------------------------------
# HTTP end to end
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    raw: bytes


def exchange(lab: LabServer, request: bytes) -> Answer:
    """Send ``request``, half-close, read everything until the server closes."""
    with socket.create_connection((lab.host, lab.port), timeout=SOCKET_TIMEOUT) as connection:
        try:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        chunks: list[bytes] = []
        while True:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                pytest.fail(f"no end of answer within {SOCKET_TIMEOUT} s to {request[:200]!r}")
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    return parse_answer(raw)


def parse_answer(raw: bytes) -> Answer:
    """The last final (non-1xx) response in ``raw`` (keep-alive may hold several)."""
    rest = raw
    answer = Answer(None, {}, raw, raw)
    while rest.startswith(b"HTTP/"):
        head, _, after = rest.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        body, rest = after[:length], after[length:]
        if status >= 200:
            answer = Answer(status, headers, body, raw)
    return answer


ALLOWED_STATUSES = {200, 400, 401, 404, 405, 408, 411, 413, 414, 431, 500, 501, 505}


def check_answer(answer: Answer, request: bytes) -> None:
    assert b"Traceback" not in answer.raw, answer.raw[:2000]
    if answer.status is None:
        if answer.raw:  # before the version is known: http.server's page, no status line
            code = re.search(rb"Error code: (\d+)", answer.raw)
            assert code is not None, answer.raw[:500]
            assert int(code.group(1)) in ALLOWED_STATUSES, answer.raw[:500]
            record("error page without a status line")
        else:  # silent only for a request line without words, or HTTP/0.9 (no headers)
            words = request.split(b"\n", 1)[0].decode("iso-8859-1").split()
            assert not words or words[-1].startswith("HTTP/0"), request[:300]
            record("closed without an answer")
        return
    record(f"HTTP {answer.status}")
    assert answer.status in ALLOWED_STATUSES, (answer.status, request[:300])
    if answer.status == 500:
        fault = ET.fromstring(answer.body)  # noqa: S314 - the lab's own output
        assert fault.find("s:Body/s:Fault", NAMESPACES) is not None
        detail = fault.find(f"s:Body/s:Fault/s:Detail/{{{wsman.NS_FAULT}}}WSManFault",
                            NAMESPACES)
        assert detail is not None
        assert detail.get("Code", "").isdigit()
    elif answer.status == 200 and answer.body:
        envelope = ET.fromstring(answer.body)  # noqa: S314 - the lab's own output
        assert envelope.find("s:Body/s:Fault", NAMESPACES) is None


def basic_authorization(lab: LabServer) -> str:
    user = lab.users[0]
    token = base64.b64encode(f"{user.qualified_name}:{user.password}".encode()).decode()
    return f"Basic {token}"


def http_request(*, method: bytes = b"POST", path: bytes = b"/PowerShell/",
                 version: bytes = b"HTTP/1.1", headers: list[tuple[bytes, bytes]],
                 body: bytes = b"") -> bytes:
    head = b"%s %s %s\r\n" % (method, path, version)
    head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
    return head + b"\r\n" + body


BAD_TOKENS = [b"", b"!!!", b"====", b"QUJD", b"TlRMTVNTUAAB", b"YII=", b"a" * 9000,
              base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\xff" * 64),
              base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00" + b"\x00" * 28),
              base64.b64encode(b"\x60\x82\xff\xff" + b"\x06" * 20),
              base64.b64encode(b"\xa1\x03\x0a\x01\x01")]


SHELL_ACTIONS = (wsman.Action.RECEIVE, wsman.Action.COMMAND, wsman.Action.SEND,
                 wsman.Action.SIGNAL, wsman.Action.GET)
SHORT_OR_INVALID_TIMEOUTS = ["PT0.05S", "PT0.1S", "PT0.001S", "P" + "9" * 400 + "D",
                             "PT99999999999S", "PT9223372037S", "PT86401S", "-PT1S", "PT-1S",
                             "PT1E9S", "garbage", "P1Y"]
"""OperationTimeouts for requests to the live shell: short (no long-poll stalls the suite),
beyond what a wait can take, or malformed."""


@st.composite
def live_shell_envelope(draw: st.DrawFn, envelopes: tuple[bytes, ...], shell_id: str) -> bytes:
    """A captured shell request aimed at the live shell, mutated, with a short or invalid
    OperationTimeout."""
    shell_requests = [body for body in envelopes
                      if wsman.parse_request(body).action in set(SHELL_ACTIONS)]
    root = ET.fromstring(draw(st.sampled_from(shell_requests)))  # noqa: S314 - pypsrp's
    action = root.find("s:Header/a:Action", NAMESPACES)
    if action is not None and draw(st.integers(0, 3)) == 0:
        action.text = draw(st.sampled_from([a.value for a in SHELL_ACTIONS]))
    for selector in root.iter(f"{{{wsman.NS_WSMAN}}}Selector"):
        selector.text = shell_id
    for stream in root.iter(f"{{{wsman.NS_SHELL}}}DesiredStream"):
        if draw(st.booleans()):
            stream.attrib.pop("CommandId", None)  # the pool's own stream: a long-poll
    body = ET.tostring(root)
    if draw(st.booleans()):
        body = draw(mutated_envelope((body,)))
    return with_short_timeout(draw, body)


def with_short_timeout(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with a short or invalid OperationTimeout, so that a Receive reaching a shell
    (the live one, or one a replayed Create revived) never long-polls for seconds."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - our own mutation of pypsrp's output
    except (ET.ParseError, ValueError, LookupError):
        return body  # the lab cannot read it either: no long-poll
    header = root.find("s:Header", NAMESPACES)
    if header is not None:  # without one the lab faults at once; else never the 60 s default
        timeout = header.find("w:OperationTimeout", NAMESPACES)
        if timeout is None:
            timeout = ET.SubElement(header, f"{{{wsman.NS_WSMAN}}}OperationTimeout")
        timeout.text = draw(st.sampled_from(SHORT_OR_INVALID_TIMEOUTS))
    return ET.tostring(root)


@st.composite
def malformed_request(draw: st.DrawFn, lab: LabServer, envelopes: tuple[bytes, ...],
                      shell_id: str) -> bytes:
    """One malformed (or hostile) raw HTTP request to the lab."""
    host = (b"Host", f"{lab.host}:{lab.port}".encode())
    authorization = (b"Authorization", basic_authorization(lab).encode())
    soap = (b"Content-Type", b"application/soap+xml;charset=UTF-8")
    kind = draw(st.sampled_from([
        "garbage", "request_line", "content_length", "huge_header", "many_headers",
        "chunked", "authorization", "truncated", "not_xml", "envelope", "encrypted", "path",
        "method", "expect", "live", "live",
    ]))
    record(f"request: {kind}")
    if kind == "garbage":
        return draw(st.binary(max_size=300)) + draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))
    if kind == "request_line":
        line = draw(st.one_of(
            st.binary(max_size=80).filter(lambda line: b"\n" not in line),
            st.sampled_from([b"POST", b"POST /PowerShell/", b"POST /PowerShell/ HTTP/2.0",
                             b"POST /PowerShell/ HTTP/0.9", b"POST /PowerShell/ HTTP/1.1 x",
                             b"POST  HTTP/1.1", b"POST http://x/ HTTP/1.1",
                             b"POST //[x/PowerShell/ HTTP/1.1", b"\x00 / HTTP/1.1",
                             b"POST /" + b"a" * 70000 + b" HTTP/1.1"]),
        ))
        return line + b"\r\n" + b"\r\n".join(b"%s: %s" % header for header in (host,)) + \
            b"\r\n\r\n"
    if kind == "content_length":
        values = draw(st.lists(st.sampled_from(
            [b"-1", b"abc", b"99999999999", b"1e3", b"", b" 5", b"5, 5", b"0x10", b"+5",
             b"67108865", b"\xd9\xa3", b"5" * 5000, b"10", b"0"]), min_size=1, max_size=2))
        return http_request(headers=[host, authorization, soap,
                                     *[(b"Content-Length", value) for value in values]],
                            body=draw(st.binary(max_size=20)))
    if kind == "huge_header":
        size = draw(st.sampled_from([1000, 65535, 65537, 200_000]))
        return http_request(headers=[host, (b"X-Big", b"a" * size), (b"Content-Length", b"0")])
    if kind == "many_headers":
        count = draw(st.sampled_from([99, 101, 500]))
        return http_request(headers=[host, *[(b"X-%d" % i, b"v") for i in range(count)],
                                     (b"Content-Length", b"0")])
    if kind == "chunked":
        return http_request(headers=[host, authorization, soap,
                                     (b"Transfer-Encoding", draw(st.sampled_from(
                                         [b"chunked", b"gzip, chunked", b"Chunked", b"x"])))],
                            body=draw(st.sampled_from([b"zz\r\nabc\r\n", b"5\r\nab", b"",
                                                       b"ffffffffffffffff\r\n"])))
    if kind == "authorization":
        scheme = draw(st.sampled_from([b"Basic", b"basic", b"NTLM", b"Negotiate", b"Bearer",
                                       b"", b"Basic  ", b"Kerberos"]))
        token = draw(st.one_of(
            st.sampled_from(BAD_TOKENS),
            st.binary(max_size=40).map(base64.b64encode),
            st.sampled_from([base64.b64encode(b"admin"), base64.b64encode(b":"),
                             base64.b64encode(b"\xff\xfe:x"),
                             base64.b64encode(b"CONTOSO\\admin:wrong"),
                             base64.b64encode(b"\\:"), base64.b64encode(b"@:")]),
        ))
        body = draw(st.sampled_from(envelopes))
        return http_request(headers=[host, (b"Authorization", scheme + b" " + token), soap,
                                     (b"Content-Length", b"%d" % len(body))], body=body)
    if kind == "truncated":
        body = draw(st.sampled_from(envelopes))
        cut = draw(st.integers(0, len(body)))
        return http_request(headers=[host, authorization, soap,
                                     (b"Content-Length", b"%d" % len(body))], body=body[:cut])
    if kind == "not_xml":
        body = draw(st.one_of(st.binary(min_size=1, max_size=300),
                              st.sampled_from([b"{}", b"<", b"<a>", b"\xef\xbb\xbf",
                                               b"<?xml version='1.0' encoding='bogus'?><a/>"])))
        return http_request(headers=[host, authorization, soap,
                                     (b"Content-Length", b"%d" % len(body))], body=body)
    if kind == "live":
        body = draw(live_shell_envelope(envelopes, shell_id))
        return http_request(headers=[host, authorization, soap,
                                     (b"Content-Length", b"%d" % len(body))], body=body)
    if kind == "envelope":
        body = with_short_timeout(draw, draw(mutated_envelope(envelopes)))
        return http_request(headers=[host, authorization, soap,
                                     (b"Content-Length", b"%d" % len(body))], body=body)
    if kind == "encrypted":
        body = draw(st.binary(max_size=200))
        content_type = draw(st.sampled_from([
            b'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
            b'boundary="Encrypted Boundary"', b"multipart/encrypted",
            b"multipart/x-multi-encrypted;boundary=",
        ]))
        return http_request(headers=[host, authorization, (b"Content-Type", content_type),
                                     (b"Content-Length", b"%d" % len(body))], body=body)
    if kind == "path":
        path = draw(st.one_of(
            st.sampled_from([b"/", b"/PowerShell/NOPE/", b"/PowerShell/EX01/x/", b"//[x",
                             b"/PowerShell/%00/", b"/PowerShell/../../etc/passwd", b"*",
                             b"/PowerShell?x=" + b"%" * 100, b"/wsman"]),
            st.binary(min_size=1, max_size=60).filter(
                lambda path: not re.search(rb"[\s]", path))))
        return http_request(path=path, headers=[host, authorization, (b"Content-Length", b"0")])
    if kind == "method":
        method = draw(st.sampled_from([b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS",
                                       b"TRACE", b"CONNECT", b"PATCH", b"BREW"]))
        return http_request(method=method, headers=[host, (b"Content-Length", b"0")])
    body = draw(st.sampled_from(envelopes))
    return http_request(headers=[host, authorization, soap, (b"Expect", b"100-continue"),
                                 (b"Content-Length", b"%d" % len(body))], body=body)


class ErrorRecords(logging.Handler):
    """Records of handler failures: ``handle_error`` (with exc_info) and ``log.exception``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is None:
            return
        error = record.exc_info[1]
        if isinstance(error, ConnectionError | TimeoutError | BrokenPipeError):
            return  # the client half-closed or went away: not a server failure
        self.failures.append(self.format(record))


@pytest.fixture
def handler_failures() -> Iterator[ErrorRecords]:
    logger = logging.getLogger("bot.lab")
    records = ErrorRecords()
    records.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous)


@given(data=st.data())
@fuzz_settings(deadline_ms=None)
def test_malformed_http_requests_get_clean_answers(
        basic_lab: LabServer, envelopes: tuple[bytes, ...], live_shell: str,
        handler_failures: ErrorRecords, data: st.DataObject) -> None:
    replayable = tuple(body.replace(b">PT5S<", b">PT0.05S<") for body in envelopes)
    request = data.draw(malformed_request(basic_lab, replayable, live_shell))
    check_answer(exchange(basic_lab, request), request)
    assert not handler_failures.failures, handler_failures.failures[-1]


@given(token=st.one_of(st.sampled_from(BAD_TOKENS), st.binary(max_size=120).map(base64.b64encode)),
       scheme=st.sampled_from([b"Negotiate", b"NTLM", b"negotiate"]))
@fuzz_settings(deadline_ms=None, scale=0.25)
def test_bad_negotiate_tokens_are_refused(negotiate_lab: LabServer,
                                          handler_failures: ErrorRecords, token: bytes,
                                          scheme: bytes) -> None:
    request = http_request(headers=[(b"Host", b"lab"), (b"Authorization", scheme + b" " + token),
                                    (b"Content-Length", b"0")])
    answer = exchange(negotiate_lab, request)
    check_answer(answer, request)
    assert answer.status == 401
    assert not handler_failures.failures, handler_failures.failures[-1]


def test_labs_still_serve_a_real_client_afterwards(basic_lab: LabServer,
                                                   negotiate_lab: LabServer,
                                                   envelopes: tuple[bytes, ...]) -> None:
    """Runs after the fuzz tests above (file order): both labs answer pypsrp as before."""
    assert basic_lab.request_count > len(envelopes)
    for lab in (basic_lab, negotiate_lab):
        output = run_a_command(lab)
        assert output
        assert "EX01" in str(output[0])


def test_error_messages_are_readable() -> None:
    for fault in (wsman.invalid_xml(), wsman.missing_header("MessageID"),
                  wsman.invalid_parameter("x"), wsman.action_not_supported("\x00")):
        assert_readable(fault.message)
