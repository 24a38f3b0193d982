"""What the bot answers at once, and its small notices. Pure: no I/O, no clock.

:func:`interpret_command` turns a slash command into the acknowledgement Slack shows the user
within its 3 seconds and, when there is background work, the command the service runs.
Parsing and the run-check policy are pure and take microseconds, so the acknowledgement can
say what is happening ("Checking 3 servers…") without anything slow before it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from bot.analysis.model import FindingCode, ServerAnalysis
from bot.analysis.verdict import server_verdict
from bot.commands import (
    AuditCommand,
    CheckCommand,
    Command,
    FreezeCommand,
    HelpCommand,
    InvalidArgument,
    NoServersConfigured,
    StatusCommand,
    UnfreezeCommand,
    UnknownServers,
    clean_text,
    parse_command,
)
from bot.config import Settings
from bot.health import StoredResult
from bot.remediation.policy import Actor, Decision, may_run_check
from bot.render.blocks import (
    MAX_BLOCKS_PER_MESSAGE,
    SlackMessage,
    code,
    context,
    escape_mrkdwn,
    fits_message,
    message,
    render_error,
    render_help,
    render_unknown_server,
    section,
    truncate_text,
)

SLASH_COMMAND: Final = "/exchange-tls"
BackgroundCommand = CheckCommand | StatusCommand
RemediationCommand = AuditCommand | FreezeCommand | UnfreezeCommand
"""Commands the remediation service runs (:mod:`bot.remediation_service`)."""
_USER_ID: Final = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_NAMED_IN_ACK: Final = 3


@dataclass(frozen=True)
class Interpretation:
    """A slash command understood: the acknowledgement, and the work to run after it (if any)."""

    command: Command
    decision: Decision
    ack: SlackMessage
    work: BackgroundCommand | RemediationCommand | None


def interpret_command(
    text: str, *, actor: Actor, channel_id: str, settings: Settings,
    slash_command: str = SLASH_COMMAND, remediation: bool = False,
) -> Interpretation:
    """Parse and authorise a slash command and say what to acknowledge with.

    ``remediation``: the bot has storage, so ``audit``, ``freeze`` and ``unfreeze`` are work
    for the remediation service (without it they answer that they are not available).
    """
    command = parse_command(text, settings.server_names)
    decision = may_run_check(actor, channel_id, settings.slack)
    if not decision.allowed:
        return Interpretation(command, decision, refusal(decision), None)
    if isinstance(command, CheckCommand):
        return Interpretation(command, decision, message(check_ack_text(command), []), command)
    if isinstance(command, StatusCommand):
        return Interpretation(
            command, decision, message(":bar_chart: Gathering the status…", []), command
        )
    if remediation and isinstance(command, AuditCommand | FreezeCommand | UnfreezeCommand):
        return Interpretation(command, decision, message(_REMEDIATION_ACKS[type(command)], []),
                              command)
    return Interpretation(
        command, decision, immediate_answer(command, settings.server_names, slash_command), None
    )


_REMEDIATION_ACKS: Final[dict[type, str]] = {
    AuditCommand: ":lock: Reading the audit trail…",
    FreezeCommand: ":ice_cube: Freezing remediation…",
    UnfreezeCommand: ":arrow_forward: Unfreezing remediation…",
}


def check_ack_text(command: CheckCommand) -> str:
    """"Checking EX01…", "Checking all 3 servers…": what the user sees at once."""
    count = len(command.servers)
    if command.everything and count > 1:
        what = f"all {count} servers"
    elif count <= _NAMED_IN_ACK:
        what = _and_list([f"*{escape_mrkdwn(name)}*" for name in command.servers])
    else:
        what = f"{count} servers"
    return f":hourglass_flowing_sand: Checking {what}… the report will be posted in this channel."


def _and_list(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def immediate_answer(
    command: Command, known_servers: Sequence[str], slash_command: str = SLASH_COMMAND
) -> SlackMessage:
    """The whole answer to a command that needs no background work."""
    if isinstance(command, HelpCommand):
        return help_message(known_servers, command.unknown, slash_command)
    if isinstance(command, UnknownServers):
        return render_unknown_server(", ".join(command.names), command.known)
    if isinstance(command, NoServersConfigured):
        return render_error(
            "No Exchange servers are configured: add a [[servers]] table to the bot's "
            "configuration file, then restart the bot."
        )
    if isinstance(command, InvalidArgument):
        return render_error(
            f"{slash_command} {command.command} needs {command.expected} "
            f"(got: {command.argument})."
        )
    if isinstance(command, AuditCommand | FreezeCommand | UnfreezeCommand):
        name = {AuditCommand: "audit", FreezeCommand: "freeze", UnfreezeCommand: "unfreeze"}[
            type(command)
        ]
        return render_error(
            f"{slash_command} {name} is not available in this version of exchange-tls yet."
        )
    return help_message(known_servers, None, slash_command)


def help_message(
    known_servers: Sequence[str], unknown: str | None, slash_command: str = SLASH_COMMAND
) -> SlackMessage:
    """Usage and known servers, opening with what was not understood (if anything)."""
    usage = render_help(known_servers, command=slash_command)
    if unknown is None:
        return usage
    note = section(
        f":grey_question: I don't know the command {code(unknown)}. Here is what I can do:"
    )
    return message(f"Unknown command: {escape_mrkdwn(unknown)}", [note, *usage.blocks])


def refusal(decision: Decision) -> SlackMessage:
    """A refused command; the policy's reason keeps its user and channel mentions."""
    reason = escape_mrkdwn(truncate_text(clean_text(decision.reason, 500), 500),
                           keep_mentions=True)
    text = f":no_entry: {reason}. Ask an exchange-tls admin if you need access."
    return message(text, [section(text)])


def with_requester(
    reply: SlackMessage, user_id: str, command_text: str, slash_command: str = SLASH_COMMAND
) -> SlackMessage:
    """``reply`` with a closing context line naming who asked, and how, when it still fits."""
    if not _USER_ID.match(user_id):
        return reply
    typed = truncate_text(" ".join(clean_text(command_text, 200).split()), 80)
    line = context(
        f"Requested by <@{user_id}> with {code(f'{slash_command} {typed}'.strip())}"
    )
    blocks = [*reply.blocks, line]
    if len(blocks) > MAX_BLOCKS_PER_MESSAGE or not fits_message(blocks):
        return reply
    return replace(reply, blocks=tuple(blocks))


def status_summary(analysis: ServerAnalysis) -> str:
    """A short plain-text note on one server's last result, for ``status``."""
    if not analysis.reachable:
        return f"unreachable: {truncate_text(analysis.error or 'no reason given', 160)}"
    return _findings_note([(f.severity, str(f.code)) for f in analysis.findings],
                          server_verdict(analysis))


def stored_status_summary(result: StoredResult) -> str:
    """:func:`status_summary` of a result kept in the database (by any replica)."""
    if not result.reachable:
        reason = next((f.summary for f in result.findings
                       if f.code == FindingCode.SERVER_UNREACHABLE), "")
        prefix = f"Server {result.server} could not be checked: "
        reason = reason.removeprefix(prefix) if reason.startswith(prefix) else reason
        return f"unreachable: {truncate_text(reason or 'no reason given', 160)}"
    return _findings_note([(f.severity, f.code) for f in result.findings], result.verdict)


def _findings_note(findings: Sequence[tuple[str, str]], worst: str) -> str:
    """``2 critical, 1 warning (CODE, CODE)``: counts, and the codes of the worst severity."""
    if not findings:
        return "no findings"
    counts = [
        f"{sum(1 for severity, _ in findings if severity == wanted)} {wanted}"
        for wanted in ("critical", "warning", "info")
        if any(severity == wanted for severity, _ in findings)
    ]
    codes = [finding_code for severity, finding_code in findings if severity == worst]
    shown = ", ".join(codes[:3]) + (", …" if len(codes) > 3 else "")
    return ", ".join(counts) + (f" ({shown})" if shown else "")


def busy_notice(queued: int) -> SlackMessage:
    return render_error(
        f"I am busy: {queued} {'job is' if queued == 1 else 'jobs are'} already waiting or "
        "running. Nothing was started; "
        "please try again in a minute."
    )


def stopped_notice(what: str) -> SlackMessage:
    return render_error(
        f"The bot was stopped before your {what} ran, so it did not run. "
        "Please run it again once the bot is back."
    )


def failure_notice(what: str, reason: str) -> SlackMessage:
    return render_error(f"Your {what} failed: {reason}")


DATABASE_UNAVAILABLE: Final = "the bot's database is unavailable"


def database_unavailable_notice(what: str, *, outcome_unknown: bool = False) -> SlackMessage:
    """``what`` was not done because the database could not be used; with
    ``outcome_unknown``, the connection was lost while it was being saved."""
    if outcome_unknown:
        return render_error(
            f"The bot's database went away while your {what} was being saved, so I cannot "
            "tell whether it was recorded; nothing else was done. Once the database is back, "
            f"{SLASH_COMMAND} audit shows whether it was.")
    return render_error(
        f"Your {what} was not done: {DATABASE_UNAVAILABLE}, so nothing was changed. "
        "Please try again in a moment.")


def database_lost_after_recording_notice(what: str) -> SlackMessage:
    """``what`` was recorded in the database, which then became unavailable before the rest
    (the card, the thread, what comes next) was done."""
    return render_error(
        f"Your {what} was recorded, but the bot's database became unavailable before the bot "
        "had finished: request cards may show the earlier state until the database is back, "
        "and what follows (such as the run of an approved request) goes on by itself then.")


def check_not_stored_notice(*, cards_skipped: bool) -> SlackMessage:
    """The report was posted, but its result could not be kept (the database is down)."""
    skipped = " and no remediation request was made" if cards_skipped else ""
    return render_error(
        f"The report is complete, but {DATABASE_UNAVAILABLE}: its result is not kept for "
        f"{SLASH_COMMAND} status{skipped}. Run the check again once the database is back.")


def not_posted_notice(reason: str) -> SlackMessage:
    """The report could not be posted in the channel; said to the requester instead."""
    hint = {
        "not_in_channel": " Invite me first: /invite @exchange-tls",
        "channel_not_found": " I cannot see this channel: invite me to it first.",
        "is_archived": " The channel is archived.",
    }.get(reason, "")
    return render_error(f"I could not post the report in this channel ({reason}).{hint}")
