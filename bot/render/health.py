"""Slack messages of a scheduled health post. Pure: no I/O, no clock.

The channel message is the fleet at a glance: the verdict of each server, certificates expiring
soon, findings new and resolved since the previous post (or a line saying the comparison is
missing, when the bot's database was unavailable), and a mention of the configured group when
something is critical. The thread holds the details: the full lists when the channel
message had to shorten them, then every server's details as in an on-demand check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bot.analysis.certificates import as_utc, short_thumbprint
from bot.analysis.model import Severity, Verdict
from bot.health import ExpiringCertificate, FindingChange, HealthSummary
from bot.render.blocks import (
    SEVERITY_EMOJI,
    VERDICT_EMOJI,
    Block,
    SlackMessage,
    context,
    divider,
    escape_mrkdwn,
    fits_message,
    header,
    message,
    section,
    sections_from_lines,
    server_blocks,
    server_summary_line,
    slack_date,
    trimmed,
)

TITLE: Final = "Exchange TLS health"
MAX_SERVER_LINES: Final = 30
"""Server lines in the channel message; the rest (healthiest last) are counted."""
MAX_LIST_LINES: Final = 10
"""Lines of each list (expiring, new, resolved) in the channel message."""

_VERDICT_ORDER: Final[tuple[Verdict, ...]] = ("critical", "unknown", "warning", "ok")
_TRIMMED_SUMMARY: Final = 200
_TRIMMED_SUBJECT: Final = 120
_TRIMMED_NAME: Final = 120


@dataclass(frozen=True)
class _Listing:
    """A list shown in the channel message, maybe shortened, and all of it for the thread."""

    heading: str
    lines: tuple[str, ...]
    shown: int

    @property
    def shortened(self) -> bool:
        return self.shown < len(self.lines)

    def channel_blocks(self, more: str) -> list[Block]:
        lines = list(self.lines[: self.shown])
        if self.shortened:
            lines.append(f"_… and {len(self.lines) - self.shown} more {more} in the thread_")
        return sections_from_lines(lines, heading=self.heading)


def _severity_emoji(severity: str) -> str:
    return SEVERITY_EMOJI.get(_as_severity(severity), ":white_circle:")


def _as_severity(value: str) -> Severity:
    if value == "critical":
        return "critical"
    if value == "warning":
        return "warning"
    return "info"


def _server(name: str) -> str:
    return f"*{trimmed(name, _TRIMMED_NAME)}*"


def expiring_line(entry: ExpiringCertificate) -> str:
    """``• EX01 `1A2B…` CN=mail.contoso.com: expires 2026-04-01 (12 days)``."""
    subject = f" {trimmed(entry.subject, _TRIMMED_SUBJECT)}" if entry.subject else ""
    thumbprint = f" `{short_thumbprint(entry.thumbprint)}`" if entry.thumbprint else ""
    if entry.not_after is None or entry.days_left is None:
        when = trimmed(entry.summary, _TRIMMED_SUMMARY)
    elif entry.days_left < 0:
        when = (f"expired {as_utc(entry.not_after):%Y-%m-%d} "
                f"({-entry.days_left} day{'s' if entry.days_left != -1 else ''} ago)")
    else:
        when = (f"expires {as_utc(entry.not_after):%Y-%m-%d} "
                f"(in {entry.days_left} day{'s' if entry.days_left != 1 else ''})")
    return (f"{_severity_emoji(entry.severity)} {_server(entry.server)}{thumbprint}{subject}: "
            f"{when}")


def change_line(change: FindingChange) -> str:
    """``• :red_circle: EX01 *CODE*: summary``."""
    return (f"{_severity_emoji(change.severity)} {_server(change.server)} "
            f"*{escape_mrkdwn(change.code)}*: {trimmed(change.summary, _TRIMMED_SUMMARY)}")


def _server_lines(summary: HealthSummary) -> _Listing:
    """Every server's line, in configured order; when there are too many for the channel,
    the worst verdicts are the ones shown there."""
    lines = [server_summary_line(s.analysis) for s in summary.servers]
    if len(lines) <= MAX_SERVER_LINES:
        return _Listing("*Servers*", tuple(lines), len(lines))
    ranked = sorted(range(len(lines)),
                    key=lambda i: _VERDICT_ORDER.index(summary.servers[i].verdict))
    shown = set(ranked[:MAX_SERVER_LINES])
    kept = [line for i, line in enumerate(lines) if i in shown]
    rest = [line for i, line in enumerate(lines) if i not in shown]
    return _Listing("*Servers*", (*kept, *rest), len(kept))


def _listing(heading: str, lines: Sequence[str]) -> _Listing:
    return _Listing(heading, tuple(lines), min(len(lines), MAX_LIST_LINES))


def _counts(summary: HealthSummary) -> str:
    verdicts = [s.verdict for s in summary.servers]
    parts = [f"{verdicts.count(v)} {v}" for v in _VERDICT_ORDER if verdicts.count(v)]
    count = len(verdicts)
    return f"{count} server{'s' if count != 1 else ''}" + (f": {', '.join(parts)}"
                                                           if parts else "")


NO_COMPARISON: Final = ("No comparison with the previous check: the bot's database was "
                        "unavailable, so what is new and what was resolved is not known.")
"""The line of a post made while the previous results could not be read."""


def _changes_text(summary: HealthSummary) -> str:
    if summary.previous_unavailable:
        return "no comparison with the previous check (the bot's database was unavailable)"
    if not summary.compared_any:
        return "first scheduled check"
    return f"{len(summary.new)} new, {len(summary.resolved)} resolved since the last post"


def _critical_servers(summary: HealthSummary) -> str:
    names = [s.name for s in summary.servers if s.verdict == "critical"]
    shown = ", ".join(_server(n) for n in names[:10])
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"{shown}{more} need{'s' if len(names) == 1 else ''} attention."


def _changes_blocks(summary: HealthSummary, new: _Listing,
                    resolved: _Listing) -> list[Block]:
    if summary.previous_unavailable:
        return [section(f":warning: {NO_COMPARISON}")]
    if not summary.compared_any:
        return [section(":new: *First scheduled check* for these servers: nothing to compare "
                        "with yet. The next post lists what is new and what was resolved.")]
    since = (f" ({slack_date(summary.previous_checked_at)})"
             if summary.previous_checked_at else "")
    blocks: list[Block] = []
    if not new.lines and not resolved.lines:
        blocks.append(section(f":white_check_mark: *No changes since the last post*{since}."))
    if new.lines:
        blocks += new.channel_blocks("new findings")
    if resolved.lines:
        blocks += resolved.channel_blocks("resolved findings")
    if summary.first_checks:
        names = ", ".join(_server(n) for n in summary.first_checks[:10])
        more = len(summary.first_checks) - 10
        blocks.append(context(
            f"First scheduled check of {names}" + (f" and {more} more" if more > 0 else "")
            + ": nothing to compare with yet."))
    return blocks


def _page(groups: Sequence[tuple[str, Sequence[Block]]]) -> list[list[Block]]:
    """Groups of blocks packed into messages within Slack's limits, a divider between two
    groups; a group too big for one message continues in the next, marked so."""
    pages: list[list[Block]] = []
    current: list[Block] = []
    for label, blocks in groups:
        separator = [divider()] if current else []
        if current and not fits_message([*current, *separator, *blocks]):
            pages.append(current)
            current, separator = [], []
        if fits_message([*current, *separator, *blocks]):
            current += [*separator, *blocks]
            continue
        current += separator
        for block in blocks:
            if current and not fits_message([*current, block]):
                pages.append(current)
                current = [context(f"_{escape_mrkdwn(label)} (continued)_")]
            current.append(block)
    if current:
        pages.append(current)
    return pages


def _fit(blocks: list[Block], closing: Block) -> tuple[list[Block], bool]:
    """``blocks`` and ``closing`` within one message; True when blocks had to be dropped."""
    if fits_message([*blocks, closing]):
        return [*blocks, closing], False
    kept: list[Block] = []
    cut = context("_… more in the thread_")
    for block in blocks:
        if not fits_message([*kept, block, cut, closing]):
            break
        kept.append(block)
    return [*kept, cut, closing], True


def render_health_summary(summary: HealthSummary, *,
                          schedule_label: str) -> tuple[SlackMessage, ...]:
    """The channel message of a scheduled post, then the messages of its thread."""
    verdict = summary.verdict
    mention = summary.mention_markup
    servers = _server_lines(summary)
    expiring = _listing("*Certificates expiring soon*",
                        [expiring_line(e) for e in summary.expiring])
    new = _listing(f":new: *New since the last post* ({len(summary.new)})",
                   [change_line(c) for c in summary.new])
    resolved = _listing(f":white_check_mark: *Resolved since the last post* "
                        f"({len(summary.resolved)})",
                        [change_line(c) for c in summary.resolved])

    blocks: list[Block] = [
        header(f"{VERDICT_EMOJI[verdict]} {TITLE}: {verdict.upper()}"),
        context(f":calendar: Scheduled post · {trimmed(schedule_label, 200)}",
                f"*{_counts(summary)}* · checked {slack_date(summary.generated_at)}"),
    ]
    if mention is not None:
        blocks.append(section(f"{mention} :rotating_light: *Critical:* "
                              f"{_critical_servers(summary)}"))
    blocks += servers.channel_blocks("servers") if servers.lines else [
        section("No servers were checked.")]
    if expiring.lines:
        blocks += expiring.channel_blocks("certificates")
    blocks += _changes_blocks(summary, new, resolved)
    closing = context(":thread: Details for each server are in the thread of this message.")
    blocks, cut = _fit(blocks, closing)

    prefix = f"{mention} " if mention else ""
    text = (f"{prefix}{TITLE}: {verdict.upper()} - {escape_mrkdwn(_counts(summary))}"
            f" · {_changes_text(summary)}")
    channel = message(text, blocks)

    groups: list[tuple[str, Sequence[Block]]] = []
    for listing, what in ((servers, "Servers"), (expiring, "Certificates expiring soon"),
                          (new, "New since the last post"),
                          (resolved, "Resolved since the last post")):
        if listing.lines and (listing.shortened or cut):
            groups.append((what, sections_from_lines(list(listing.lines),
                                                     heading=listing.heading)))
    groups += [(s.name, server_blocks(s.analysis)) for s in summary.servers]
    pages = _page(groups)
    thread = tuple(
        message(f"{TITLE}: details {number} of {len(pages)}", page)
        for number, page in enumerate(pages, start=1)
    )
    return (channel, *thread)
