"""``exchange-tls demo``: the whole flow in the terminal, with no Slack workspace.

In one process: the lab (a simulated Exchange organisation over real WinRM/PSRP), the Slack
stand-in (Web API and Socket Mode), and between them the real bot (the Bolt app, the listeners,
the service) connected over Socket Mode as in production. The conversation is printed as a chat
transcript. :class:`DemoSession` is the driver: :meth:`~DemoSession.command` types a slash
command, :meth:`~DemoSession.press` clicks a button of a message the bot posted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Final, TextIO

from bot.app import BotRuntime, SlackSecrets, build_runtime
from bot.config import ServerSettings, Settings, SlackSettings, TrustSettings
from bot.replies import SLASH_COMMAND
from bot.runner import LabTarget, running_lab, trust_store_for
from bot.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    DEFAULT_USER_ID,
    SlackStandIn,
    SocketModeTimeout,
    StandInChannel,
    StandInUser,
)
from bot.socket_mode import SocketModeConnection
from bot.transcript import (
    Button,
    ChatEntry,
    TranscriptStyle,
    Where,
    blocks_from,
    buttons_of,
    format_entry,
)

SCRIPT: Final[tuple[str, ...]] = ("help", "check", "status")
DEMO_CHANNEL_NAME: Final = "exchange-ops"
DEMO_USER_NAME: Final = "Alex Admin"
ACK_TIMEOUT: Final = 3.0
WORK_TIMEOUT: Final = 120.0
_POSTING_METHODS: Final = ("chat.postMessage", "chat.update", "chat.postEphemeral")
_QUIET_LOGGERS: Final = ("slack_sdk", "slack_bolt", "exchange_tls.bolt", "websockets")


class DemoError(Exception):
    """The demo could not run (the lab or the stand-in did not start)."""


@dataclass
class _Cursor:
    calls: int = 0
    responses: int = 0


class DemoSession:
    """The lab, the stand-in and the bot, and a printer of what is said between them."""

    def __init__(
        self,
        out: TextIO,
        *,
        style: TranscriptStyle | None = None,
        lab_state: str | None = None,
        channel_id: str = DEFAULT_CHANNEL_ID,
        user_id: str = DEFAULT_USER_ID,
    ) -> None:
        self.out = out
        self.style = style or TranscriptStyle()
        self.channel_id = channel_id
        self.user_id = user_id
        self._lab_state = lab_state
        self._stack = ExitStack()
        self._cursor = _Cursor()
        self.slack: SlackStandIn
        self.lab: LabTarget
        self.runtime: BotRuntime

    # --- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> DemoSession:
        try:
            self.lab = self._stack.enter_context(running_lab(self._lab_state))
            self.slack = self._stack.enter_context(SlackStandIn(
                channels=[StandInChannel(self.channel_id, DEMO_CHANNEL_NAME)],
                users=[StandInUser(self.user_id, "alex", DEMO_USER_NAME, is_admin=True)],
            ))
            settings = Settings(
                servers=self.lab.servers,
                slack=SlackSettings(api_url=self.slack.api_url),
                source="the demo",
            )
            self.runtime = build_runtime(
                settings,
                mode="socket",
                environ={},
                secrets=SlackSecrets(DEFAULT_BOT_TOKEN, DEFAULT_APP_TOKEN, None),
                trust=trust_store_for(TrustSettings(), self.lab.public_roots),
                credentials=lambda _server: self.lab.credentials,
            )
            self._stack.callback(self.runtime.close, 10.0)
            connection = SocketModeConnection(self.runtime.app, DEFAULT_APP_TOKEN)
            self._stack.callback(self._disconnect, connection)
            connection.start()
            assert self.slack.socket_mode is not None
            self.slack.socket_mode.wait_for_connection(timeout=10)
        except BaseException:
            self._stack.close()
            raise
        self._cursor = _Cursor(len(self.slack.calls()), len(self.slack.responses()))
        self.style = TranscriptStyle(
            self.style.color, self.style.emoji, self.style.width,
            {**self.style.names, **self._names()},
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def _disconnect(self, connection: SocketModeConnection) -> None:
        if self.slack.socket_mode is not None:
            connection.stop()

    @property
    def servers(self) -> tuple[ServerSettings, ...]:
        return self.lab.servers

    def _names(self) -> dict[str, str]:
        return {
            self.user_id: DEMO_USER_NAME,
            self.slack.bot_user_id: self.slack.bot_name,
            self.channel_id: DEMO_CHANNEL_NAME,
        }

    # --- the conversation ---------------------------------------------------------------

    def banner(self) -> None:
        servers = ", ".join(s.name for s in self.servers)
        self.say(
            "exchange-tls demo: the real bot between a simulated Exchange organisation\n"
            f"  lab:   {servers} over WinRM/PSRP at {self.servers[0].url.rsplit('/', 2)[0]}/\n"
            f"  slack: a stand-in workspace at {self.slack.base_url} (Socket Mode)\n"
            f"  you:   {DEMO_USER_NAME} in #{DEMO_CHANNEL_NAME}\n"
        )

    def command(self, text: str) -> None:
        """Type ``/exchange-tls TEXT``, print the acknowledgement and everything that follows."""
        typed = " ".join(text.split())
        self._entry(ChatEntry(time.time(), DEMO_USER_NAME, "user",
                              f"{SLASH_COMMAND} {typed}".strip()))
        assert self.slack.socket_mode is not None
        envelope = self.slack.send_slash_command(
            typed, user_id=self.user_id, channel_id=self.channel_id
        )
        try:
            ack = self.slack.socket_mode.wait_for_ack(envelope, timeout=ACK_TIMEOUT)
        except SocketModeTimeout:
            self.say(f"    (no acknowledgement within {ACK_TIMEOUT:g} s)\n")
            return
        self._print_ack(ack)
        self._print_follow_ups()

    def press(self, label: str) -> bool:
        """Click the newest button labelled ``label``; False when there is none."""
        found = self.find_button(label)
        if found is None:
            self.say(f"    (no button labelled {label!r} in the conversation)\n")
            return False
        ts, button = found
        self._entry(ChatEntry(time.time(), DEMO_USER_NAME, "user", f"pressed [ {button.label} ]"))
        assert self.slack.socket_mode is not None
        envelope = self.slack.send_block_action(
            action_id=button.action_id, channel_id=self.channel_id, message_ts=ts,
            value=button.value, user_id=self.user_id,
        )
        try:
            ack = self.slack.socket_mode.wait_for_ack(envelope, timeout=ACK_TIMEOUT)
        except SocketModeTimeout:
            self.say("    (the bot did not answer this button)\n")
            return True
        if ack:
            self._print_ack(ack)
        self._print_follow_ups()
        return True

    def find_button(self, label: str) -> tuple[str, Button] | None:
        """The newest message's button labelled ``label`` (case-insensitive), with its ts."""
        wanted = label.strip().casefold()
        for message in reversed(self._all_messages()):
            for button in buttons_of(message.blocks):
                if button.label.casefold() == wanted:
                    return message.ts, button
        return None

    def _all_messages(self) -> list[Any]:
        channel = self.slack.messages(self.channel_id)
        replies = [m for parent in channel for m in self.slack.thread(self.channel_id, parent.ts)]
        unique = {m.ts: m for m in [*channel, *replies]}
        return sorted(unique.values(), key=lambda m: float(m.ts))

    # --- printing -----------------------------------------------------------------------

    def _print_ack(self, payload: dict[str, Any]) -> None:
        text = str(payload.get("text", ""))
        if not text and not payload.get("blocks"):
            return
        self._entry(ChatEntry(time.time(), self.slack.bot_name, "ephemeral", text,
                              blocks_from(payload.get("blocks"))))

    def _print_follow_ups(self) -> None:
        self.runtime.service.wait_until_idle(WORK_TIMEOUT)
        calls = self.slack.calls()
        responses = self.slack.responses()
        entries: list[ChatEntry] = []
        for call in calls[self._cursor.calls:]:
            if call.method not in _POSTING_METHODS or not call.ok:
                continue
            where: Where = (
                "ephemeral" if call.method == "chat.postEphemeral"
                else "edited" if call.method == "chat.update"
                else "thread" if call.args.get("thread_ts") else "channel"
            )
            entries.append(ChatEntry(call.at, self.slack.bot_name, where,
                                     str(call.args.get("text") or ""),
                                     blocks_from(call.args.get("blocks"))))
        for response in responses[self._cursor.responses:]:
            if response.status != 200:
                continue
            entries.append(ChatEntry(response.at, self.slack.bot_name, "ephemeral",
                                     str(response.body.get("text") or ""),
                                     blocks_from(response.body.get("blocks"))))
        self._cursor = _Cursor(len(calls), len(responses))
        for entry in sorted(entries, key=lambda e: e.at):
            self._entry(entry)

    def _entry(self, entry: ChatEntry) -> None:
        self.say(format_entry(entry, self.style) + "\n")

    def say(self, text: str) -> None:
        """Print a line of the demo's own (not part of the conversation)."""
        self.out.write(text + "\n")
        self.out.flush()


INTERACTIVE_HELP: Final = (
    "Type what you would type in Slack, e.g. `/exchange-tls check EX01` (the /exchange-tls\n"
    "prefix is optional). `press LABEL` clicks a button the bot showed. `quit` ends the demo.\n"
)


def run_interactive(session: DemoSession, stdin: TextIO, *, prompt: bool) -> None:
    """Read commands from ``stdin`` until ``quit`` or end of input."""
    session.say(INTERACTIVE_HELP)
    while True:
        if prompt:
            session.out.write("you › ")
            session.out.flush()
        line = stdin.readline()
        if not line:
            break
        words = line.strip()
        if not words:
            continue
        if words.casefold() in ("quit", "exit", ":q", "bye"):
            break
        if words.casefold().startswith("press "):
            session.press(words[6:])
        elif words.startswith(SLASH_COMMAND):
            session.command(words[len(SLASH_COMMAND):])
        elif words.startswith("/"):
            session.say(f"    (only {SLASH_COMMAND} is installed in this workspace)\n")
        else:
            session.command(words)


@contextmanager
def _quiet_slack_logs() -> Iterator[None]:
    """Bolt and the Socket Mode client log reconnects and unhandled buttons: noise here."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_demo(
    *,
    interactive: bool,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None = None,
    color: bool = False,
    lab_state: str | None = None,
    script: Sequence[str] = SCRIPT,
) -> int:
    """Run the demo; 0 when the conversation ran, 1 when the demo could not start."""
    style = TranscriptStyle(color=color, emoji=_can_print_emoji(out))
    stdin = stdin if stdin is not None else sys.stdin
    try:
        with _quiet_slack_logs(), DemoSession(out, style=style, lab_state=lab_state) as session:
            session.banner()
            if interactive:
                run_interactive(session, stdin, prompt=stdin.isatty())
            else:
                for text in script:
                    session.command(text)
                session.say("Try `exchange-tls demo --interactive` to type commands yourself.")
    except BrokenPipeError:
        raise
    except Exception as error:
        err.write(f"exchange-tls demo: {type(error).__name__}: {error}\n")
        return 1
    return 0


def _can_print_emoji(stream: TextIO) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return encoding in ("utf8", "utf16", "utf32", "")
