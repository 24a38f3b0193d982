"""The shell layer with a stub Exchange model and stub wire, driven by the real pypsrp client."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from psrpcore import ClientRunspacePool
from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException
from pypsrp.complex_objects import PSInvocationState
from pypsrp.host import PSHost, PSHostUserInterface
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from bot.lab import wsman
from bot.lab.psrp_session import (
    IDLE_TIMEOUT_SECONDS,
    Reply,
    ServerEndpoint,
    ShellManager,
    WireCodec,
)
from bot.lab.records import CommandCall, ConfirmationRequest, ErrorSpec, PipelineResult
from bot.lab.server import LabServer
from bot.lab.state import LabFaults, LabUser

USER = LabUser(domain="LAB", name="tester", password="Stub-Passw0rd")


@dataclass(frozen=True)
class StubServer:
    name: str
    fqdn: str


@dataclass(frozen=True)
class StubState:
    users: tuple[LabUser, ...] = (USER,)
    faults: LabFaults = field(default_factory=LabFaults)


class StubOrganisation:
    """Answers by the first command's name; records what the shell passed in."""

    def __init__(self) -> None:
        self.state = StubState()
        self.servers = (StubServer("EX01", "ex01.lab.test"), StubServer("EX02", "ex02.lab.test"))
        self.calls: list[tuple[tuple[CommandCall, ...], str, str]] = []
        self.answers: list[bool | None] = []

    def execute(self, commands: Sequence[CommandCall], *, user: str, connected_server: str
                ) -> Generator[ConfirmationRequest, bool | None, PipelineResult]:
        self.calls.append((tuple(commands), user, connected_server))
        name = commands[0].name
        if name == "Get-Many":
            return PipelineResult(output=tuple(f"item-{i:05d}-{'x' * 40}" for i in range(3000)))
        if name == "Explode":
            raise RuntimeError("model bug with a secret-looking detail")
        if name == "Fail-Softly":
            return PipelineResult(errors=(ErrorSpec("first", "NotSpecified", "First"),
                                          ErrorSpec("second", "NotSpecified", "Second")),
                                  failed=True)
        if name == "Warn-Me":
            return PipelineResult(output=("done",), warnings=("careful",))
        if name == "Ask-Twice":
            first = yield ConfirmationRequest("Confirm", "first question?")
            second = yield ConfirmationRequest("Confirm", "second question?")
            self.answers.extend([first, second])
            return PipelineResult(output=(f"{first}/{second}",))
        return PipelineResult(output=(name,))


def stub_to_psobject(record: Any, *, computer_name: str, runspace_id: uuid.UUID) -> Any:
    return record


def stub_error_record(spec: ErrorSpec, *, command_name: str | None) -> ErrorRecord:
    return ErrorRecord(Exception=NETException(Message=spec.message),
                       CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.NotSpecified),
                       FullyQualifiedErrorId=spec.fully_qualified_error_id)


STUB_WIRE = WireCodec(to_psobject=stub_to_psobject, error_record=stub_error_record)


@pytest.fixture(scope="module")
def stub() -> StubOrganisation:
    return StubOrganisation()


@pytest.fixture(scope="module")
def lab(stub: StubOrganisation) -> Iterator[LabServer]:
    with LabServer(stub, auth="basic", wire=STUB_WIRE) as server:  # type: ignore[arg-type]
        yield server


def pool_for(lab: LabServer, *, path: str = "PowerShell/", host: PSHost | None = None,
             **options: Any) -> RunspacePool:
    wsman = WSMan(lab.host, port=lab.port, path=path, ssl=False, auth="basic",
                  username="tester", password=USER.password, encryption="never", **options)
    return RunspacePool(wsman, configuration_name="Microsoft.Exchange", host=host)


def test_parameters_reach_the_model_as_plain_python(lab: LabServer,
                                                    stub: StubOrganisation) -> None:
    with pool_for(lab, path="PowerShell/ex02/") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Enable-Thing").add_parameter("Services", ["IIS", "SMTP"])
        ps.add_parameter("Force").add_parameter("Count", 3).add_parameter("Enabled", False)
        ps.add_argument("positional")
        ps.add_cmdlet("Select-Object").add_parameter("Property", "Name")
        assert ps.invoke() == ["Enable-Thing"]

    commands, user, connected_server = stub.calls[-1]
    assert (user, connected_server) == ("LAB\\tester", "EX02")
    assert commands == (
        CommandCall("Enable-Thing", (("Services", ["IIS", "SMTP"]), ("Force", None),
                                     ("Count", 3), ("Enabled", False), (None, "positional"))),
        CommandCall("Select-Object", (("Property", "Name"),)),
    )


def test_large_output_is_split_over_several_receives(lab: LabServer) -> None:
    with pool_for(lab, max_envelope_size=51200) as pool:
        before = lab.request_count
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Many")
        output = ps.invoke()
        used = lab.request_count - before
    assert output == [f"item-{i:05d}-{'x' * 40}" for i in range(3000)]
    assert ps.state == PSInvocationState.COMPLETED
    assert used > 4


def test_a_model_exception_fails_only_that_pipeline(lab: LabServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="bot.lab.psrp_session"), pool_for(lab) as pool:
        broken = PowerShell(pool)
        broken.add_cmdlet("Explode")
        broken.invoke()
        after = PowerShell(pool)
        after.add_cmdlet("Still-Works")
        assert after.invoke() == ["Still-Works"]
    assert broken.state == PSInvocationState.FAILED
    assert "secret-looking" not in str(broken.streams.error[0])
    assert "lab could not run this command" in str(broken.streams.error[0])
    assert "RuntimeError" in caplog.text


def test_failed_without_a_terminating_error_uses_the_last_error(lab: LabServer) -> None:
    with pool_for(lab) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Fail-Softly")
        ps.invoke()
    assert ps.state == PSInvocationState.FAILED
    assert [str(error) for error in ps.streams.error] == ["first", "second"]


def test_warnings_reach_the_warning_stream(lab: LabServer) -> None:
    with pool_for(lab) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Warn-Me")
        assert ps.invoke() == ["done"]
    assert [w.message for w in ps.streams.warning] == ["careful"]


class ScriptedUI(PSHostUserInterface):
    def __init__(self, answers: list[int]) -> None:
        super().__init__()
        self.answers = answers
        self.messages: list[str] = []

    def PromptForChoice(self, runspace: Any, pipeline: Any, caption: str, message: str,
                        choices: list[Any], default_choice: int) -> int:
        self.messages.append(message)
        return self.answers.pop(0)


@pytest.mark.parametrize(("answers", "expected"), [
    ([0, 2], [True, False]), ([1, 3], [True, False]), ([2, 0], [False, True]),
])
def test_each_confirmation_is_a_host_call(lab: LabServer, stub: StubOrganisation,
                                          answers: list[int], expected: list[bool]) -> None:
    ui = ScriptedUI(list(answers))
    with pool_for(lab, host=PSHost(None, None, False, "stub", None, ui, "1.0")) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Ask-Twice")
        output = ps.invoke()
    assert ui.messages == ["first question?", "second question?"]
    assert stub.answers[-2:] == expected
    assert output == [f"{expected[0]}/{expected[1]}"]


def test_a_client_without_a_host_answers_none(lab: LabServer, stub: StubOrganisation) -> None:
    with pool_for(lab) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Ask-Twice")
        assert ps.invoke() == ["None/None"]
    assert stub.answers[-2:] == [None, None]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def create_request(shell_id: str, creation: bytes) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{wsman.NS_SOAP}" xmlns:a="{wsman.NS_ADDRESSING}" '
        f'xmlns:w="{wsman.NS_WSMAN}" xmlns:rsp="{wsman.NS_SHELL}"><s:Header>'
        f"<a:Action>{wsman.Action.CREATE}</a:Action><a:MessageID>uuid:{uuid.uuid4()}"
        f"</a:MessageID><w:ResourceURI>{wsman.EXCHANGE_RESOURCE_URI}</w:ResourceURI>"
        f'</s:Header><s:Body><rsp:Shell ShellId="{shell_id}"><creationXml xmlns="'
        f'{wsman.NS_POWERSHELL}">{base64.b64encode(creation).decode()}</creationXml>'
        f"</rsp:Shell></s:Body></s:Envelope>"
    ).encode()


def open_shell(manager: ShellManager) -> str:
    client = ClientRunspacePool()
    client.open()
    payload = client.data_to_send()
    assert payload is not None
    shell_id = str(client.runspace_pool_id).upper()
    reply = manager.handle(create_request(shell_id, payload.data), user="LAB\\tester",
                           endpoint=ServerEndpoint("EX01", "ex01.lab.test"),
                           client_ip="127.0.0.1", address="http://127.0.0.1/PowerShell/")
    assert isinstance(reply, Reply)
    assert reply.status == 200
    return shell_id


def test_idle_shells_expire_after_windows_idle_timeout() -> None:
    clock = FakeClock()
    manager = ShellManager(StubOrganisation(), wire=STUB_WIRE, faults=LabFaults, clock=clock)
    open_shell(manager)
    clock.now += IDLE_TIMEOUT_SECONDS - 1
    open_shell(manager)
    assert manager.shell_count == 2
    clock.now += 2
    open_shell(manager)
    assert manager.shell_count == 2


def test_a_stopped_server_can_start_again(stub: StubOrganisation) -> None:
    server = LabServer(stub, auth="basic", wire=STUB_WIRE)  # type: ignore[arg-type]
    for _ in range(2):
        server.start()
        with pool_for(server) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Ping")
            assert ps.invoke() == ["Ping"]
        server.stop()
