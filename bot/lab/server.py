"""The lab server: Exchange's ``/PowerShell/`` remoting endpoint on loopback.

``LabServer`` puts the pieces together: :class:`~bot.lab.http_server.LabHTTPServer` (HTTP,
auth, encryption), :class:`~bot.lab.psrp_session.ShellManager` (WS-Management shells, PSRP)
and an :class:`~bot.lab.model.ExchangeOrganisation` (the Exchange model). The unmodified
pypsrp client connects to it as to a real Exchange server::

    with start_lab(auth="ntlm") as lab:
        user = lab.users[0]
        wsman = WSMan("127.0.0.1", port=lab.port, path="PowerShell/", ssl=False, auth="ntlm",
                      username=user.qualified_name, password=user.password)
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ...
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote

from bot.lab.http_server import (
    AUTH_MODES,
    MAX_CONNECTIONS,
    AuthMode,
    LabHTTPError,
    LabHTTPServer,
)
from bot.lab.psrp_session import (
    DropConnection,
    Reply,
    ServerEndpoint,
    ShellManager,
    WireCodec,
)

if TYPE_CHECKING:
    from bot.lab.model import ExchangeOrganisation
    from bot.lab.state import LabFaults, LabState, LabUser

CONFIGURATION_NAME = "Microsoft.Exchange"
ENDPOINT_PATH = "/PowerShell/"


class LabServerError(RuntimeError):
    """The lab server cannot start (port in use, unusable users, bad auth mode)."""


class _Application:
    """Routes ``/PowerShell/`` and ``/PowerShell/<SERVER>/`` to the shell manager."""

    def __init__(self, shells: ShellManager, servers: Sequence[ServerEndpoint]) -> None:
        self._shells = shells
        self._servers = tuple(servers)

    def endpoint_for(self, path: str) -> ServerEndpoint | None:
        parts = [part for part in path.split("/") if part]
        if not parts or parts[0].casefold() != "powershell" or len(parts) > 2:
            return None
        if len(parts) == 1:
            return self._servers[0] if self._servers else None
        wanted = parts[1].casefold()
        return next((s for s in self._servers
                     if wanted in (s.name.casefold(), s.fqdn.casefold())), None)

    def handle(self, body: bytes, *, user: str, endpoint: ServerEndpoint, client_ip: str,
               address: str) -> Reply | DropConnection:
        return self._shells.handle(body, user=user, endpoint=endpoint, client_ip=client_ip,
                                   address=address)


class LabServer:
    """A loopback WinRM endpoint serving the lab's Exchange organisation over PSRP."""

    def __init__(
        self,
        organisation: ExchangeOrganisation,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: str = "ntlm",
        https: bool = False,
        faults: LabFaults | None = None,
        wire: WireCodec | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``wire`` replaces :mod:`bot.lab.wire` (tests); ``faults`` the state's faults."""
        if auth not in AUTH_MODES:
            raise LabServerError(f"unknown auth {auth!r}; use one of {', '.join(AUTH_MODES)}")
        self._organisation = organisation
        self._faults: LabFaults = faults if faults is not None else organisation.state.faults
        self._servers = tuple(ServerEndpoint(name=s.name, fqdn=s.fqdn)
                              for s in organisation.servers)
        self._shells = ShellManager(organisation, wire=wire or WireCodec.default(),
                                    faults=lambda: self._faults,
                                    model_lock=model_lock_for(organisation))
        self._http = LabHTTPServer(
            _Application(self._shells, self._servers),
            users=organisation.state.users,
            auth=_auth_mode(auth),
            host=host,
            port=port,
            https=https,
            faults=lambda: self._faults,
            certificate_names=[s.fqdn for s in self._servers],
            max_connections=max_connections,
        )
        self._lock = threading.Lock()
        self._running = False

    def __enter__(self) -> LabServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Listen and serve in background threads; returns once the port is bound."""
        with self._lock:
            if self._running:
                return
            self._shells.open()
            try:
                self._http.start()
            except LabHTTPError as error:
                raise LabServerError(str(error)) from None
            self._running = True

    def stop(self) -> None:
        """Close every shell (waking long-polls), then the listener and its connections."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._shells.close()
            self._http.stop()

    @property
    def organisation(self) -> ExchangeOrganisation:
        return self._organisation

    @property
    def faults(self) -> LabFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: LabFaults) -> None:
        """Change the injected faults of a running server (takes effect per request)."""
        self._faults = faults

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def auth(self) -> str:
        return self._http.auth

    @property
    def https(self) -> bool:
        return self._http.https

    @property
    def scheme(self) -> str:
        return self._http.scheme

    @property
    def configuration_name(self) -> str:
        return CONFIGURATION_NAME

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/PowerShell/``: the first server's endpoint."""
        return f"{self._base()}{ENDPOINT_PATH}"

    def url_for(self, server_name: str) -> str:
        """The endpoint of one server, ``.../PowerShell/<NAME>/``."""
        server = next((s for s in self._servers
                       if s.name.casefold() == server_name.casefold()), None)
        if server is None:
            raise KeyError(server_name)
        return f"{self._base()}{ENDPOINT_PATH}{quote(server.name)}/"

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._servers)

    @property
    def users(self) -> tuple[LabUser, ...]:
        return tuple(self._organisation.state.users)

    @property
    def request_count(self) -> int:
        """HTTP requests served so far (401s included)."""
        return self._http.request_count

    @property
    def refused_connections(self) -> int:
        """Connections closed unserved because ``max_connections`` were open."""
        return self._http.refused_connections

    @property
    def shell_count(self) -> int:
        """Open WinRM shells (runspace pools)."""
        return self._shells.shell_count

    @property
    def tls_certificate_der(self) -> bytes | None:
        """The generated self-signed certificate (https only)."""
        return self._http.tls_certificate_der

    def _base(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


_MODEL_LOCKS: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock_for(organisation: object) -> threading.Lock:
    """The one lock serialising calls into ``organisation``, shared by all its servers."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(organisation)
        if lock is None:
            lock = threading.Lock()
            _MODEL_LOCKS[organisation] = lock
        return lock


def _auth_mode(auth: str) -> AuthMode:
    for mode in AUTH_MODES:
        if mode == auth:
            return mode
    raise LabServerError(f"unknown auth {auth!r}")


def start_lab(
    state: LabState | None = None,
    *,
    auth: str = "ntlm",
    host: str = "127.0.0.1",
    port: int = 0,
    https: bool = False,
    faults: LabFaults | None = None,
    now: datetime | None = None,
) -> LabServer:
    """Start a lab server for ``state`` (default: the KB 2888788 fault) and return it."""
    from bot.lab.model import ExchangeOrganisation
    from bot.lab.state import default_state

    started = now or datetime.now(UTC)
    lab_state = state if state is not None else default_state(now=started)
    organisation = ExchangeOrganisation(lab_state, clock=lambda: datetime.now(UTC))
    server = LabServer(organisation, host=host, port=port, auth=auth, https=https,
                       faults=faults)
    server.start()
    return server
