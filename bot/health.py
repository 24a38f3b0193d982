"""Fleet health for the scheduled posts: what changed since the previous post. Pure.

A scheduled post compares this run's findings with the results stored by the previous post of
the same schedule. The identity of a finding is its server, its code and its sorted
thumbprints, so a reworded summary is not a new finding. Each server's result is stored as
JSON (:func:`findings_json`, kept with ``Repository.record_check_result``); a server that could
not be checked carries its last checked findings forward, so a server coming back is compared
with what it had before it went away, not with "unreachable".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bot.analysis.model import (
    Finding,
    FindingCode,
    FleetReport,
    ServerAnalysis,
    Severity,
    Verdict,
)
from bot.analysis.verdict import server_verdict

STORED_FORMAT: Final = 1
"""Version of the stored findings JSON (``"format"``)."""

EXPIRY_CODES: Final = frozenset({FindingCode.CERT_EXPIRING, FindingCode.CERT_EXPIRED})

_SEVERITY_RANK: Final[Mapping[str, int]] = {"critical": 0, "warning": 1, "info": 2}
_USER_ID: Final = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_GROUP_ID: Final = re.compile(r"^S[A-Z0-9]{2,30}$")


@dataclass(frozen=True, order=True)
class FindingKey:
    """What makes two findings the same finding: server, code and sorted thumbprints."""

    server: str
    """Case-folded server name."""
    code: str
    thumbprints: tuple[str, ...]


def finding_key(server: str, code: str, thumbprints: Iterable[str]) -> FindingKey:
    """The identity of a finding (server case-insensitive, thumbprints upper-case, sorted)."""
    return FindingKey(
        server=server.casefold(),
        code=str(code),
        thumbprints=tuple(sorted({t.strip().upper() for t in thumbprints if t.strip()})),
    )


@dataclass(frozen=True)
class StoredFinding:
    """A finding as kept between posts."""

    code: str
    severity: str
    summary: str
    thumbprints: tuple[str, ...]

    def key(self, server: str) -> FindingKey:
        return finding_key(server, self.code, self.thumbprints)

    @classmethod
    def of(cls, finding: Finding) -> StoredFinding:
        return cls(
            code=str(finding.code),
            severity=finding.severity,
            summary=finding.summary,
            thumbprints=tuple(sorted(t.upper() for t in finding.thumbprints)),
        )


def findings_fingerprint(server: str, findings: Iterable[Finding | StoredFinding]) -> str:
    """SHA-256 (hex) of the set of finding identities: equal exactly when the same findings
    (by server, code and thumbprints) are present, whatever their order or wording."""
    keys = sorted({
        finding_key(server, str(f.code), f.thumbprints) for f in findings
    })
    text = json.dumps([[k.server, k.code, list(k.thumbprints)] for k in keys],
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """One server's stored result of one scheduled post."""

    server: str
    checked_at: datetime | None
    verdict: str
    reachable: bool
    findings: tuple[StoredFinding, ...]
    carried: tuple[StoredFinding, ...] = ()
    """For a server that could not be checked: the findings of its last checked result,
    assumed unchanged until it can be checked again."""

    @property
    def effective(self) -> dict[FindingKey, StoredFinding]:
        """The findings this result stands for: its own plus the carried ones."""
        result = {finding.key(self.server): finding for finding in self.carried}
        result.update({finding.key(self.server): finding for finding in self.findings})
        return result

    @property
    def fingerprint(self) -> str:
        return findings_fingerprint(self.server, self.effective.values())


def _finding_to_json(finding: StoredFinding) -> dict[str, Any]:
    return {"code": finding.code, "severity": finding.severity, "summary": finding.summary,
            "thumbprints": list(finding.thumbprints)}


def _finding_from_json(value: object) -> StoredFinding | None:
    if not isinstance(value, dict):
        return None
    code, severity, summary = value.get("code"), value.get("severity"), value.get("summary", "")
    thumbprints = value.get("thumbprints", [])
    if not isinstance(code, str) or not isinstance(severity, str) or not isinstance(summary, str):
        return None
    if not isinstance(thumbprints, list) or not all(isinstance(t, str) for t in thumbprints):
        return None
    return StoredFinding(code, severity, summary, tuple(thumbprints))


def _findings_from_json(value: object) -> tuple[StoredFinding, ...] | None:
    if not isinstance(value, list):
        return None
    findings = [_finding_from_json(item) for item in value]
    if any(f is None for f in findings):
        return None
    return tuple(f for f in findings if f is not None)


def encode_stored_result(result: StoredResult) -> str:
    """The JSON text kept in ``check_results.findings_json``."""
    document: dict[str, Any] = {
        "format": STORED_FORMAT,
        "server": result.server,
        "checked_at": (result.checked_at.astimezone(UTC).isoformat()
                       if result.checked_at is not None else None),
        "verdict": result.verdict,
        "reachable": result.reachable,
        "findings": [_finding_to_json(f) for f in result.findings],
        "fingerprint": result.fingerprint,
    }
    if result.carried:
        document["carried"] = [_finding_to_json(f) for f in result.carried]
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_stored_result(text: str | None) -> StoredResult | None:
    """A stored result back from its JSON; None when absent or not readable (then the next
    post has nothing to compare with, rather than failing)."""
    if not text:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("format") != STORED_FORMAT:
        return None
    server, verdict, reachable = (document.get("server"), document.get("verdict"),
                                  document.get("reachable"))
    findings = _findings_from_json(document.get("findings"))
    carried = _findings_from_json(document.get("carried", []))
    if (not isinstance(server, str) or not isinstance(verdict, str)
            or not isinstance(reachable, bool) or findings is None or carried is None):
        return None
    checked_at: datetime | None = None
    raw_time = document.get("checked_at")
    if isinstance(raw_time, str):
        try:
            checked_at = datetime.fromisoformat(raw_time)
        except ValueError:
            checked_at = None
        if checked_at is not None and checked_at.tzinfo is None:
            checked_at = checked_at.replace(tzinfo=UTC)
    return StoredResult(server, checked_at, verdict, reachable, findings, carried)


def stored_result(analysis: ServerAnalysis, *, checked_at: datetime,
                  previous: str | None) -> StoredResult:
    """What to keep of ``analysis`` (``previous``: the server's last stored JSON, if any)."""
    carried: tuple[StoredFinding, ...] = ()
    if not analysis.reachable:
        before = decode_stored_result(previous)
        if before is not None:
            carried = tuple(
                finding for finding in before.effective.values()
                if finding.code != FindingCode.SERVER_UNREACHABLE
            )
    return StoredResult(
        server=analysis.name,
        checked_at=checked_at,
        verdict=server_verdict(analysis),
        reachable=analysis.reachable,
        findings=tuple(StoredFinding.of(f) for f in analysis.findings),
        carried=carried,
    )


def findings_json(analysis: ServerAnalysis, *, checked_at: datetime,
                  previous: str | None) -> str:
    """The JSON to store for ``analysis`` (``Repository.record_check_result(findings_json=)``)."""
    return encode_stored_result(stored_result(analysis, checked_at=checked_at,
                                              previous=previous))


def mention_markup(principal: str) -> str:
    """Slack markup that notifies a user-group (``<!subteam^S..>``) or a user (``<@U..>``)."""
    if _GROUP_ID.match(principal):
        return f"<!subteam^{principal}>"
    if _USER_ID.match(principal):
        return f"<@{principal}>"
    raise ValueError(f"{principal!r} is not a Slack user-group (S...) or user (U.../W...) ID")


# --- the summary --------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingChange:
    """A finding that appeared or went away since the previous post."""

    server: str
    code: str
    severity: str
    summary: str
    thumbprints: tuple[str, ...]

    @property
    def key(self) -> FindingKey:
        return finding_key(self.server, self.code, self.thumbprints)


@dataclass(frozen=True)
class ExpiringCertificate:
    """A certificate with a CERT_EXPIRING or CERT_EXPIRED finding."""

    server: str
    thumbprint: str
    subject: str | None
    not_after: datetime | None
    days_left: int | None
    """Whole days left (negative once expired); None when the certificate is not in the
    analysis (then only the finding's summary tells)."""
    code: FindingCode
    severity: Severity
    summary: str


@dataclass(frozen=True)
class ServerHealth:
    """One server's line in the post."""

    name: str
    verdict: Verdict
    analysis: ServerAnalysis
    compared: bool
    """A previous stored result existed, so new and resolved findings are known."""
    previous_checked_at: datetime | None = None
    previous_verdict: str | None = None


@dataclass(frozen=True)
class HealthSummary:
    """A fleet report compared with the previous post of the same schedule."""

    report: FleetReport
    summarised_at: datetime
    verdict: Verdict
    servers: tuple[ServerHealth, ...]
    expiring: tuple[ExpiringCertificate, ...]
    new: tuple[FindingChange, ...]
    resolved: tuple[FindingChange, ...]
    unchanged: tuple[FindingChange, ...]
    critical: bool
    """Anything is critical: the configured principal is mentioned."""
    mention: str | None = None
    """The configured user-group or user ID (mentioned only when ``critical``)."""
    previous_unavailable: bool = False
    """The previous post's results could not be read (the bot's database was unavailable):
    nothing is compared, and the post says so."""

    @property
    def generated_at(self) -> datetime:
        return self.report.generated_at

    @property
    def first_checks(self) -> tuple[str, ...]:
        """Servers with no previous stored result (nothing to compare with); none when the
        previous results could not be read."""
        if self.previous_unavailable:
            return ()
        return tuple(s.name for s in self.servers if not s.compared)

    @property
    def compared_any(self) -> bool:
        return any(s.compared for s in self.servers)

    @property
    def previous_checked_at(self) -> datetime | None:
        """When the previous post checked (the latest over the servers), if known."""
        times = [s.previous_checked_at for s in self.servers if s.previous_checked_at]
        return max(times) if times else None

    @property
    def mention_markup(self) -> str | None:
        """``<!subteam^S..>`` / ``<@U..>`` when something is critical and someone is
        configured; otherwise None."""
        if not self.critical or self.mention is None:
            return None
        try:
            return mention_markup(self.mention)
        except ValueError:
            return None


def _change(server: str, finding: StoredFinding) -> FindingChange:
    return FindingChange(server, finding.code, finding.severity, finding.summary,
                         finding.thumbprints)


def _change_order(change: FindingChange) -> tuple[int, str, str, tuple[str, ...]]:
    return (_SEVERITY_RANK.get(change.severity, 3), change.server.casefold(), change.code,
            change.thumbprints)


def _expiring(server: ServerAnalysis) -> list[ExpiringCertificate]:
    by_thumbprint = {c.thumbprint: c for c in server.certificates}
    found: dict[str, ExpiringCertificate] = {}
    for finding in server.findings:
        if finding.code not in EXPIRY_CODES:
            continue
        for thumbprint in finding.thumbprints or ("",):
            analysis = by_thumbprint.get(thumbprint.upper())
            entry = ExpiringCertificate(
                server=server.name,
                thumbprint=thumbprint.upper(),
                subject=analysis.cert.subject if analysis else None,
                not_after=analysis.cert.not_after if analysis else None,
                days_left=analysis.days_left if analysis else None,
                code=finding.code,
                severity=finding.severity,
                summary=finding.summary,
            )
            current = found.get(entry.thumbprint)
            if current is None or _SEVERITY_RANK[entry.severity] < _SEVERITY_RANK[
                    current.severity]:
                found[entry.thumbprint] = entry
    return list(found.values())


def summarise(report: FleetReport, previous: Mapping[str, str | None], now: datetime, *,
              mention: str | None = None,
              previous_unavailable: bool = False) -> HealthSummary:
    """Compare ``report`` with the previous post.

    ``previous`` maps a server name (case-insensitive) to the findings JSON stored for it by
    the previous post (:func:`findings_json`), or None when there is none. A server without a
    previous result has nothing new or resolved: it is listed in ``first_checks``. With
    ``previous_unavailable`` (the previous results could not be read) nothing is compared and
    ``previous`` is ignored.
    """
    previous_by_name = ({} if previous_unavailable
                        else {name.casefold(): text for name, text in previous.items()})
    servers: list[ServerHealth] = []
    new: list[FindingChange] = []
    resolved: list[FindingChange] = []
    unchanged: list[FindingChange] = []
    expiring: list[ExpiringCertificate] = []
    for analysis in report.servers:
        previous_text = previous_by_name.get(analysis.name.casefold())
        before = decode_stored_result(previous_text)
        servers.append(ServerHealth(
            name=analysis.name,
            verdict=server_verdict(analysis),
            analysis=analysis,
            compared=before is not None,
            previous_checked_at=before.checked_at if before else None,
            previous_verdict=before.verdict if before else None,
        ))
        expiring += _expiring(analysis)
        if before is None:
            continue
        after = stored_result(analysis, checked_at=now, previous=previous_text).effective
        earlier = before.effective
        new += [_change(analysis.name, f) for k, f in after.items() if k not in earlier]
        resolved += [_change(analysis.name, f) for k, f in earlier.items() if k not in after]
        unchanged += [_change(analysis.name, f) for k, f in after.items() if k in earlier]
    expiring.sort(key=lambda e: (e.days_left if e.days_left is not None else 10**6,
                                 _SEVERITY_RANK[e.severity], e.server.casefold(), e.thumbprint))
    return HealthSummary(
        report=report,
        summarised_at=now,
        verdict=report.verdict,
        servers=tuple(servers),
        expiring=tuple(expiring),
        new=tuple(sorted(new, key=_change_order)),
        resolved=tuple(sorted(resolved, key=_change_order)),
        unchanged=tuple(sorted(unchanged, key=_change_order)),
        critical=report.verdict == "critical",
        mention=mention,
        previous_unavailable=previous_unavailable,
    )
