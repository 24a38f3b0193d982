"""PostgreSQL connections do not hang on a database host that stops answering."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from bot.storage import create_engine_from_url
from bot.storage.outage import unavailable_reason
from tests.conftest_db import postgres_base_url, postgres_unavailable_reason


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_a_silent_database_host_fails_the_connection_within_its_timeout(
        silent_listener: int) -> None:
    engine = create_engine_from_url(
        f"postgresql+psycopg://bot@127.0.0.1:{silent_listener}/db?connect_timeout=1")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError) as error, engine.connect():
            pass
    finally:
        engine.dispose()
    assert time.monotonic() - started < 8
    assert unavailable_reason(error.value) is not None


def test_connections_carry_the_timeout_and_keepalive_defaults_unless_the_url_sets_them(
) -> None:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    base = postgres_base_url()
    assert base is not None
    separator = "&" if "?" in base else "?"
    for url, expected_timeout in ((base, "10"), (f"{base}{separator}connect_timeout=4", "4")):
        engine = create_engine_from_url(url)
        try:
            with engine.connect() as connection:
                driver_connection = connection.connection.dbapi_connection
                assert driver_connection is not None
                parameters = driver_connection.info.get_parameters()
        finally:
            engine.dispose()
        assert parameters["connect_timeout"] == expected_timeout
        assert parameters["keepalives_idle"] == "30"
        assert parameters["tcp_user_timeout"] == "30000"
