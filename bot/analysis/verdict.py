"""Verdicts: critical > unknown > warning > ok, and the exit codes scripts rely on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from bot.analysis.model import FleetReport, ServerAnalysis, Verdict

_RANK: dict[Verdict, int] = {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}
_EXIT_CODES: dict[Verdict, int] = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


def server_verdict(analysis: ServerAnalysis) -> Verdict:
    """Critical if any critical finding; else unknown if unreachable; else warning or ok."""
    severities = {finding.severity for finding in analysis.findings}
    if "critical" in severities:
        return "critical"
    if not analysis.reachable:
        return "unknown"
    if "warning" in severities:
        return "warning"
    return "ok"


def combine_verdicts(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst verdict; nothing checked at all is ``unknown``."""
    return max(verdicts, key=lambda verdict: _RANK[verdict], default="unknown")


def build_report(analyses: Iterable[ServerAnalysis], generated_at: datetime) -> FleetReport:
    """A fleet report whose verdict is the worst server verdict."""
    servers = tuple(analyses)
    return FleetReport(
        generated_at=generated_at,
        servers=servers,
        verdict=combine_verdicts(server_verdict(server) for server in servers),
    )


def exit_code(verdict: Verdict) -> int:
    """0 ok, 1 warning, 2 critical, 3 unknown (could not check)."""
    return _EXIT_CODES[verdict]
