"""The database being unavailable: telling an outage from a bug, and commits whose outcome is
unknown.

While the database is down (refused or dropped connections, a PostgreSQL restart or failover,
a SQLite file that cannot be opened or stays locked), SQLAlchemy raises ``OperationalError``
or ``InterfaceError``, or a ``DBAPIError`` that invalidated its connection. Nothing was written
then: every change and its audit event are one transaction, and it rolled back. The one
exception is a connection lost while ``COMMIT`` was on its way: the database may have committed
without the bot hearing so. :func:`transaction` raises :class:`CommitOutcomeUnknown` then, so
nobody is told "nothing was changed" when that is not known. The pool recovers by itself once
the database is back: PostgreSQL engines ping each connection before use.

Not every ``OperationalError`` is an outage: a deadlock or serialization failure (SQLSTATE
class 40), a lock not available (55P03) or a cancelled statement (57014) come from a database
that answers; they are ordinary errors unless the connection was invalidated.

:func:`transaction` counts the commits made by each thread (:func:`commits_in_this_thread`),
so that a job can tell "nothing was changed" from "something was recorded, then the database
went away".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_MAX_REASON: Final = 200
_CAUSES_FOLLOWED: Final = 4
_ANSWERING_SQLSTATES: Final = frozenset({"55P03", "57014"})
"""Lock not available, statement cancelled: the database answered."""
_ANSWERING_SQLSTATE_CLASSES: Final = frozenset({"40"})
"""Transaction rollback (deadlock, serialization failure): the database answered."""


class _Commits(threading.local):
    count = 0


_commits = _Commits()


class CommitOutcomeUnknown(Exception):
    """The connection was lost while a transaction was being committed: the database may or
    may not have committed it."""


def _answered(error: DBAPIError) -> bool:
    """The driver's error is one a reachable database sends (a deadlock, a lock timeout, a
    cancelled statement), on a connection still usable."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    if not isinstance(sqlstate, str) or error.connection_invalidated:
        return False
    return sqlstate in _ANSWERING_SQLSTATES or sqlstate[:2] in _ANSWERING_SQLSTATE_CLASSES


def _outage_in(error: BaseException) -> BaseException | None:
    """``error`` or one of its explicit causes that is a database outage."""
    seen: BaseException | None = error
    for _ in range(_CAUSES_FOLLOWED):
        if seen is None:
            return None
        if isinstance(seen, DBAPIError) and _answered(seen):
            return None
        if isinstance(seen, CommitOutcomeUnknown | OperationalError | InterfaceError
                      | DisconnectionError | PoolTimeoutError):
            return seen
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__
    return None


def unavailable_reason(error: BaseException) -> str | None:
    """One line on why the database could not be used when ``error`` (or its cause) is an
    outage, for logs; None for any other error. Never contains the connection password
    (drivers do not repeat it)."""
    outage = _outage_in(error)
    if outage is None:
        return None
    original = outage.orig if isinstance(outage, DBAPIError) else outage
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    text = lines[0] if lines else type(original).__name__
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 1] + "…"


def outcome_unknown(error: BaseException) -> bool:
    """``error`` (or its cause) is a :class:`CommitOutcomeUnknown`."""
    return isinstance(_outage_in(error), CommitOutcomeUnknown)


def commits_in_this_thread() -> int:
    """How many :func:`transaction` blocks this thread has committed so far (compare two
    readings to know whether something was recorded in between)."""
    return _commits.count


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()``: commit at the end, roll back on an error; a connection lost during
    the commit raises :class:`CommitOutcomeUnknown` (from the driver's error). A commit the
    database confirmed is counted for this thread (:func:`commits_in_this_thread`)."""
    with engine.connect() as connection:
        committing = False
        try:
            with connection.begin():
                yield connection
                committing = True
            _commits.count += 1
        except DBAPIError as error:
            if committing and error.connection_invalidated:
                raise CommitOutcomeUnknown(
                    "the connection to the database was lost while committing: "
                    f"{unavailable_reason(error)}") from error
            raise
