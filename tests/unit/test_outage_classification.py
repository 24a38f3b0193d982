"""Which database errors are an outage: real psycopg errors, wrapped as SQLAlchemy wraps them."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.storage.outage import CommitOutcomeUnknown, outcome_unknown, unavailable_reason


def wrapped(orig: Exception, *, invalidated: bool = False) -> OperationalError:
    """``orig`` as SQLAlchemy raises it from a statement."""
    return OperationalError("UPDATE requests SET state = %(state)s", {"state": "approved"}, orig,
                            connection_invalidated=invalidated)


ANSWERING = [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.LockNotAvailable("could not obtain lock on row"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
]


@pytest.mark.parametrize("orig", ANSWERING, ids=lambda e: type(e).__name__)
def test_errors_a_reachable_database_sends_are_not_an_outage(orig: Exception) -> None:
    assert isinstance(orig, psycopg.OperationalError)
    assert unavailable_reason(wrapped(orig)) is None
    assert not outcome_unknown(wrapped(orig))


@pytest.mark.parametrize("orig", ANSWERING, ids=lambda e: type(e).__name__)
def test_the_same_errors_on_an_invalidated_connection_are_an_outage(orig: Exception) -> None:
    assert unavailable_reason(wrapped(orig, invalidated=True)) == str(orig)


@pytest.mark.parametrize("orig", [
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
], ids=lambda e: type(e).__name__)
def test_a_database_that_cannot_be_reached_or_is_shutting_down_is_an_outage(
        orig: Exception) -> None:
    assert unavailable_reason(wrapped(orig)) == str(orig)


def test_a_lost_commit_wrapping_a_deadlock_on_a_lost_connection_is_an_unknown_outcome() -> None:
    unknown = CommitOutcomeUnknown("the connection to the database was lost while committing")
    unknown.__cause__ = wrapped(psycopg.errors.DeadlockDetected("x"), invalidated=True)
    assert outcome_unknown(unknown)


def test_an_ordinary_error_caused_by_a_deadlock_is_not_an_outage() -> None:
    error = RuntimeError("approving failed")
    error.__cause__ = wrapped(psycopg.errors.SerializationFailure("could not serialize"))
    assert unavailable_reason(error) is None
    assert unavailable_reason(IntegrityError(
        "INSERT", {}, psycopg.errors.UniqueViolation("duplicate key"))) is None
