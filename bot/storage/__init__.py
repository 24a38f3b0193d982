"""Persistence with SQLAlchemy 2: SQLite by default, PostgreSQL for several replicas.

Start-up: ``engine = create_engine_from_url(settings.storage.url)``, ``upgrade(engine)``, then
``Repository(engine, audit=AuditLog(engine))`` from :mod:`bot.storage.repository` and
:mod:`bot.audit` (imported from there: :mod:`bot.audit` itself builds on this package).
"""

from bot.storage.migrations import (
    LATEST_VERSION,
    SchemaTooNew,
    current_version,
    upgrade,
)
from bot.storage.schema import (
    UTCDateTime,
    advisory_xact_lock,
    configure_engine,
    create_engine_from_url,
    metadata,
)

__all__ = [
    "LATEST_VERSION",
    "SchemaTooNew",
    "UTCDateTime",
    "advisory_xact_lock",
    "configure_engine",
    "create_engine_from_url",
    "current_version",
    "metadata",
    "upgrade",
]
