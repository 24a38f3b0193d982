"""Fuzz the Slack command parser: ``parse_command(text, known)`` returns a typed command or
help for any text (control and format characters, mentions, Slack's escapes, look-alike
server names, megabytes of text) and never raises.

What a user typed never becomes a host: a ``CheckCommand`` holds only configured names, in
their configured spelling; anything echoed back is cleaned and short.
"""

from __future__ import annotations

import time
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from bot.commands import (
    MAX_DISPLAY,
    MAX_SERVERS_PER_COMMAND,
    REQUEST_ID_PATTERN,
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
    parse_command,
)
from bot.config import SERVER_NAME_PATTERN
from tests.fuzz import bounded, fuzz_settings, record

COMMAND_TYPES = (CheckCommand, StatusCommand, HelpCommand, UnknownServers, NoServersConfigured,
                 AuditCommand, InvalidArgument, FreezeCommand, UnfreezeCommand)

server_names = st.from_regex(SERVER_NAME_PATTERN, fullmatch=True).filter(lambda n: len(n) <= 20)
known_servers = st.lists(server_names, max_size=6, unique_by=str.casefold)

SLACK_TEXT = [
    "check", "CHECK", "Check", "status", "help", "?", "--help", "audit", "freeze", "unfreeze",
    "all", "ALL", "EX01", "ex01", "ЕХ01", "ＥＸ01", "EX01\u200b", "EX0l", "R-ABCDEFGHJK",
    "r-abcdefghjk", "R-ABCDEFGHJ1", "<@U012ABCDEF>", "<!channel>", "<!here|here>",
    "<#C0HEALTH|general>", "<https://evil.example|click>", "&lt;", "&gt;", "&amp;", "*bold*",
    "`code`", "```block```", "\u202e", "\u2028", "\u2029", "\x00", "\x1b[31m", "\t", "\r\n",
    ",", ";", " ", "\u00a0", "\u3000", "$(reboot)", "; rm -rf /", "|", "'", '"', "\\",
]
VERBS = ["check", "CHECK", "status", "help", "audit", "freeze", "unfreeze", "Check"]
command_text = st.one_of(
    st.text(max_size=200),
    st.tuples(st.sampled_from(VERBS), st.lists(st.one_of(
        st.sampled_from(SLACK_TEXT), st.text(max_size=12)), max_size=8)).map(
        lambda parts: " ".join([parts[0], *parts[1]])),
    st.lists(st.one_of(st.sampled_from(SLACK_TEXT), st.text(max_size=12)), max_size=12).map(
        " ".join),
    st.lists(st.sampled_from(SLACK_TEXT), max_size=8).map("".join),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "So"]), max_size=50),
)


def is_clean(text: str) -> bool:
    return not any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


def check_command(text: str, known: list[str]) -> Command:
    started = time.perf_counter()
    command = bounded(lambda: parse_command(text, known), "parse_command")
    assert time.perf_counter() - started < 2
    assert isinstance(command, COMMAND_TYPES), command
    record(type(command).__name__)
    if isinstance(command, CheckCommand):
        assert command.servers
        assert all(name in known for name in command.servers)  # configured spelling only
        assert len(set(command.servers)) == len(command.servers)
        if command.everything:
            assert set(command.servers) == set(known)
    elif isinstance(command, UnknownServers):
        assert 1 <= len(command.names) <= 5
        assert tuple(command.known) == tuple(known)
        for name in command.names:
            assert is_clean(name)
            assert len(name) <= MAX_DISPLAY
    elif isinstance(command, HelpCommand) and command.unknown is not None:
        assert is_clean(command.unknown)
        assert len(command.unknown) <= MAX_DISPLAY
    elif isinstance(command, InvalidArgument):
        assert is_clean(command.argument)
        assert len(command.argument) <= MAX_DISPLAY
    elif isinstance(command, AuditCommand) and command.request_id is not None:
        assert REQUEST_ID_PATTERN.match(command.request_id)
    elif isinstance(command, NoServersConfigured):
        assert not known
    return command


@given(command_text, known_servers)
@example("", ["EX01"])
@example("check ЕХ01", ["EX01"])
@example("check EX01\u200b", ["EX01"])
@example("check <!channel>", ["EX01"])
@example("check " + "EX01 " * (MAX_SERVERS_PER_COMMAND + 1), ["EX01"])
@example("audit R-ABCDEFGHJK R-ABCDEFGHJK", [])
@example("\u202echeck", ["EX01"])
@fuzz_settings()
def test_any_text_is_a_command_or_help(text: str, known: list[str]) -> None:
    check_command(text, known)


@given(st.sampled_from(["check ", "audit ", "", "help "]),
       st.sampled_from(["x", "EX01 ", "\x00", "<!channel> ", "é", "\u200b"]),
       st.sampled_from([10_000, 100_000, 1_000_000]))
@fuzz_settings(scale=0.1)
def test_very_long_text(prefix: str, unit: str, repeat: int) -> None:
    check_command(prefix + unit * repeat, ["EX01", "EX02"])


@given(known_servers.filter(lambda names: bool(names) and "all" not in map(str.casefold, names)),
       st.data())
@fuzz_settings()
def test_configured_names_in_any_case_are_found(known: list[str], data: st.DataObject) -> None:
    chosen = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=4))
    typed = [data.draw(st.sampled_from([name, name.lower(), name.upper()])) for name in chosen]
    separator = data.draw(st.sampled_from([" ", ",", ", ", ";", "\t", "  \n "]))
    command = check_command("check " + separator.join(typed), known)
    assert isinstance(command, CheckCommand)
    assert list(command.servers) == list(dict.fromkeys(chosen))
