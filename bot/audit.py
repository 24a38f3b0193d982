"""The audit trail: append-only, hash-chained events (product.md section 3).

Each event's ``hash`` is ``sha256(prev_hash + canonical_json(event without hash))``, the first
event's ``prev_hash`` being 64 zeros. Appends are serialised across processes by a row lock on
the chain head (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite ``BEGIN IMMEDIATE``), so replicas
never fork the chain and sequences have no gaps. The head also records the last sequence, so
deleting events at the end of the chain is detected too. Values that look like secrets are
replaced by ``[redacted]`` before anything is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata as importlib_metadata
from typing import IO, Any

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection

from bot.remediation.model import RemediationRequest
from bot.storage.outage import transaction
from bot.storage.schema import GENESIS_HASH, audit_events, audit_head, configure_engine

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4
"""Configured secret values shorter than this are not searched for (they would match noise)."""

_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?:xox[a-z]{1,2}|xapp)-[A-Za-z0-9-]{6,}"),
    re.compile(r"(?i)(?<=authorization: )(?:basic|bearer|negotiate|ntlm|kerberos)\s+\S+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
               re.DOTALL),
)

_SECRET_KEY = re.compile(
    r"(?i)authori[sz]ation|passw(?:or)?d|secret|token|cookie|credential|api[_-]?key")
"""Keys in ``details`` whose values are replaced whole, whatever they look like."""


class AuditEventType(StrEnum):
    """What an audit event records."""

    REQUEST_CREATED = "request_created"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTION_STARTED = "execution_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    VERIFICATION = "verification"
    EXECUTION_FINISHED = "execution_finished"
    EXECUTION_FAILED = "execution_failed"
    ABORTED = "aborted"
    EXECUTION_INTERRUPTED = "execution_interrupted"
    ROLLBACK = "rollback"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    REFUSED_CLICK = "refused_click"


@dataclass(frozen=True)
class AuditEvent:
    """One stored event, exactly as hashed. ``occurred_at`` is ISO 8601 UTC ending in ``Z``;
    ``details`` is canonical JSON text of an object."""

    sequence: int
    occurred_at: str
    event_type: str
    request_id: str | None
    actor_user: str | None
    actor_team: str | None
    server: str | None
    plan_hash: str | None
    before_state: str | None
    after_state: str | None
    result: str | None
    error: str | None
    slack_channel: str | None
    slack_ts: str | None
    bot_version: str
    details: str
    prev_hash: str
    hash: str

    def to_json(self) -> str:
        """The event as one canonical JSON line (what ``export_jsonl`` writes)."""
        return canonical_json(asdict(self))

    @property
    def details_object(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.details)
        return loaded


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking the chain; ``first_broken_sequence`` is None when intact."""

    ok: bool
    first_broken_sequence: int | None
    reason: str
    events_checked: int


def canonical_json(value: object) -> str:
    """JSON with sorted keys, no insignificant whitespace, UTF-8 characters kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def event_hash(prev_hash: str, body: Mapping[str, object]) -> str:
    """``sha256(prev_hash + canonical_json(body))`` as lower-case hex; ``body`` has no hash."""
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def format_time(at: datetime) -> str:
    """An aware datetime as stored in events: ISO 8601 UTC, microseconds, ``Z``."""
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def redact(value: str, secret_values: Iterable[str] = ()) -> str:
    """``value`` with Slack tokens, authorisation headers, private keys and any of
    ``secret_values`` replaced by ``[redacted]``. (In ``details``, values under keys such as
    ``password``, ``token`` or ``authorization`` are replaced whole as well.)"""
    for secret in sorted({s for s in secret_values if len(s) >= MIN_SECRET_LENGTH},
                         key=len, reverse=True):
        value = value.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        value = pattern.sub(REDACTED, value)
    return value


def _redact_json(value: Any, secret_values: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secret_values)
    if isinstance(value, Mapping):
        return {redact(str(k), secret_values):
                REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "")
                else _redact_json(v, secret_values)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(v, secret_values) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value), secret_values)


def _body(event: AuditEvent) -> dict[str, object]:
    body = asdict(event)
    del body["hash"]
    return body


def verify_chain(events: Iterable[AuditEvent], *, expected_last_sequence: int | None = None,
                 expected_last_hash: str | None = None) -> VerifyResult:
    """Check a sequence of events, in stored order, from sequence 1.

    Detects an edited event (hash mismatch), a deleted one (sequence gap, or fewer events than
    the chain head records), and reordered ones (sequence or ``prev_hash`` out of place).
    """
    expected_sequence = 1
    prev_hash = GENESIS_HASH
    checked = 0
    for event in events:
        if event.sequence != expected_sequence:
            if event.sequence > expected_sequence:
                reason = (f"event {expected_sequence} is missing (the next stored event is "
                          f"{event.sequence})")
            else:
                reason = (f"event {event.sequence} appears out of order after "
                          f"{expected_sequence - 1}")
            return VerifyResult(False, expected_sequence, reason, checked)
        if event.prev_hash != prev_hash:
            return VerifyResult(False, event.sequence,
                                f"event {event.sequence} does not follow event "
                                f"{event.sequence - 1} (prev_hash differs): reordered, "
                                "replaced or an earlier event was removed", checked)
        if event_hash(event.prev_hash, _body(event)) != event.hash:
            return VerifyResult(False, event.sequence,
                                f"event {event.sequence} was altered (its hash does not match "
                                "its content)", checked)
        prev_hash = event.hash
        expected_sequence += 1
        checked += 1
    last_sequence = expected_sequence - 1
    if expected_last_sequence is not None and expected_last_sequence != last_sequence:
        if expected_last_sequence > last_sequence:
            reason = (f"events {last_sequence + 1} to {expected_last_sequence} are missing "
                      "(the chain head records more events than are stored)")
            return VerifyResult(False, last_sequence + 1, reason, checked)
        return VerifyResult(False, expected_last_sequence + 1,
                            f"events after {expected_last_sequence} were not appended through "
                            "the audit log (the chain head does not know them)", checked)
    if expected_last_hash is not None and expected_last_hash != prev_hash:
        return VerifyResult(False, max(last_sequence, 1),
                            f"the last event {last_sequence} differs from the one the chain "
                            "head records", checked)
    return VerifyResult(True, None, f"{checked} events, chain intact", checked)


def default_bot_version() -> str:
    """The installed exchange-tls version, for the ``bot_version`` of events."""
    try:
        return importlib_metadata.version("exchange-tls")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _row_to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        sequence=int(row.sequence), occurred_at=row.occurred_at, event_type=row.event_type,
        request_id=row.request_id, actor_user=row.actor_user, actor_team=row.actor_team,
        server=row.server, plan_hash=row.plan_hash, before_state=row.before_state,
        after_state=row.after_state, result=row.result, error=row.error,
        slack_channel=row.slack_channel, slack_ts=row.slack_ts, bot_version=row.bot_version,
        details=row.details, prev_hash=row.prev_hash, hash=row.hash,
    )


class AuditLog:
    """Appends, reads, exports and verifies the hash-chained audit trail in the database.

    ``secret_values`` are the values of configured secret environment variables (tokens,
    server passwords): they never reach the database. The schema must exist
    (:func:`bot.storage.migrations.upgrade`).
    """

    def __init__(self, engine: Engine, *, bot_version: str | None = None,
                 secret_values: Iterable[str] = (),
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = configure_engine(engine)
        self._bot_version = (bot_version or default_bot_version())[:40]
        self._secret_values = tuple(s for s in secret_values if s)
        self._clock = clock

    @property
    def bot_version(self) -> str:
        return self._bot_version

    def redact(self, value: str) -> str:
        """``value`` as it would be stored: with secrets replaced by ``[redacted]``."""
        return redact(value, self._secret_values)

    def append(
        self,
        event_type: AuditEventType,
        *,
        request: RemediationRequest | None = None,
        request_id: str | None = None,
        actor_user: str | None = None,
        actor_team: str | None = None,
        server: str | None = None,
        plan_hash: str | None = None,
        before_state: str | None = None,
        after_state: str | None = None,
        result: str | None = None,
        error: str | None = None,
        slack_channel: str | None = None,
        slack_ts: str | None = None,
        details: Mapping[str, Any] | None = None,
        at: datetime | None = None,
        connection: Connection | None = None,
    ) -> AuditEvent:
        """Append one event and return it as stored (with its sequence and hash).

        ``request`` fills request id, server, plan hash and Slack reference unless given
        explicitly. With ``connection``, the event joins that transaction (commit or roll back
        with it); append it after the transaction's other writes.
        """
        if request is not None:
            request_id = request_id if request_id is not None else request.id
            server = server if server is not None else request.server
            plan_hash = plan_hash if plan_hash is not None else request.plan_hash
            slack_channel = slack_channel if slack_channel is not None else request.channel
            slack_ts = slack_ts if slack_ts is not None else request.message_ts
        fields: dict[str, str | None] = {
            "event_type": AuditEventType(event_type).value, "request_id": request_id,
            "actor_user": actor_user, "actor_team": actor_team, "server": server,
            "plan_hash": plan_hash, "before_state": before_state, "after_state": after_state,
            "result": result, "error": error, "slack_channel": slack_channel,
            "slack_ts": slack_ts,
        }
        clean = {k: (self.redact(v) if v is not None else None) for k, v in fields.items()}
        details_text = canonical_json(_redact_json(dict(details or {}), self._secret_values))
        occurred_at = format_time(at if at is not None else self._clock())
        if connection is not None:
            return self._append_in(connection, clean, details_text, occurred_at)
        with transaction(self._engine) as own:
            return self._append_in(own, clean, details_text, occurred_at)

    def _append_in(self, connection: Connection, fields: Mapping[str, str | None],
                   details_text: str, occurred_at: str) -> AuditEvent:
        head = connection.execute(
            select(audit_head.c.last_sequence, audit_head.c.last_hash)
            .where(audit_head.c.id == 1).with_for_update()
        ).one()
        sequence = int(head.last_sequence) + 1
        body: dict[str, Any] = {
            "sequence": sequence, "occurred_at": occurred_at, **fields,
            "bot_version": self._bot_version, "details": details_text,
            "prev_hash": head.last_hash,
        }
        digest = event_hash(head.last_hash, body)
        event = AuditEvent(**body, hash=digest)
        connection.execute(audit_events.insert().values(**asdict(event)))
        moved = connection.execute(
            update(audit_head)
            .where(audit_head.c.id == 1, audit_head.c.last_sequence == head.last_sequence)
            .values(last_sequence=sequence, last_hash=digest)
        )
        if moved.rowcount != 1:
            raise RuntimeError("the audit chain head moved during an append")
        return event

    def events(self, *, request_id: str | None = None, after_sequence: int = 0,
               limit: int | None = None) -> list[AuditEvent]:
        """Stored events in sequence order, optionally of one request only."""
        query = select(audit_events).where(audit_events.c.sequence > after_sequence)
        if request_id is not None:
            query = query.where(audit_events.c.request_id == request_id)
        query = query.order_by(audit_events.c.sequence)
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as connection:
            return [_row_to_event(row) for row in connection.execute(query)]

    def _iter_all(self, connection: Connection, batch: int = 1000) -> Iterator[AuditEvent]:
        after = 0
        while True:
            rows = connection.execute(
                select(audit_events).where(audit_events.c.sequence > after)
                .order_by(audit_events.c.sequence).limit(batch)
            ).all()
            for row in rows:
                yield _row_to_event(row)
            if len(rows) < batch:
                return
            after = int(rows[-1].sequence)

    def export_jsonl(self, out: IO[str], *, request_id: str | None = None) -> int:
        """Write events as JSON lines (with their hashes) to ``out``; returns how many."""
        count = 0
        with self._engine.connect() as connection:
            for event in self._iter_all(connection):
                if request_id is None or event.request_id == request_id:
                    out.write(event.to_json() + "\n")
                    count += 1
        return count

    def verify(self) -> VerifyResult:
        """Check the whole stored chain against itself and against the chain head."""
        with self._engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # One snapshot for the head and every batch, however many appends go on.
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            connection.begin()
            head = connection.execute(
                select(audit_head.c.last_sequence, audit_head.c.last_hash)
                .where(audit_head.c.id == 1)
            ).one_or_none()
            if head is None:
                return VerifyResult(False, 1, "the audit chain head is missing", 0)
            return verify_chain(self._iter_all(connection),
                                expected_last_sequence=int(head.last_sequence),
                                expected_last_hash=None if head.last_sequence == 0
                                else head.last_hash)


def read_jsonl(lines: Iterable[str]) -> Iterator[AuditEvent]:
    """Events from an export, for :func:`verify_chain` without a database."""
    for line in lines:
        if line.strip():
            yield AuditEvent(**json.loads(line))
