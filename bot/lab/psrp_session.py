"""The lab's WinRM shells: one shell is one psrpcore ``ServerRunspacePool`` and its pipelines.

:class:`ShellManager` answers parsed WS-Management requests (see :mod:`bot.lab.wsman`) for
every shell of one lab server. :class:`PsrpShell` feeds PSRP fragments to psrpcore, turns each
created pipeline into :class:`~bot.lab.records.CommandCall` s, steps the Exchange model's
generator, and keeps one outgoing queue per target (the pool itself, or one pipeline) for the
long-polling Receive requests.

Nothing here blocks a request thread for long: a pipeline advances when the request that
brings its data (Command, Send with a host response) arrives, and a slow cmdlet completes on a
timer. Calls into the model are serialised with one lock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from psrpcore import (
    CreatePipelineEvent,
    GetAvailableRunspacesEvent,
    GetCommandMetadataEvent,
    PipelineHostResponseEvent,
    PSRPEvent,
    PSRPPayload,
    ResetRunspaceStateEvent,
    ServerHostRequestor,
    ServerPipeline,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore.types import (
    ChoiceDescription,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    HostInfo,
    NETException,
    PipelineState,
    PSInvocationState,
    PSRPMessageType,
    PSVersion,
)

from bot.lab import wsman
from bot.lab.records import CommandCall, ConfirmationRequest, ErrorSpec, PipelineResult

log = logging.getLogger(__name__)

FRAGMENT_SIZE = 32768
"""Largest PSRP fragment the lab sends; a Receive carries as many as its envelope allows."""
DEFAULT_OPERATION_TIMEOUT = 60.0
IDLE_TIMEOUT_SECONDS = 7200.0

CONFIRM_CHOICES: tuple[tuple[str, str], ...] = (
    ("&Yes", "Continue with only the next step of the operation."),
    ("Yes to &All", "Continue with all the steps of the operation."),
    ("&No", "Skip this operation and proceed with the next operation."),
    ("No to A&ll", "Skip this operation and all subsequent operations."),
)
"""PowerShell's ShouldContinue choices (with the to-all options) as Exchange's prompt shows."""
CONFIRM_DEFAULT_CHOICE = 2
CONFIRM_YES_CHOICES = frozenset({0, 1})

_SET_RUNSPACES_MESSAGES = frozenset({
    int(PSRPMessageType.SetMaxRunspaces), int(PSRPMessageType.SetMinRunspaces),
})


class PipelineExecutor(Protocol):
    """What the shell needs from :class:`bot.lab.model.ExchangeOrganisation`."""

    def execute(
        self, commands: Sequence[CommandCall], *, user: str, connected_server: str
    ) -> Generator[ConfirmationRequest, bool | None, PipelineResult]: ...


class ToPSObject(Protocol):
    def __call__(self, record: Any, *, computer_name: str, runspace_id: uuid.UUID) -> Any: ...


class ToErrorRecord(Protocol):
    def __call__(self, spec: ErrorSpec, *, command_name: str | None) -> ErrorRecord: ...


@dataclass(frozen=True)
class WireCodec:
    """Records -> psrpcore objects; :meth:`default` uses :mod:`bot.lab.wire`."""

    to_psobject: ToPSObject
    error_record: ToErrorRecord

    @classmethod
    def default(cls) -> WireCodec:
        from bot.lab import wire

        return cls(to_psobject=wire.to_psobject, error_record=wire.error_record)


class WSManFaultSpec(Protocol):
    @property
    def cmdlet(self) -> str: ...
    @property
    def code(self) -> str | int: ...
    @property
    def message(self) -> str: ...


class CmdletFaults(Protocol):
    """The cmdlet-level part of :class:`bot.lab.state.LabFaults`."""

    @property
    def drop_connection_on(self) -> str | None: ...
    @property
    def wsman_fault(self) -> WSManFaultSpec | None: ...
    @property
    def slow_cmdlets(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class ServerEndpoint:
    """The Exchange server a request was addressed to (``/PowerShell/<NAME>/``)."""

    name: str
    fqdn: str


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: 200 with a response envelope or 500 with a fault."""

    status: int
    body: bytes


@dataclass(frozen=True)
class DropConnection:
    """Fault injection: close the TCP connection instead of answering."""

    cmdlet: str


class _DropRequested(Exception):
    def __init__(self, cmdlet: str) -> None:
        super().__init__(cmdlet)
        self.cmdlet = cmdlet


class LabPipeline(ServerPipeline):
    """A psrpcore server pipeline that can also end as Failed."""

    def fail(self, error: ErrorRecord) -> None:
        """End the pipeline as Failed with ``error`` as the reason.

        psrpcore only offers ``complete()`` and ``stop()``; this sends the same PIPELINE_STATE
        message they do, through the public ``prepare_message``, with state Failed.
        """
        state = PipelineState(PipelineState=int(PSInvocationState.Failed),
                              ExceptionAsErrorRecord=error)
        self.prepare_message(state)
        self.state = PSInvocationState.Failed


@dataclass(eq=False)
class _PipelineRun:
    pipeline: LabPipeline
    command_id: str
    commands: tuple[CommandCall, ...]
    interactive: bool
    delay: float
    generator: Generator[ConfirmationRequest, bool | None, PipelineResult] | None = None
    pending_call: int | None = None
    timer: threading.Timer | None = None
    finished: bool = False
    output: deque[bytes] = field(default_factory=deque)


def normalise_call_ids(data: bytes) -> bytes:
    """Rename pypsrp's ``CI`` call id to ``ci`` in SetMax/MinRunspaces messages.

    pypsrp 0.9 serialises the call id as ``<I64 N="CI">``; .NET reads it case-insensitively,
    psrpcore 0.3 only as ``ci``. Same length, so the fragment headers stay valid.
    """
    if b'N="CI"' not in data:
        return data
    buffer = bytearray(data)
    offset = 0
    while offset + 21 <= len(buffer):
        length = int.from_bytes(buffer[offset + 17:offset + 21], "big")
        fragment_end = offset + 21 + length
        is_start = buffer[offset + 16] & 0x1
        if is_start and length >= 8:
            message_type = int.from_bytes(buffer[offset + 25:offset + 29], "little")
            if message_type in _SET_RUNSPACES_MESSAGES:
                body = bytes(buffer[offset + 21:fragment_end]).replace(b'N="CI"', b'N="ci"')
                buffer[offset + 21:fragment_end] = body
        offset = fragment_end
    return bytes(buffer)


def command_calls(commands: Sequence[Any]) -> tuple[CommandCall, ...]:
    """psrpcore ``Command`` s -> :class:`CommandCall` s with plain Python parameter values."""
    return tuple(
        CommandCall(
            name=str(command.command_text),
            parameters=tuple(
                (None if name is None else str(name), _plain(value))
                for name, value in command.parameters
            ),
            is_script=bool(command.is_script),
        )
        for command in commands
    )


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _matches(cmdlet: str | None, commands: Sequence[CommandCall]) -> bool:
    return bool(cmdlet) and any(
        not call.is_script and call.name.casefold() == str(cmdlet).casefold() for call in commands
    )


def _plain_error_record(message: str, error_id: str) -> ErrorRecord:
    exception = NETException(Message=message, HResult=-2146233079)
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.NotSpecified,
                                       Reason="InvalidOperationException"),
        FullyQualifiedErrorId=error_id,
    )


class PsrpShell:
    """One WinRM shell: a psrpcore server runspace pool, its pipelines and outgoing queues."""

    def __init__(
        self,
        shell_id: str,
        *,
        owner: str,
        client_ip: str,
        endpoint: ServerEndpoint,
        input_streams: str,
        output_streams: str,
        executor: PipelineExecutor,
        wire: WireCodec,
        faults: Callable[[], CmdletFaults],
        model_lock: threading.Lock,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shell_id = shell_id
        self.owner = owner
        self.client_ip = client_ip
        self.endpoint = endpoint
        self._input_streams = input_streams
        self._output_streams = output_streams
        self._executor = executor
        self._wire = wire
        self._faults = faults
        self._model_lock = model_lock
        self._clock = clock
        self._created = clock()
        self._last_activity = self._created
        self._condition = threading.Condition(threading.RLock())
        self._pool = ServerRunspacePool(application_private_data={
            "PSVersionTable": {
                "PSVersion": PSVersion("5.1.17763.1490"),
                "PSEdition": "Desktop",
                "CLRVersion": PSVersion("4.0.30319.42000"),
                "BuildVersion": PSVersion("10.0.17763.1490"),
                "WSManStackVersion": PSVersion("3.0"),
            },
        })
        self._pool_output: deque[bytes] = deque()
        self._runs: dict[uuid.UUID, _PipelineRun] = {}
        self._command_ids: dict[uuid.UUID, str] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> wsman.ShellDescription:
        now = self._clock()
        return wsman.ShellDescription(
            shell_id=self.shell_id,
            resource_uri=wsman.EXCHANGE_RESOURCE_URI,
            owner=self.owner,
            client_ip=self.client_ip,
            input_streams=self._input_streams,
            output_streams=self._output_streams,
            idle_timeout_seconds=IDLE_TIMEOUT_SECONDS,
            run_time_seconds=now - self._created,
            inactivity_seconds=now - self._last_activity,
        )

    def open(self, creation_data: bytes) -> None:
        """Feed the Create's first fragments (SessionCapability, InitRunspacePool)."""
        with self._condition:
            self._feed(creation_data, None)

    def command(self, command_id: str | None, arguments: Sequence[bytes]) -> str:
        """Create a pipeline from a Command's first fragment; return its CommandId."""
        text = command_id or str(uuid.uuid4()).upper()
        pipeline_id = _parse_uuid(text)
        with self._condition:
            self._touch()
            if pipeline_id in self._pool.pipeline_table:
                raise wsman.invalid_parameter(f"CommandId {text} already exists")
            LabPipeline(self._pool, pipeline_id)
            self._command_ids[pipeline_id] = text
            try:
                self._feed(b"".join(arguments), pipeline_id)
            except BaseException:
                if pipeline_id not in self._runs:
                    self._pool.pipeline_table.pop(pipeline_id, None)
                    self._command_ids.pop(pipeline_id, None)
                raise
            return text

    def send(self, streams: Sequence[wsman.SendStream]) -> None:
        """Feed further fragments (``stdin`` and host responses on ``pr``)."""
        with self._condition:
            self._touch()
            for stream in streams:
                target = _parse_uuid(stream.command_id) if stream.command_id else None
                if target is not None and target not in self._pool.pipeline_table:
                    raise wsman.command_not_found()
                self._feed(stream.data, target)

    def receive(self, command_id: str | None, *, timeout: float,
                budget: int) -> tuple[list[bytes], wsman.CommandState | None]:
        """Wait until the target has data (or finished) and take what fits into ``budget``."""
        target = _parse_uuid(command_id) if command_id else None
        deadline = time.monotonic() + timeout
        with self._condition:
            self._touch()
            while True:
                if self._closed:
                    raise wsman.shell_not_found(self.shell_id)
                run = self._runs.get(target) if target is not None else None
                if run is not None:
                    if run.output or run.finished:
                        break
                elif target is not None:
                    if target not in self._pool.pipeline_table:
                        raise wsman.command_not_found()
                elif self._pool_output:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise wsman.operation_timed_out()
                self._condition.wait(remaining)

            queue = run.output if run is not None else self._pool_output
            chunks: list[bytes] = []
            size = 0
            while queue and (not chunks or size + len(queue[0]) <= budget):
                chunk = queue.popleft()
                chunks.append(chunk)
                size += len(chunk)
            state = None
            if run is not None:
                done = run.finished and not queue
                state = wsman.CommandState(
                    command_id=run.command_id,
                    state=wsman.COMMAND_STATE_DONE if done else wsman.COMMAND_STATE_RUNNING,
                    exit_code=0 if done else None,
                )
            return chunks, state

    def signal(self, command_id: str | None, code: str) -> None:
        """``terminate`` closes a pipeline (stopping it if it runs); ``ctrl_c`` stops it."""
        if command_id is None:
            return
        target = _parse_uuid(command_id)
        kind = code.strip().casefold()
        with self._condition:
            self._touch()
            run = self._runs.get(target)
            terminate = kind == wsman.SIGNAL_TERMINATE.casefold()
            if run is None:
                if terminate and target in self._pool.pipeline_table:
                    self._pool.pipeline_table.pop(target, None)
                    return
                raise wsman.command_not_found()
            if kind in (wsman.SIGNAL_PS_CTRL_C, wsman.SIGNAL_PS_CTRL_C_ALT,
                        wsman.SIGNAL_CTRL_C.casefold()):
                self._stop(run)
            elif terminate:
                self._stop(run)
                run.pipeline.close()
                del self._runs[target]
            else:
                raise wsman.invalid_parameter(f"unknown signal {code}")
            self._drain()

    def close(self) -> None:
        """Delete: stop every pipeline, forget the pool, wake every waiting Receive."""
        with self._condition:
            if self._closed:
                return
            for run in list(self._runs.values()):
                self._stop(run, emit=False)
            self._runs.clear()
            self._pool_output.clear()
            self._closed = True
            self._condition.notify_all()

    def idle_seconds(self) -> float:
        """Seconds since the client last used this shell (Windows' ShellInactivity)."""
        return self._clock() - self._last_activity

    def _touch(self) -> None:
        self._last_activity = self._clock()

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        if not data:
            return
        self._pool.receive_data(
            PSRPPayload(normalise_call_ids(data), StreamType.default, pipeline_id))
        while True:
            try:
                event = self._pool.next_event()
            except Exception as exc:
                log.warning("lab shell %s: unreadable PSRP data (%s)", self.shell_id,
                            type(exc).__name__)
                raise wsman.provider_failure(
                    "The PowerShell Remoting Protocol data could not be read.") from None
            if event is None:
                break
            self._dispatch(event)
        self._drain()

    def _dispatch(self, event: PSRPEvent[Any, Any]) -> None:
        if isinstance(event, CreatePipelineEvent | GetCommandMetadataEvent):
            pipeline_id: uuid.UUID = event.pipeline_id
            command_id = self._command_ids.pop(pipeline_id, str(pipeline_id).upper())
            if isinstance(event, CreatePipelineEvent):
                self._start(event, command_id)
            else:
                self._refuse_metadata(pipeline_id, command_id)
        elif isinstance(event, PipelineHostResponseEvent):
            self._resume(event)
        elif isinstance(event, SetMaxRunspacesEvent | SetMinRunspacesEvent
                        | ResetRunspaceStateEvent):
            self._pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, GetAvailableRunspacesEvent):
            self._pool.runspace_availability_response(event.ci, max(1, self._pool.max_runspaces))

    def _start(self, event: CreatePipelineEvent, command_id: str) -> None:
        pipeline = self._pool.pipeline_table[event.pipeline_id]
        assert isinstance(pipeline, LabPipeline)
        powershell = event.pipeline
        commands = command_calls(powershell.commands)
        faults = self._faults()
        injected = faults.wsman_fault
        if injected is not None and _matches(injected.cmdlet, commands):
            self._pool.pipeline_table.pop(event.pipeline_id, None)
            raise wsman.custom_fault(injected.code, injected.message)
        if _matches(faults.drop_connection_on, commands):
            self._pool.pipeline_table.pop(event.pipeline_id, None)
            raise _DropRequested(str(faults.drop_connection_on))
        delay = max(
            (float(seconds) for cmdlet, seconds in faults.slow_cmdlets.items()
             if _matches(cmdlet, commands)),
            default=0.0,
        )
        run = _PipelineRun(pipeline=pipeline, command_id=command_id, commands=commands,
                           interactive=self._interactive(powershell.host), delay=delay)
        self._runs[event.pipeline_id] = run
        pipeline.start()
        try:
            with self._model_lock:
                run.generator = self._executor.execute(
                    commands, user=self.owner, connected_server=self.endpoint.name)
        except Exception:
            log.exception("lab model refused pipeline %s", [c.name for c in commands])
            self._fail_internal(run)
            return
        self._advance(run, None)

    def _interactive(self, host: HostInfo | None) -> bool:
        if host is None or getattr(host, "UseRunspaceHost", True):
            host = self._pool.host
        if host is None:
            return False
        return not getattr(host, "IsHostNull", True) and not getattr(host, "IsHostUINull", True)

    def _advance(self, run: _PipelineRun, answer: bool | None) -> None:
        generator = run.generator
        if generator is None:
            return
        while True:
            try:
                with self._model_lock:
                    request = generator.send(answer)
            except StopIteration as stop:
                run.generator = None
                self._finish(run, stop.value)
                return
            except Exception:
                run.generator = None
                log.exception("lab model failed on %s", [c.name for c in run.commands])
                self._fail_internal(run)
                return
            if isinstance(request, ConfirmationRequest) and run.interactive:
                choices = [ChoiceDescription(Label=label, HelpMessage=help_text)
                           for label, help_text in CONFIRM_CHOICES]
                run.pending_call = ServerHostRequestor(run.pipeline).prompt_for_choice(
                    request.caption, request.message, choices, CONFIRM_DEFAULT_CHOICE)
                return
            answer = None

    def _resume(self, event: PipelineHostResponseEvent) -> None:
        run = self._runs.get(event.pipeline_id)
        if run is None or run.pending_call is None or run.pending_call != event.ci:
            return
        run.pending_call = None
        result = event.result if event.error is None else None
        confirmed = (isinstance(result, int) and not isinstance(result, bool)
                     and int(result) in CONFIRM_YES_CHOICES)
        self._advance(run, confirmed)

    def _finish(self, run: _PipelineRun, result: PipelineResult | None) -> None:
        outcome = result if isinstance(result, PipelineResult) else PipelineResult()
        if run.delay > 0 and not self._closed:
            timer = threading.Timer(run.delay, self._release, args=(run, outcome))
            timer.daemon = True
            run.timer = timer
            timer.start()
            return
        self._emit(run, outcome)

    def _release(self, run: _PipelineRun, result: PipelineResult) -> None:
        with self._condition:
            run.timer = None
            if self._closed or run.finished:
                return
            self._emit(run, result)
            self._drain()

    def _emit(self, run: _PipelineRun, result: PipelineResult) -> None:
        pipeline = run.pipeline
        if pipeline.state != PSInvocationState.Running:
            return
        command_name = run.commands[0].name if run.commands else None
        try:
            for record in result.output:
                pipeline.write_output(self._wire.to_psobject(
                    record, computer_name=self.endpoint.fqdn,
                    runspace_id=self._pool.runspace_pool_id))
            for warning in result.warnings:
                pipeline.write_warning(warning)
            reason_index = next(
                (index for index, spec in enumerate(result.errors) if spec.terminating), None)
            if reason_index is None and result.failed and result.errors:
                reason_index = len(result.errors) - 1
            reason: ErrorRecord | None = None
            for index, spec in enumerate(result.errors):
                record = self._wire.error_record(spec, command_name=command_name)
                if index == reason_index:
                    reason = record
                else:
                    pipeline.write_error(record.Exception, record.CategoryInfo,
                                         record.TargetObject, record.FullyQualifiedErrorId)
        except Exception:
            log.exception("lab wire conversion failed for %s", command_name)
            self._fail_internal(run)
            return
        if reason is None and result.failed:
            reason = _plain_error_record("The pipeline failed.", "PipelineFailed")
        if reason is not None:
            pipeline.fail(reason)
        else:
            pipeline.complete()
        run.finished = True

    def _fail_internal(self, run: _PipelineRun) -> None:
        if run.pipeline.state == PSInvocationState.Running:
            run.pipeline.fail(_plain_error_record(
                "The lab could not run this command; see the lab server's log.",
                "LabInternalError"))
        run.finished = True

    def _refuse_metadata(self, pipeline_id: uuid.UUID, command_id: str) -> None:
        pipeline = self._pool.pipeline_table[pipeline_id]
        assert isinstance(pipeline, LabPipeline)
        run = _PipelineRun(pipeline=pipeline, command_id=command_id,
                           commands=(), interactive=False, delay=0.0)
        self._runs[pipeline_id] = run
        pipeline.start()
        pipeline.fail(_plain_error_record(
            "GetCommandMetadata is not supported by this endpoint.", "NotSupported"))
        run.finished = True

    def _stop(self, run: _PipelineRun, *, emit: bool = True) -> None:
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if run.generator is not None:
            with self._model_lock:
                run.generator.close()
            run.generator = None
        run.pending_call = None
        if run.pipeline.state in (PSInvocationState.Running, PSInvocationState.Stopping):
            if emit:
                run.pipeline.stop()
            else:
                run.pipeline.state = PSInvocationState.Stopped
        run.finished = True

    def _drain(self) -> None:
        while (payload := self._pool.data_to_send(FRAGMENT_SIZE)) is not None:
            if payload.pipeline_id is None:
                self._pool_output.append(payload.data)
                continue
            run = self._runs.get(payload.pipeline_id)
            if run is not None:
                run.output.append(payload.data)
        self._condition.notify_all()


class ShellManager:
    """Every shell of one lab server; answers WS-Management requests with :class:`Reply` s."""

    def __init__(
        self,
        executor: PipelineExecutor,
        *,
        wire: WireCodec,
        faults: Callable[[], CmdletFaults],
        model_lock: threading.Lock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executor = executor
        self._wire = wire
        self._faults = faults
        self._model_lock = model_lock or threading.Lock()
        self._clock = clock
        self._shells: dict[str, PsrpShell] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def shell_count(self) -> int:
        with self._lock:
            return len(self._shells)

    def handle(self, body: bytes, *, user: str, endpoint: ServerEndpoint, client_ip: str,
               address: str) -> Reply | DropConnection:
        """Answer one WS-Management request; never raises."""
        try:
            request = wsman.parse_request(body)
        except wsman.WSManFault as fault:
            return self._fault(fault, wsman.message_id_of(body), endpoint)
        try:
            return self._dispatch(request, user=user, endpoint=endpoint, client_ip=client_ip,
                                  address=address)
        except wsman.WSManFault as fault:
            return self._fault(fault, request.message_id, endpoint)
        except _DropRequested as drop:
            return DropConnection(drop.cmdlet)
        except Exception:
            log.exception("lab shell failed on %s", request.action)
            return self._fault(wsman.provider_failure(""), request.message_id, endpoint)

    def open(self) -> None:
        """Accept new shells again after :meth:`close`."""
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """Close every shell and refuse new ones until :meth:`open`."""
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
            self._closed = True
        for shell in shells:
            shell.close()

    def _dispatch(self, request: wsman.WSManRequest, *, user: str, endpoint: ServerEndpoint,
                  client_ip: str, address: str) -> Reply:
        action = request.action
        message_id = _new_message_id()
        if action == wsman.Action.CREATE:
            self._require_exchange_uri(request)
            return self._create(request, user=user, endpoint=endpoint, client_ip=client_ip,
                                address=address, message_id=message_id)
        if action == wsman.Action.GET:
            self._require_exchange_uri(request, also=wsman.SHELL_RESOURCE_URI)
            shell = self._shell(request, user)
            return Reply(200, wsman.build_get_response(request, shell.describe(),
                                                       message_id=message_id))
        if action == wsman.Action.DELETE:
            self._require_exchange_uri(request, also=wsman.SHELL_RESOURCE_URI)
            shell = self._shell(request, user)
            with self._lock:
                self._shells.pop(shell.shell_id.upper(), None)
            shell.close()
            return Reply(200, wsman.build_delete_response(request, message_id=message_id))
        if action == wsman.Action.COMMAND:
            self._require_exchange_uri(request)
            shell = self._shell(request, user)
            command = wsman.parse_command(request)
            command_id = shell.command(command.command_id, command.arguments)
            return Reply(200, wsman.build_command_response(request, command_id,
                                                           message_id=message_id))
        if action == wsman.Action.SEND:
            self._require_exchange_uri(request)
            shell = self._shell(request, user)
            shell.send(wsman.parse_send(request))
            return Reply(200, wsman.build_send_response(request, message_id=message_id))
        if action == wsman.Action.RECEIVE:
            self._require_exchange_uri(request)
            shell = self._shell(request, user)
            receive = wsman.parse_receive(request)
            chunks, state = shell.receive(
                receive.command_id,
                timeout=request.operation_timeout or DEFAULT_OPERATION_TIMEOUT,
                budget=wsman.receive_budget(request.max_envelope_size))
            name = receive.streams[0]
            streams = [wsman.ReceivedStream(name, receive.command_id, chunk) for chunk in chunks]
            return Reply(200, wsman.build_receive_response(request, streams, state,
                                                           message_id=message_id))
        if action == wsman.Action.SIGNAL:
            self._require_exchange_uri(request)
            shell = self._shell(request, user)
            signal = wsman.parse_signal(request)
            shell.signal(signal.command_id, signal.code)
            return Reply(200, wsman.build_signal_response(request, message_id=message_id))
        raise wsman.action_not_supported(action)

    def _create(self, request: wsman.WSManRequest, *, user: str, endpoint: ServerEndpoint,
                client_ip: str, address: str, message_id: str) -> Reply:
        create = wsman.parse_create(request)
        shell_id = (create.shell_id or str(uuid.uuid4())).upper()
        _parse_uuid(shell_id)
        shell = PsrpShell(
            shell_id, owner=user, client_ip=client_ip, endpoint=endpoint,
            input_streams=create.input_streams, output_streams=create.output_streams,
            executor=self._executor, wire=self._wire, faults=self._faults,
            model_lock=self._model_lock, clock=self._clock,
        )
        with self._lock:
            if self._closed:
                raise wsman.provider_failure("The lab server is stopping.")
            if shell_id in self._shells:
                raise wsman.invalid_parameter(f"ShellId {shell_id} already exists")
            idle = [key for key, other in self._shells.items()
                    if other.idle_seconds() > IDLE_TIMEOUT_SECONDS]
            expired = [self._shells.pop(key) for key in idle]
            self._shells[shell_id] = shell
        for other in expired:
            other.close()
        try:
            shell.open(create.creation_data)
        except BaseException:
            with self._lock:
                self._shells.pop(shell_id, None)
            shell.close()
            raise
        return Reply(200, wsman.build_create_response(request, shell.describe(),
                                                      message_id=message_id, address=address))

    def _shell(self, request: wsman.WSManRequest, user: str) -> PsrpShell:
        shell_id = request.shell_id or ""
        with self._lock:
            shell = self._shells.get(shell_id.upper())
        if shell is None or shell.closed or shell.owner.casefold() != user.casefold():
            raise wsman.shell_not_found(shell_id)
        return shell

    @staticmethod
    def _require_exchange_uri(request: wsman.WSManRequest, *, also: str | None = None) -> None:
        uri = request.resource_uri
        if not uri:
            raise wsman.missing_header("ResourceURI")
        accepted = {wsman.EXCHANGE_RESOURCE_URI.casefold()}
        if also:
            accepted.add(also.casefold())
        if uri.casefold() not in accepted:
            raise wsman.resource_uri_not_found(uri)

    @staticmethod
    def _fault(fault: wsman.WSManFault, relates_to: str | None,
               endpoint: ServerEndpoint) -> Reply:
        return Reply(500, wsman.build_fault(fault, message_id=_new_message_id(),
                                            relates_to=relates_to, machine=endpoint.fqdn))


def _new_message_id() -> str:
    return f"uuid:{str(uuid.uuid4()).upper()}"


def _parse_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise wsman.invalid_parameter(f"{text!r} is not a GUID") from None
