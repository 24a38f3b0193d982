"""The lab's HTTP/1.1 listener: keep-alive, Basic/NTLM/Negotiate, WinRM message encryption.

One thread per TCP connection; the NTLM/Negotiate context and the message-encryption state
belong to the connection, as on IIS. Every response carries Content-Length (401s included)
and accepted sockets use TCP_NODELAY (headers and body are separate writes).

pyspnego's NTLM acceptor reads credentials only from the file named by the process-wide
``NTLM_USER_FILE`` variable. :class:`NtlmUserFile` owns one such file for the process and,
under a lock, makes it hold the users of the server whose handshake is being stepped, so that
several lab servers (with different users or passwords) coexist in one process.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import logging
import os
import shutil
import socket
import socketserver
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import spnego
import spnego.channel_bindings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pypsrp.encryption import WinRMEncryption

from bot.lab.psrp_session import DropConnection, Reply, ServerEndpoint

log = logging.getLogger(__name__)

AuthMode = Literal["basic", "ntlm", "negotiate"]
AUTH_MODES: tuple[AuthMode, ...] = ("basic", "ntlm", "negotiate")

_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
_ENCRYPTED_PROTOCOL = WinRMEncryption.SPNEGO
_MAX_BODY = 64 * 1024 * 1024
_IDLE_CONNECTION_TIMEOUT = 600.0
_TLS_HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
"""Connections served at once (a thread each, from accept to close); more are closed at once."""


class LabHTTPError(RuntimeError):
    """The listener cannot start (bad users for NTLM, port in use...)."""


class LabCredential(Protocol):
    """A user who may connect (:class:`bot.lab.state.LabUser`)."""

    @property
    def domain(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def password(self) -> str: ...


class HttpFaults(Protocol):
    """The transport-level part of :class:`bot.lab.state.LabFaults`."""

    @property
    def latency_ms(self) -> int: ...
    @property
    def auth_refused(self) -> bool: ...


class WSManApplication(Protocol):
    """What the listener serves: path -> Exchange server, body -> WS-Management reply."""

    def endpoint_for(self, path: str) -> ServerEndpoint | None: ...

    def handle(self, body: bytes, *, user: str, endpoint: ServerEndpoint, client_ip: str,
               address: str) -> Reply | DropConnection: ...


def _credential_key(domain: str, name: str) -> tuple[str, str]:
    return domain.casefold(), name.casefold()


class NtlmUserFile:
    """The process's one ``NTLM_USER_FILE`` (lines ``DOMAIN:user:password``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._directory: str | None = None
        self._path: str | None = None
        self._current: dict[tuple[str, str], str] = {}
        self._registered: dict[int, dict[tuple[str, str], str]] = {}

    def register(self, owner: int, users: Sequence[LabCredential]) -> None:
        """Validate and remember a server's users; create the file and set the variable."""
        entries: dict[tuple[str, str], str] = {}
        for user in users:
            for text in (user.domain, user.name, user.password):
                if ":" in text or "\n" in text or "\r" in text:
                    raise LabHTTPError(
                        f"user {user.domain}\\{user.name}: NTLM credentials cannot contain ':' "
                        "or line breaks; use auth 'basic' or change the state's users")
            entries[_credential_key(user.domain, user.name)] = user.password
            entries.setdefault(_credential_key("", user.name), user.password)
        with self._lock:
            if self._path is None:
                self._directory = tempfile.mkdtemp(prefix="exchange-tls-lab-ntlm-")
                self._path = os.path.join(self._directory, "users")
                atexit.register(self._remove)
            self._registered[owner] = entries
            merged = self._merged(preferred=owner)
            self._write(merged)
            os.environ["NTLM_USER_FILE"] = self._path

    def unregister(self, owner: int) -> None:
        with self._lock:
            self._registered.pop(owner, None)

    @contextlib.contextmanager
    def serving(self, owner: int) -> Iterator[None]:
        """Hold the file for ``owner``'s users while one acceptor step runs."""
        with self._lock:
            wanted = self._registered.get(owner, {})
            if (os.environ.get("NTLM_USER_FILE") != self._path
                    or any(self._current.get(key) != pw for key, pw in wanted.items())):
                self._write(self._merged(preferred=owner))
                if self._path is not None:
                    os.environ["NTLM_USER_FILE"] = self._path
            yield

    def _merged(self, *, preferred: int) -> dict[tuple[str, str], str]:
        merged: dict[tuple[str, str], str] = {}
        for owner, entries in self._registered.items():
            if owner != preferred:
                merged.update(entries)
        merged.update(self._registered.get(preferred, {}))
        return merged

    def _write(self, entries: dict[tuple[str, str], str]) -> None:
        if self._path is None or self._directory is None:
            return
        lines = "".join(f"{domain}:{name}:{password}\n"
                        for (domain, name), password in entries.items())
        descriptor, temporary = tempfile.mkstemp(dir=self._directory)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(lines)
        os.replace(temporary, self._path)
        self._current = dict(entries)

    def _remove(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


NTLM_USER_FILE = NtlmUserFile()


@dataclass(frozen=True)
class TlsMaterial:
    """A generated self-signed server certificate (PEM files in a private directory)."""

    directory: str
    certificate_path: str
    key_path: str
    der: bytes

    def channel_binding_data(self) -> bytes:
        """RFC 5929 ``tls-server-end-point`` data, as pypsrp computes it for NTLM CBT."""
        return b"tls-server-end-point:" + hashlib.sha256(self.der).digest()


def generate_tls_material(names: Sequence[str], *, now: datetime.datetime) -> TlsMaterial:
    """A self-signed ECDSA P-256 certificate for ``names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = next(iter(names), "localhost")
    alternative: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exchange-tls lab"),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tempfile.mkdtemp(prefix="exchange-tls-lab-tls-")
    certificate_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    with open(certificate_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return TlsMaterial(directory, certificate_path, key_path,
                       certificate.public_bytes(serialization.Encoding.DER))


class _ConnectionAuth:
    """Per-connection authentication: the SPNEGO/NTLM context, the user, the encryption."""

    def __init__(self) -> None:
        self.context: spnego.ContextProxy | None = None
        self.user: str | None = None
        self.encryption: WinRMEncryption | None = None

    def reset(self) -> None:
        self.context = None
        self.user = None
        self.encryption = None


class _ThreadingServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], lab: LabHTTPServer) -> None:
        self.lab = lab
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.lab.admit(request)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.lab.release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("lab connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = _IDLE_CONNECTION_TIMEOUT
    server: _ThreadingServer

    def setup(self) -> None:
        lab = self.server.lab
        connection: socket.socket = self.request
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if lab.tls_context is not None:
            connection.settimeout(_TLS_HANDSHAKE_TIMEOUT)
            self.request = lab.tls_context.wrap_socket(connection, server_side=True)
        self.auth = _ConnectionAuth()
        lab.track(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.lab.untrack(self.request)
            if self.server.lab.tls_context is not None:
                with contextlib.suppress(OSError):
                    self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("lab http %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._count()
        self._respond(405, b"", extra=[("Allow", "POST")])

    do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def do_POST(self) -> None:
        lab = self.server.lab
        self._count()
        faults = lab.faults()
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)
        body = self._read_body()
        if body is None:
            return
        endpoint = lab.app.endpoint_for(urlsplit(self.path).path)
        if endpoint is None:
            self._respond(404, b"")
            return
        authenticated = self._authenticate(faults)
        if authenticated is None:
            return
        user, auth_headers = authenticated
        encrypted = self.headers.get("Content-Type", "").lower().startswith(
            ("multipart/encrypted", "multipart/x-multi-encrypted"))
        if encrypted:
            plain = self._decrypt(body)
            if plain is None:
                self._respond(400, b"", extra=auth_headers)
                return
        else:
            plain = body
        if not plain:
            self._respond(200, b"", extra=auth_headers)
            return
        host = self.headers.get("Host") or f"{lab.host}:{lab.port}"
        reply = lab.app.handle(plain, user=user, endpoint=endpoint,
                               client_ip=self.client_address[0],
                               address=f"{lab.scheme}://{host}{self.path}")
        if isinstance(reply, DropConnection):
            log.info("lab fault: dropping the connection on %s", reply.cmdlet)
            self._drop()
            return
        if encrypted and self.auth.encryption is not None:
            content_type, payload = self.auth.encryption.wrap_message(reply.body)
            header = (f'{content_type};protocol="{_ENCRYPTED_PROTOCOL}";'
                      'boundary="Encrypted Boundary"')
            self._respond(reply.status, payload, content_type=header, extra=auth_headers)
        else:
            self._respond(reply.status, reply.body, content_type=_SOAP_CONTENT_TYPE,
                          extra=auth_headers)

    def _count(self) -> None:
        self.server.lab.count_request()

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._respond(411, b"")
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length", "0") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self._respond(400, b"")
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _authenticate(self, faults: HttpFaults) -> tuple[str, list[tuple[str, str]]] | None:
        lab = self.server.lab
        if faults.auth_refused:
            self.auth.reset()
            self._unauthorized()
            return None
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        scheme_name = scheme.casefold()
        if lab.auth == "basic":
            user = lab.check_basic(token.strip()) if scheme_name == "basic" else None
            if user is None:
                self._unauthorized()
                return None
            return user, []
        if scheme_name in ("ntlm", "negotiate") and token.strip():
            return self._step_acceptor("NTLM" if scheme_name == "ntlm" else "Negotiate",
                                       token.strip())
        if self.auth.user is not None:
            return self.auth.user, []
        self._unauthorized()
        return None

    def _step_acceptor(self, scheme: str, token: str) -> tuple[str, list[tuple[str, str]]] | None:
        lab = self.server.lab
        try:
            in_token = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            self.auth.reset()
            self._unauthorized()
            return None
        context = self.auth.context
        if context is None or context.complete:
            self.auth.reset()
            context = lab.new_acceptor(scheme)
            self.auth.context = context
        try:
            with NTLM_USER_FILE.serving(id(lab)):
                out_token = context.step(in_token)
        except Exception as error:
            log.info("lab %s authentication failed (%s)", scheme, type(error).__name__)
            self.auth.reset()
            self._unauthorized()
            return None
        challenge = f"{scheme} {base64.b64encode(out_token).decode('ascii')}" if out_token \
            else None
        if not context.complete:
            self._unauthorized(challenge or scheme)
            return None
        user = lab.canonical_user(context.client_principal or "")
        if user is None:
            self.auth.reset()
            self._unauthorized()
            return None
        self.auth.user = user
        self.auth.encryption = WinRMEncryption(context, _ENCRYPTED_PROTOCOL)
        return user, ([("WWW-Authenticate", challenge)] if challenge else [])

    def _decrypt(self, body: bytes) -> bytes | None:
        if self.auth.encryption is None:
            return None
        content_type = self.headers.get("Content-Type", "")
        boundary = "Encrypted Boundary"
        for part in content_type.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == "boundary":
                boundary = value.strip().strip('"')
        try:
            return bytes(self.auth.encryption.unwrap_message(body, boundary))
        except Exception as error:
            log.info("lab could not decrypt a request (%s)", type(error).__name__)
            return None

    def _unauthorized(self, challenge: str | None = None) -> None:
        lab = self.server.lab
        if challenge is not None:
            headers = [("WWW-Authenticate", challenge)]
        elif lab.auth == "basic":
            headers = [("WWW-Authenticate", f'Basic realm="{lab.host}"')]
        else:
            headers = [("WWW-Authenticate", "NTLM" if lab.auth == "ntlm" else "Negotiate")]
        self._respond(401, b"", extra=headers)

    def _respond(self, status: int, body: bytes, *, content_type: str | None = None,
                 extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        if content_type and body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        connection: socket.socket = self.request
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


class LabHTTPServer:
    """A threaded HTTP(S) listener serving one :class:`WSManApplication`."""

    def __init__(
        self,
        app: WSManApplication,
        *,
        users: Sequence[LabCredential],
        auth: AuthMode,
        host: str = "127.0.0.1",
        port: int = 0,
        https: bool = False,
        faults: Callable[[], HttpFaults],
        certificate_names: Sequence[str] = (),
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if auth not in AUTH_MODES:
            raise LabHTTPError(f"unknown auth {auth!r}; use one of {', '.join(AUTH_MODES)}")
        self.app = app
        self.auth: AuthMode = auth
        self.host = host
        self.https = https
        self.faults = faults
        self.tls_context: ssl.SSLContext | None = None
        self._users = tuple(users)
        self._requested_port = port
        self._certificate_names = tuple(certificate_names)
        self._now = now
        self._tls: TlsMaterial | None = None
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._request_count = 0
        self._count_lock = threading.Lock()
        self.max_connections = max_connections
        self.refused_connections = 0
        self._admitted: set[int] = set()

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return self._server.server_port

    @property
    def request_count(self) -> int:
        with self._count_lock:
            return self._request_count

    @property
    def tls_certificate_der(self) -> bytes | None:
        return self._tls.der if self._tls is not None else None

    def start(self) -> None:
        if self._server is not None:
            return
        if self.auth != "basic":
            NTLM_USER_FILE.register(id(self), self._users)
        try:
            if self.https:
                names = ("localhost", self.host, *self._certificate_names)
                self._tls = generate_tls_material(names, now=self._now())
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self._tls.certificate_path, self._tls.key_path)
                self.tls_context = context
            self._server = _ThreadingServer((self.host, self._requested_port), self)
        except OSError as error:
            self._cleanup()
            raise LabHTTPError(f"cannot listen on {self.host}:{self._requested_port}: "
                               f"{error.strerror or error}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"lab-http-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._cleanup()

    def count_request(self) -> None:
        with self._count_lock:
            self._request_count += 1

    def admit(self, connection: object) -> bool:
        """Take a place for a new connection, if one of ``max_connections`` is free.

        Counted from accept to close, TLS handshake included; :meth:`release` gives it back.
        """
        with self._connections_lock:
            if len(self._admitted) < self.max_connections:
                self._admitted.add(id(connection))
                return True
            self.refused_connections += 1
            first = self.refused_connections == 1
        if first:
            log.warning("lab: %d connections open; new ones are refused (counted in "
                        "refused_connections)", self.max_connections)
        return False

    def release(self, connection: object) -> None:
        with self._connections_lock:
            self._admitted.discard(id(connection))

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def new_acceptor(self, scheme: str) -> spnego.ContextProxy:
        """A fresh NTLM (``NTLM``) or SPNEGO (``Negotiate``) acceptor for one connection."""
        bindings = None
        if self._tls is not None:
            bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=self._tls.channel_binding_data())
        return spnego.server(
            hostname=self.host, service="HTTP", channel_bindings=bindings,
            protocol="ntlm" if scheme == "NTLM" else "negotiate",
            options=spnego.NegotiateOptions.wrapping_winrm,
        )

    def check_basic(self, token: str) -> str | None:
        """The canonical ``DOMAIN\\user`` for a valid Basic credential, else None."""
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        login, separator, password = decoded.partition(":")
        if not separator:
            return None
        user = self._find_user(login)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return f"{user.domain}\\{user.name}"

    def canonical_user(self, principal: str) -> str | None:
        user = self._find_user(principal)
        return f"{user.domain}\\{user.name}" if user is not None else None

    def _find_user(self, login: str) -> LabCredential | None:
        domain, _, name = login.rpartition("\\")
        if not domain and "@" in name:
            name, _, _ = name.partition("@")
        for user in self._users:
            if user.name.casefold() == name.casefold() and (
                    not domain or user.domain.casefold() == domain.casefold()):
                return user
        return None

    def _cleanup(self) -> None:
        NTLM_USER_FILE.unregister(id(self))
        self.tls_context = None
        if self._tls is not None:
            shutil.rmtree(self._tls.directory, ignore_errors=True)
            self._tls = None
