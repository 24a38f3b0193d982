"""Typed queries: read one server's state into a :class:`ServerSnapshot`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from bot.exchange.parse import (
    SnapshotParseError,
    parse_certificate,
    parse_exchange_server,
    parse_hybrid_configuration,
    parse_queue,
    parse_receive_connector,
    parse_send_connector,
)
from bot.exchange.remote_object import RemoteObject
from bot.exchange.session import CommandResult, ExchangeSession, ExchangeUnavailable
from bot.exchange.snapshot import ExchangeCertificate, ExchangeServer, ServerSnapshot

T = TypeVar("T")
SELECTED_CERTIFICATE_PROPERTIES = ("Thumbprint", "Services", "RootCAType", "Status")


def _objects(result: CommandResult) -> list[RemoteObject]:
    return [item for item in result.output if isinstance(item, RemoteObject)]


def _thumbprint_of(obj: RemoteObject) -> str | None:
    value = obj.properties.get("Thumbprint")
    return str(value).upper() if value else None


def _read_certificates(
    session: ExchangeSession, server: str, notes: list[str]
) -> tuple[ExchangeCertificate, ...]:
    result = session.run("Get-ExchangeCertificate", [("Server", server)])
    notes.extend(f"Get-ExchangeCertificate: {error.message}" for error in result.errors)
    raw = _objects(result)
    without_blob = [obj for obj in raw if not obj.properties.get("SerializationData")]
    selected: dict[str, RemoteObject] = {}
    if without_blob:
        if session.has_command("Select-Object"):
            chosen = session.run(
                "Get-ExchangeCertificate",
                [("Server", server)],
                select=SELECTED_CERTIFICATE_PROPERTIES,
            )
            for obj in _objects(chosen):
                thumbprint = _thumbprint_of(obj)
                if thumbprint:
                    selected[thumbprint] = obj
            notes.append(
                f"{len(without_blob)} certificate(s) came without SerializationData; "
                "services read through Select-Object"
            )
        else:
            notes.append(
                f"{len(without_blob)} certificate(s) came without SerializationData and "
                "the endpoint has no Select-Object: their services are unknown"
            )
    certificates: list[ExchangeCertificate] = []
    for obj in raw:
        try:
            certificate = parse_certificate(obj)
            if certificate.services is None and certificate.thumbprint in selected:
                certificate = parse_certificate(obj, selected=selected[certificate.thumbprint])
        except SnapshotParseError as error:
            notes.append(f"certificate skipped: {error}")
            continue
        certificates.append(certificate)
    return tuple(certificates)


def _parse_all(
    objects: Sequence[RemoteObject],
    parser: Callable[[RemoteObject], T],
    what: str,
    notes: list[str],
) -> list[T]:
    parsed: list[T] = []
    for obj in objects:
        try:
            parsed.append(parser(obj))
        except SnapshotParseError as error:
            notes.append(f"{what} skipped: {error}")
    return parsed


def read_snapshot(session: ExchangeSession, server_name: str, *, now: datetime) -> ServerSnapshot:
    """Read certificates, connectors, hybrid configuration and queues of one server.

    Raises :class:`ExchangeUnavailable` when the server cannot be read at all; partial problems
    (one malformed object, a non-terminating error) become notes on the snapshot.
    """
    notes: list[str] = []
    server_result = session.run("Get-ExchangeServer", [("Identity", server_name)])
    servers = _parse_all(_objects(server_result), parse_exchange_server, "server", notes)
    if not servers:
        reason = server_result.errors[0].message if server_result.errors else "no such server"
        raise ExchangeUnavailable(server_name, f"Get-ExchangeServer: {reason}")
    server: ExchangeServer = servers[0]
    certificates = _read_certificates(session, server.name, notes)
    send = session.run("Get-SendConnector")
    receive = session.run("Get-ReceiveConnector", [("Server", server.name)])
    hybrid = session.run("Get-HybridConfiguration")
    queues = session.run("Get-Queue", [("Server", server.name)])
    for label, result in (
        ("Get-SendConnector", send),
        ("Get-ReceiveConnector", receive),
        ("Get-HybridConfiguration", hybrid),
        ("Get-Queue", queues),
    ):
        notes.extend(f"{label}: {error.message}" for error in result.errors)
    hybrid_configs = _parse_all(
        _objects(hybrid), parse_hybrid_configuration, "hybrid configuration", notes
    )
    return ServerSnapshot(
        server=server,
        taken_at=now,
        certificates=certificates,
        send_connectors=tuple(
            _parse_all(_objects(send), parse_send_connector, "send connector", notes)
        ),
        receive_connectors=tuple(
            _parse_all(_objects(receive), parse_receive_connector, "receive connector", notes)
        ),
        hybrid=hybrid_configs[0] if hybrid_configs else None,
        queues=tuple(_parse_all(_objects(queues), parse_queue, "queue", notes)),
        notes=tuple(notes),
    )
