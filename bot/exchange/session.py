"""Sessions with Exchange's remote PowerShell endpoint over pypsrp.

Layering as in pypsrp: :class:`Credentials` and :class:`ServerSettings` say how to connect,
:class:`ExchangeSession` owns one runspace pool and runs single commands built with
``add_cmdlet``/``add_parameter`` (the endpoint is NoLanguage), and :class:`SessionCache` keeps
one session per server across checks, reopening it when the server dropped it or it idled out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.host import PSHost, PSHostUserInterface
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from bot.config import ServerSettings
from bot.exchange.remote_object import RemoteObject, TolerantPypsrpSerializer, from_pypsrp

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "Microsoft.Exchange"
ParameterValue = str | int | bool | None | Sequence[str]


class ExchangeUnavailable(Exception):
    """The server could not be reached or refused us; ``reason`` is for people."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"{server}: {reason}")
        self.server = server
        self.reason = reason


class CommandTimedOut(ExchangeUnavailable):
    """A command did not finish within the operation time-out; it was asked to stop."""

    def __init__(self, server: str, cmdlet: str, seconds: float) -> None:
        super().__init__(
            server,
            f"{cmdlet} did not finish within {seconds:g} s (operation time-out); it was stopped",
        )
        self.cmdlet = cmdlet


class CommandRefused(Exception):
    """A command ended in a terminating error, or asked a question we never answer yes to."""

    def __init__(self, cmdlet: str, reason: str) -> None:
        super().__init__(f"{cmdlet}: {reason}")
        self.cmdlet = cmdlet
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None = field(repr=False)


def credentials_from_environment(
    settings: ServerSettings, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Read a server's credentials from the environment variables its settings name."""
    env = os.environ if environ is None else environ
    username = env.get(settings.username_env) if settings.username_env else None
    password = env.get(settings.password_env) if settings.password_env else None
    missing = [
        name
        for name, value in ((settings.username_env, username), (settings.password_env, password))
        if name and not value
    ]
    if missing:
        raise ExchangeUnavailable(
            settings.name,
            f"credentials missing: environment variable {' and '.join(missing)} not set",
        )
    return Credentials(username=username, password=password)


@dataclass(frozen=True)
class RemoteError:
    """A non-terminating error record from the error stream."""

    message: str
    category: str | None
    error_id: str | None


@dataclass(frozen=True)
class CommandResult:
    output: tuple[object, ...]
    errors: tuple[RemoteError, ...]
    prompts: tuple[str, ...] = ()


def _choice_label(choice: Any) -> str:
    """A ChoiceDescription's label without its hot-key marker (``&No`` -> ``No``)."""
    properties: dict[str, Any] = {}
    for attribute in ("adapted_properties", "extended_properties"):
        properties.update(getattr(choice, attribute, None) or {})
    label = next((v for k, v in properties.items() if k.lower() == "label"), choice)
    return str(label).replace("&", "")


class RefusingUserInterface(PSHostUserInterface):
    """A host UI that never lets a prompt hang a run: it answers "No" and remembers the question.

    Exchange asks through ShouldContinue (e.g. overwriting the default SMTP certificate); KB
    2989382 says to answer No there. The session turns any prompt into a :class:`CommandRefused`.
    """

    def __init__(self) -> None:
        super().__init__(raw_ui=None)
        self.prompts: list[str] = []

    def PromptForChoice(
        self,
        runspace: Any,
        pipeline: Any,
        caption: Any,
        message: Any,
        choices: Any,
        default_choice: Any,
    ) -> int:
        self.prompts.append(f"{caption}: {message}".strip(": "))
        labels = [_choice_label(choice) for choice in (choices or [])]
        for index, label in enumerate(labels):
            if label.strip().casefold() == "no":
                return index
        return int(default_choice) if isinstance(default_choice, int) else len(labels) - 1

    def Prompt(
        self, runspace: Any, pipeline: Any, caption: Any, message: Any, descriptions: Any
    ) -> dict[str, Any]:
        self.prompts.append(f"{caption}: {message}".strip(": "))
        return {}

    def ReadLine(self, runspace: Any, pipeline: Any) -> str:
        self.prompts.append("ReadLine")
        return ""

    def WriteProgress(self, runspace: Any, pipeline: Any, source_id: Any, record: Any) -> None:
        return None


def _error_from_record(record: Any) -> RemoteError:
    message: str | None = None
    exception = getattr(record, "exception", None)
    if isinstance(exception, GenericComplexObject):
        message = exception.adapted_properties.get("Message") or exception.extended_properties.get(
            "Message"
        )
    if not message:
        message = getattr(record, "details_message", None) or str(record)
    return RemoteError(
        message=str(message),
        category=getattr(record, "reason", None),
        error_id=getattr(record, "fq_error", None),
    )


def describe_failure(error: BaseException) -> str:
    """A readable reason for a transport or protocol failure, without secrets or stack traces."""
    if isinstance(error, AuthenticationError):
        return f"authentication failed: {error}"
    if isinstance(error, WSManFaultError):
        code = f"0x{error.code:08X}" if isinstance(error.code, int) else str(error.code)
        return f"WS-Management fault {code}: {(error.reason or '').strip()}"
    if isinstance(error, WinRMTransportError):
        if error.code == 401:
            return "authentication refused by the server (HTTP 401)"
        return f"HTTP {error.code} from the server"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake failed (certificate not trusted? set ca_bundle)"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "the server did not answer in time (operation time-out)"
    if isinstance(error, requests.exceptions.ConnectionError):
        text = str(error)
        if "Connection refused" in text:
            return "connection refused"
        if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text:
            return "connection dropped by the server"
        return "cannot connect to the server"
    if isinstance(error, WinRMError):
        return f"remote PowerShell error: {error}"
    return f"{type(error).__name__}: {error}"


def install_tolerant_serializer(pool: RunspacePool) -> None:
    """Let the pool read real Get-SendConnector / Get-HybridConfiguration output.

    pypsrp 0.9 loses such objects to a ``KeyError`` (see :class:`TolerantPypsrpSerializer`);
    the pool and its fragmenter share one serializer, so both are replaced before ``open``.
    """
    serializer = TolerantPypsrpSerializer()
    pool._serializer = serializer
    pool._fragmenter.serializer = serializer


def skip_proxy_environment_lookups(wsman: WSMan) -> None:
    """Build pypsrp's HTTP session now and stop requests re-reading proxy variables per request.

    With ``no_proxy=True`` (as :func:`_wsman_for` sets) or an explicit proxy, pypsrp puts an
    entry in the session that overrides any proxy variable, yet requests still reads and
    parses the proxy variables on every request (``trust_env``): a measurable share of a
    check's CPU. pypsrp reads the environment's CA bundle while building the session, before
    this switches ``trust_env`` off.
    """
    transport = wsman.transport
    if transport.proxy is None and not transport.no_proxy:
        return
    if transport.session is None:
        transport.session = transport._build_session()
    transport.session.trust_env = False


def _wsman_for(settings: ServerSettings, credentials: Credentials) -> WSMan:
    parts = urlsplit(settings.url)
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 80)
    path = parts.path.strip("/") or "PowerShell"
    if settings.uses_basic_over_http:
        log.warning(
            "server %s: Basic authentication over http sends the password readable by "
            "anyone on the network; use https",
            settings.name,
        )
    encryption = settings.encryption
    if encryption == "auto" and settings.auth == "basic":
        encryption = "never" if not ssl else "auto"
    operation_timeout = max(1, int(settings.operation_timeout))
    cert_validation: bool | str = settings.cert_validation
    if settings.cert_validation and settings.ca_bundle:
        cert_validation = settings.ca_bundle
    return WSMan(
        parts.hostname or "",
        port=port,
        path=path,
        ssl=ssl,
        auth=settings.auth,
        username=credentials.username,
        password=credentials.password,
        cert_validation=cert_validation,  # type: ignore[arg-type]  # requests: a CA bundle path
        connection_timeout=max(1, int(settings.connect_timeout)),
        operation_timeout=operation_timeout,
        read_timeout=operation_timeout + 10,
        encryption=encryption,
        no_proxy=True,
    )


class ExchangeSession:
    """One runspace pool on one server's ``Microsoft.Exchange`` endpoint. Not thread-safe."""

    def __init__(
        self,
        settings: ServerSettings,
        credentials: Credentials,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._clock = clock
        self._pool: RunspacePool | None = None
        self._ui = RefusingUserInterface()
        self.last_used = clock()
        self.pools_opened = 0
        self._capabilities: dict[str, bool] = {}

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def open(self) -> None:
        """Open the runspace pool (no-op when open)."""
        if self._pool is not None:
            return
        wsman = _wsman_for(self.settings, self._credentials)
        host = PSHost(None, None, False, "exchange-tls", None, self._ui, "1.0")
        pool = RunspacePool(wsman, configuration_name=CONFIGURATION_NAME, host=host)
        install_tolerant_serializer(pool)
        try:
            skip_proxy_environment_lookups(wsman)
            pool.open()
        except Exception as error:
            raise ExchangeUnavailable(self.settings.name, describe_failure(error)) from error
        self._pool = pool
        self.pools_opened += 1
        self.last_used = self._clock()

    def close(self) -> None:
        """Close the pool; errors while closing are logged, not raised."""
        pool, self._pool = self._pool, None
        self._capabilities.clear()
        if pool is None:
            return
        try:
            pool.close()
        except Exception as error:  # the server may already have dropped it
            log.debug(
                "closing the pool on %s failed: %s", self.settings.name, describe_failure(error)
            )

    def run(
        self,
        cmdlet: str,
        parameters: Sequence[tuple[str, ParameterValue]] = (),
        *,
        select: Sequence[str] | None = None,
        read_only: bool = True,
    ) -> CommandResult:
        """Run one cmdlet (optionally piped to ``Select-Object -Property``).

        A read-only command on a reused pool that the server has meanwhile dropped is run once
        more on a fresh pool; a command that changes the server is never repeated.
        """
        reused = self._pool is not None
        try:
            return self._run_once(cmdlet, parameters, select)
        except CommandTimedOut:
            raise
        except ExchangeUnavailable:
            if not (reused and read_only):
                raise
            log.info("session to %s was stale; reopening", self.settings.name)
            return self._run_once(cmdlet, parameters, select)

    def _run_once(
        self,
        cmdlet: str,
        parameters: Sequence[tuple[str, ParameterValue]],
        select: Sequence[str] | None,
    ) -> CommandResult:
        self.open()
        assert self._pool is not None
        ps = PowerShell(self._pool)
        ps.add_cmdlet(cmdlet)
        for name, value in parameters:
            if value is None or value is True:
                ps.add_parameter(name)
            elif isinstance(value, (list, tuple)):
                ps.add_parameter(name, list(value))
            else:
                ps.add_parameter(name, value)
        if select:
            ps.add_cmdlet("Select-Object").add_parameter("Property", list(select))
        prompts_before = len(self._ui.prompts)
        try:
            output = self._invoke_with_deadline(ps, cmdlet)
        except CommandTimedOut:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise ExchangeUnavailable(self.settings.name, describe_failure(error)) from error
        finally:
            self.last_used = self._clock()
        prompts = tuple(self._ui.prompts[prompts_before:])
        errors = tuple(_error_from_record(record) for record in ps.streams.error)
        if prompts:
            raise CommandRefused(
                cmdlet,
                f"Exchange asked for confirmation, which exchange-tls never gives: {prompts[0]}",
            )
        if ps.had_errors:
            reason = errors[0].message if errors else "the command failed"
            raise CommandRefused(cmdlet, reason)
        return CommandResult(
            output=tuple(from_pypsrp(item) for item in output), errors=errors, prompts=prompts
        )

    def _invoke_with_deadline(self, ps: PowerShell, cmdlet: str) -> list[Any]:
        """``invoke()`` with a deadline: pypsrp alone re-polls a slow command forever."""
        limit = self.settings.operation_timeout
        deadline = self._clock() + limit
        ps.begin_invoke()
        while ps.state == PSInvocationState.RUNNING:
            remaining = deadline - self._clock()
            if remaining <= 0:
                try:
                    ps.stop()
                except Exception as error:  # the run is abandoned either way
                    log.debug("stopping %s failed: %s", cmdlet, describe_failure(error))
                raise CommandTimedOut(self.settings.name, cmdlet, limit)
            ps.poll_invoke(timeout=max(1, min(int(remaining + 0.999), int(limit))))
        # pypsrp keeps every finished pipeline in ``pool.pipelines`` for the pool's lifetime;
        # a long-lived pool would grow without bound. The server ended the command already.
        if self._pool is not None:
            self._pool.pipelines.pop(ps.id, None)
        return list(ps.output)

    def has_command(self, name: str) -> bool:
        """Whether the endpoint offers a command (``Get-Command``), cached per pool."""
        if name not in self._capabilities:
            try:
                result = self.run("Get-Command", [("Name", name)])
                self._capabilities[name] = bool(result.output) and not result.errors
            except CommandRefused:
                self._capabilities[name] = False
        return self._capabilities[name]


RemoteObjects = tuple[RemoteObject, ...]


class SessionCache:
    """One :class:`ExchangeSession` per configured server, reused across checks."""

    def __init__(
        self,
        idle_seconds: float = 300.0,
        credentials: Callable[[ServerSettings], Credentials] = credentials_from_environment,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle_seconds = idle_seconds
        self._credentials = credentials
        self._clock = clock
        self._sessions: dict[str, ExchangeSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def session(self, settings: ServerSettings) -> Iterator[ExchangeSession]:
        """Borrow the server's session exclusively; reopen it when idle too long or changed."""
        key = settings.name.casefold()
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            session = self._sessions.get(key)
            if session is not None and (
                session.settings != settings
                or self._clock() - session.last_used > self._idle_seconds
            ):
                session.close()
                session = None
            if session is None:
                session = ExchangeSession(settings, self._credentials(settings), self._clock)
                self._sessions[key] = session
            yield session

    def close_all(self) -> None:
        with self._guard:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
