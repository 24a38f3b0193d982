"""``exchange-tls demo``: the whole flow in the terminal, with no Slack workspace.

In one process: the lab (a simulated Exchange organisation over real WinRM/PSRP), the Slack
stand-in (Web API and Socket Mode), and between them the real bot (the Bolt app, the listeners,
the service) connected over Socket Mode as in production, with its storage (a SQLite file in a
temporary directory) and an approver. The conversation is printed as a chat transcript.
:class:`DemoSession` is the driver: :meth:`~DemoSession.command` types a slash command,
:meth:`~DemoSession.press` clicks a button of a message the bot posted (as you, or as the demo
approver). The scripted demo goes through the whole flow: the check, the request card, your own
approval refused (a requester cannot approve their own request), the approver's approval, the
run with each step read back, the verification (the queue to Exchange Online drains), and the
audit trail.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Final, TextIO

from bot.app import BotRuntime, SlackSecrets, build_runtime
from bot.config import (
    ApprovalSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    StorageSettings,
    TrustSettings,
)
from bot.replicas import open_storage
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

SCRIPT: Final[tuple[str, ...]] = (
    "help", "check", "press Approve", "press Approve as Sam", "audit", "status",
)
"""What the scripted demo types: commands, and ``press LABEL [as NAME]`` clicks."""
DEMO_CHANNEL_NAME: Final = "exchange-ops"
DEMO_USER_NAME: Final = "Alex Admin"
DEMO_APPROVER_ID: Final = "U0APPROVER"
DEMO_APPROVER_NAME: Final = "Sam Approver"
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
        approver_id: str = DEMO_APPROVER_ID,
    ) -> None:
        self.out = out
        self.style = style or TranscriptStyle()
        self.channel_id = channel_id
        self.user_id = user_id
        self.approver_id = approver_id
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
                users=[StandInUser(self.user_id, "alex", DEMO_USER_NAME, is_admin=True),
                       StandInUser(self.approver_id, "sam", DEMO_APPROVER_NAME)],
            ))
            directory = self._stack.enter_context(tempfile.TemporaryDirectory(
                prefix="exchange-tls-demo-"))
            settings = Settings(
                servers=self.lab.servers,
                slack=SlackSettings(api_url=self.slack.api_url),
                approval=ApprovalSettings(approvers=(self.user_id, self.approver_id),
                                          admins=(self.user_id,)),
                storage=StorageSettings(url=f"sqlite:///{directory}/exchange-tls-demo.db"),
                source="the demo",
            )
            storage = open_storage(settings, secrets=(
                DEFAULT_BOT_TOKEN, DEFAULT_APP_TOKEN, self.lab.credentials.password or ""))
            self.runtime = build_runtime(
                settings,
                mode="socket",
                environ={},
                secrets=SlackSecrets(DEFAULT_BOT_TOKEN, DEFAULT_APP_TOKEN, None),
                trust=trust_store_for(TrustSettings(), self.lab.public_roots),
                credentials=lambda _server: self.lab.credentials,
                storage=storage,
                replica="demo",
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
            self.approver_id: DEMO_APPROVER_NAME,
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
            f"  you:   {DEMO_USER_NAME} in #{DEMO_CHANNEL_NAME}; the approver: "
            f"{DEMO_APPROVER_NAME} (`press LABEL as Sam`)\n"
        )

    def run_line(self, line: str) -> None:
        """One line as typed: ``press LABEL [as NAME]``, or a command (``/exchange-tls``
        optional)."""
        words = line.strip()
        if words.casefold().startswith("press "):
            label, _, name = words[6:].partition(" as ")
            user = self.user_named(name) if name.strip() else self.user_id
            if user is None:
                self.say(f"    (nobody called {name.strip()!r} here: try "
                         f"{DEMO_APPROVER_NAME.split()[0]})\n")
                return
            self.press(label, user_id=user)
        elif words.startswith(SLASH_COMMAND):
            self.command(words[len(SLASH_COMMAND):])
        elif words.startswith("/"):
            self.say(f"    (only {SLASH_COMMAND} is installed in this workspace)\n")
        else:
            self.command(words)

    def user_named(self, name: str) -> str | None:
        """The demo user whose display name starts with ``name`` (case-insensitive)."""
        wanted = name.strip().casefold()
        people = {self.user_id: DEMO_USER_NAME, self.approver_id: DEMO_APPROVER_NAME}
        return next((user for user, full in people.items()
                     if wanted and full.casefold().startswith(wanted)), None)

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

    def press(self, label: str, *, user_id: str | None = None) -> bool:
        """Click the newest button labelled ``label`` (as ``user_id``, default you); False
        when there is none."""
        found = self.find_button(label)
        if found is None:
            self.say(f"    (no button labelled {label!r} in the conversation)\n")
            return False
        ts, button = found
        user = user_id or self.user_id
        who = self._names().get(user, user)
        self._entry(ChatEntry(time.time(), who, "user", f"pressed [ {button.label} ]"))
        assert self.slack.socket_mode is not None
        envelope = self.slack.send_block_action(
            action_id=button.action_id, channel_id=self.channel_id, message_ts=ts,
            value=button.value, user_id=user,
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
        fresh = calls[self._cursor.calls:]
        last_update = {(str(c.args.get("channel")), str(c.args.get("ts"))): index
                       for index, c in enumerate(fresh) if c.method == "chat.update"}
        for index, call in enumerate(fresh):
            if call.method not in _POSTING_METHODS or not call.ok:
                continue
            key = (str(call.args.get("channel")), str(call.args.get("ts")))
            if call.method == "chat.update" and last_update[key] != index:
                continue  # a card updated at every step: only its latest state is printed
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
    "prefix is optional). `press LABEL` clicks a button the bot showed, `press LABEL as Sam`\n"
    "clicks it as the approver. `quit` ends the demo.\n"
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
        session.run_line(words)


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
                for line in script:
                    session.run_line(line)
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
