"""The terminal view of a report: for people, coloured on a terminal, plain when piped."""

from __future__ import annotations

from collections.abc import Iterable

from bot.analysis.certificates import iso_utc, services_text
from bot.analysis.model import (
    CertificateAnalysis,
    Finding,
    FleetReport,
    OutboundSelection,
    RemediationPlan,
    ServerAnalysis,
)
from bot.analysis.verdict import server_verdict
from bot.exchange.snapshot import Queue

_COLOURS = {
    "ok": "32",
    "info": "36",
    "warning": "33",
    "critical": "31",
    "unknown": "35",
    "public": "32",
    "internal": "33",
    "self-signed": "33",
    "bold": "1",
    "dim": "2",
}


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, key: str) -> str:
        code = _COLOURS.get(key)
        if not self.color or code is None:
            return text
        return f"\033[{code}m{text}\033[0m"


def _clean(text: str | None) -> str:
    """Server-supplied text with control characters removed (no terminal escapes from servers)."""
    if not text:
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _trimmed(text: str | None, limit: int = 240) -> str:
    cleaned = " ".join(_clean(text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _certificate_lines(cert: CertificateAnalysis, style: _Style) -> Iterable[str]:
    facts = cert.cert
    trust = style(cert.trust, cert.trust)
    expiry = f"expires {iso_utc(facts.not_after)[:10]} ({cert.days_left} days)"
    if cert.days_left < 0:
        expiry = style(f"expired {iso_utc(facts.not_after)[:10]}", "critical")
    yield (f"  {facts.thumbprint}  {_clean(facts.subject)}")
    yield (f"      trust {trust}; services {services_text(facts.services)}; {expiry}")
    yield f"      issuer {_clean(facts.issuer)}"
    if cert.matched_names:
        yield f"      matches {', '.join(_clean(n) for n in cert.matched_names)}"
    for line in cert.evidence:
        yield style(f"      · {_clean(line)}", "dim")


def _outbound_lines(selection: OutboundSelection, style: _Style) -> Iterable[str]:
    chosen = selection.thumbprint or "none"
    trust = f" ({style(selection.trust, selection.trust)})" if selection.trust else ""
    hedge = " (uncertain)" if selection.uncertain else ""
    yield f"  {_clean(selection.connector)}: {chosen}{trust}{hedge}"
    yield f"      why: {_trimmed(selection.reason, 600)}"


def _queue_line(queue: Queue) -> str:
    line = (
        f"  {_clean(queue.identity)} -> {_clean(queue.next_hop_domain)}: "
        f"{_clean(queue.status)}, {queue.message_count} message(s)"
    )
    if queue.last_error:
        line += f"\n      last error: {_trimmed(queue.last_error)}"
    return line


def _finding_lines(finding: Finding, style: _Style) -> Iterable[str]:
    severity = style(finding.severity.upper(), finding.severity)
    yield f"  [{severity}] {finding.code}: {_clean(finding.summary)}"
    if finding.thumbprints:
        yield f"      certificates: {', '.join(finding.thumbprints)}"
    if finding.remedy:
        yield f"      remedy: {_clean(finding.remedy)}"


def _plan_lines(plan: RemediationPlan, style: _Style) -> Iterable[str]:
    yield style(
        f"Remediation plan {plan.short_hash} (needs approval in Slack, or run by hand):", "bold"
    )
    for number, step in enumerate(plan.steps, start=1):
        if step.skipped_reason:
            yield f"  {number}. skipped ({step.kind}): {_clean(step.skipped_reason)}"
            continue
        yield f"  {number}. {_clean(step.display)}"
        yield f"      {_clean(step.before)} -> {_clean(step.after)}"


def _server_lines(server: ServerAnalysis, style: _Style) -> Iterable[str]:
    verdict = server_verdict(server)
    fqdn = f" ({_clean(server.fqdn)})" if server.fqdn else ""
    yield style(f"== {_clean(server.name)}{fqdn}: ", "bold") + style(verdict.upper(), verdict)
    if not server.reachable:
        yield f"  not checked: {_clean(server.error)}"
    shown = [c for c in server.certificates if c.in_use or c.matches_fqdn]
    if shown:
        yield "Certificates:"
        for cert in shown:
            yield from _certificate_lines(cert, style)
        hidden = len(server.certificates) - len(shown)
        if hidden:
            yield style(
                f"  ({hidden} more without services or FQDN match; see --format json)", "dim"
            )
    if server.outbound:
        yield "Outbound to Exchange Online (predicted):"
        for selection in server.outbound:
            yield from _outbound_lines(selection, style)
    if server.queues:
        yield "Queues:"
        yield from (_queue_line(q) for q in server.queues)
    if server.findings:
        yield "Findings:"
        for finding in server.findings:
            yield from _finding_lines(finding, style)
    elif server.reachable:
        yield "No findings."
    if server.plan is not None:
        yield from _plan_lines(server.plan, style)
    if server.notes:
        yield "Notes:"
        yield from (f"  {_trimmed(note, 400)}" for note in server.notes)


def render_report_text(report: FleetReport, *, color: bool = False) -> str:
    """The whole report as text; ``color`` adds ANSI colours."""
    style = _Style(color)
    lines = [
        style("exchange-tls check", "bold") + f" at {iso_utc(report.generated_at)}",
        "Verdict: "
        + style(report.verdict.upper(), report.verdict)
        + f" ({len(report.servers)} server(s))",
    ]
    for server in report.servers:
        lines.append("")
        lines.extend(_server_lines(server, style))
    return "\n".join(lines) + "\n"
