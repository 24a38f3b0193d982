"""Wiring for the ``check`` and ``analyze`` commands: configuration, trust store, lab, report."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from cryptography import x509

from bot.analysis.analyse import analyse_server
from bot.analysis.model import FleetReport, ServerAnalysis
from bot.analysis.trust import TrustStore
from bot.analysis.trust_store import TrustStoreError, load_trust_store
from bot.analysis.verdict import build_report
from bot.check import ProgressCallback, check_fleet
from bot.config import ConfigError, ServerSettings, Settings, TrustSettings, load_settings
from bot.exchange.parse import SnapshotParseError, snapshot_from_objects
from bot.exchange.remote_object import ClixmlError, RemoteObject, read_clixml_file
from bot.exchange.session import Credentials, SessionCache


class CheckRunError(Exception):
    """The command cannot run (bad configuration, unknown server, unreadable file)."""


def trust_store_for(
    settings: TrustSettings, extra_public_roots: Sequence[x509.Certificate] = ()
) -> TrustStore:
    """Load the configured trust store, adding roots the caller knows are public (the lab's)."""
    try:
        store = load_trust_store(
            extra_public_roots=[Path(p) for p in settings.extra_public_roots],
            intermediates=[Path(p) for p in settings.intermediates],
            internal_roots=[Path(p) for p in settings.internal_roots],
            include_certifi=settings.include_certifi,
        )
    except TrustStoreError as error:
        raise CheckRunError(str(error)) from error
    if extra_public_roots:
        store = dataclasses.replace(
            store,
            public_roots=store.public_roots + tuple(extra_public_roots),
            description=f"{store.description}; {len(extra_public_roots)} lab public root(s)",
        )
    return store


@dataclass(frozen=True)
class LabTarget:
    """The in-process lab as the check sees it: servers, their credentials, the lab's public CAs."""

    servers: tuple[ServerSettings, ...]
    credentials: Credentials
    public_roots: tuple[x509.Certificate, ...]


@contextmanager
def running_lab(state_path: str | None) -> Iterator[LabTarget]:
    """Start the simulated Exchange organisation on a free loopback port for one run."""
    from bot.lab.model import ExchangeOrganisation
    from bot.lab.server import LabServer
    from bot.lab.state import LabStateError, default_state, load_state

    now = datetime.now(UTC)
    try:
        state = load_state(Path(state_path), now=now) if state_path else default_state(now=now)
    except (LabStateError, OSError) as error:
        raise CheckRunError(f"lab state: {error}") from error
    organisation = ExchangeOrganisation(state, clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        servers = tuple(
            ServerSettings(
                name=server.name,
                url=lab.url_for(server.name),
                auth="ntlm",
                username_env=None,
                password_env=None,
                connect_timeout=5,
                operation_timeout=20,
            )
            for server in organisation.servers
        )
        yield LabTarget(
            servers=servers,
            credentials=Credentials(f"{user.domain}\\{user.name}", user.password),
            public_roots=tuple(organisation.public_root_certificates()),
        )


def _select_servers(settings: Settings, names: Sequence[str]) -> tuple[ServerSettings, ...]:
    if not names:
        if not settings.servers:
            raise CheckRunError(f"{settings.source}: no [[servers]] configured")
        return settings.servers
    chosen: list[ServerSettings] = []
    for name in names:
        server = settings.server(name)
        if server is None:
            known = ", ".join(settings.server_names) or "none"
            raise CheckRunError(f"unknown server {name!r}; configured servers: {known}")
        chosen.append(server)
    return tuple(chosen)


def _progress_printer(stream: TextIO, total: int) -> ProgressCallback:
    done = 0

    def report(name: str, analysis: ServerAnalysis) -> None:
        nonlocal done
        done += 1
        state = "ok" if analysis.reachable else "unreachable"
        stream.write(f"\r[{done}/{total}] {name}: {state}\033[K")
        if done == total:
            stream.write("\n")
        stream.flush()

    return report


def run_check_command(
    *,
    config_path: str | None,
    server_names: Sequence[str],
    lab: bool,
    lab_state: str | None,
    progress_stream: TextIO | None = None,
) -> FleetReport:
    """Run ``exchange-tls check`` and return the report."""
    if lab_state and not lab:
        raise CheckRunError("--lab-state needs --lab")
    if lab:
        settings = _load(config_path) if config_path else Settings()
        with running_lab(lab_state) as target:
            lab_settings = Settings(servers=target.servers, source="the lab")
            return _check(
                settings,
                _select_servers(lab_settings, server_names),
                trust_store_for(settings.trust, target.public_roots),
                SessionCache(credentials=lambda _: target.credentials),
                progress_stream,
            )
    settings = _load(config_path)
    return _check(
        settings,
        _select_servers(settings, server_names),
        trust_store_for(settings.trust),
        SessionCache(idle_seconds=settings.check.pool_idle_seconds),
        progress_stream,
    )


def _check(
    settings: Settings,
    servers: Sequence[ServerSettings],
    trust: TrustStore,
    cache: SessionCache,
    progress_stream: TextIO | None,
) -> FleetReport:
    try:
        return check_fleet(
            servers,
            cache,
            trust,
            concurrency=settings.check.concurrency,
            plan_scope=settings.check.plan_scope,
            progress=_progress(progress_stream, len(servers)),
        )
    finally:
        cache.close_all()


def _progress(stream: TextIO | None, total: int) -> ProgressCallback | None:
    if stream is None or total < 2:
        return None
    return _progress_printer(stream, total)


def _load(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as error:
        raise CheckRunError(str(error)) from error


def run_analyze_command(
    files: Sequence[Path],
    *,
    config_path: str | None,
    server_name: str | None,
    now: datetime | None = None,
) -> FleetReport:
    """Run ``exchange-tls analyze FILE...`` on Export-Clixml files."""
    settings = _load(config_path) if config_path else Settings()
    objects: list[RemoteObject] = []
    for file in files:
        try:
            objects.extend(read_clixml_file(file))
        except (ClixmlError, OSError) as error:
            raise CheckRunError(str(error)) from error
    now = now or datetime.now(UTC)
    try:
        snapshot = snapshot_from_objects(objects, taken_at=now, server_name=server_name)
    except SnapshotParseError as error:
        raise CheckRunError(str(error)) from error
    trust = trust_store_for(settings.trust)
    analysis = analyse_server(snapshot, trust, now, plan_scope=settings.check.plan_scope)
    return build_report((analysis,), now)
