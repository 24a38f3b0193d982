"""A versioned schema that upgrades itself on start, never losing data.

Each version is a function of a connection inside one transaction. PostgreSQL runs DDL in
transactions and :func:`upgrade` holds an advisory lock meanwhile, so replicas starting together
upgrade once; SQLite's ``BEGIN IMMEDIATE`` does the same for processes sharing the file. A
database newer than this code is refused rather than touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.type_api import TypeEngine

from bot.storage import schema
from bot.storage.schema import GENESIS_HASH, UTCDateTime, advisory_xact_lock, configure_engine


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer exchange-tls; this version must not touch it."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_metadata() -> MetaData:
    """The tables exactly as version 1 created them (history: never edit)."""
    v1 = MetaData()
    Table("schema_version", v1,
          Column("version", Integer, primary_key=True, autoincrement=False),
          Column("description", String(200), nullable=False),
          Column("applied_at", UTCDateTime, nullable=False))
    Table("requests", v1,
          Column("id", String(16), primary_key=True),
          Column("kind", String(16), nullable=False),
          Column("server", String(64), nullable=False),
          Column("plan_hash", String(128), nullable=False),
          Column("plan_json", Text, nullable=False),
          Column("requested_by", String(32), nullable=False),
          Column("team_id", String(32), nullable=False),
          Column("channel", String(32), nullable=False),
          Column("message_ts", String(32)),
          Column("state", String(16), nullable=False),
          Column("version", Integer, nullable=False),
          Column("created_at", UTCDateTime, nullable=False),
          Column("expires_at", UTCDateTime, nullable=False),
          Column("rollback_of", String(16), ForeignKey("requests.id")),
          Column("previous_tls_certificate_name", Text),
          Column("execution_claimed_by", String(128)),
          Index("ix_requests_server_state", "server", "state"))
    Table("approvals", v1,
          Column("request_id", String(16), ForeignKey("requests.id"), nullable=False),
          Column("user_id", String(32), nullable=False),
          Column("team_id", String(32), nullable=False),
          Column("approved_at", UTCDateTime, nullable=False),
          PrimaryKeyConstraint("request_id", "user_id", name="pk_approvals"))
    Table("audit_events", v1,
          Column("sequence", BigInteger, primary_key=True, autoincrement=False),
          Column("occurred_at", String(40), nullable=False),
          Column("event_type", String(40), nullable=False),
          Column("request_id", String(16)),
          Column("actor_user", String(32)),
          Column("actor_team", String(32)),
          Column("server", String(64)),
          Column("plan_hash", String(128)),
          Column("before_state", String(16)),
          Column("after_state", String(16)),
          Column("result", Text),
          Column("error", Text),
          Column("slack_channel", String(32)),
          Column("slack_ts", String(32)),
          Column("bot_version", String(40), nullable=False),
          Column("details", Text, nullable=False),
          Column("prev_hash", String(64), nullable=False),
          Column("hash", String(64), nullable=False),
          Index("ix_audit_events_request_id", "request_id"))
    Table("audit_head", v1,
          Column("id", Integer, primary_key=True, autoincrement=False),
          Column("last_sequence", BigInteger, nullable=False),
          Column("last_hash", String(64), nullable=False))
    Table("freeze_state", v1,
          Column("id", Integer, primary_key=True, autoincrement=False),
          Column("frozen", Boolean, nullable=False),
          Column("changed_by", String(32)),
          Column("changed_team", String(32)),
          Column("changed_at", UTCDateTime),
          Column("reason", Text))
    Table("check_results", v1,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("server", String(64), nullable=False),
          Column("checked_at", UTCDateTime, nullable=False),
          Column("verdict", String(16), nullable=False),
          Column("findings_json", Text, nullable=False),
          Column("source", String(128)),
          Index("ix_check_results_server_checked_at", "server", "checked_at"))
    Table("schedule_fires", v1,
          Column("schedule_id", String(128), nullable=False),
          Column("fire_time", UTCDateTime, nullable=False),
          Column("claimed_by", String(128), nullable=False),
          Column("claimed_at", UTCDateTime, nullable=False),
          PrimaryKeyConstraint("schedule_id", "fire_time", name="pk_schedule_fires"))
    return v1


def _v1_create(connection: Connection) -> None:
    v1 = _v1_metadata()
    v1.create_all(connection)
    tables = v1.tables
    connection.execute(tables["audit_head"].insert().values(id=1, last_sequence=0,
                                                            last_hash=GENESIS_HASH))
    connection.execute(tables["freeze_state"].insert().values(id=1, frozen=False))


def _add_column(connection: Connection, table: str, column: str, kind: TypeEngine[Any]) -> None:
    quote = connection.dialect.identifier_preparer.quote
    column_type = kind.compile(dialect=connection.dialect)
    connection.exec_driver_sql(
        f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {column_type}")


def _v2_request_timestamps_and_fire_completion(connection: Connection) -> None:
    """Requests: updated_at (backfilled from created_at), state_reason, execution heartbeat,
    an index for the expiry sweep. Schedule fires: completion and attempts, so a fire whose
    replica died can be taken over (version 1 fires count as completed)."""
    _add_column(connection, "requests", "updated_at", UTCDateTime())
    _add_column(connection, "requests", "state_reason", Text())
    _add_column(connection, "requests", "execution_heartbeat_at", UTCDateTime())
    _add_column(connection, "schedule_fires", "completed_at", UTCDateTime())
    _add_column(connection, "schedule_fires", "attempts", Integer())
    requests, fires = schema.requests, schema.schedule_fires
    connection.execute(update(requests).where(requests.c.updated_at.is_(None))
                       .values(updated_at=requests.c.created_at))
    connection.execute(update(fires).where(fires.c.completed_at.is_(None))
                       .values(completed_at=fires.c.claimed_at, attempts=1))
    Index("ix_requests_state_expires_at", requests.c.state,
          requests.c.expires_at).create(connection)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "requests, approvals, audit trail, freeze, check results, schedule fires",
              _v1_create),
    Migration(2, "request updated_at/state_reason/heartbeat; schedule fire completion",
              _v2_request_timestamps_and_fire_completion),
)
LATEST_VERSION = MIGRATIONS[-1].version


def _version_of(connection: Connection) -> int:
    if not inspect(connection).has_table("schema_version"):
        return 0
    found = connection.execute(select(func.max(schema.schema_version.c.version))).scalar()
    return int(found or 0)


def current_version(engine: Engine) -> int:
    """The schema version of the database (0 when empty)."""
    with configure_engine(engine).connect() as connection:
        return _version_of(connection)


def upgrade(engine: Engine, target: int = LATEST_VERSION, *,
            now: datetime | None = None) -> int:
    """Bring the database to ``target`` (default: latest); returns the version reached.

    Idempotent and safe to run from several processes at once.
    """
    if not 0 <= target <= LATEST_VERSION:
        raise ValueError(f"target must be between 0 and {LATEST_VERSION} (got {target})")
    applied_at = now if now is not None else datetime.now(UTC)
    with configure_engine(engine).begin() as connection:
        advisory_xact_lock(connection, "migrate")
        version = _version_of(connection)
        if version > LATEST_VERSION:
            raise SchemaTooNew(f"the database is at schema version {version}; this exchange-tls "
                               f"knows up to {LATEST_VERSION}: upgrade exchange-tls")
        for migration in MIGRATIONS:
            if version < migration.version <= target:
                migration.apply(connection)
                connection.execute(schema.schema_version.insert().values(
                    version=migration.version, description=migration.description,
                    applied_at=applied_at))
                version = migration.version
    return version
