"""The ``/exchange-tls`` command text as a typed command. Pure: no I/O, no clock.

Free text from Slack never becomes a host: a server name is only ever looked up among the
configured names, and what comes back is the configured spelling. Anything else a user typed
is kept only as a short, cleaned *display* string (control and format characters removed, cut
to a few dozen characters) for a friendly reply, which the renderers escape for mrkdwn.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MAX_COMMAND_TEXT: Final = 2000
"""Characters of command text considered; Slack sends at most a few thousand."""
MAX_DISPLAY: Final = 40
"""Characters of a user-typed word echoed back in a reply."""
MAX_SERVERS_PER_COMMAND: Final = 50

REQUEST_ID_PATTERN: Final = re.compile(r"^R-[A-Z2-7]{10}$")
"""Request ids as :func:`bot.remediation.model.new_request_id` makes them."""
_SERVER_TOKEN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_SEPARATORS: Final = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class CheckCommand:
    """Check these configured servers (configured spelling, configured order when ``all``)."""

    servers: tuple[str, ...]
    everything: bool = False


@dataclass(frozen=True)
class StatusCommand:
    pass


@dataclass(frozen=True)
class HelpCommand:
    """Show usage; ``unknown`` is the cleaned sub-command the user typed, when it was not one."""

    unknown: str | None = None


@dataclass(frozen=True)
class UnknownServers:
    """``check`` named servers that are not configured: nothing is contacted."""

    names: tuple[str, ...]
    """Cleaned display forms of the unknown names, at most a few."""
    known: tuple[str, ...]


@dataclass(frozen=True)
class NoServersConfigured:
    pass


@dataclass(frozen=True)
class AuditCommand:
    request_id: str | None = None


@dataclass(frozen=True)
class InvalidArgument:
    """A sub-command with an argument it cannot take (e.g. a malformed request id)."""

    command: str
    argument: str
    expected: str


@dataclass(frozen=True)
class FreezeCommand:
    pass


@dataclass(frozen=True)
class UnfreezeCommand:
    pass


Command = (
    CheckCommand
    | StatusCommand
    | HelpCommand
    | UnknownServers
    | NoServersConfigured
    | AuditCommand
    | InvalidArgument
    | FreezeCommand
    | UnfreezeCommand
)

SUB_COMMANDS: Final = ("check", "status", "help", "audit", "freeze", "unfreeze")


def clean_text(text: str, limit: int = MAX_COMMAND_TEXT) -> str:
    """``text`` cut to ``limit`` characters with control and format characters made spaces.

    Format characters (category Cf: bidi overrides, zero-width joiners) could make a reply
    read differently from what it says; control characters could drive a terminal.
    """
    cut = text[:limit]
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in cut)


def display_word(word: str, limit: int = MAX_DISPLAY) -> str:
    """A user-typed word, cleaned and shortened, fit to quote back (still to be escaped)."""
    cleaned = " ".join(clean_text(word, limit * 4).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def tokens(text: str) -> list[str]:
    """Words of the command text: split on whitespace, commas and semicolons."""
    return [word for word in _SEPARATORS.split(clean_text(text).strip()) if word]


def parse_command(text: str, known_servers: Sequence[str]) -> Command:
    """Parse the text after ``/exchange-tls`` against the configured server names."""
    words = tokens(text)
    if not words:
        return HelpCommand()
    verb, arguments = words[0].casefold(), words[1:]
    if verb == "check":
        return _parse_check(arguments, tuple(known_servers))
    if verb == "status":
        return StatusCommand()
    if verb in ("help", "?", "-h", "--help"):
        return HelpCommand()
    if verb == "audit":
        return _parse_audit(arguments)
    if verb == "freeze":
        return FreezeCommand()
    if verb == "unfreeze":
        return UnfreezeCommand()
    return HelpCommand(unknown=display_word(words[0]))


def _parse_check(arguments: Sequence[str], known: tuple[str, ...]) -> Command:
    if not known:
        return NoServersConfigured()
    if not arguments or any(word.casefold() == "all" for word in arguments):
        return CheckCommand(servers=known, everything=True)
    if len(arguments) > MAX_SERVERS_PER_COMMAND:
        return InvalidArgument(
            command="check",
            argument=f"{len(arguments)} names",
            expected=f"at most {MAX_SERVERS_PER_COMMAND} server names, or all",
        )
    by_key = {name.casefold(): name for name in known}
    chosen: list[str] = []
    unknown: list[str] = []
    for word in arguments:
        name = by_key.get(word.casefold()) if _SERVER_TOKEN.match(word) else None
        if name is None:
            shown = display_word(word)
            if shown not in unknown:
                unknown.append(shown)
        elif name not in chosen:
            chosen.append(name)
    if unknown:
        return UnknownServers(names=tuple(unknown[:5]), known=known)
    return CheckCommand(servers=tuple(chosen), everything=set(chosen) == set(known))


def _parse_audit(arguments: Sequence[str]) -> Command:
    if not arguments:
        return AuditCommand()
    candidate = arguments[0].upper()
    if len(arguments) > 1 or not REQUEST_ID_PATTERN.match(candidate):
        return InvalidArgument(
            command="audit",
            argument=display_word(" ".join(arguments)),
            expected="a request id such as R-ABCDEFGHJK",
        )
    return AuditCommand(request_id=candidate)
