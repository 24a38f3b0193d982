"""How one bot process takes its place in a deployment: its storage, its replica id, its lease.

A single process uses a SQLite file; several replicas share one PostgreSQL database and need
nothing else to agree (no leader, no extra service):

- each scheduled fire time is a unique row (``INSERT ... ON CONFLICT DO NOTHING``): the replica
  whose insert lands posts, the others do nothing;
- a claim not completed within its lease (its replica died, or Slack refused the post) is taken
  over by a replica that lost it, so a post is neither doubled nor lost;
- request transitions are compare-and-set on (state, version) and execution is claimed with
  ``claim_execution``, so an approval or a run happens once whichever replica Slack reaches;
- a run renews its heartbeat while it lasts; a run whose heartbeat is older than the execution
  lease (its replica died) is marked interrupted by any replica, never re-run.

This module opens the storage (upgrading the schema; safe from several processes at once), names
the replica and reads its leases: the claim lease (for :class:`~bot.schedule.ScheduleRunner`)
and the execution lease (for :class:`~bot.remediation_service.RemediationService`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Final, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot.audit import AuditLog
from bot.config import SECRET_URL_PARAMETERS, Settings
from bot.remediation.executor import DEFAULT_EXECUTION_LEASE
from bot.schedule import DEFAULT_CLAIM_LEASE
from bot.storage import SchemaTooNew, create_engine_from_url, upgrade
from bot.storage.repository import Repository

REPLICA_ID_ENV: Final = "EXCHANGE_TLS_REPLICA_ID"
"""Overrides the replica id (default ``hostname:pid``); keep it stable across restarts of the
same replica and unique among replicas."""
CLAIM_LEASE_ENV: Final = "EXCHANGE_TLS_CLAIM_LEASE_SECONDS"
"""Seconds after which an uncompleted scheduled post may be taken over (default 900)."""
EXECUTION_LEASE_ENV: Final = "EXCHANGE_TLS_EXECUTION_LEASE_SECONDS"
"""Seconds without a heartbeat after which a running remediation is taken for dead and marked
interrupted by any replica (default 600)."""
MAX_REPLICA_ID: Final = 128
"""``schedule_fires.claimed_by`` and ``requests.execution_claimed_by`` are 128 characters."""
SLACK_SECRET_ENVS: Final = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")


class StorageError(Exception):
    """The storage cannot be opened; the message says why (the URL's password is hidden)."""


class ReplicaSettingError(ValueError):
    """A replica setting from the environment is unusable; the message names the variable."""


class Storage(NamedTuple):
    """The database of a bot process: its engine, the repository and the audit trail."""

    engine: Engine
    repository: Repository
    audit: AuditLog

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()


def shown_url(url: str) -> str:
    """``url`` without its password or any secret query parameter, for messages."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(an unreadable storage URL)"
    if any(key.lower() in SECRET_URL_PARAMETERS or "password" in str(value).lower()
           for key, value in parsed.query.items()):
        parsed = parsed.set(query={})
        return parsed.render_as_string(hide_password=True) + "?***"
    return parsed.render_as_string(hide_password=True)


def secret_values(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of the Slack secrets and of every server's password variable, so the audit
    trail can redact them (never logged)."""
    env = os.environ if environ is None else environ
    names = [*SLACK_SECRET_ENVS, *(s.password_env for s in settings.servers if s.password_env)]
    return tuple(value for value in (env.get(name, "") for name in names) if value.strip())


def open_storage(settings: Settings, *, secrets: Iterable[str] = ()) -> Storage:
    """Open ``storage.url`` and bring its schema up to date (several replicas starting
    together upgrade it once). Raises :class:`StorageError`."""
    url = settings.storage.url
    try:
        engine = create_engine_from_url(url)
    except ImportError as error:
        raise StorageError(f"storage.url {shown_url(url)} needs a database driver that is not "
                           f"installed ({error.name}): pip install 'exchange-tls[postgres]'"
                           ) from None
    except (ArgumentError, ValueError) as error:
        raise StorageError(f"storage.url {shown_url(url)} cannot be used: {error}") from None
    try:
        upgrade(engine)
    except SchemaTooNew as error:
        engine.dispose()
        raise StorageError(str(error)) from None
    except SQLAlchemyError as error:
        engine.dispose()
        reason = str(getattr(error, "orig", None) or error).strip()
        first_line = reason.splitlines()[0] if reason else type(error).__name__
        raise StorageError(f"cannot open the storage at {shown_url(url)}: "
                           f"{first_line}") from None
    audit = AuditLog(engine, secret_values=secrets)
    return Storage(engine, Repository(engine, audit=audit), audit)


def replica_id(environ: Mapping[str, str] | None = None) -> str:
    """``EXCHANGE_TLS_REPLICA_ID``, else ``hostname:pid``: names this process in schedule and
    execution claims."""
    env = os.environ if environ is None else environ
    configured = env.get(REPLICA_ID_ENV, "").strip()
    if configured:
        if len(configured) > MAX_REPLICA_ID or not configured.isprintable():
            raise ReplicaSettingError(f"{REPLICA_ID_ENV} must be at most {MAX_REPLICA_ID} "
                                      "printable characters")
        return configured
    suffix = f":{os.getpid()}"
    return socket.gethostname()[:MAX_REPLICA_ID - len(suffix)] + suffix


def claim_lease(environ: Mapping[str, str] | None = None) -> timedelta:
    """``EXCHANGE_TLS_CLAIM_LEASE_SECONDS`` (default 900): longer than a scheduled check and
    post can take, or a slow replica's post is repeated by another."""
    return _lease(CLAIM_LEASE_ENV, DEFAULT_CLAIM_LEASE, environ)


def execution_lease(environ: Mapping[str, str] | None = None) -> timedelta:
    """``EXCHANGE_TLS_EXECUTION_LEASE_SECONDS`` (default 600): how long a running remediation
    may go without a heartbeat before any replica marks it interrupted. A run renews it every
    quarter of the lease whatever its step is doing, so it need only outlast a pause of the
    database, not the slowest step."""
    return _lease(EXECUTION_LEASE_ENV, DEFAULT_EXECUTION_LEASE, environ)


def _lease(name: str, default: timedelta, environ: Mapping[str, str] | None) -> timedelta:
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        raise ReplicaSettingError(f"{name} must be a number of seconds "
                                  f"(got {text[:40]!r})") from None
    if not 1 <= seconds <= 7 * 86400:
        raise ReplicaSettingError(f"{name} must be between 1 and 604800 seconds")
    return timedelta(seconds=seconds)
