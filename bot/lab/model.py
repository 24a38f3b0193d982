"""The lab's Exchange organisation: cmdlet semantics, certificate ranking and mail flow.

Pure and single-threaded: the WSMan/PSRP shell serialises calls, injects the clock and drives
:meth:`ExchangeOrganisation.execute`, a generator that yields a
:class:`~bot.lab.records.ConfirmationRequest` whenever Exchange would call ShouldContinue or
ShouldProcess and returns a :class:`~bot.lab.records.PipelineResult`.

Error model: Exchange task errors (object not found, refused removal) are non-terminating
error records and the pipeline completes, as on a real server unless ``-ErrorAction Stop`` is
given; PowerShell engine errors (unknown command or parameter, binding, a script in this
NoLanguage runspace, a prompt the client cannot answer) terminate the pipeline.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import uuid
import zlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeService,
    RootCAType,
    split_tls_certificate_name,
)
from bot.lab.pki import IssuedCertificate, LabPKI
from bot.lab.records import (
    CallLogEntry,
    CommandCall,
    ConfirmationRequest,
    ErrorSpec,
    LabCertificateRecord,
    LabHybridConfigurationRecord,
    LabQueueRecord,
    LabReceiveConnectorRecord,
    LabSendConnectorRecord,
    LabServerRecord,
    ParameterValue,
    PipelineResult,
    SelectedObject,
    SmtpX509IdentifierRecord,
)
from bot.lab.state import (
    LAB_CMDLETS,
    LabCertificateSpec,
    LabSendConnectorSpec,
    LabServerSpec,
    LabState,
    iis_bindings,
    parse_distinguished_name,
)

EXCHANGE_ONLINE_ENDPOINT = "104.47.51.110:25"
"""The Exchange Online address the lab's failing queue names as its last endpoint."""

NO_LANGUAGE_MESSAGE = ("The syntax is not supported by this runspace. This can occur if the "
                       "runspace is in no-language mode.")
HOST_EXCEPTION_PREFIX = ("A command that prompts the user failed because the host program or "
                         "the command type does not support user interaction.")

_EXCHANGE_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
_PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"


@dataclass(frozen=True)
class LabCommandInfoRecord:
    """What ``Get-Command`` returns for one command of the endpoint."""

    name: str
    command_type: str
    module_name: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class OutboundPrediction:
    """The certificate Exchange would present on a cloud send connector, and why."""

    server: str
    connector: str
    thumbprint: str | None
    certificate_id: str | None
    publicly_trusted: bool
    reason: str


TYPE_NAMES: dict[type, tuple[str, ...]] = {
    LabCertificateRecord: (
        f"{_EXCHANGE_TASKS}.ExchangeCertificate",
        "System.Security.Cryptography.X509Certificates.X509Certificate2",
        "System.Security.Cryptography.X509Certificates.X509Certificate",
        "System.Object",
    ),
    LabSendConnectorRecord: (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.SmtpSendConnectorConfig",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.MailGateway",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.SendConnector",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADLegacyVersionableObject",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ),
    LabReceiveConnectorRecord: (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ),
    LabHybridConfigurationRecord: (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.HybridConfiguration",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ),
    LabQueueRecord: (
        "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
        "Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ),
    LabServerRecord: (
        "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        "Microsoft.Exchange.Data.Directory.ADObject",
        "Microsoft.Exchange.Data.Directory.ADRawEntry",
        "Microsoft.Exchange.Data.ConfigurableObject",
        "System.Object",
    ),
    LabCommandInfoRecord: (
        "System.Management.Automation.CmdletInfo",
        "System.Management.Automation.CommandInfo",
        "System.Object",
    ),
}


# --------------------------------------------------------------------------- helpers

def dotnet_datetime(value: datetime) -> str:
    """``7/5/2018 7:45:01 AM``: how Exchange (en-US) writes times in messages."""
    hour = value.hour % 12 or 12
    suffix = "AM" if value.hour < 12 else "PM"
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02}:" \
           f"{value.second:02} {suffix}"


def services_string_form(services: ExchangeService) -> str:
    """Exchange's ``ServicesStringForm``: ``IP.WS.`` is IMAP, POP, IIS, SMTP."""
    letters = (
        (ExchangeService.IMAP, "I"), (ExchangeService.POP, "P"), (ExchangeService.UM, "U"),
        (ExchangeService.IIS, "W"), (ExchangeService.SMTP, "S"),
        (ExchangeService.FEDERATION, "F"),
    )
    return "".join(letter if flag in services else "." for flag, letter in letters)


def name_matches(pattern: str, name: str) -> bool:
    """Certificate name matching: exact (case-insensitive) or a one-label wildcard."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def same_distinguished_name(left: str, right: str) -> bool:
    """Compare two X.500 names as Exchange does: attribute by attribute, ignoring case."""
    try:
        a = [(k, v.lower()) for k, v in parse_distinguished_name(left)]
        b = [(k, v.lower()) for k, v in parse_distinguished_name(right)]
    except ValueError:
        return " ".join(left.lower().split()) == " ".join(right.lower().split())
    return a == b


def smtp_x509_identifier(issuer: str, subject: str) -> SmtpX509IdentifierRecord:
    common_name = subject
    with contextlib.suppress(ValueError):
        common_name = next((v for k, v in parse_distinguished_name(subject) if k == "CN"),
                           subject)
    return SmtpX509IdentifierRecord(certificate_issuer=issuer, certificate_subject=subject,
                                    subject_common_name=common_name)


def parse_tls_certificate_name(value: str) -> SmtpX509IdentifierRecord | None:
    """``<I>issuer<S>subject`` -> identifier record; None when malformed."""
    split = split_tls_certificate_name(value)
    if split is None:
        return None
    return smtp_x509_identifier(*split)


# --------------------------------------------------------------------------- mutable state

@dataclass
class _Certificate:
    spec: LabCertificateSpec
    issued: IssuedCertificate
    services: ExchangeService
    """Services other than IIS (IIS follows the web-site bindings of the server)."""

    @property
    def thumbprint(self) -> str:
        return self.issued.thumbprint


@dataclass
class _Server:
    spec: LabServerSpec
    certificates: list[_Certificate]
    iis_front_end: str | None
    iis_back_end: str | None
    default_smtp: str | None

    @property
    def name(self) -> str:
        return self.spec.name

    def certificate(self, thumbprint: str) -> _Certificate | None:
        wanted = thumbprint.strip().upper()
        return next((c for c in self.certificates if c.thumbprint == wanted), None)

    def services(self, cert: _Certificate) -> ExchangeService:
        services = cert.services
        if cert.thumbprint in (self.iis_front_end, self.iis_back_end):
            services |= ExchangeService.IIS
        return services


@dataclass
class _SendConnector:
    spec: LabSendConnectorSpec
    source_servers: list[str]
    tls_certificate_name: SmtpX509IdentifierRecord | None
    enabled: bool
    fqdn: str | None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class _Queue:
    identity: str
    server: str
    delivery_type: str
    next_hop_domain: str
    status: str
    message_count: int
    last_error: str | None
    connector: str | None = None


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str
    mandatory: bool = False
    position: int | None = None


@dataclass(frozen=True)
class _Cmdlet:
    name: str
    full_name: str
    module: str
    params: tuple[_Param, ...]
    should_process: bool = False


@dataclass
class _Outcome:
    output: list[object] = field(default_factory=list)
    errors: list[ErrorSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log: str = "ok"
    failed: bool = False


@dataclass(frozen=True)
class _Prompt:
    request: ConfirmationRequest
    resume: Callable[[bool | None], _Outcome | _Prompt]


class _Terminate(Exception):
    def __init__(self, error: ErrorSpec) -> None:
        super().__init__(error.message)
        self.error = error


_COMMON_PARAMETERS: tuple[_Param, ...] = (
    _Param("ErrorAction", "string"), _Param("WarningAction", "string"),
    _Param("InformationAction", "string"), _Param("Verbose", "switch"),
    _Param("Debug", "switch"), _Param("ErrorVariable", "string"),
    _Param("WarningVariable", "string"), _Param("InformationVariable", "string"),
    _Param("OutVariable", "string"), _Param("OutBuffer", "int"),
    _Param("PipelineVariable", "string"),
)
_SHOULD_PROCESS_PARAMETERS = (_Param("Confirm", "switch"), _Param("WhatIf", "switch"))
_PARAMETER_ALIASES = {
    "ea": "ErrorAction", "wa": "WarningAction", "infa": "InformationAction", "vb": "Verbose",
    "db": "Debug", "ev": "ErrorVariable", "wv": "WarningVariable", "iv": "InformationVariable",
    "ov": "OutVariable", "ob": "OutBuffer", "pv": "PipelineVariable", "cf": "Confirm",
    "wi": "WhatIf",
}
_DC = _Param("DomainController", "string")

_CMDLETS: tuple[_Cmdlet, ...] = (
    _Cmdlet("Get-ExchangeServer", f"{_EXCHANGE_TASKS}.GetExchangeServer", "Exchange",
            (_Param("Identity", "string", position=0), _Param("Status", "switch"), _DC)),
    _Cmdlet("Get-ExchangeCertificate", f"{_EXCHANGE_TASKS}.GetExchangeCertificate", "Exchange",
            (_Param("Thumbprint", "string", position=0), _Param("Identity", "string"),
             _Param("Server", "string"), _Param("DomainName", "strings"), _DC)),
    _Cmdlet("Enable-ExchangeCertificate", f"{_EXCHANGE_TASKS}.EnableExchangeCertificate",
            "Exchange",
            (_Param("Thumbprint", "string", position=0), _Param("Identity", "string"),
             _Param("Server", "string"), _Param("Services", "services", mandatory=True),
             _Param("Force", "switch"), _Param("DoNotRequireSsl", "switch"),
             _Param("NetworkServiceAllowed", "switch"), _DC),
            should_process=True),
    _Cmdlet("Remove-ExchangeCertificate", f"{_EXCHANGE_TASKS}.RemoveExchangeCertificate",
            "Exchange",
            (_Param("Thumbprint", "string", position=0), _Param("Identity", "string"),
             _Param("Server", "string"), _DC),
            should_process=True),
    _Cmdlet("Get-SendConnector", f"{_EXCHANGE_TASKS}.GetSendConnector", "Exchange",
            (_Param("Identity", "string", position=0), _DC)),
    _Cmdlet("Set-SendConnector", f"{_EXCHANGE_TASKS}.SetSendConnector", "Exchange",
            (_Param("Identity", "string", mandatory=True, position=0),
             _Param("TlsCertificateName", "tls_name"), _Param("Enabled", "bool"),
             _Param("Fqdn", "nullable_string"), _Param("Force", "switch"), _DC),
            should_process=True),
    _Cmdlet("Get-ReceiveConnector", f"{_EXCHANGE_TASKS}.GetReceiveConnector", "Exchange",
            (_Param("Identity", "string", position=0), _Param("Server", "string"), _DC)),
    _Cmdlet("Get-HybridConfiguration", "Microsoft.Exchange.Management.Hybrid."
            "GetHybridConfiguration", "Exchange", (_DC,)),
    _Cmdlet("Get-Queue", "Microsoft.Exchange.Management.QueueViewerTasks.GetQueue", "Exchange",
            (_Param("Identity", "string", position=0), _Param("Server", "string"),
             _Param("Filter", "string"), _Param("ResultSize", "string"))),
    _Cmdlet("Retry-Queue", "Microsoft.Exchange.Management.QueueViewerTasks.RetryQueue",
            "Exchange",
            (_Param("Identity", "string", position=0), _Param("Server", "string"),
             _Param("Filter", "string"), _Param("Resubmit", "bool")),
            should_process=True),
    _Cmdlet("Select-Object", "Microsoft.PowerShell.Commands.SelectObjectCommand",
            "Microsoft.PowerShell.Utility",
            (_Param("Property", "strings", position=0), _Param("ExcludeProperty", "strings"),
             _Param("First", "int"), _Param("Last", "int"), _Param("Skip", "int"))),
    _Cmdlet("Get-Command", "Microsoft.PowerShell.Commands.GetCommandCommand",
            "Microsoft.PowerShell.Core",
            (_Param("Name", "strings", position=0), _Param("Module", "strings"),
             _Param("CommandType", "string"))),
)
assert tuple(c.name for c in _CMDLETS) == LAB_CMDLETS

_DEFAULT_RECEIVE_CONNECTORS: tuple[tuple[str, int], ...] = (
    ("Default {server}", 2525),
    ("Client Proxy {server}", 465),
    ("Default Frontend {server}", 25),
    ("Outbound Proxy Frontend {server}", 717),
    ("Client Frontend {server}", 587),
)

_QUEUE_FILTER_PROPERTIES = ("Identity", "DeliveryType", "NextHopDomain", "Status",
                            "MessageCount", "LastError")
_FILTER_CLAUSE = re.compile(
    r"\s*(?P<prop>[A-Za-z]+)\s+-(?P<op>eq|ne)\s+(?:'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|"
    r"(?P<bare>[^\s'\"]+))\s*",
    re.IGNORECASE)


def _error_fqid(kind: str, cmdlet: _Cmdlet) -> str:
    return f"{kind},{cmdlet.full_name}"


# --------------------------------------------------------------------------- the model

class ExchangeOrganisation:
    """A simulated Exchange organisation built from a :class:`LabState`.

    Mutations (bindings, connector pins, queues) live here; the state is never modified.
    """

    def __init__(self, state: LabState, *, clock: Callable[[], datetime],
                 pki: LabPKI | None = None) -> None:
        self._state = state
        self._clock = clock
        self._pki = pki if pki is not None else LabPKI.build(state)
        self._log: list[CallLogEntry] = []
        self._request_counter = 0
        self._servers: dict[str, _Server] = {}
        for spec in state.servers:
            certificates = [
                _Certificate(spec=c, issued=self._pki.issue(c, spec),
                             services=c.services & ~ExchangeService.IIS)
                for c in spec.certificates
            ]
            by_id = {c.spec.id: c.thumbprint for c in certificates}
            front, back = iis_bindings(spec.certificates)
            self._servers[spec.name.lower()] = _Server(
                spec=spec,
                certificates=certificates,
                iis_front_end=by_id.get(front) if front else None,
                iis_back_end=by_id.get(back) if back else None,
                default_smtp=by_id.get(spec.default_smtp_certificate)
                if spec.default_smtp_certificate else None,
            )
        self._connectors: list[_SendConnector] = []
        for spec in state.servers:
            for connector_spec in spec.send_connectors:
                existing = self._connector(connector_spec.name)
                if existing is not None:
                    existing.source_servers.append(spec.name)
                    continue
                self._connectors.append(_SendConnector(
                    spec=connector_spec,
                    source_servers=[spec.name],
                    tls_certificate_name=self._resolve_pin(connector_spec.tls_certificate_name,
                                                           spec),
                    enabled=connector_spec.enabled,
                    fqdn=connector_spec.fqdn,
                ))
        self._hybrid = self._build_hybrid()
        self._queues: dict[str, list[_Queue]] = {
            server.name.lower(): self._build_queues(server) for server in self._servers.values()
        }

    # ----------------------------------------------------------------- construction

    def _resolve_pin(self, value: str | None, server: LabServerSpec
                     ) -> SmtpX509IdentifierRecord | None:
        if value is None:
            return None
        literal = parse_tls_certificate_name(value)
        if literal is not None:
            return literal
        issued = self._pki.certificate(server.name, value)
        return smtp_x509_identifier(issued.issuer, issued.subject)

    def _build_hybrid(self) -> LabHybridConfigurationRecord | None:
        hybrid = self._state.hybrid
        if hybrid is None:
            return None
        pin: SmtpX509IdentifierRecord | None = None
        if hybrid.tls_certificate_name is not None:
            pin = parse_tls_certificate_name(hybrid.tls_certificate_name)
            if pin is None:
                server = next(s for s in self._state.servers
                              if s.certificate(hybrid.tls_certificate_name))
                pin = self._resolve_pin(hybrid.tls_certificate_name, server)
        sending = tuple(dict.fromkeys(
            name for c in self._connectors if c.spec.cloud for name in c.source_servers))
        return LabHybridConfigurationRecord(
            tls_certificate_name=pin,
            on_premises_smart_host=hybrid.on_premises_smart_host,
            domains=hybrid.domains,
            sending_transport_servers=sending,
        )

    def _build_queues(self, server: _Server) -> list[_Queue]:
        queues = [_Queue(identity=f"{server.name}\\Submission", server=server.name,
                         delivery_type="Undefined", next_hop_domain="Submission",
                         status="Ready", message_count=0, last_error=None)]
        connector = self._cloud_connector_for(server.name)
        if connector is None:
            return queues
        number = zlib.crc32(f"{server.name}/{connector.name}".encode()) % 90 + 10
        queue = _Queue(identity=f"{server.name}\\{number}", server=server.name,
                       delivery_type="SmartHostConnectorDelivery",
                       next_hop_domain=self._state.smart_host, status="Ready",
                       message_count=server.spec.queue_messages, last_error=None,
                       connector=connector.name)
        self._deliver(queue)
        queues.append(queue)
        return queues

    # ----------------------------------------------------------------- public views

    @property
    def state(self) -> LabState:
        return self._state

    @property
    def pki(self) -> LabPKI:
        return self._pki

    @property
    def servers(self) -> tuple[LabServerRecord, ...]:
        return tuple(self._server_record(s) for s in self._servers.values())

    def call_log(self) -> tuple[CallLogEntry, ...]:
        """Every command run so far, refused ones included, oldest first."""
        return tuple(self._log)

    def public_root_certificates(self) -> list[x509.Certificate]:
        """The roots Exchange Online trusts in this lab (``check --lab`` trusts them too)."""
        return self._pki.public_root_certificates()

    def certificates(self, server: str) -> tuple[LabCertificateRecord, ...]:
        """The certificate records of ``server`` as Get-ExchangeCertificate would give them."""
        found = self._server(server)
        if found is None:
            raise KeyError(server)
        return tuple(self._certificate_record(found, c) for c in found.certificates)

    def predict_outbound(self, server: str, connector: str) -> OutboundPrediction:
        """The certificate ``server`` would present to Exchange Online on ``connector``."""
        found_server = self._server(server)
        found_connector = self._connector(connector)
        if found_server is None:
            raise KeyError(server)
        if found_connector is None:
            raise KeyError(connector)
        return self._predict(found_server, found_connector)

    def predicted_outbound_thumbprint(self, server: str, connector: str) -> str | None:
        return self.predict_outbound(server, connector).thumbprint

    def queue_for_exchange_online(self, server: str) -> LabQueueRecord | None:
        """The queue of ``server`` whose next hop is the tenant's smart host, if any."""
        queue = next((q for q in self._queues.get(server.lower(), [])
                      if q.delivery_type == "SmartHostConnectorDelivery"), None)
        return None if queue is None else self._queue_record(queue)

    def run(self, commands: Sequence[CommandCall], *, user: str, connected_server: str,
            answer: bool | None = None) -> PipelineResult:
        """Run a pipeline answering every confirmation with ``answer`` (tests, demos)."""
        pipeline = self.execute(commands, user=user, connected_server=connected_server)
        try:
            next(pipeline)
            while True:
                pipeline.send(answer)
        except StopIteration as stop:
            result: PipelineResult = stop.value
            return result

    # ----------------------------------------------------------------- execution

    def execute(self, commands: Sequence[CommandCall], *, user: str, connected_server: str
                ) -> Generator[ConfirmationRequest, bool | None, PipelineResult]:
        """Run one pipeline. Yields a ConfirmationRequest when Exchange would prompt; send
        True (yes), False (no) or None (the client has no host: a terminating HostException).
        """
        errors: list[ErrorSpec] = []
        warnings: list[str] = []
        scripts = [c for c in commands if c.is_script]
        if scripts:
            error = ErrorSpec(message=NO_LANGUAGE_MESSAGE, category="ParserError",
                              fully_qualified_error_id="ScriptsNotAllowed",
                              exception_type="System.Management.Automation.ParseException",
                              terminating=True)
            for call in scripts:
                self._record(user, call, f"refused: {NO_LANGUAGE_MESSAGE}")
            return PipelineResult(errors=(error,), failed=True)
        pipeline_input: list[object] | None = None
        for index, call in enumerate(commands):
            cmdlet = self._find_cmdlet(call.name)
            try:
                if cmdlet is None:
                    raise _Terminate(ErrorSpec(
                        message=f"The term '{call.name}' is not recognized as the name of a "
                                "cmdlet, function, script file, or operable program. Check the "
                                "spelling of the name, or if a path was included, verify that "
                                "the path is correct and try again.",
                        category="ObjectNotFound",
                        fully_qualified_error_id="CommandNotFoundException",
                        target=call.name,
                        exception_type="System.Management.Automation.CommandNotFoundException",
                        terminating=True))
                arguments = self._bind(cmdlet, call)
                if index > 0 and pipeline_input and cmdlet.name != "Select-Object":
                    raise _Terminate(ErrorSpec(
                        message="The input object cannot be bound to any parameters for the "
                                "command either because the command does not take pipeline "
                                "input or the input and its properties do not match any of the "
                                "parameters that take pipeline input.",
                        category="InvalidArgument",
                        fully_qualified_error_id=_error_fqid("InputObjectNotBound", cmdlet),
                        exception_type=_PARAMETER_BINDING, terminating=True))
                context = _Context(user=user, connected_server=connected_server,
                                   now=self._clock(), cmdlet=cmdlet,
                                   pipeline_input=pipeline_input or [])
                step: _Outcome | _Prompt = self._dispatch(context, arguments)
                while isinstance(step, _Prompt):
                    answer = yield step.request
                    step = step.resume(answer)
                outcome = _apply_error_action(step, arguments.get("ErrorAction"))
            except _Terminate as stop:
                self._record(user, call, f"failed: {stop.error.message}")
                return PipelineResult(output=(), errors=(*errors, stop.error), failed=True,
                                      warnings=tuple(warnings))
            self._record(user, call, outcome.log)
            errors.extend(outcome.errors)
            warnings.extend(outcome.warnings)
            if outcome.failed:
                return PipelineResult(output=(), errors=tuple(errors), failed=True,
                                      warnings=tuple(warnings))
            pipeline_input = outcome.output
        return PipelineResult(output=tuple(pipeline_input or ()), errors=tuple(errors),
                              failed=False, warnings=tuple(warnings))

    def _record(self, user: str, call: CommandCall, outcome: str) -> None:
        self._log.append(CallLogEntry(time=self._clock(), user=user, cmdlet=call.name,
                                      parameters=call.parameters, outcome=outcome))

    @staticmethod
    def _find_cmdlet(name: str) -> _Cmdlet | None:
        return next((c for c in _CMDLETS if c.name.lower() == name.strip().lower()), None)

    def _dispatch(self, context: _Context, arguments: dict[str, Any]) -> _Outcome | _Prompt:
        handlers: dict[str, Callable[[_Context, dict[str, Any]], _Outcome | _Prompt]] = {
            "Get-ExchangeServer": self._get_exchange_server,
            "Get-ExchangeCertificate": self._get_exchange_certificate,
            "Enable-ExchangeCertificate": self._enable_exchange_certificate,
            "Remove-ExchangeCertificate": self._remove_exchange_certificate,
            "Get-SendConnector": self._get_send_connector,
            "Set-SendConnector": self._set_send_connector,
            "Get-ReceiveConnector": self._get_receive_connector,
            "Get-HybridConfiguration": self._get_hybrid_configuration,
            "Get-Queue": self._get_queue,
            "Retry-Queue": self._retry_queue,
            "Select-Object": self._select_object,
            "Get-Command": self._get_command,
        }
        return handlers[context.cmdlet.name](context, arguments)

    # ----------------------------------------------------------------- parameter binding

    def _bind(self, cmdlet: _Cmdlet, call: CommandCall) -> dict[str, Any]:
        """Bind parameters as PowerShell does: case-insensitive names, unique prefixes,
        positional arguments, switches; mandatory parameters missing are an error."""
        available = cmdlet.params + _COMMON_PARAMETERS + \
            (_SHOULD_PROCESS_PARAMETERS if cmdlet.should_process else ())
        bound: dict[str, Any] = {}
        positional = sorted((p for p in cmdlet.params if p.position is not None),
                            key=lambda p: p.position or 0)
        for raw_name, value in call.parameters:
            if raw_name is None:
                param = next((p for p in positional if p.name not in bound), None)
                if param is None:
                    raise _Terminate(ErrorSpec(
                        message=f"A positional parameter cannot be found that accepts "
                                f"argument '{_display(value)}'.",
                        category="InvalidArgument",
                        fully_qualified_error_id=_error_fqid("PositionalParameterNotFound",
                                                             cmdlet),
                        target=_display(value), exception_type=_PARAMETER_BINDING,
                        terminating=True))
            else:
                param = _match_parameter(cmdlet, available, raw_name)
            if param.name in bound:
                raise _Terminate(ErrorSpec(
                    message=f"Cannot bind parameter because parameter '{param.name}' is "
                            "specified more than once. To provide multiple values to "
                            "parameters that can accept multiple values, use the array syntax.",
                    category="InvalidArgument",
                    fully_qualified_error_id=_error_fqid("ParameterAlreadyBound", cmdlet),
                    exception_type=_PARAMETER_BINDING, terminating=True))
            bound[param.name] = _convert(cmdlet, param, value)
        missing = [p.name for p in cmdlet.params if p.mandatory and p.name not in bound]
        if cmdlet.name in ("Enable-ExchangeCertificate", "Remove-ExchangeCertificate") \
                and "Thumbprint" not in bound and "Identity" not in bound:
            missing.insert(0, "Thumbprint")
        if missing:
            raise _Terminate(ErrorSpec(
                message="Cannot process command because of one or more missing mandatory "
                        f"parameters: {' '.join(missing)}.",
                category="InvalidArgument",
                fully_qualified_error_id=_error_fqid("MissingMandatoryParameter", cmdlet),
                exception_type=_PARAMETER_BINDING, terminating=True))
        return bound

    # ----------------------------------------------------------------- lookups

    def _server(self, name: str) -> _Server | None:
        key = name.strip().lower()
        found = self._servers.get(key)
        if found is None:
            found = next((s for s in self._servers.values() if s.spec.fqdn == key), None)
        return found

    def _connector(self, name: str) -> _SendConnector | None:
        key = name.strip().lower()
        return next((c for c in self._connectors if c.name.lower() == key), None)

    def _cloud_connector_for(self, server: str) -> _SendConnector | None:
        return next((c for c in self._connectors
                     if c.spec.cloud and c.enabled
                     and server.lower() in (s.lower() for s in c.source_servers)), None)

    def _not_found(self, context: _Context, identity: str) -> ErrorSpec:
        return self._exchange_error(
            context,
            f"The operation couldn't be performed because object '{identity}' couldn't be "
            f"found on 'DC01.{self._state.ad_domain}'.",
            category="ObjectNotFound", exception_type=_NOT_FOUND, target=identity)

    def _exchange_error(self, context: _Context, message: str, *, category: str,
                        exception_type: str, target: str | None = None) -> ErrorSpec:
        self._request_counter += 1
        request_id = uuid.uuid5(uuid.NAMESPACE_OID, f"exchange-tls-lab/{self._request_counter}")
        short_type = exception_type.rsplit(".", 1)[-1]
        code = f"{zlib.crc32(f'{short_type}/{context.cmdlet.name}'.encode()):08X}"
        fqid = (f"[Server={context.connected_server.upper()},RequestId={request_id},"
                f"TimeStamp={dotnet_datetime(context.now)}] "
                f"[FailureCategory=Cmdlet-{short_type}] {code},{context.cmdlet.full_name}")
        return ErrorSpec(message=message, category=category, fully_qualified_error_id=fqid,
                         target=target, exception_type=exception_type)

    def _resolve_server(self, context: _Context, name: str | None
                        ) -> tuple[_Server | None, ErrorSpec | None]:
        wanted = name if name is not None else context.connected_server
        found = self._server(wanted)
        if found is None:
            return None, self._not_found(context, wanted)
        return found, None

    def _resolve_certificate(self, context: _Context, arguments: dict[str, Any]
                             ) -> tuple[_Server | None, _Certificate | None, list[ErrorSpec]]:
        thumbprint: str | None = arguments.get("Thumbprint")
        server_name: str | None = arguments.get("Server")
        identity: str | None = arguments.get("Identity")
        if thumbprint is not None and "\\" in thumbprint:
            identity, thumbprint = thumbprint, None
        if identity is not None:
            if "\\" in identity:
                server_name, thumbprint = identity.split("\\", 1)
            else:
                thumbprint = identity
        server, error = self._resolve_server(context, server_name)
        if server is None:
            return None, None, [error] if error else []
        if thumbprint is None:
            return server, None, []
        cert = server.certificate(thumbprint)
        if cert is None:
            return server, None, [self._exchange_error(
                context, f"The certificate with thumbprint {thumbprint.strip().upper()} was "
                         "not found.",
                category="ObjectNotFound", exception_type=_NOT_FOUND, target=thumbprint)]
        return server, cert, []

    # ----------------------------------------------------------------- records

    def _server_record(self, server: _Server) -> LabServerRecord:
        return LabServerRecord(
            name=server.name, fqdn=server.spec.fqdn,
            admin_display_version=server.spec.version,
            site=f"{self._state.ad_domain}/Configuration/Sites/{server.spec.site}",
            server_role="Mailbox")

    def _root_ca_type(self, cert: _Certificate) -> RootCAType:
        if cert.spec.root_ca_type is not None:
            return cert.spec.root_ca_type
        if cert.issued.ca_id is None:
            return RootCAType.REGISTRY
        return RootCAType.THIRD_PARTY if self._pki.is_public_ca(cert.issued.ca_id) \
            else RootCAType.ENTERPRISE

    def _status(self, cert: _Certificate, now: datetime) -> CertificateStatus:
        if not cert.issued.not_before <= now <= cert.issued.not_after:
            return CertificateStatus.DATE_INVALID
        if cert.issued.ca_id is not None and not self._ca_valid(cert.issued.ca_id, now):
            return CertificateStatus.UNTRUSTED
        return CertificateStatus.VALID

    def _ca_valid(self, ca_id: str, now: datetime) -> bool:
        ca = self._pki.ca(ca_id)
        return ca.not_before <= now <= ca.not_after

    def _certificate_record(self, server: _Server, cert: _Certificate,
                            now: datetime | None = None) -> LabCertificateRecord:
        issued = cert.issued
        return LabCertificateRecord(
            server=server.name,
            server_fqdn=server.spec.fqdn,
            thumbprint=issued.thumbprint,
            der=issued.der,
            services=server.services(cert),
            root_ca_type=self._root_ca_type(cert),
            status=self._status(cert, now if now is not None else self._clock()),
            self_signed=issued.self_signed,
            private_key_exportable=cert.spec.has_private_key
            and cert.spec.private_key_exportable,
            subject=issued.subject,
            issuer=issued.issuer,
            serial_number=issued.serial_number,
            not_before=issued.not_before,
            not_after=issued.not_after,
            domains=cert.spec.domains,
            friendly_name=cert.spec.friendly_name,
            public_key_size=issued.public_key_size,
            signature_algorithm=issued.signature_algorithm,
            serialization_data=self._state.serialization_data,
        )

    def _connector_record(self, connector: _SendConnector) -> LabSendConnectorRecord:
        return LabSendConnectorRecord(
            name=connector.name,
            identity=connector.name,
            enabled=connector.enabled,
            cloud_services_mail_enabled=connector.spec.cloud,
            smart_hosts=connector.spec.smart_hosts,
            address_spaces=connector.spec.address_spaces,
            fqdn=connector.fqdn,
            require_tls=connector.spec.require_tls,
            tls_auth_level=connector.spec.tls_auth_level,
            tls_domain=connector.spec.tls_domain,
            tls_certificate_name=connector.tls_certificate_name,
            source_transport_servers=tuple(connector.source_servers),
        )

    def _receive_connector_records(self, server: _Server) -> list[LabReceiveConnectorRecord]:
        return [
            LabReceiveConnectorRecord(
                name=template.format(server=server.name),
                identity=f"{server.name}\\{template.format(server=server.name)}",
                server=server.name,
                fqdn=server.spec.fqdn,
                enabled=True,
                bindings=(f"[::]:{port}", f"0.0.0.0:{port}"),
                tls_certificate_name=None,
            )
            for template, port in _DEFAULT_RECEIVE_CONNECTORS
        ]

    @staticmethod
    def _queue_record(queue: _Queue) -> LabQueueRecord:
        return LabQueueRecord(identity=queue.identity, server=queue.server,
                              delivery_type=queue.delivery_type,
                              next_hop_domain=queue.next_hop_domain, status=queue.status,
                              message_count=queue.message_count, last_error=queue.last_error)

    def _properties(self, item: object) -> dict[str, Any]:
        """An object's properties under their PowerShell names, values with Python types."""
        if isinstance(item, SelectedObject):
            return dict(item.properties)
        if isinstance(item, LabCertificateRecord):
            server = self._server(item.server)
            cert = server.certificate(item.thumbprint) if server else None
            return {
                "Identity": f"{item.server}\\{item.thumbprint}",
                "Thumbprint": item.thumbprint,
                "Services": item.services,
                "ServicesStringForm": services_string_form(item.services),
                "Subject": item.subject,
                "Issuer": item.issuer,
                "CertificateDomains": list(item.domains),
                "NotBefore": item.not_before,
                "NotAfter": item.not_after,
                "IsSelfSigned": item.self_signed,
                "RootCAType": item.root_ca_type,
                "Status": item.status,
                "HasPrivateKey": cert.spec.has_private_key if cert else True,
                "PrivateKeyExportable": item.private_key_exportable,
                "FriendlyName": item.friendly_name,
                "PublicKeySize": item.public_key_size,
                "SerialNumber": item.serial_number,
                "SignatureAlgorithm": item.signature_algorithm,
                "Version": 3,
                "RawData": item.der,
            }
        if isinstance(item, LabSendConnectorRecord):
            return {
                "Name": item.name, "Identity": item.identity, "Enabled": item.enabled,
                "CloudServicesMailEnabled": item.cloud_services_mail_enabled,
                "SmartHosts": list(item.smart_hosts), "AddressSpaces": list(item.address_spaces),
                "Fqdn": item.fqdn, "RequireTLS": item.require_tls,
                "TlsAuthLevel": item.tls_auth_level, "TlsDomain": item.tls_domain,
                "TlsCertificateName": item.tls_certificate_name,
                "SourceTransportServers": list(item.source_transport_servers),
            }
        if isinstance(item, LabReceiveConnectorRecord):
            return {
                "Name": item.name, "Identity": item.identity, "Server": item.server,
                "Fqdn": item.fqdn, "Enabled": item.enabled, "Bindings": list(item.bindings),
                "TlsCertificateName": item.tls_certificate_name,
            }
        if isinstance(item, LabHybridConfigurationRecord):
            return {
                "Name": "Hybrid Configuration", "Identity": "Hybrid Configuration",
                "TlsCertificateName": item.tls_certificate_name,
                "OnPremisesSmartHost": item.on_premises_smart_host,
                "Domains": list(item.domains),
                "SendingTransportServers": list(item.sending_transport_servers),
            }
        if isinstance(item, LabQueueRecord):
            return {
                "Identity": item.identity, "DeliveryType": item.delivery_type,
                "NextHopDomain": item.next_hop_domain, "Status": item.status,
                "MessageCount": item.message_count, "LastError": item.last_error,
            }
        if isinstance(item, LabServerRecord):
            return {
                "Name": item.name, "Fqdn": item.fqdn,
                "AdminDisplayVersion": item.admin_display_version, "Site": item.site,
                "ServerRole": item.server_role,
            }
        if isinstance(item, LabCommandInfoRecord):
            return {
                "Name": item.name, "CommandType": item.command_type,
                "ModuleName": item.module_name, "Parameters": list(item.parameters),
            }
        return {}

    # ----------------------------------------------------------------- mail flow

    def _predict(self, server: _Server, connector: _SendConnector,
                 now: datetime | None = None) -> OutboundPrediction:
        """The documented STARTTLS ranking: SMTP-enabled certificates with a private key
        that match TlsCertificateName (exact Issuer+Subject) or else the connector FQDN or
        else the server FQDN; not expired; newest NotBefore first; the first CA-issued
        certificate valid on the server wins; a self-signed one only when none is."""
        moment = now if now is not None else self._clock()
        pin = connector.tls_certificate_name
        looked_up = connector.fqdn or server.spec.fqdn
        if pin is not None:
            basis = f"TlsCertificateName {pin.to_string()}"
        else:
            source = "connector FQDN" if connector.fqdn else "server FQDN"
            basis = f"TlsCertificateName not set; {source} {looked_up}"
        candidates: list[_Certificate] = []
        for cert in server.certificates:
            if ExchangeService.SMTP not in server.services(cert):
                continue
            if not cert.spec.has_private_key:
                continue
            if pin is not None:
                if not (same_distinguished_name(cert.issued.issuer, pin.certificate_issuer)
                        and same_distinguished_name(cert.issued.subject,
                                                    pin.certificate_subject)):
                    continue
            elif not self._certificate_matches(cert, looked_up):
                continue
            if not cert.issued.not_before <= moment <= cert.issued.not_after:
                continue
            candidates.append(cert)
        candidates.sort(key=lambda c: c.issued.not_before, reverse=True)
        issued = [c for c in candidates if c.issued.ca_id is not None
                  and self._ca_valid(c.issued.ca_id, moment)]
        chosen = issued[0] if issued else (candidates[0] if candidates else None)
        if chosen is None:
            return OutboundPrediction(
                server=server.name, connector=connector.name, thumbprint=None,
                certificate_id=None, publicly_trusted=False,
                reason=f"{basis}: no valid SMTP certificate with a private key matches")
        trusted = self._pki.is_public_ca(chosen.issued.ca_id)
        kind = "CA-issued" if chosen in issued else "self-signed (no valid CA-issued one)"
        reason = (f"{basis}: {len(candidates)} candidate(s); chosen the newest {kind} "
                  f"certificate by NotBefore {chosen.issued.not_before:%Y-%m-%d}: "
                  f"{chosen.thumbprint} ({chosen.issued.subject}, issued by "
                  f"{chosen.issued.issuer}); "
                  f"{'publicly trusted' if trusted else 'not trusted by Exchange Online'}")
        return OutboundPrediction(server=server.name, connector=connector.name,
                                  thumbprint=chosen.thumbprint, certificate_id=chosen.spec.id,
                                  publicly_trusted=trusted, reason=reason)

    @staticmethod
    def _certificate_matches(cert: _Certificate, name: str) -> bool:
        names = list(cert.spec.domains)
        with contextlib.suppress(ValueError):
            names += [v for k, v in parse_distinguished_name(cert.issued.subject) if k == "CN"]
        return any(name_matches(pattern, name) for pattern in names)

    def _deliver(self, queue: _Queue) -> None:
        """Try the queue now: it drains only if the selected certificate is publicly trusted."""
        if queue.connector is None:
            return
        connector = self._connector(queue.connector)
        server = self._server(queue.server)
        if connector is None or server is None:
            return
        if queue.message_count == 0:
            queue.status, queue.last_error = "Ready", None
            return
        prediction = self._predict(server, connector)
        if prediction.publicly_trusted:
            queue.message_count, queue.status, queue.last_error = 0, "Ready", None
            return
        if prediction.thumbprint is None:
            detail = (f"TLS channel: no certificate for {connector.fqdn or server.spec.fqdn} "
                      "was found (event 12014)")
        else:
            detail = "TLS channel: UntrustedRoot: Access Denied"
        queue.status = "Retry"
        queue.last_error = (
            '451 4.4.0 Primary target IP address responded with: "454 4.7.0 Temporary '
            'authentication failure." Attempted failover to alternate host, but that did not '
            "succeed. Either there are no alternate hosts, or delivery failed to all "
            f"alternate hosts. The last endpoint attempted was {EXCHANGE_ONLINE_ENDPOINT}. "
            f"Send connector {connector.name}: {detail}")

    # ----------------------------------------------------------------- cmdlets

    def _get_exchange_server(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        identity: str | None = arguments.get("Identity")
        if identity is None:
            return _Outcome(output=list(self.servers))
        server = self._server(identity)
        if server is None:
            error = self._not_found(context, identity)
            return _Outcome(errors=[error], log=f"error: {error.message}")
        return _Outcome(output=[self._server_record(server)])

    def _get_exchange_certificate(self, context: _Context, arguments: dict[str, Any]
                                  ) -> _Outcome:
        server, cert, errors = self._resolve_certificate(context, arguments)
        if errors:
            return _Outcome(errors=errors, log=f"error: {errors[0].message}")
        assert server is not None
        certs = [cert] if cert is not None else list(server.certificates)
        domain_names: list[str] | None = arguments.get("DomainName")
        if domain_names:
            certs = [c for c in certs
                     if any(self._certificate_matches(c, name) for name in domain_names)]
        return _Outcome(output=[self._certificate_record(server, c, context.now)
                                for c in certs])

    def _enable_exchange_certificate(self, context: _Context, arguments: dict[str, Any]
                                     ) -> _Outcome | _Prompt:
        """``additive`` ORs the services in (documented); ``replace`` sets them (the KB's
        belief). IIS moves the Default Web Site binding to this certificate. SMTP on a
        certificate that is not the default SMTP certificate asks "Overwrite the existing
        default SMTP certificate?" unless -Force: Yes makes it the default; No still enables
        SMTP on it but keeps the current default."""
        server, cert, errors = self._resolve_certificate(context, arguments)
        if errors:
            return _Outcome(errors=errors, log=f"error: {errors[0].message}")
        assert server is not None
        assert cert is not None
        requested: ExchangeService = arguments["Services"]
        if arguments.get("WhatIf"):
            return _Outcome(log="what-if: no change")
        current_default = server.certificate(server.default_smtp) \
            if server.default_smtp else None
        wants_smtp = ExchangeService.SMTP in requested
        if not wants_smtp or current_default is None or current_default is cert:
            return self._apply_enable(server, cert, requested, make_default=wants_smtp,
                                      note="")
        if arguments.get("Force"):
            return self._apply_enable(server, cert, requested, make_default=True,
                                      note="; -Force: default SMTP certificate replaced")
        message = (
            "Overwrite the existing default SMTP certificate?\n\n"
            f"Current certificate: '{current_default.thumbprint}' "
            f"(expires {dotnet_datetime(current_default.issued.not_after)})\n"
            f"Replace it with certificate: '{cert.thumbprint}' "
            f"(expires {dotnet_datetime(cert.issued.not_after)})")
        request = ConfirmationRequest(caption="Confirm", message=message)

        def resume(answer: bool | None) -> _Outcome:
            if answer is None:
                raise _Terminate(_host_exception(context.cmdlet, message))
            if answer:
                return self._apply_enable(
                    server, cert, requested, make_default=True,
                    note="; confirmed: default SMTP certificate replaced")
            return self._apply_enable(
                server, cert, requested, make_default=False,
                note="; declined: default SMTP certificate kept")

        return _Prompt(request=request, resume=resume)

    def _apply_enable(self, server: _Server, cert: _Certificate, requested: ExchangeService,
                      *, make_default: bool, note: str) -> _Outcome:
        before = server.services(cert)
        wanted = requested & ~ExchangeService.IIS
        if self._state.behaviour == "replace":
            cert.services = wanted
        else:
            cert.services |= wanted
        if ExchangeService.IIS in requested:
            server.iis_front_end = cert.thumbprint
        if make_default:
            server.default_smtp = cert.thumbprint
        after = server.services(cert)
        return _Outcome(log=f"ok: {cert.thumbprint} services {_names(before)} -> "
                            f"{_names(after)} ({self._state.behaviour}){note}")

    def _remove_exchange_certificate(self, context: _Context, arguments: dict[str, Any]
                                     ) -> _Outcome | _Prompt:
        server, cert, errors = self._resolve_certificate(context, arguments)
        if errors:
            return _Outcome(errors=errors, log=f"error: {errors[0].message}")
        assert server is not None
        assert cert is not None
        if arguments.get("WhatIf"):
            return _Outcome(log="what-if: no change")
        message = ("Are you sure you want to perform this action?\n"
                   f"Remove certificate with thumbprint {cert.thumbprint} from the computer's "
                   "certificate store?")

        def remove() -> _Outcome:
            tagged = [c.name for c in self._connectors
                      if c.tls_certificate_name is not None
                      and same_distinguished_name(cert.issued.issuer,
                                                  c.tls_certificate_name.certificate_issuer)
                      and same_distinguished_name(cert.issued.subject,
                                                  c.tls_certificate_name.certificate_subject)]
            problem = None
            if tagged:
                problem = (f"A special Rpc error occurs on server {server.name}: These "
                           "certificates are tagged with following Send Connectors : "
                           f"{', '.join(tagged)}. Removing and replacing certificates from "
                           "Send Connector would break the mail flow. If you still want to "
                           "proceed then replace or remove these certificates from Send "
                           "Connector and then try this command.")
            elif server.default_smtp == cert.thumbprint:
                problem = (f"A special Rpc error occurs on server {server.name}: The internal "
                           "transport certificate cannot be removed because that would cause "
                           "the Microsoft Exchange Transport service to stop. To replace the "
                           "internal transport certificate, create a new certificate. The new "
                           "certificate will automatically become the internal transport "
                           "certificate. You can then remove the existing certificate.")
            if problem is not None:
                error = self._exchange_error(context, problem, category="InvalidOperation",
                                             exception_type="System.InvalidOperationException",
                                             target=cert.thumbprint)
                return _Outcome(errors=[error], log=f"error: {problem}")
            server.certificates.remove(cert)
            if server.iis_front_end == cert.thumbprint:
                server.iis_front_end = None
            if server.iis_back_end == cert.thumbprint:
                server.iis_back_end = None
            return _Outcome(log=f"ok: removed {cert.thumbprint}")

        if arguments.get("Confirm", True) is False:
            return remove()

        def resume(answer: bool | None) -> _Outcome:
            if answer is None:
                raise _Terminate(_host_exception(context.cmdlet, message))
            if not answer:
                return _Outcome(log="declined: nothing removed")
            return remove()

        return _Prompt(request=ConfirmationRequest(caption="Confirm", message=message),
                       resume=resume)

    def _get_send_connector(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        identity: str | None = arguments.get("Identity")
        if identity is None:
            return _Outcome(output=[self._connector_record(c) for c in self._connectors])
        connector = self._connector(identity)
        if connector is None:
            error = self._not_found(context, identity)
            return _Outcome(errors=[error], log=f"error: {error.message}")
        return _Outcome(output=[self._connector_record(connector)])

    def _set_send_connector(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        identity: str = arguments["Identity"]
        connector = self._connector(identity)
        if connector is None:
            error = self._not_found(context, identity)
            return _Outcome(errors=[error], log=f"error: {error.message}")
        if arguments.get("WhatIf"):
            return _Outcome(log="what-if: no change")
        changes: list[str] = []
        if "TlsCertificateName" in arguments:
            new_pin: SmtpX509IdentifierRecord | None = arguments["TlsCertificateName"]
            if new_pin != connector.tls_certificate_name:
                old = connector.tls_certificate_name
                changes.append(f"TlsCertificateName {old.to_string() if old else '$null'} -> "
                               f"{new_pin.to_string() if new_pin else '$null'}")
                connector.tls_certificate_name = new_pin
        if "Enabled" in arguments and arguments["Enabled"] != connector.enabled:
            changes.append(f"Enabled {connector.enabled} -> {arguments['Enabled']}")
            connector.enabled = arguments["Enabled"]
        if "Fqdn" in arguments and arguments["Fqdn"] != connector.fqdn:
            changes.append(f"Fqdn {connector.fqdn} -> {arguments['Fqdn']}")
            connector.fqdn = arguments["Fqdn"]
        if not changes:
            warning = (f"The command completed successfully but no settings of "
                       f"'{connector.name}' have been modified.")
            return _Outcome(warnings=[warning], log="ok: no change")
        return _Outcome(log="ok: " + "; ".join(changes))

    def _get_receive_connector(self, context: _Context, arguments: dict[str, Any]
                               ) -> _Outcome:
        identity: str | None = arguments.get("Identity")
        server_name: str | None = arguments.get("Server")
        servers = list(self._servers.values())
        if server_name is not None:
            server, error = self._resolve_server(context, server_name)
            if server is None:
                assert error is not None
                return _Outcome(errors=[error], log=f"error: {error.message}")
            servers = [server]
        records = [r for s in servers for r in self._receive_connector_records(s)]
        if identity is not None:
            wanted = identity.strip().lower()
            records = [r for r in records
                       if wanted in (r.identity.lower(), r.name.lower())]
            if not records:
                error = self._not_found(context, identity)
                return _Outcome(errors=[error], log=f"error: {error.message}")
        return _Outcome(output=list(records))

    def _get_hybrid_configuration(self, context: _Context, arguments: dict[str, Any]
                                  ) -> _Outcome:
        return _Outcome(output=[self._hybrid] if self._hybrid is not None else [])

    def _queues_for(self, context: _Context, arguments: dict[str, Any]
                    ) -> tuple[list[_Queue], list[ErrorSpec]]:
        identity: str | None = arguments.get("Identity")
        server_name: str | None = arguments.get("Server")
        if identity is not None and "\\" in identity:
            server_name = identity.split("\\", 1)[0]
        server, error = self._resolve_server(context, server_name)
        if server is None:
            assert error is not None
            return [], [error]
        queues = self._queues[server.name.lower()]
        if identity is not None:
            wanted = identity.strip().lower()
            queues = [q for q in queues
                      if wanted in (q.identity.lower(), q.identity.split("\\", 1)[1].lower())]
            if not queues:
                return [], [self._exchange_error(
                    context, f"The queue '{identity}' wasn't found.", category="ObjectNotFound",
                    exception_type=_NOT_FOUND, target=identity)]
        if arguments.get("Filter") is not None:
            clauses = _parse_queue_filter(context.cmdlet, arguments["Filter"])
            queues = [q for q in queues if _queue_matches(q, clauses)]
        return queues, []

    def _get_queue(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        queues, errors = self._queues_for(context, arguments)
        if errors:
            return _Outcome(errors=errors, log=f"error: {errors[0].message}")
        return _Outcome(output=[self._queue_record(q) for q in queues])

    def _retry_queue(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        has_identity = arguments.get("Identity") is not None
        has_filter = arguments.get("Filter") is not None
        if has_identity == has_filter:
            if has_identity:
                raise _Terminate(ErrorSpec(
                    message="Parameter set cannot be resolved using the specified named "
                            "parameters.",
                    category="InvalidArgument",
                    fully_qualified_error_id=_error_fqid("AmbiguousParameterSet",
                                                         context.cmdlet),
                    exception_type=_PARAMETER_BINDING, terminating=True))
            raise _Terminate(ErrorSpec(
                message="Cannot process command because of one or more missing mandatory "
                        "parameters: Identity.",
                category="InvalidArgument",
                fully_qualified_error_id=_error_fqid("MissingMandatoryParameter",
                                                     context.cmdlet),
                exception_type=_PARAMETER_BINDING, terminating=True))
        queues, errors = self._queues_for(context, arguments)
        if errors:
            return _Outcome(errors=errors, log=f"error: {errors[0].message}")
        if arguments.get("WhatIf"):
            return _Outcome(log="what-if: no change")
        results: list[str] = []
        for queue in queues:
            if queue.connector is None:
                continue
            self._deliver(queue)
            results.append(f"{queue.identity} {queue.status} ({queue.message_count} messages)")
        return _Outcome(log="ok: " + ("; ".join(results) if results else "no queue matched"))

    def _select_object(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        patterns: list[str] = arguments.get("Property") or ["*"]
        excluded: list[str] = arguments.get("ExcludeProperty") or []
        items = list(context.pipeline_input)
        skip = arguments.get("Skip") or 0
        items = items[skip:]
        if arguments.get("First") is not None:
            items = items[:arguments["First"]]
        if arguments.get("Last") is not None:
            items = items[-arguments["Last"]:] if arguments["Last"] else []
        explicit = "Property" in arguments
        output: list[object] = []
        for item in items:
            properties = self._properties(item)
            if not explicit:
                output.append(item)
                continue
            selected: dict[str, Any] = {}
            for pattern in patterns:
                if any(ch in pattern for ch in "*?["):
                    for name, value in properties.items():
                        if fnmatch.fnmatchcase(name.lower(), pattern.lower()):
                            selected.setdefault(name, value)
                else:
                    name = next((n for n in properties if n.lower() == pattern.lower()),
                                pattern)
                    selected.setdefault(name, properties.get(name))
            for pattern in excluded:
                for name in [n for n in selected if fnmatch.fnmatchcase(n.lower(),
                                                                        pattern.lower())]:
                    del selected[name]
            type_names = item.source_type_names if isinstance(item, SelectedObject) \
                else TYPE_NAMES.get(type(item), ("System.Object",))
            output.append(SelectedObject(source_type_names=type_names, properties=selected))
        return _Outcome(output=output)

    def _get_command(self, context: _Context, arguments: dict[str, Any]) -> _Outcome:
        names: list[str] = arguments.get("Name") or ["*"]
        modules: list[str] = arguments.get("Module") or []
        output: list[object] = []
        errors: list[ErrorSpec] = []
        for name in names:
            matched = [c for c in _CMDLETS if fnmatch.fnmatchcase(c.name.lower(), name.lower())
                       and (not modules or any(fnmatch.fnmatchcase(c.module.lower(), m.lower())
                                               for m in modules))]
            if not matched and not any(ch in name for ch in "*?["):
                errors.append(ErrorSpec(
                    message=f"The term '{name}' is not recognized as the name of a cmdlet, "
                            "function, script file, or operable program. Check the spelling of "
                            "the name, or if a path was included, verify that the path is "
                            "correct and try again.",
                    category="ObjectNotFound",
                    fully_qualified_error_id=_error_fqid("CommandNotFoundException",
                                                         context.cmdlet),
                    target=name,
                    exception_type="System.Management.Automation.CommandNotFoundException"))
            for cmdlet in matched:
                record = LabCommandInfoRecord(
                    name=cmdlet.name, command_type="Cmdlet", module_name=cmdlet.module,
                    parameters=tuple(p.name for p in cmdlet.params))
                if record not in output:
                    output.append(record)
        log = f"error: {errors[0].message}" if errors else "ok"
        return _Outcome(output=output, errors=errors, log=log)


@dataclass(frozen=True)
class _Context:
    user: str
    connected_server: str
    now: datetime
    cmdlet: _Cmdlet
    pipeline_input: list[object]


# --------------------------------------------------------------------------- binding helpers

def _display(value: ParameterValue) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_display(v) for v in value)
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _match_parameter(cmdlet: _Cmdlet, available: tuple[_Param, ...], raw_name: str) -> _Param:
    name = raw_name.strip().lstrip("-").rstrip(":")
    lowered = name.lower()
    exact = next((p for p in available if p.name.lower() == lowered), None)
    if exact is not None:
        return exact
    alias = _PARAMETER_ALIASES.get(lowered)
    if alias is not None:
        found = next((p for p in available if p.name == alias), None)
        if found is not None:
            return found
    prefixed = [p for p in available if p.name.lower().startswith(lowered)] if lowered else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise _Terminate(ErrorSpec(
            message=f"Parameter cannot be processed because the parameter name '{name}' is "
                    "ambiguous. Possible matches include: "
                    f"{' '.join('-' + p.name for p in prefixed)}.",
            category="InvalidArgument",
            fully_qualified_error_id=_error_fqid("AmbiguousParameter", cmdlet),
            target=name, exception_type=_PARAMETER_BINDING, terminating=True))
    raise _Terminate(ErrorSpec(
        message=f"A parameter cannot be found that matches parameter name '{name}'.",
        category="InvalidArgument",
        fully_qualified_error_id=_error_fqid("NamedParameterNotFound", cmdlet),
        target=name, exception_type=_PARAMETER_BINDING, terminating=True))


def _binding_error(cmdlet: _Cmdlet, param: _Param, message: str,
                   kind: str = "CannotConvertArgumentNoMessage") -> _Terminate:
    return _Terminate(ErrorSpec(
        message=message, category="InvalidArgument",
        fully_qualified_error_id=_error_fqid(kind, cmdlet), target=param.name,
        exception_type=_PARAMETER_BINDING, terminating=True))


def _convert(cmdlet: _Cmdlet, param: _Param, value: ParameterValue) -> Any:
    kind = param.kind
    if kind == "switch":
        if value is None or isinstance(value, bool):
            return value is not False
        raise _binding_error(cmdlet, param, f"Cannot convert '{_display(value)}' to the type "
                             f"'System.Management.Automation.SwitchParameter' required by "
                             f"parameter '{param.name}'.")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower().lstrip("$") in ("true", "false"):
            return value.strip().lower().lstrip("$") == "true"
        raise _binding_error(cmdlet, param, f"Cannot process argument transformation on "
                             f"parameter '{param.name}'. Cannot convert value "
                             f"\"{_display(value)}\" to type \"System.Boolean\". Boolean "
                             "parameters accept only Boolean values and numbers, such as "
                             "$True, $False, 1 or 0.", "ParameterArgumentTransformationError")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        raise _binding_error(cmdlet, param, f"Cannot bind parameter '{param.name}'. Cannot "
                             f"convert value \"{_display(value)}\" to type \"System.Int32\".")
    if kind == "strings":
        items = list(value) if isinstance(value, list | tuple) else [value]
        if any(item is None for item in items):
            raise _binding_error(cmdlet, param, f"Cannot bind argument to parameter "
                                 f"'{param.name}' because it is null.",
                                 "ParameterArgumentValidationErrorNullNotAllowed")
        return [str(item) for item in items]
    if kind == "services":
        return _convert_services(cmdlet, param, value)
    if kind == "tls_name":
        if value is None:
            return None
        text = _single_string(cmdlet, param, value)
        parsed = parse_tls_certificate_name(text)
        if parsed is None:
            raise _binding_error(
                cmdlet, param,
                f"Cannot process argument transformation on parameter '{param.name}'. Cannot "
                f"convert value \"{text}\" to type \"Microsoft.Exchange.Data.SmtpX509Identifier"
                f"\". Error: \"The value \"{text}\" isn't a valid SMTP X509 identifier. Use the "
                "format <I>X.500 issuer<S>X.500 subject.\"",
                "ParameterArgumentTransformationError")
        return parsed
    if kind == "nullable_string":
        return None if value is None else _single_string(cmdlet, param, value)
    if value is None:
        raise _binding_error(cmdlet, param, f"Cannot bind argument to parameter "
                             f"'{param.name}' because it is null.",
                             "ParameterArgumentValidationErrorNullNotAllowed")
    return _single_string(cmdlet, param, value)


def _single_string(cmdlet: _Cmdlet, param: _Param, value: ParameterValue) -> str:
    if isinstance(value, list | tuple):
        if len(value) == 1:
            return str(value[0])
        raise _binding_error(cmdlet, param, f"Cannot convert 'System.Object[]' to the type "
                             f"'System.String' required by parameter '{param.name}'. "
                             "Specified method is not supported.")
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _convert_services(cmdlet: _Cmdlet, param: _Param, value: ParameterValue) -> ExchangeService:
    if isinstance(value, int) and not isinstance(value, bool):
        return ExchangeService(value & 127)
    items = list(value) if isinstance(value, list | tuple) else [value]
    result = ExchangeService.NONE
    for item in items:
        if item is None:
            raise _binding_error(cmdlet, param, "Cannot bind argument to parameter 'Services' "
                                 "because it is null.",
                                 "ParameterArgumentValidationErrorNullNotAllowed")
        for part in str(item).split(","):
            try:
                result |= ExchangeService.from_names(part)
            except ValueError:
                raise _binding_error(
                    cmdlet, param,
                    f"Cannot bind parameter 'Services'. Cannot convert value \"{part.strip()}\" "
                    f"to type \"{_EXCHANGE_TASKS}.AllowedServices\". Error: \"Unable to match "
                    f"the identifier name {part.strip()} to a valid enumerator name. Specify "
                    "one of the following enumerator names and try again:\nNone, IMAP, POP, "
                    "UM, IIS, SMTP, Federation, UMCallRouter\"") from None
    return result


def _host_exception(cmdlet: _Cmdlet, message: str) -> ErrorSpec:
    return ErrorSpec(
        message=f"{HOST_EXCEPTION_PREFIX} The host was attempting to request confirmation "
                f"with the following message: {message}",
        category="NotImplemented",
        fully_qualified_error_id=_error_fqid("HostFunctionNotImplemented", cmdlet),
        exception_type="System.Management.Automation.Host.HostException",
        terminating=True)


def _apply_error_action(outcome: _Outcome, action: str | None) -> _Outcome:
    """-ErrorAction Stop turns the first error into a terminating one; SilentlyContinue and
    Ignore drop error records from the stream."""
    if action is None or not outcome.errors:
        return outcome
    lowered = action.strip().lower()
    if lowered == "stop":
        first = replace(outcome.errors[0], terminating=True)
        return replace(outcome, errors=[first], failed=True, output=[],
                       log=f"failed: {first.message}")
    if lowered in ("silentlycontinue", "ignore"):
        return replace(outcome, errors=[])
    return outcome


def _names(services: ExchangeService) -> str:
    return ", ".join(services.names()) or "None"


# --------------------------------------------------------------------------- queue filter

def _parse_queue_filter(cmdlet: _Cmdlet, text: str) -> list[tuple[str, str, str]]:
    """``NextHopDomain -eq 'x' -and Status -eq 'Retry'`` -> [(property, op, value)]."""
    clauses: list[tuple[str, str, str]] = []
    position = 0
    while True:
        match = _FILTER_CLAUSE.match(text, position)
        if match is None:
            raise _filter_error(cmdlet, text, position)
        prop = next((p for p in _QUEUE_FILTER_PROPERTIES
                     if p.lower() == match.group("prop").lower()), None)
        if prop is None:
            raise _filter_error(cmdlet, text, match.start("prop"),
                                f"\"{match.group('prop')}\" is not a recognized filterable "
                                "property. ")
        value = next(v for v in (match.group("sq"), match.group("dq"), match.group("bare"))
                     if v is not None)
        clauses.append((prop, match.group("op").lower(), value))
        position = match.end()
        if position >= len(text):
            return clauses
        joiner = re.compile(r"-and\s+", re.IGNORECASE).match(text, position)
        if joiner is None:
            raise _filter_error(cmdlet, text, position)
        position = joiner.end()


def _filter_error(cmdlet: _Cmdlet, text: str, position: int, detail: str = "") -> _Terminate:
    return _Terminate(ErrorSpec(
        message=f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": "
                f"\"{detail}Invalid filter syntax. For a description of the filter parameter "
                f"syntax see the command help.\n\"{text}\" at position {position + 1}.\"",
        category="InvalidArgument",
        fully_qualified_error_id=_error_fqid("ParameterBindingFailed", cmdlet),
        target="Filter", exception_type=_PARAMETER_BINDING, terminating=True))


def _queue_matches(queue: _Queue, clauses: list[tuple[str, str, str]]) -> bool:
    values = {
        "Identity": queue.identity, "DeliveryType": queue.delivery_type,
        "NextHopDomain": queue.next_hop_domain, "Status": queue.status,
        "MessageCount": str(queue.message_count), "LastError": queue.last_error or "",
    }
    for prop, op, expected in clauses:
        equal = values[prop].lower() == expected.lower()
        if equal != (op == "eq"):
            return False
    return True
