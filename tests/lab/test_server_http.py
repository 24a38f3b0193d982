"""The lab server's HTTP surface with a raw client: status codes, headers, faults, shutdown."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import NAMESPACES, WSMan

from bot.lab import wsman
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state

MESSAGE_ID = "uuid:0A0B0C0D-0000-4000-8000-000000000001"


def parse_xml(data: bytes) -> ET.Element:
    """Parse XML the lab itself produced."""
    return ET.fromstring(data)  # noqa: S314 - the lab's own responses


@pytest.fixture(scope="module")
def lab() -> Iterator[LabServer]:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="basic") as server:
        yield server


def basic_header(lab: LabServer) -> dict[str, str]:
    user = lab.users[0]
    token = base64.b64encode(f"{user.qualified_name}:{user.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def envelope(action: str, body: str = "", *, shell_id: str | None = None,
             resource_uri: str = wsman.EXCHANGE_RESOURCE_URI) -> bytes:
    selector = (f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
                "</w:SelectorSet>") if shell_id else ""
    return (
        f'<s:Envelope xmlns:s="{wsman.NS_SOAP}" xmlns:a="{wsman.NS_ADDRESSING}" '
        f'xmlns:w="{wsman.NS_WSMAN}" xmlns:rsp="{wsman.NS_SHELL}"><s:Header>'
        f"<a:Action>{action}</a:Action><a:MessageID>{MESSAGE_ID}</a:MessageID>"
        f"<w:OperationTimeout>PT5S</w:OperationTimeout>"
        f"<w:ResourceURI>{resource_uri}</w:ResourceURI>{selector}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def post(lab: LabServer, body: bytes, *, path: str = "/PowerShell/",
         headers: dict[str, str] | None = None,
         connection: http.client.HTTPConnection | None = None
         ) -> tuple[http.client.HTTPResponse, bytes]:
    conn = connection or http.client.HTTPConnection(lab.host, lab.port, timeout=10)
    conn.request("POST", path, body=body, headers={
        "Content-Type": "application/soap+xml;charset=UTF-8", **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def fault_code(body: bytes) -> int:
    root = parse_xml(body)
    fault = root.find("s:Body/s:Fault/s:Detail/wsmanfault:WSManFault", NAMESPACES)
    assert fault is not None
    assert root.findtext("s:Header/wsa:RelatesTo", namespaces=NAMESPACES) in (MESSAGE_ID, None)
    return int(fault.get("Code", "0"))


def test_malformed_xml_is_a_wsman_fault(lab: LabServer) -> None:
    response, body = post(lab, b"<s:Envelope this is not xml", headers=basic_header(lab))
    assert response.status == 500
    assert response.getheader("Content-Type", "").startswith("application/soap+xml")
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert fault_code(body) == 0x80338043


@pytest.mark.parametrize(("request_body", "code"), [
    (envelope("http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"), 0x80338013),
    (envelope(wsman.Action.RECEIVE, '<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream>'
              "</rsp:Receive>", shell_id="5C3B2A51-0000-4000-8000-000000000000"), 0x8033805B),
    (envelope(wsman.Action.CREATE, resource_uri="http://schemas.microsoft.com/powershell/"
              "Microsoft.PowerShell"), 0x8033803B),
    (envelope(wsman.Action.CREATE, "<rsp:Shell/>"), 0x8033803A),
    (envelope(wsman.Action.CREATE, f'<rsp:Shell><creationXml xmlns="{wsman.NS_POWERSHELL}">'
              f"{base64.b64encode(b'garbage').decode()}</creationXml></rsp:Shell>"), 0x80338003),
])
def test_requests_the_lab_cannot_serve_get_windows_faults(lab: LabServer, request_body: bytes,
                                                          code: int) -> None:
    response, body = post(lab, request_body, headers=basic_header(lab))
    assert response.status == 500
    assert fault_code(body) == code
    root = parse_xml(body)
    assert root.findtext("s:Header/wsa:RelatesTo", namespaces=NAMESPACES) == MESSAGE_ID
    assert b"Traceback" not in body


def test_a_failed_create_leaves_no_shell(lab: LabServer) -> None:
    before = lab.shell_count
    post(lab, envelope(wsman.Action.CREATE, f'<rsp:Shell><creationXml xmlns="'
                       f'{wsman.NS_POWERSHELL}">AAAA</creationXml></rsp:Shell>'),
         headers=basic_header(lab))
    assert lab.shell_count == before


def test_401_404_405_all_carry_content_length_on_one_keep_alive_connection(
        lab: LabServer) -> None:
    conn = http.client.HTTPConnection(lab.host, lab.port, timeout=10)
    unauthorised, body_401 = post(lab, envelope(wsman.Action.GET), connection=conn)
    missing, _ = post(lab, b"", path="/EWS/Exchange.asmx", headers=basic_header(lab),
                      connection=conn)
    conn.request("GET", "/PowerShell/")
    wrong_method = conn.getresponse()
    wrong_method.read()

    assert unauthorised.status == 401
    assert body_401 == b""
    assert unauthorised.getheader("Content-Length") == "0"
    assert unauthorised.getheader("WWW-Authenticate", "").startswith("Basic")
    assert missing.status == 404
    assert missing.getheader("Content-Length") == "0"
    assert wrong_method.status == 405
    assert wrong_method.getheader("Content-Length") == "0"
    assert not unauthorised.will_close
    assert not missing.will_close


def test_ntlm_server_asks_for_ntlm_and_refuses_unauthenticated_encrypted_bodies() -> None:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as server:
        response, body = post(server, b"--Encrypted Boundary\r\nnonsense", headers={
            "Content-Type": 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-'
                            'encrypted";boundary="Encrypted Boundary"'})
        garbage, _ = post(server, b"", headers={"Authorization": "NTLM not-base64!"})
    assert response.status == 401
    assert body == b""
    assert response.getheader("WWW-Authenticate") == "NTLM"
    assert garbage.status == 401


def test_chunked_bodies_are_refused(lab: LabServer) -> None:
    # The whole request goes out in one write: the server answers 411 and closes without
    # reading the body, which would otherwise race a client still sending chunks.
    headers = "".join(f"{name}: {value}\r\n" for name, value in basic_header(lab).items())
    request = (f"POST /PowerShell/ HTTP/1.1\r\nHost: {lab.host}\r\n{headers}"
               "Transfer-Encoding: chunked\r\n\r\n4\r\n<a/>\r\n0\r\n\r\n").encode()
    with socket.create_connection((lab.host, lab.port), timeout=10) as connection:
        connection.sendall(request)
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"411"


def test_request_count_counts_every_http_request(lab: LabServer) -> None:
    before = lab.request_count
    post(lab, envelope(wsman.Action.GET))
    post(lab, b"nonsense", headers=basic_header(lab))
    assert lab.request_count - before == 2


def test_stop_wakes_a_waiting_receive_and_closes_connections() -> None:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    server = LabServer(organisation, auth="basic")
    server.start()
    user = server.users[0]
    client = WSMan(server.host, port=server.port, path="PowerShell/", ssl=False, auth="basic",
                   username=user.qualified_name, password=user.password, encryption="never",
                   operation_timeout=30, read_timeout=40)
    pool = RunspacePool(client, configuration_name="Microsoft.Exchange")
    pool.open()
    outcome: list[BaseException | None] = []

    def wait_for_nothing() -> None:
        try:
            pool.shell.receive("stdout")
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_for_nothing)
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    waiter.join(timeout=10)
    assert time.monotonic() - started < 3
    assert len(outcome) == 1
    assert outcome[0] is not None
    assert server.shell_count == 0


def test_connections_beyond_the_cap_are_closed_and_the_lab_keeps_serving() -> None:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="basic", max_connections=2) as capped:
        held = [http.client.HTTPConnection(capped.host, capped.port, timeout=10)
                for _ in range(2)]
        for connection in held:
            response, _ = post(capped, b"", connection=connection)
            assert response.status == 401
        extra = socket.create_connection((capped.host, capped.port), timeout=10)
        extra.sendall(b"POST /PowerShell/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert extra.recv(100) == b""
        extra.close()
        assert capped.refused_connections == 1
        held[0].close()
        deadline = time.monotonic() + 10
        status = None
        while status is None and time.monotonic() < deadline:
            try:  # the closed connection's thread frees its place when it notices
                status = post(capped, b"")[0].status
            except ConnectionError:
                time.sleep(0.01)
        assert status == 401
        held[1].close()


def test_connections_stuck_before_their_tls_handshake_count_against_the_cap() -> None:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="basic", https=True, max_connections=2) as capped:
        idle = [socket.create_connection((capped.host, capped.port), timeout=10)
                for _ in range(2)]
        deadline = time.monotonic() + 10
        refused = False
        while not refused and time.monotonic() < deadline:
            extra = socket.create_connection((capped.host, capped.port), timeout=10)
            try:
                refused = extra.recv(1) == b""
            except ConnectionResetError:
                refused = True
            except TimeoutError:
                pass
            finally:
                extra.close()
        assert refused
        assert capped.refused_connections >= 1
        for connection in idle:
            connection.close()
