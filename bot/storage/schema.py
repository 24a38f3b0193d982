"""The database: tables of the latest schema version, column types, and engine set-up.

SQLite (a file, the default) and PostgreSQL (several replicas) are both first-class. On SQLite
every transaction begins with ``BEGIN IMMEDIATE``, so writers are serialised by the database
file lock; on PostgreSQL, serialisation where it matters uses transaction-scoped advisory locks
(:func:`advisory_xact_lock`) and compare-and-set updates.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
POSTGRES_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq settings unless the URL sets them: a database host that stops answering (a dropped
network, not a refused connection) fails a connection attempt within 10 s and an open
connection within about a minute, instead of holding a worker until the OS gives up."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    Naive datetimes are refused: a time without a zone is a bug waiting for a DST change.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

requests = Table(
    "requests", metadata,
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
    # version 2
    Column("updated_at", UTCDateTime),
    Column("state_reason", Text),
    Column("execution_heartbeat_at", UTCDateTime),
    Index("ix_requests_server_state", "server", "state"),
    Index("ix_requests_state_expires_at", "state", "expires_at"),
)

approvals = Table(
    "approvals", metadata,
    Column("request_id", String(16), ForeignKey("requests.id"), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("team_id", String(32), nullable=False),
    Column("approved_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("request_id", "user_id", name="pk_approvals"),
)

audit_events = Table(
    "audit_events", metadata,
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
    Index("ix_audit_events_request_id", "request_id"),
)

audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

freeze_state = Table(
    "freeze_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("frozen", Boolean, nullable=False),
    Column("changed_by", String(32)),
    Column("changed_team", String(32)),
    Column("changed_at", UTCDateTime),
    Column("reason", Text),
)

check_results = Table(
    "check_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("server", String(64), nullable=False),
    Column("checked_at", UTCDateTime, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("findings_json", Text, nullable=False),
    Column("source", String(128)),
    Index("ix_check_results_server_checked_at", "server", "checked_at"),
)

schedule_fires = Table(
    "schedule_fires", metadata,
    Column("schedule_id", String(128), nullable=False),
    Column("fire_time", UTCDateTime, nullable=False),
    Column("claimed_by", String(128), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    # version 2
    Column("completed_at", UTCDateTime),
    Column("attempts", Integer),
    PrimaryKeyConstraint("schedule_id", "fire_time", name="pk_schedule_fires"),
)

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first audit event."""


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling is off: BEGIN is ours (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            # Another connection holds the file while this one opens: WAL is a property of
            # the file and a nicety here (BEGIN IMMEDIATE is what makes writes safe).
            if "locked" not in str(error):
                raise
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: read-then-write transactions cannot deadlock
    # or lose an update, and compare-and-set holds across processes sharing the file.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_engine(engine: Engine) -> Engine:
    """Install the SQLite transaction handling on ``engine`` (idempotent; no-op elsewhere).

    Needed only for engines not made by :func:`create_engine_from_url`; install it before the
    engine's first connection.
    """
    if engine.dialect.name == "sqlite":
        if not event.contains(engine, "connect", _sqlite_on_connect):
            event.listen(engine, "connect", _sqlite_on_connect)
        if not event.contains(engine, "begin", _sqlite_on_begin):
            event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def create_engine_from_url(url: str, **engine_options: Any) -> Engine:
    """An engine for ``sqlite:///path`` (or ``sqlite://`` in memory) or
    ``postgresql+psycopg://...``, ready for the repository, the audit log and migrations."""
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        connect_args: dict[str, Any] = {"check_same_thread": False,
                                        "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        if url in ("sqlite://", "sqlite:///:memory:"):
            options["poolclass"] = StaticPool
        options["connect_args"] = connect_args
    else:
        options["pool_pre_ping"] = True
        query = make_url(url).query
        options["connect_args"] = {key: value for key, value in POSTGRES_CONNECT_DEFAULTS.items()
                                   if key not in query}
    options.update(engine_options)
    return configure_engine(create_engine(url, **options))


_PG_ADVISORY_XACT_LOCK = text(
    "SELECT pg_advisory_xact_lock("
    "hashtextextended(coalesce(current_schema(), '') || ':' || :name, 0))"
)


def advisory_xact_lock(connection: Connection, name: str) -> None:
    """Serialise the rest of the current transaction with every other one locking ``name``.

    PostgreSQL: ``pg_advisory_xact_lock`` on a key derived from the current schema and ``name``
    (released at commit or rollback). SQLite: nothing to do, the transaction began IMMEDIATE.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(_PG_ADVISORY_XACT_LOCK, {"name": f"exchange-tls:{name}"})
