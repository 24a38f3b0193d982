"""Check a fleet: read each server in parallel (bounded), analyse, and build one report.

The shell around the pure analysis: sessions and threads live here, judgement does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from bot.analysis.analyse import analyse_server, unreachable_server
from bot.analysis.model import FleetReport, ServerAnalysis
from bot.analysis.trust import TrustStore
from bot.analysis.verdict import build_report
from bot.config import PlanScope, ServerSettings
from bot.exchange.reader import read_snapshot
from bot.exchange.session import CommandRefused, ExchangeUnavailable, SessionCache

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ProgressCallback = Callable[[str, ServerAnalysis], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_server(
    settings: ServerSettings,
    cache: SessionCache,
    trust: TrustStore,
    *,
    clock: Clock = utc_now,
    plan_scope: PlanScope = "all",
) -> ServerAnalysis:
    """Read and analyse one server; an unreachable server becomes a SERVER_UNREACHABLE result."""
    try:
        with cache.session(settings) as session:
            snapshot = read_snapshot(session, settings.name, now=clock())
    except ExchangeUnavailable as error:
        return unreachable_server(settings.name, None, error.reason)
    except CommandRefused as error:
        return unreachable_server(settings.name, None, f"{error.cmdlet}: {error.reason}")
    except Exception as error:
        log.exception("unexpected failure while reading %s", settings.name)
        return unreachable_server(
            settings.name,
            None,
            f"unexpected error while reading the server: {type(error).__name__}",
        )
    return analyse_server(snapshot, trust, clock(), plan_scope=plan_scope)


def check_fleet(
    servers: Sequence[ServerSettings],
    cache: SessionCache,
    trust: TrustStore,
    *,
    concurrency: int = 8,
    clock: Clock = utc_now,
    plan_scope: PlanScope = "all",
    progress: ProgressCallback | None = None,
) -> FleetReport:
    """Check servers in parallel, at most ``concurrency`` at a time, keeping the given order."""
    if not servers:
        return build_report((), clock())
    workers = max(1, min(concurrency, len(servers)))

    def one(settings: ServerSettings) -> ServerAnalysis:
        result = check_server(settings, cache, trust, clock=clock, plan_scope=plan_scope)
        if progress is not None:
            progress(settings.name, result)
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
        analyses = list(pool.map(one, servers))
    return build_report(tuple(analyses), clock())
