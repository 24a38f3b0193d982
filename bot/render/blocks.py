"""Slack Block Kit views of fleet reports and of the bot's small replies. Pure: no I/O, no clock.

Blocks are built with slack_sdk's models and handed over as dicts (what ``chat.postMessage``
takes). Every value that comes from a server or from a Slack user is escaped for mrkdwn
(``&``, ``<``, ``>``) and every mrkdwn text object is ``verbatim``, so a connector named
``<!channel>`` or ``@here`` pings nobody. Slack's limits are kept with a margin: long reports
page into thread messages, long texts are cut with an ellipsis and say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from slack_sdk.models.blocks import (
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.analysis.certificates import (
    as_utc,
    is_named_by,
    iso_utc,
    services_text,
    short_thumbprint,
)
from bot.analysis.model import (
    CertificateAnalysis,
    Finding,
    FindingCode,
    FleetReport,
    OutboundSelection,
    PlanStep,
    RemediationPlan,
    ServerAnalysis,
    Severity,
    StepKind,
    Trust,
    Verdict,
)
from bot.analysis.verdict import server_verdict
from bot.exchange.snapshot import Queue
from bot.remediation.states import State

Block = dict[str, Any]

MAX_BLOCKS_PER_MESSAGE: Final = 45
"""Slack allows 50 blocks a message; we stop at 45."""
MAX_SECTION_TEXT: Final = 3000
MAX_FIELD_TEXT: Final = 2000
MAX_FIELDS: Final = 10
MAX_HEADER_TEXT: Final = 150
MAX_BUTTON_TEXT: Final = 75
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_MESSAGE_TEXT: Final = 36_000
"""Characters of text in one message's blocks (Slack's message text limit is 40,000)."""
MAX_FALLBACK_TEXT: Final = 3000

VERDICT_EMOJI: Final[Mapping[Verdict, str]] = {
    "ok": ":large_green_circle:",
    "warning": ":large_yellow_circle:",
    "critical": ":red_circle:",
    "unknown": ":white_circle:",
}
SEVERITY_EMOJI: Final[Mapping[Severity, str]] = {
    "critical": ":red_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}
TRUST_TEXT: Final[Mapping[Trust, str]] = {
    "public": ":white_check_mark: public",
    "internal": ":warning: internal CA (not publicly trusted)",
    "self-signed": ":warning: self-signed",
    "unknown": ":grey_question: trust unknown",
}
STEP_TITLES: Final[Mapping[StepKind, str]] = {
    "pin_connector": "Pin send connector",
    "unbind_smtp": "Unbind SMTP",
    "retry_queue": "Retry queue",
}

_SHOWN_QUEUES: Final = 5
_TRIMMED_ERROR: Final = 400
_TRIMMED_SUMMARY: Final = 1200
_TRIMMED_REMEDY: Final = 1500
_TRIMMED_REASON: Final = 1500
_TRIMMED_SUBJECT: Final = 200
_TRIMMED_NAME: Final = 120
_TRIMMED_STEP_VALUE: Final = 400


@dataclass(frozen=True)
class SlackMessage:
    """One message: ``text`` is the notification and fallback text, ``blocks`` the Block Kit."""

    text: str
    blocks: tuple[Block, ...]


# --- text helpers -------------------------------------------------------------------------

_SAFE_MENTION = re.compile(r"<(?:@[UW][A-Z0-9]{2,30}|#C[A-Z0-9]{2,30}|!subteam\^S[A-Z0-9]{2,30})>")


def escape_mrkdwn(text: str, *, keep_mentions: bool = False) -> str:
    """Escape Slack's control characters ``&``, ``<`` and ``>``.

    With ``keep_mentions``, well-formed user, channel and user-group mentions (``<@U..>``,
    ``<#C..>``, ``<!subteam^S..>``) survive; ``<!channel>``, ``<!here>`` and links never do.
    """
    if not keep_mentions:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    parts: list[str] = []
    position = 0
    for match in _SAFE_MENTION.finditer(text):
        parts.append(escape_mrkdwn(text[position:match.start()]))
        parts.append(match.group(0))
        position = match.end()
    parts.append(escape_mrkdwn(text[position:]))
    return "".join(parts)


def truncate_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with an ellipsis that says so."""
    if len(text) <= limit:
        return text
    dropped_hint = f"… [truncated, {len(text)} characters in all]"
    if limit <= len(dropped_hint):
        return text[: max(limit - 1, 0)] + "…"
    return text[: limit - len(dropped_hint)].rstrip() + dropped_hint


def fit_mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> str:
    """Composed mrkdwn cut to ``limit`` characters without breaking an entity or a code span."""
    if len(text) <= limit:
        return text
    note = f"\n_… truncated: {len(text)} characters in all_"
    cut = text[: max(limit - len(note) - 4, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    closing = ""
    if cut.count("```") % 2 == 1:
        closing = "```"
    elif cut.replace("```", "").count("`") % 2 == 1:
        closing = "`"
    return f"{cut.rstrip()}…{closing}{note}"


def trimmed(value: str | None, limit: int, *, empty: str = "(none)") -> str:
    """A server-supplied value trimmed to ``limit`` characters and escaped for mrkdwn."""
    if value is None or not value.strip():
        return empty
    return escape_mrkdwn(truncate_text(" ".join(value.split()), limit))


def code(value: str) -> str:
    """``value`` escaped and shown as inline code (a code block when it holds a backtick)."""
    fence = "```" if "`" in value else "`"
    return f"{fence}{escape_mrkdwn(value)}{fence}"


def code_block(value: str) -> str:
    return f"```{escape_mrkdwn(value)}```"


def plain_fit(text: str, limit: int) -> str:
    """Plain text cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slack_date(moment: datetime, date_format: str = "{date_short_pretty} {time}") -> str:
    """Slack's date formatting (shown in the reader's time zone) with a UTC fallback."""
    utc = as_utc(moment)
    fallback = utc.strftime("%Y-%m-%d %H:%M:%S UTC" if "{time_secs}" in date_format
                            else "%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(utc.timestamp())}^{date_format}|{fallback}>"


_VERBS = (
    "Add|Clear|Disable|Enable|Export|Format|Get|Import|New|Remove|Restart|Resume|Retry|Select"
    "|Set|Start|Stop|Suspend|Test|Update|Where"
)
_CMDLET = re.compile(rf"\b(?:{_VERBS})-[A-Z][A-Za-z]+\b")
_PARAMETER = re.compile(r"\s+-[A-Za-z][A-Za-z0-9]*(?=$|[\s;,)])")
_VALUE = re.compile(
    r"""\s+(?:"(?:`.|[^"`])*"|'(?:[^']|'')*'|@\([^()]*\)|\([^()]*\)|<[^<>\s][^<>]*>"""
    r"""|[^\s;"'(),<>]+(?:,[^\s;"'(),<>]+)*)"""
)
_PIPE = re.compile(rf"\s*\|\s*(?=(?:{_VERBS})-[A-Z])")


def _command_end(text: str, start: int) -> int:
    """Where the PowerShell command whose cmdlet name starts at ``start`` ends in ``text``."""
    name = _CMDLET.match(text, start)
    assert name is not None
    end = name.end()
    state = "cmdlet"
    while True:
        parameter = _PARAMETER.match(text, end)
        if parameter is not None:
            end, state = parameter.end(), "parameter"
            continue
        if state in ("parameter", "piped", "cmdlet"):
            value = _VALUE.match(text, end)
            positional_ok = state != "cmdlet" or (
                value is not None and _PARAMETER.match(text, value.end()) is not None
            )
            if value is not None and positional_ok:
                value_end = value.end()
                at_sentence_end = value_end == len(text) or text[value_end].isspace()
                if text[value_end - 1] == "." and at_sentence_end:
                    value_end -= 1
                if text[value.start():value_end].strip():
                    end, state = value_end, "value"
                    continue
        pipe = _PIPE.match(text, end)
        if pipe is not None:
            following = _CMDLET.match(text, pipe.end())
            if following is not None:
                end, state = following.end(), "piped"
                continue
        return end


def format_remedy(remedy: str) -> str:
    """A remedy as mrkdwn: prose escaped, each PowerShell command in code formatting."""
    parts: list[str] = []
    position = 0
    while True:
        match = _CMDLET.search(remedy, position)
        if match is None:
            break
        end = _command_end(remedy, match.start())
        parts.append(escape_mrkdwn(remedy[position:match.start()]))
        parts.append(code(remedy[match.start():end]))
        position = end
    parts.append(escape_mrkdwn(remedy[position:]))
    return "".join(parts)


# --- block helpers ------------------------------------------------------------------------


def mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> MarkdownTextObject:
    return MarkdownTextObject(text=fit_mrkdwn(text, limit), verbatim=True)


def section(text: str, *, fields: Sequence[str] = ()) -> Block:
    """A section of mrkdwn ``text`` (cut to 3,000 characters) with at most 10 short fields."""
    block = SectionBlock(
        text=mrkdwn(text),
        fields=[mrkdwn(field, MAX_FIELD_TEXT) for field in fields[:MAX_FIELDS]] or None,
    )
    result: Block = block.to_dict()
    return result


def fields_section(fields: Sequence[str]) -> Block:
    block = SectionBlock(fields=[mrkdwn(field, MAX_FIELD_TEXT) for field in fields[:MAX_FIELDS]])
    result: Block = block.to_dict()
    return result


def context(*texts: str) -> Block:
    block = ContextBlock(elements=[mrkdwn(text) for text in texts[:MAX_CONTEXT_ELEMENTS]])
    result: Block = block.to_dict()
    return result


def header(text: str) -> Block:
    block = HeaderBlock(text=PlainTextObject(text=plain_fit(text, MAX_HEADER_TEXT), emoji=True))
    result: Block = block.to_dict()
    return result


def divider() -> Block:
    result: Block = DividerBlock().to_dict()
    return result


def sections_from_lines(lines: Sequence[str], *, heading: str = "") -> list[Block]:
    """Lines grouped into as few sections as fit; ``heading`` opens the first."""
    blocks: list[Block] = []
    current = heading
    for line in lines:
        line = fit_mrkdwn(line, MAX_SECTION_TEXT - len(heading) - 1)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > MAX_SECTION_TEXT:
            blocks.append(section(current))
            candidate = line
        current = candidate
    if current:
        blocks.append(section(current))
    return blocks


def text_chars(value: object) -> int:
    """Characters of text (every ``text`` string) in a block or a list of blocks."""
    if isinstance(value, Mapping):
        return sum(
            len(item) if key == "text" and isinstance(item, str) else text_chars(item)
            for key, item in value.items()
        )
    if isinstance(value, list | tuple):
        return sum(text_chars(item) for item in value)
    return 0


def fits_message(blocks: Sequence[Block]) -> bool:
    return len(blocks) <= MAX_BLOCKS_PER_MESSAGE and text_chars(blocks) <= MAX_MESSAGE_TEXT


def message(text: str, blocks: Iterable[Block]) -> SlackMessage:
    return SlackMessage(text=plain_fit(text, MAX_FALLBACK_TEXT), blocks=tuple(blocks))


# --- the report ---------------------------------------------------------------------------


def _count_text(counts: Mapping[str, int], order: Sequence[str]) -> str:
    return ", ".join(f"{counts[key]} {key}" for key in order if counts.get(key))


def _severity_counts(findings: Sequence[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return counts


def _exo_queues(server: ServerAnalysis) -> list[Queue]:
    return [queue for queue in server.queues if queue.is_to_exchange_online]


def _server_name(server: ServerAnalysis) -> str:
    fqdn = f" ({trimmed(server.fqdn, _TRIMMED_NAME)})" if server.fqdn else ""
    return f"*{trimmed(server.name, _TRIMMED_NAME)}*{fqdn}"


def server_summary_line(server: ServerAnalysis) -> str:
    """One mrkdwn line: verdict emoji, server, finding counts, worst codes, queue, plan."""
    verdict = server_verdict(server)
    parts = [f"{VERDICT_EMOJI[verdict]} {_server_name(server)}: *{verdict}*"]
    if not server.reachable:
        parts.append(f"unreachable: {trimmed(server.error, 150, empty='no reason given')}")
    counts = _severity_counts(server.findings)
    if counts:
        worst = [f for f in server.findings if f.severity == verdict] or list(server.findings)
        codes = ", ".join(str(f.code) for f in worst[:3]) + (", …" if len(worst) > 3 else "")
        parts.append(f"{_count_text(counts, ('critical', 'warning', 'info'))} ({codes})")
    elif server.reachable:
        parts.append("no findings")
    waiting = sum(queue.message_count for queue in _exo_queues(server))
    if waiting:
        parts.append(f"{waiting} messages queued for Exchange Online")
    if server.plan is not None:
        parts.append(f"plan `{server.plan.short_hash}`")
    return " · ".join(parts)


def _report_head(report: FleetReport, title: str) -> list[Block]:
    verdict = report.verdict
    verdicts = [server_verdict(server) for server in report.servers]
    counts = {v: verdicts.count(v) for v in ("critical", "warning", "unknown", "ok")}
    servers = f"{len(report.servers)} server{'s' if len(report.servers) != 1 else ''}"
    breakdown = _count_text(counts, ("critical", "warning", "unknown", "ok"))
    return [
        header(f"{VERDICT_EMOJI[verdict]} {title}: {verdict.upper()}"),
        context(
            f"*{servers}*" + (f": {breakdown}" if breakdown else ""),
            f"Generated {slack_date(report.generated_at)} ({iso_utc(report.generated_at)})",
        ),
    ]


def _fallback_text(report: FleetReport, title: str) -> str:
    verdicts = [server_verdict(server) for server in report.servers]
    counts = {v: verdicts.count(v) for v in ("critical", "warning", "unknown", "ok")}
    breakdown = _count_text(counts, ("critical", "warning", "unknown", "ok"))
    count = len(report.servers)
    return escape_mrkdwn(
        f"{title}: {report.verdict.upper()} - {count} server{'s' if count != 1 else ''}"
        + (f": {breakdown}" if breakdown else "")
    )


def _fleet_summary(report: FleetReport) -> list[Block]:
    if not report.servers:
        return [section("No servers were checked.")]
    return sections_from_lines([server_summary_line(server) for server in report.servers])


def _expiry_text(analysis: CertificateAnalysis) -> str:
    date = as_utc(analysis.cert.not_after).strftime("%Y-%m-%d")
    if analysis.days_left < 0:
        return f":x: expired {date} ({-analysis.days_left} days ago)"
    marker = ":hourglass: " if analysis.days_left < 60 else ""
    return f"{marker}expires {date} ({analysis.days_left} days)"


def certificates_that_matter(server: ServerAnalysis) -> tuple[CertificateAnalysis, ...]:
    """SMTP bound or unknown, matching the FQDN, named by a connector, predicted or in a finding."""
    flagged = {t.upper() for finding in server.findings for t in finding.thumbprints}
    predicted = {s.thumbprint.upper() for s in server.outbound if s.thumbprint}
    names = [c.tls_certificate_name for c in server.send_connectors if c.tls_certificate_name]
    return tuple(
        analysis for analysis in server.certificates
        if analysis.has_smtp is not False
        or analysis.matches_fqdn
        or analysis.thumbprint in flagged
        or analysis.thumbprint in predicted
        or any(is_named_by(analysis.cert, name) for name in names)
    )


def _certificate_line(server: ServerAnalysis, analysis: CertificateAnalysis) -> str:
    cert = analysis.cert
    facts = [
        TRUST_TEXT[analysis.trust],
        "no services" if cert.services is not None and not cert.services
        else f"services {escape_mrkdwn(services_text(cert.services))}",
        _expiry_text(analysis),
    ]
    if analysis.matched_names:
        facts.append("covers " + trimmed(", ".join(analysis.matched_names), _TRIMMED_SUBJECT))
    named_by = [
        c.name for c in server.send_connectors
        if c.tls_certificate_name is not None and is_named_by(cert, c.tls_certificate_name)
    ]
    if named_by:
        facts.append("named by " + ", ".join(f"'{trimmed(n, _TRIMMED_NAME)}'" for n in named_by))
    if any(s.thumbprint and s.thumbprint.upper() == analysis.thumbprint for s in server.outbound):
        facts.append("*predicted outbound*")
    return (
        f"• `{short_thumbprint(analysis.thumbprint)}` {trimmed(cert.subject, _TRIMMED_SUBJECT)}"
        f" · " + " · ".join(facts)
    )


def _certificate_blocks(server: ServerAnalysis) -> list[Block]:
    shown = certificates_that_matter(server)
    if not shown:
        return [section("*Certificates that matter*\nNone: no certificate has SMTP, matches the "
                        "FQDN, is named by a connector or has a finding.")]
    blocks = sections_from_lines(
        [_certificate_line(server, analysis) for analysis in shown],
        heading="*Certificates that matter*",
    )
    hidden = len(server.certificates) - len(shown)
    if hidden:
        blocks.append(context(
            f"{hidden} other certificate{'s' if hidden != 1 else ''} not shown "
            "(no SMTP, not matching the FQDN, not named by a connector, no finding)"
        ))
    return blocks


def _predicted_text(server: ServerAnalysis, selection: OutboundSelection) -> str:
    if selection.thumbprint is None:
        return "*no certificate predicted*"
    subject = next(
        (a.cert.subject for a in server.certificates
         if a.thumbprint == selection.thumbprint.upper()),
        None,
    )
    trust = f" · {TRUST_TEXT[selection.trust]}" if selection.trust else ""
    named = f" {trimmed(subject, _TRIMMED_SUBJECT)}" if subject else ""
    return f"`{short_thumbprint(selection.thumbprint)}`{named}{trust}"


def _outbound_blocks(server: ServerAnalysis) -> list[Block]:
    if not server.outbound:
        if not server.reachable:
            return []
        return [section("*Predicted outbound certificate*\nNo cloud send connector carries mail "
                        "from this server to Exchange Online.")]
    blocks: list[Block] = []
    for index, selection in enumerate(server.outbound):
        heading = "*Predicted outbound certificate* (a prediction, not an observation)\n" \
            if index == 0 else ""
        uncertain = " _(uncertain)_" if selection.uncertain else ""
        blocks.append(section(
            f"{heading}:outbox_tray: '{trimmed(selection.connector, _TRIMMED_NAME)}' → "
            f"{_predicted_text(server, selection)}{uncertain}\n"
            f"_Why (prediction):_ {trimmed(selection.reason, _TRIMMED_REASON)}"
        ))
    return blocks


def _queue_block(queue: Queue) -> Block:
    emoji = ":warning:" if queue.message_count else ":white_check_mark:"
    error = (
        f"\nLast error: {code(truncate_text(' '.join(queue.last_error.split()), _TRIMMED_ERROR))}"
        if queue.last_error and queue.last_error.strip() else ""
    )
    return section(
        f"{emoji} *Queue to Exchange Online* `{trimmed(queue.identity, _TRIMMED_NAME)}`{error}",
        fields=[
            f"*Status*\n{trimmed(queue.status, 100, empty='unknown')}",
            f"*Messages*\n{queue.message_count}",
            f"*Next hop*\n{trimmed(queue.next_hop_domain, _TRIMMED_NAME, empty='unknown')}",
            f"*Delivery type*\n{trimmed(queue.delivery_type, 100, empty='unknown')}",
        ],
    )


def _evidence_blocks(server: ServerAnalysis) -> list[Block]:
    if not server.reachable:
        return []
    queues = _exo_queues(server)
    if not queues:
        return [context(":white_check_mark: *Live evidence:* no queue to Exchange Online, so "
                        "nothing is waiting for it.")]
    blocks = [_queue_block(queue) for queue in queues[:_SHOWN_QUEUES]]
    if len(queues) > _SHOWN_QUEUES:
        blocks.append(context(f"{len(queues) - _SHOWN_QUEUES} more queues to Exchange Online "
                              "not shown"))
    return blocks


def finding_text(finding: Finding) -> str:
    """One finding as mrkdwn: severity emoji, code, summary and remedy (commands as code)."""
    remedy = format_remedy(truncate_text(finding.remedy, _TRIMMED_REMEDY)) \
        if finding.remedy.strip() else "(none)"
    return (
        f"{SEVERITY_EMOJI[finding.severity]} *{escape_mrkdwn(str(finding.code))}* "
        f"({finding.severity})\n{trimmed(finding.summary, _TRIMMED_SUMMARY)}\n"
        f"*Remedy:* {remedy}"
    )


def _finding_blocks(server: ServerAnalysis) -> list[Block]:
    if not server.findings:
        return [section(":white_check_mark: *Findings:* none.")] if server.reachable else []
    return [section(finding_text(finding)) for finding in server.findings]


def step_change_line(number: int, step: PlanStep) -> str:
    """``n. Title `target`: before → after``, or why the step is skipped."""
    title = STEP_TITLES.get(step.kind, step.kind)
    target = code(truncate_text(step.target, _TRIMMED_NAME))
    if not step.runnable:
        return (
            f"{number}. :fast_forward: ~{title}~ {target}: skipped, "
            f"{trimmed(step.skipped_reason, _TRIMMED_STEP_VALUE)}"
        )
    return (
        f"{number}. {title} {target}: {trimmed(step.before, _TRIMMED_STEP_VALUE)} → "
        f"{trimmed(step.after, _TRIMMED_STEP_VALUE)}"
    )


def plan_counts(plan: RemediationPlan) -> str:
    runnable = sum(1 for step in plan.steps if step.runnable)
    skipped = len(plan.steps) - runnable
    text = f"{runnable} step{'s' if runnable != 1 else ''} to run"
    return text + (f", {skipped} skipped" if skipped else "")


def _plan_blocks(server: ServerAnalysis) -> list[Block]:
    plan = server.plan
    if plan is None:
        return []
    return sections_from_lines(
        [step_change_line(number, step) for number, step in enumerate(plan.steps, start=1)],
        heading=(
            f":wrench: *Remediation plan* `{plan.short_hash}`: {plan_counts(plan)}. Nothing runs "
            "before approval on its request card."
        ),
    )


def server_blocks(server: ServerAnalysis) -> list[Block]:
    """Every block of one server's details (may be more than one message holds)."""
    verdict = server_verdict(server)
    taken = f" · snapshot {slack_date(server.taken_at)}" if server.taken_at else ""
    blocks = [section(f"{VERDICT_EMOJI[verdict]} {_server_name(server)}: *{verdict}*{taken}")]
    reported = any(f.code is FindingCode.SERVER_UNREACHABLE for f in server.findings)
    if not server.reachable and not reported:
        blocks.append(section(
            f":electric_plug: *Unreachable:* {trimmed(server.error, 500, empty='no reason given')}"
            "\nNothing on this server could be checked."
        ))
    blocks += _certificate_blocks(server) if server.reachable else []
    blocks += _outbound_blocks(server)
    blocks += _evidence_blocks(server)
    blocks += _finding_blocks(server)
    blocks += _plan_blocks(server)
    if server.notes:
        lines = "\n".join(f"• {escape_mrkdwn(note)}" for note in server.notes[:10])
        more = f"\n…and {len(server.notes) - 10} more" if len(server.notes) > 10 else ""
        blocks.append(section(fit_mrkdwn(f":memo: *Read with notes*\n{lines}{more}")))
    return blocks


@dataclass(frozen=True)
class _Group:
    label: str
    blocks: tuple[Block, ...]


@dataclass
class _Page:
    labels: list[str]
    blocks: list[Block]


def _paginate(groups: Sequence[_Group]) -> list[_Page]:
    """Groups packed into pages within the limits, a divider between two groups on a page;
    a group too big for one page is split, its continuation marked."""
    pages: list[_Page] = []
    current = _Page([], [])

    def turn_page() -> None:
        nonlocal current
        pages.append(current)
        current = _Page([], [])

    for group in groups:
        separator = [divider()] if current.blocks else []
        if current.blocks and not fits_message([*current.blocks, *separator, *group.blocks]):
            turn_page()
            separator = []
        current.labels.append(group.label)
        if fits_message([*current.blocks, *separator, *group.blocks]):
            current.blocks.extend([*separator, *group.blocks])
            continue
        current.blocks.extend(separator)
        for block in group.blocks:
            if current.blocks and not fits_message([*current.blocks, block]):
                turn_page()
                current.labels.append(group.label)
                current.blocks.append(context(f"_{escape_mrkdwn(group.label)} (continued)_"))
            current.blocks.append(block)
    if current.blocks:
        pages.append(current)
    return pages


def render_report(
    report: FleetReport, *, title: str = "Exchange TLS check"
) -> tuple[SlackMessage, ...]:
    """The report as Slack messages: the first for the channel, the rest for its thread.

    A report that fits one message is one message. Otherwise the first holds the verdict and
    one line per server, and the thread holds each server's details, paged within the limits.
    """
    head = _report_head(report, title)
    summary = _fleet_summary(report)
    details = [_Group(server.name, tuple(server_blocks(server))) for server in report.servers]
    fallback = _fallback_text(report, title)
    whole = [*head, *summary]
    for group in details:
        whole += [divider(), *group.blocks]
    if fits_message(whole):
        return (message(fallback, whole),)

    note = context(":thread: Details for each server are in the thread of this message.")
    first: list[Block] = [*head]
    rest = list(summary)
    while rest and fits_message([*first, rest[0], note]):
        first.append(rest.pop(0))
    first.append(note)
    groups = [_Group("Fleet summary", tuple(rest))] if rest else []
    pages = _paginate([*groups, *details])
    messages = [message(fallback, first)]
    for number, page in enumerate(pages, start=1):
        what = ", ".join(dict.fromkeys(page.labels))
        messages.append(message(
            escape_mrkdwn(f"{title}: details {number} of {len(pages)}: {what}"), page.blocks
        ))
    return tuple(messages)


# --- the bot's other replies --------------------------------------------------------------


@dataclass(frozen=True)
class ServerStatus:
    """One configured server in ``/exchange-tls status``."""

    name: str
    verdict: Verdict | None
    """The verdict of its last check; None when it was never checked."""
    checked_at: datetime | None = None
    summary: str | None = None
    """A short plain-text note on the last result (escaped when shown)."""


@dataclass(frozen=True)
class OpenRequest:
    """A remediation request that is not finished, in ``/exchange-tls status``."""

    request_id: str
    server: str
    state: State
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ScheduleStatus:
    """A scheduled health post in ``/exchange-tls status``."""

    label: str
    """What and when: ``0 8 * * 1-5 (Europe/Amsterdam) · EX01, EX02``."""
    channel: str
    next_run: datetime | None
    """Aware, in the schedule's time zone; None when it never fires again."""


_CHANNEL_ID: Final = re.compile(r"^[CG][A-Z0-9]{2,30}$")


def schedule_status_line(schedule: ScheduleStatus) -> str:
    """``• #channel: cron (zone) · servers · next <date> (Mon 08:00 CEST)``."""
    where = (f"<#{schedule.channel}>" if _CHANNEL_ID.match(schedule.channel)
             else code(truncate_text(schedule.channel, 40)))
    if schedule.next_run is None:
        when = "no further runs"
    else:
        local = schedule.next_run.strftime("%a %H:%M %Z").strip()
        when = f"next {slack_date(schedule.next_run)} ({escape_mrkdwn(local)})"
    return f"• {where}: {trimmed(schedule.label, 300)} · {when}"


def render_status(
    servers: Sequence[ServerStatus],
    open_requests: Sequence[OpenRequest],
    *,
    frozen: bool,
    schedules: Sequence[ScheduleStatus] | None = None,
) -> SlackMessage:
    """Servers with their last results, open remediation requests, and the freeze state; with
    ``schedules``, the scheduled posts and their next run (before the servers, so a long
    server list cannot push them out)."""
    freeze = (
        ":ice_cube: *Remediation is frozen*: nothing runs until an admin unfreezes."
        if frozen else ":arrow_forward: Remediation is not frozen."
    )
    lines = []
    for server in servers:
        if server.verdict is None:
            lines.append(f":white_circle: *{trimmed(server.name, _TRIMMED_NAME)}*: never checked")
            continue
        when = f" · checked {slack_date(server.checked_at)}" if server.checked_at else ""
        note = f" · {trimmed(server.summary, 300)}" if server.summary else ""
        lines.append(
            f"{VERDICT_EMOJI[server.verdict]} *{trimmed(server.name, _TRIMMED_NAME)}*: "
            f"{server.verdict}{when}{note}"
        )
    request_lines = [
        f"• `{trimmed(request.request_id, 40)}` on *{trimmed(request.server, _TRIMMED_NAME)}*: "
        f"{request.state.value}"
        + (f", expires {slack_date(request.expires_at)}" if request.expires_at else "")
        for request in open_requests
    ]
    blocks: list[Block] = [header(":bar_chart: Exchange TLS status"), section(freeze)]
    if schedules is not None:
        blocks += sections_from_lines(
            [schedule_status_line(s) for s in schedules] or ["None are configured."],
            heading="*Scheduled posts*",
        )
    blocks += sections_from_lines(lines or ["No servers are configured."], heading="*Servers*")
    blocks += sections_from_lines(
        request_lines or ["None."], heading="*Open remediation requests*"
    )
    blocks = _cap_blocks(blocks)
    text = f"Exchange TLS status: {len(servers)} servers, {len(open_requests)} open requests" + (
        ", remediation frozen" if frozen else ""
    ) + (f", {len(schedules)} scheduled posts" if schedules is not None else "")
    return message(text, blocks)


DEFAULT_HELP_COMMANDS: Final[tuple[tuple[str, str], ...]] = (
    ("check [SERVER|all]", "check one configured server, or all of them"),
    ("status", "servers, last results, open remediation requests, freeze state"),
    ("audit [REQUEST-ID]", "the audit trail of one remediation request, or the latest events"),
    ("freeze", "stop every remediation (admins only)"),
    ("unfreeze", "allow remediation again (admins only)"),
    ("help", "this message"),
)


def render_help(
    known_servers: Sequence[str],
    commands: Sequence[tuple[str, str]] = DEFAULT_HELP_COMMANDS,
    *,
    command: str = "/exchange-tls",
) -> SlackMessage:
    """Usage of each sub-command (``(usage, description)`` pairs) and the known servers."""
    lines = [
        f"• `{escape_mrkdwn(command)} {escape_mrkdwn(usage)}`: {escape_mrkdwn(description)}"
        for usage, description in commands
    ]
    blocks = [
        header(":information_source: exchange-tls help"),
        *sections_from_lines(lines, heading="*Commands*"),
        section(_known_servers_text(known_servers)),
    ]
    return message(f"{command} help", _cap_blocks(blocks))


def _known_servers_text(known: Sequence[str]) -> str:
    if not known:
        return "*Servers:* none are configured."
    names = ", ".join(f"`{trimmed(name, _TRIMMED_NAME)}`" for name in known)
    return fit_mrkdwn(f"*Servers you can check:* {names}")


def render_unknown_server(name: str, known: Sequence[str]) -> SlackMessage:
    """A friendly refusal for a server name that is not in the configuration."""
    text = (
        f":grey_question: I don't know a server called `{trimmed(name, _TRIMMED_NAME)}`. "
        "Only servers in the configuration can be checked."
    )
    return message(
        f"Unknown server {escape_mrkdwn(plain_fit(name, _TRIMMED_NAME))}",
        [section(text), section(_known_servers_text(known))],
    )


def render_error(text: str) -> SlackMessage:
    """A readable failure message (``text`` is plain text and is escaped)."""
    escaped = trimmed(text, 2500, empty="something went wrong")
    return message(f"Error: {escaped}", [section(f":warning: {escaped}")])


def _cap_blocks(blocks: list[Block]) -> list[Block]:
    if len(blocks) <= MAX_BLOCKS_PER_MESSAGE and text_chars(blocks) <= MAX_MESSAGE_TEXT:
        return blocks
    marker = context("_… more not shown_")
    kept: list[Block] = []
    for block in blocks:
        if not fits_message([*kept, block, marker]):
            break
        kept.append(block)
    kept.append(context(f"_… {len(blocks) - len(kept)} more blocks not shown_"))
    return kept
