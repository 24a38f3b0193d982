"""Database fixtures: every storage test runs on SQLite (a temp file) and on PostgreSQL.

Use as a plugin (``pytest_plugins = ["tests.conftest_db"]`` in tests/conftest.py or in a test
module). PostgreSQL comes from ``EXCHANGE_TLS_TEST_POSTGRES_URL`` (for example
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); when it is unset or unreachable the
PostgreSQL variants skip and say why. Each PostgreSQL test gets a schema of its own (through
``search_path`` in the URL, so other processes given the URL share it), dropped afterwards.

Fixtures: ``db_url`` (params ``sqlite`` / ``postgresql``), ``db_engine``, ``migrated_engine``
(schema at the latest version), ``make_engine`` (more engines on the same database: replicas).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.storage import create_engine_from_url, upgrade

POSTGRES_URL_ENV = "EXCHANGE_TLS_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")

_reachability: dict[str, str | None] = {}


def postgres_base_url() -> str | None:
    """The configured PostgreSQL test URL, or None when unset."""
    return os.environ.get(POSTGRES_URL_ENV) or None


def postgres_unavailable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can (checked once)."""
    url = postgres_base_url()
    if url is None:
        return (f"PostgreSQL tests need {POSTGRES_URL_ENV}, e.g. "
                "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if url not in _reachability:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            _reachability[url] = None
        except Exception as error:  # any failure to connect means: skip, with the reason
            safe = make_url(url).render_as_string(hide_password=True)
            _reachability[url] = f"PostgreSQL at {safe} is unreachable: {error}".splitlines()[0]
        finally:
            engine.dispose()
    return _reachability[url]


def with_search_path(url: str, schema_name: str) -> str:
    """``url`` with ``search_path`` set to ``schema_name`` for every connection."""
    parsed = make_url(url)
    with_path = parsed.set(query={**parsed.query, "options": f"-csearch_path={schema_name}"})
    return with_path.render_as_string(hide_password=False)


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql",
                                     marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a temp SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'exchange-tls.db'}"
        return
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    base = postgres_base_url()
    assert base is not None
    schema_name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema_name}"'))
        yield with_search_path(base, schema_name)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_engine(db_url: str) -> Iterator[Callable[[], Engine]]:
    """Makes more engines on the test database (each like a separate replica)."""
    made: list[Engine] = []

    def factory() -> Engine:
        engine = create_engine_from_url(db_url)
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        engine.dispose()


@pytest.fixture
def db_engine(make_engine: Callable[[], Engine]) -> Engine:
    """An engine on the empty test database."""
    return make_engine()


@pytest.fixture
def migrated_engine(db_engine: Engine) -> Engine:
    """An engine on the test database upgraded to the latest schema."""
    upgrade(db_engine)
    return db_engine
