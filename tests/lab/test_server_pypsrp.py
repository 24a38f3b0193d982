"""The lab server with the real, unmodified pypsrp client over loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from cryptography import x509
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.host import PSHost, PSHostUserInterface
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import SignalCode
from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan

from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer, LabServerError
from bot.lab.state import LabFaults, LabState, LabUser, LabWSManFault, default_state, parse_state

NOW = datetime.now(UTC)
EXCHANGE = "Microsoft.Exchange"
TWO_SERVERS = """
tenant: contoso
cas:
  - {id: public-root, public: true}
servers:
  - name: EX01
    fqdn: ex01.contoso.com
    certificates:
      - {id: cert-1, issuer: public-root, subject: CN=ex01.contoso.com,
         domains: [ex01.contoso.com], not_before: -10d, not_after: +300d, services: [IIS, SMTP]}
  - name: EX02
    fqdn: ex02.contoso.com
    certificates:
      - {id: cert-2, issuer: self, subject: CN=EX02, domains: [EX02, ex02.contoso.com],
         not_before: -10d, not_after: +300d, services: [IMAP, POP, IIS, SMTP]}
users:
  - {domain: CONTOSO, name: admin, password: "Lab-Passw0rd!"}
  - {name: helpdesk, password: "Colon:Passw0rd"}
"""


def organisation(state: LabState | None = None) -> ExchangeOrganisation:
    return ExchangeOrganisation(state or default_state(now=NOW), clock=lambda: datetime.now(UTC))


@pytest.fixture(scope="module")
def ntlm_lab() -> Iterator[LabServer]:
    with LabServer(organisation(), auth="ntlm") as lab:
        yield lab


@pytest.fixture(scope="module")
def basic_lab() -> Iterator[LabServer]:
    with LabServer(organisation(), auth="basic") as lab:
        yield lab


@pytest.fixture
def fresh_basic_lab() -> Iterator[LabServer]:
    with LabServer(organisation(), auth="basic") as lab:
        yield lab


def connect(lab: LabServer, *, user: LabUser | None = None, password: str | None = None,
            username: str | None = None, path: str = "PowerShell/", **options: Any) -> WSMan:
    account = user or lab.users[0]
    auth = options.pop("auth", lab.auth)
    if auth == "basic" and not lab.https:
        options.setdefault("encryption", "never")
    return WSMan(lab.host, port=lab.port, path=path, ssl=lab.https, auth=auth,
                 username=username or account.qualified_name,
                 password=password if password is not None else account.password,
                 cert_validation=False, **options)


def invoke(pool: RunspacePool, cmdlet: str, *parameters: tuple[str, Any]) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in parameters:
        ps.add_parameter(name, value)
    ps.invoke()
    return ps


def assert_exchange_certificates(ps: PowerShell, fqdn: str) -> list[x509.Certificate]:
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors
    assert not ps.streams.error
    assert ps.output
    certificates = []
    for item in ps.output:
        assert "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate" \
            in item.types[0]
        assert isinstance(item.extended_properties["SerializationData"], bytes)
        assert item.extended_properties["PSComputerName"] == fqdn
        certificates.append(x509.load_der_x509_certificate(item.adapted_properties["RawData"]))
    return certificates


def thumbprint(item: Any) -> str:
    raw = item.adapted_properties["RawData"]
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest().upper()


# --------------------------------------------------------------------------- auth modes


def test_ntlm_with_message_encryption(ntlm_lab: LabServer) -> None:
    wsman = connect(ntlm_lab)
    with RunspacePool(wsman, configuration_name=EXCHANGE) as pool:
        ps = invoke(pool, "Get-ExchangeCertificate")
        assert wsman.transport.wrap_required
        assert wsman.transport.encryption is not None

    certificates = assert_exchange_certificates(ps, "ex01.contoso.com")
    assert any(c.subject.rfc4514_string() == "CN=mail.contoso.com" for c in certificates)
    entries = [e for e in ntlm_lab.organisation.call_log() if e.cmdlet == "Get-ExchangeCertificate"]
    assert entries
    assert entries[-1].user == "CONTOSO\\admin"


def test_negotiate() -> None:
    with LabServer(organisation(), auth="negotiate") as lab:
        wsman = connect(lab, auth="negotiate")
        with RunspacePool(wsman, configuration_name=EXCHANGE) as pool:
            ps = invoke(pool, "Get-ExchangeServer")
        assert wsman.transport.encryption is not None
    assert [item.adapted_properties.get("Name") or item.to_string for item in ps.output]


def test_basic_without_encryption_accepts_a_name_without_domain(basic_lab: LabServer) -> None:
    wsman = connect(basic_lab, username=basic_lab.users[0].name)
    with RunspacePool(wsman, configuration_name=EXCHANGE) as pool:
        ps = invoke(pool, "Get-ExchangeCertificate")
    assert_exchange_certificates(ps, "ex01.contoso.com")
    assert basic_lab.organisation.call_log()[-1].user == "CONTOSO\\admin"


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_https_with_a_self_signed_certificate(auth: str) -> None:
    with LabServer(organisation(), auth=auth, https=True) as lab:
        served = ssl.get_server_certificate((lab.host, lab.port))
        with RunspacePool(connect(lab), configuration_name=EXCHANGE) as pool:
            ps = invoke(pool, "Get-ExchangeCertificate")
        assert lab.url.startswith("https://")
        assert ssl.PEM_cert_to_DER_cert(served) == lab.tls_certificate_der
    assert_exchange_certificates(ps, "ex01.contoso.com")


@pytest.mark.parametrize("auth", ["ntlm", "basic", "negotiate"])
def test_wrong_password_is_an_authentication_error(auth: str, ntlm_lab: LabServer,
                                                   basic_lab: LabServer) -> None:
    lab = basic_lab if auth == "basic" else ntlm_lab
    wsman = connect(lab, password="not-the-password", auth=auth)
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman, configuration_name=EXCHANGE).open()


def test_unknown_user_is_an_authentication_error(ntlm_lab: LabServer) -> None:
    wsman = connect(ntlm_lab, username="CONTOSO\\mallory", password="whatever")
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman, configuration_name=EXCHANGE).open()


def test_servers_with_different_passwords_for_one_user_coexist(ntlm_lab: LabServer) -> None:
    other_state = default_state(now=NOW)
    assert other_state.users[0].password != ntlm_lab.users[0].password
    with LabServer(organisation(other_state), auth="ntlm") as other:
        for lab in (ntlm_lab, other, ntlm_lab, other):
            with RunspacePool(connect(lab), configuration_name=EXCHANGE) as pool:
                assert invoke(pool, "Get-ExchangeServer").output
        with pytest.raises(AuthenticationError):
            RunspacePool(connect(other, password=ntlm_lab.users[0].password),
                         configuration_name=EXCHANGE).open()


def test_ntlm_refuses_users_it_cannot_store() -> None:
    lab = LabServer(organisation(parse_state(TWO_SERVERS, source="t", now=NOW)), auth="ntlm")
    with pytest.raises(LabServerError, match="helpdesk"):
        lab.start()


# --------------------------------------------------------------------------- PSRP behaviour


def test_scripts_are_refused_by_the_no_language_runspace(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-ExchangeCertificate | Where-Object { $_.Services -match 'SMTP' }")
        ps.invoke()
    assert ps.had_errors
    assert ps.state == PSInvocationState.FAILED
    assert "The syntax is not supported by this runspace" in str(ps.streams.error[0])


def test_non_terminating_error_keeps_the_pipeline_completed(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        ps = invoke(pool, "Get-ExchangeCertificate", ("Thumbprint", "ABCDEF0123"))
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors
    assert "ABCDEF0123" in str(ps.streams.error[0])


def test_terminating_error_fails_the_pipeline(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        ps = invoke(pool, "Get-Mailbox")
        after = invoke(pool, "Get-ExchangeServer")
    assert ps.state == PSInvocationState.FAILED
    assert ps.had_errors
    assert "Get-Mailbox" in str(ps.streams.error[0])
    assert after.state == PSInvocationState.COMPLETED


class AnsweringUI(PSHostUserInterface):
    def __init__(self, answer: int) -> None:
        super().__init__()
        self.answer = answer
        self.prompts: list[tuple[str, str, list[str], int]] = []

    def PromptForChoice(self, runspace: Any, pipeline: Any, caption: str, message: str,
                        choices: list[Any], default_choice: int) -> int:
        labels = [c.extended_properties["label"] for c in choices]
        self.prompts.append((caption, message, labels, default_choice))
        return self.answer


@pytest.mark.parametrize(("answer", "outcome"), [(0, "confirmed"), (2, "declined")])
def test_confirmation_is_asked_of_a_client_with_a_host(fresh_basic_lab: LabServer, answer: int,
                                                       outcome: str) -> None:
    ui = AnsweringUI(answer)
    host = PSHost(None, None, False, "lab-test", None, ui, "1.0")
    with RunspacePool(connect(fresh_basic_lab), configuration_name=EXCHANGE, host=host) as pool:
        public = next(c for c in invoke(pool, "Get-ExchangeCertificate").output
                      if "CN=mail.contoso.com" in c.to_string)
        ps = invoke(pool, "Enable-ExchangeCertificate", ("Thumbprint", thumbprint(public)),
                    ("Services", "SMTP"))

    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.streams.error
    ((caption, message, labels, default),) = ui.prompts
    assert caption == "Confirm"
    assert message.startswith("Overwrite the existing default SMTP certificate?")
    assert labels == ["&Yes", "Yes to &All", "&No", "No to A&ll"]
    assert labels[default] == "&No"
    assert outcome in fresh_basic_lab.organisation.call_log()[-1].outcome


def test_confirmation_without_a_host_is_an_error(fresh_basic_lab: LabServer) -> None:
    with RunspacePool(connect(fresh_basic_lab), configuration_name=EXCHANGE) as pool:
        public = next(c for c in invoke(pool, "Get-ExchangeCertificate").output
                      if "CN=mail.contoso.com" in c.to_string)
        ps = invoke(pool, "Enable-ExchangeCertificate", ("Thumbprint", thumbprint(public)),
                    ("Services", "SMTP"))
    assert ps.had_errors
    assert "does not support user interaction" in str(ps.streams.error[0])


def test_setting_the_pool_size_uses_pypsrps_call_ids(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        pool.max_runspaces = 4
        pool.min_runspaces = 2
        assert (pool.max_runspaces, pool.min_runspaces) == (4, 2)
        assert pool.get_available_runspaces() == 4


def test_is_alive_and_unknown_shells(basic_lab: LabServer) -> None:
    wsman = connect(basic_lab)
    pool = RunspacePool(wsman, configuration_name=EXCHANGE)
    pool.open()
    assert pool.is_alive()
    selectors = pool.shell._selector_set
    pool.close()
    assert selectors is not None

    with pytest.raises(WSManFaultError) as raised:
        wsman.get("http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
                  selector_set=selectors)
    assert raised.value.code == 0x8033805B
    unknown = SelectorSet()
    unknown.add_option("ShellId", "00000000-0000-0000-0000-000000000001")
    with pytest.raises(WSManFaultError) as raised:
        wsman.signal(f"http://schemas.microsoft.com/powershell/{EXCHANGE}",
                     _signal_body("00000000-0000-0000-0000-000000000002"),
                     selector_set=unknown)
    assert raised.value.code == 0x8033805B


def _signal_body(command_id: str) -> ET.Element:
    rsp = NAMESPACES["rsp"]
    signal = ET.Element(f"{{{rsp}}}Signal", attrib={"CommandId": command_id})
    ET.SubElement(signal, f"{{{rsp}}}Code").text = SignalCode.TERMINATE
    return signal


def test_other_configurations_do_not_exist(basic_lab: LabServer) -> None:
    with pytest.raises(WSManFaultError) as raised:
        RunspacePool(connect(basic_lab), configuration_name="Microsoft.PowerShell").open()
    assert raised.value.code == 0x8033803B
    assert "Microsoft.PowerShell" in str(raised.value.reason)


def test_idle_pool_receive_times_out_with_the_windows_fault(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        started = time.monotonic()
        with pytest.raises(WSManFaultError) as raised:
            pool.shell.receive("stdout", timeout=1)
        assert raised.value.code == 0x80338029
        assert 0.9 <= time.monotonic() - started < 3


def test_operation_timeout_is_retried_by_poll_invoke(basic_lab: LabServer) -> None:
    basic_lab.faults = LabFaults(slow_cmdlets={"Get-ExchangeServer": 1.3})
    try:
        wsman = connect(basic_lab, operation_timeout=1)
        with RunspacePool(wsman, configuration_name=EXCHANGE) as pool:
            before = basic_lab.request_count
            started = time.monotonic()
            ps = invoke(pool, "Get-ExchangeServer")
            elapsed = time.monotonic() - started
            requests_used = basic_lab.request_count - before
    finally:
        basic_lab.faults = LabFaults()
    assert ps.state == PSInvocationState.COMPLETED
    assert ps.output
    assert elapsed >= 1.3
    assert requests_used >= 3


def test_stopping_a_slow_pipeline(basic_lab: LabServer) -> None:
    basic_lab.faults = LabFaults(slow_cmdlets={"Get-Queue": 5})
    try:
        with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
            slow = PowerShell(pool)
            slow.add_cmdlet("Get-Queue")
            started = time.monotonic()
            slow.begin_invoke()
            slow.stop()
            after = invoke(pool, "Get-ExchangeServer")
            elapsed = time.monotonic() - started
    finally:
        basic_lab.faults = LabFaults()
    assert slow.state == PSInvocationState.STOPPED
    assert after.state == PSInvocationState.COMPLETED
    assert elapsed < 2


def test_each_server_has_its_own_path() -> None:
    state = parse_state(TWO_SERVERS, source="two-servers", now=NOW)
    with LabServer(organisation(state), auth="basic") as lab:
        assert lab.url_for("ex02").endswith("/PowerShell/EX02/")
        results = {}
        for name, path in (("EX01", "PowerShell/"), ("EX02", "PowerShell/EX02/")):
            with RunspacePool(connect(lab, path=path), configuration_name=EXCHANGE) as pool:
                results[name] = invoke(pool, "Get-ExchangeCertificate")
        response = requests.post(f"{lab.url}EX99/", data=b"", timeout=5)
    ex01 = assert_exchange_certificates(results["EX01"], "ex01.contoso.com")
    ex02 = assert_exchange_certificates(results["EX02"], "ex02.contoso.com")
    assert [c.subject.rfc4514_string() for c in ex01] == ["CN=ex01.contoso.com"]
    assert [c.subject.rfc4514_string() for c in ex02] == ["CN=EX02"]
    assert response.status_code == 404


def test_ten_concurrent_runspace_pools(ntlm_lab: LabServer) -> None:
    failures: list[BaseException] = []
    counts: list[int] = []

    def client() -> None:
        try:
            with RunspacePool(connect(ntlm_lab), configuration_name=EXCHANGE) as pool:
                for _ in range(3):
                    counts.append(len(invoke(pool, "Get-ExchangeCertificate").output))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    assert len(counts) == 30
    assert len(set(counts)) == 1
    assert counts[0] > 0


# --------------------------------------------------------------------------- fault injection


def test_latency_is_added_to_every_request(basic_lab: LabServer) -> None:
    with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as pool:
        basic_lab.faults = LabFaults(latency_ms=150)
        try:
            before = basic_lab.request_count
            started = time.monotonic()
            invoke(pool, "Get-ExchangeServer")
            elapsed = time.monotonic() - started
            requests_used = basic_lab.request_count - before
        finally:
            basic_lab.faults = LabFaults()
    assert elapsed >= 0.15 * requests_used >= 0.3


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_auth_refused(auth: str, basic_lab: LabServer, ntlm_lab: LabServer) -> None:
    lab = basic_lab if auth == "basic" else ntlm_lab
    lab.faults = LabFaults(auth_refused=True)
    try:
        with pytest.raises(AuthenticationError):
            RunspacePool(connect(lab), configuration_name=EXCHANGE).open()
    finally:
        lab.faults = LabFaults()


def test_connection_dropped_on_a_cmdlet(ntlm_lab: LabServer) -> None:
    ntlm_lab.faults = LabFaults(drop_connection_on="Get-SendConnector")
    try:
        dropped = RunspacePool(connect(ntlm_lab), configuration_name=EXCHANGE)
        dropped.open()
        assert invoke(dropped, "Get-ExchangeServer").output
        with pytest.raises(requests.exceptions.ConnectionError):
            invoke(dropped, "Get-SendConnector")
        with RunspacePool(connect(ntlm_lab), configuration_name=EXCHANGE) as pool:
            assert invoke(pool, "Get-ExchangeServer").output
    finally:
        ntlm_lab.faults = LabFaults()


def test_wsman_fault_on_a_cmdlet(ntlm_lab: LabServer) -> None:
    fault = LabWSManFault(cmdlet="Get-HybridConfiguration", code="0x80338012",
                          message="The client cannot connect to the destination.")
    ntlm_lab.faults = LabFaults(wsman_fault=fault)
    try:
        with RunspacePool(connect(ntlm_lab), configuration_name=EXCHANGE) as pool:
            with pytest.raises(WSManFaultError) as raised:
                invoke(pool, "Get-HybridConfiguration")
            after = invoke(pool, "Get-ExchangeServer")
    finally:
        ntlm_lab.faults = LabFaults()
    assert raised.value.code == 0x80338012
    assert raised.value.reason == "The client cannot connect to the destination."
    assert after.state == PSInvocationState.COMPLETED


def test_slow_cmdlet_does_not_block_other_clients(basic_lab: LabServer) -> None:
    basic_lab.faults = LabFaults(slow_cmdlets={"Get-Queue": 1.0})
    timings: dict[str, float] = {}
    try:
        with RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as slow_pool, \
                RunspacePool(connect(basic_lab), configuration_name=EXCHANGE) as fast_pool:
            started = time.monotonic()
            slow = PowerShell(slow_pool)
            slow.add_cmdlet("Get-Queue")
            slow.begin_invoke()
            invoke(fast_pool, "Get-ExchangeServer")
            timings["fast"] = time.monotonic() - started
            slow.end_invoke()
            timings["slow"] = time.monotonic() - started
    finally:
        basic_lab.faults = LabFaults()
    assert timings["fast"] < 0.5
    assert timings["slow"] >= 1.0
    assert slow.state == PSInvocationState.COMPLETED
    assert slow.output


def test_faults_come_from_the_state_by_default() -> None:
    state = dataclasses.replace(default_state(now=NOW),
                                faults=LabFaults(auth_refused=True))
    with LabServer(organisation(state), auth="basic") as lab:
        assert lab.faults.auth_refused
        with pytest.raises(AuthenticationError):
            RunspacePool(connect(lab), configuration_name=EXCHANGE).open()
