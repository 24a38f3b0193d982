"""The slash-command parser, the immediate replies and the service's job gate: pure, no
Slack, no Exchange, no sleeping."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.analysis.analyse import unreachable_server
from bot.commands import (
    AuditCommand,
    CheckCommand,
    FreezeCommand,
    HelpCommand,
    InvalidArgument,
    NoServersConfigured,
    StatusCommand,
    UnfreezeCommand,
    UnknownServers,
    clean_text,
    display_word,
    parse_command,
)
from bot.config import ServerSettings, Settings, SlackSettings
from bot.remediation.policy import Actor
from bot.render.blocks import message, section
from bot.replies import (
    check_ack_text,
    interpret_command,
    not_posted_notice,
    status_summary,
    with_requester,
)
from bot.service import QuietGate, hold_seconds
from bot.slack_standin import validate_message

KNOWN = ("EX01", "EX02", "Mailbox-3")


def server(name: str) -> ServerSettings:
    return ServerSettings(name=name, url=f"http://{name.lower()}.contoso.com/PowerShell/",
                          auth="kerberos")


SETTINGS = Settings(servers=tuple(server(name) for name in KNOWN))
ADMIN = Actor(user_id="U0ADMIN01", team_id="T0STANDIN")


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("check EX01", CheckCommand(("EX01",))),
        ("CHECK ex01", CheckCommand(("EX01",))),
        ("check", CheckCommand(KNOWN, everything=True)),
        ("check all", CheckCommand(KNOWN, everything=True)),
        ("check ALL", CheckCommand(KNOWN, everything=True)),
        ("check ex02, EX01 ex02", CheckCommand(("EX02", "EX01"))),
        ("check mailbox-3", CheckCommand(("Mailbox-3",))),
        ("  check\tEX01\n", CheckCommand(("EX01",))),
        ("status", StatusCommand()),
        ("Status now", StatusCommand()),
        ("help", HelpCommand()),
        ("", HelpCommand()),
        ("   ", HelpCommand()),
        ("audit", AuditCommand()),
        ("audit r-abcdefgh23", AuditCommand("R-ABCDEFGH23")),
        ("freeze", FreezeCommand()),
        ("unfreeze", UnfreezeCommand()),
    ],
)
def test_commands_parse_to_typed_values(text: str, expected: object) -> None:
    assert parse_command(text, KNOWN) == expected


def test_naming_every_server_counts_as_everything() -> None:
    assert parse_command("check EX01 EX02 Mailbox-3", KNOWN) == CheckCommand(KNOWN, True)


def test_unknown_sub_command_gets_help_naming_it() -> None:
    assert parse_command("restart EX01", KNOWN) == HelpCommand(unknown="restart")


def test_unknown_server_is_reported_with_the_known_ones_and_nothing_to_check() -> None:
    parsed = parse_command("check EX01 EX99", KNOWN)
    assert parsed == UnknownServers(names=("EX99",), known=KNOWN)


def test_a_host_name_or_url_is_never_a_server() -> None:
    for text in ("check ex01.contoso.com", "check http://evil.example/PowerShell/",
                 "check 10.0.0.5", "check EX01:5985", "check ../EX01"):
        parsed = parse_command(text, KNOWN)
        assert isinstance(parsed, UnknownServers), text


def test_no_configured_servers() -> None:
    assert parse_command("check", ()) == NoServersConfigured()
    assert parse_command("check EX01", ()) == NoServersConfigured()


def test_too_many_names_is_refused_before_any_lookup() -> None:
    parsed = parse_command("check " + " ".join(["EX01"] * 51), KNOWN)
    assert isinstance(parsed, InvalidArgument)


def test_malformed_request_id_is_an_invalid_argument() -> None:
    parsed = parse_command("audit <!channel>", KNOWN)
    assert isinstance(parsed, InvalidArgument)
    assert parsed.command == "audit"


# --- hostile text ---------------------------------------------------------------------------


def test_control_and_format_characters_never_survive() -> None:
    parsed = parse_command("check EX\x1b[31m01\u202e\u200b\x00", KNOWN)
    assert isinstance(parsed, UnknownServers)
    for name in parsed.names:
        assert not any(ord(c) < 32 or c in "\u202e\u200b\x7f" for c in name)


def test_very_long_text_is_bounded() -> None:
    parsed = parse_command("check " + "A" * 100_000, KNOWN)
    assert isinstance(parsed, UnknownServers)
    assert all(len(name) <= 40 for name in parsed.names)
    assert len(clean_text("x" * 100_000)) == 2000


def test_display_word_shortens_with_an_ellipsis() -> None:
    assert display_word("B" * 100) == "B" * 39 + "…"


@given(st.text(max_size=400))
def test_any_text_parses_and_only_configured_servers_come_out(text: str) -> None:
    parsed = parse_command(text, KNOWN)
    if isinstance(parsed, CheckCommand):
        assert set(parsed.servers) <= set(KNOWN)
    if isinstance(parsed, UnknownServers):
        assert all(len(name) <= 40 for name in parsed.names)
        assert all(c.isprintable() or c == " " for name in parsed.names for c in name)


@given(st.text(max_size=300))
def test_any_text_gets_a_valid_acknowledgement_that_pings_nobody(text: str) -> None:
    reply = interpret_command(text, actor=ADMIN, channel_id="C0EXCHANGE", settings=SETTINGS).ack
    assert validate_message(reply.text, list(reply.blocks)) == []
    everything = reply.text + json.dumps(reply.blocks)
    for ping in ("<!channel>", "<!here>", "<!everyone>", "<@U", "<!subteam"):
        assert ping not in everything


# --- interpretation and acknowledgements ---------------------------------------------------


def test_check_is_acknowledged_with_what_is_being_checked() -> None:
    result = interpret_command("check EX01", actor=ADMIN, channel_id="C0EXCHANGE",
                               settings=SETTINGS)
    assert result.work == CheckCommand(("EX01",))
    assert "Checking *EX01*" in result.ack.text
    assert result.ack.blocks == ()


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (CheckCommand(("EX01", "EX02")), "Checking *EX01* and *EX02*…"),
        (CheckCommand(KNOWN, everything=True), "Checking all 3 servers…"),
        (CheckCommand(tuple(f"EX{i}" for i in range(5))), "Checking 5 servers…"),
    ],
)
def test_check_ack_texts(command: CheckCommand, shown: str) -> None:
    assert shown in check_ack_text(command)


def test_help_and_unknown_servers_are_answered_in_the_ack_without_work() -> None:
    for text in ("help", "check EX99", "bogus"):
        result = interpret_command(text, actor=ADMIN, channel_id="C0EXCHANGE", settings=SETTINGS)
        assert result.work is None
        assert result.ack.blocks
    unknown = interpret_command("check EX99", actor=ADMIN, channel_id="C0EXCHANGE",
                                settings=SETTINGS).ack
    blocks = json.dumps(unknown.blocks)
    assert "EX99" in blocks
    assert all(name in blocks for name in KNOWN)


def test_status_is_background_work() -> None:
    result = interpret_command("status", actor=ADMIN, channel_id="C0EXCHANGE", settings=SETTINGS)
    assert result.work == StatusCommand()


def test_later_commands_say_they_are_not_available_yet() -> None:
    for text in ("audit", "freeze", "unfreeze"):
        result = interpret_command(text, actor=ADMIN, channel_id="C0EXCHANGE", settings=SETTINGS)
        assert result.work is None
        assert "not available" in result.ack.text


def test_channels_and_users_outside_the_allow_lists_are_refused() -> None:
    restricted = Settings(
        servers=SETTINGS.servers,
        slack=SlackSettings(allowed_channels=("C0EXCHANGE",), allowed_users=("U0ADMIN01",)),
    )
    elsewhere = interpret_command("check EX01", actor=ADMIN, channel_id="C0RANDOM",
                                  settings=restricted)
    assert elsewhere.work is None
    assert not elsewhere.decision.allowed
    assert "<#C0RANDOM>" in elsewhere.ack.text
    stranger = interpret_command("check EX01", actor=Actor("U0STRANGER", "T0STANDIN"),
                                 channel_id="C0EXCHANGE", settings=restricted)
    assert stranger.work is None
    assert "<@U0STRANGER>" in stranger.ack.text
    allowed = interpret_command("check EX01", actor=ADMIN, channel_id="C0EXCHANGE",
                                settings=restricted)
    assert allowed.work == CheckCommand(("EX01",))


def test_requester_line_is_added_escaped_and_only_for_a_real_user_id() -> None:
    reply = message("report", [section("body")])
    added = with_requester(reply, "U0ADMIN01", "check <!channel>")
    assert len(added.blocks) == 2
    line = json.dumps(added.blocks[-1])
    assert "<@U0ADMIN01>" in line
    assert "<!channel>" not in line
    assert with_requester(reply, "<!channel>", "check") == reply


def test_requester_line_is_dropped_when_the_message_is_full() -> None:
    full = message("report", [section(str(i)) for i in range(45)])
    assert with_requester(full, "U0ADMIN01", "check") == full


def test_status_summary_of_an_unreachable_server() -> None:
    analysis = unreachable_server("EX01", None, "authentication refused by the server (HTTP 401)")
    assert status_summary(analysis).startswith("unreachable: authentication refused")


def test_not_posted_notice_explains_how_to_fix() -> None:
    assert "/invite" in not_posted_notice("not_in_channel").text + json.dumps(
        not_posted_notice("not_in_channel").blocks
    )



# --- the service's scheduling: acknowledgements before background work ----------------------


def test_a_job_waits_until_commands_stop_arriving() -> None:
    assert hold_seconds(10.0, last_arrival=9.99, held_since=10.0, settle=0.02, max_hold=0.5) \
        == pytest.approx(0.01)
    assert hold_seconds(10.0, last_arrival=9.0, held_since=10.0, settle=0.02, max_hold=0.5) == 0


def test_a_job_never_waits_longer_than_max_hold() -> None:
    assert hold_seconds(10.5, last_arrival=10.5, held_since=10.0, settle=0.02, max_hold=0.5) == 0
    assert hold_seconds(10.4, last_arrival=10.4, held_since=10.0, settle=0.2, max_hold=0.5) \
        == pytest.approx(0.1)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.on_sleep: list[Callable[[], None]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()


def test_quiet_gate_follows_a_burst_and_lets_a_lone_job_start_at_once() -> None:
    fake = FakeTime()
    gate = QuietGate(settle=0.02, max_hold=0.5, clock=fake.clock, sleep=fake.sleep)
    assert gate.wait() == 0
    gate.arrived()
    fake.on_sleep = [gate.arrived, gate.arrived]  # two more commands during the hold
    assert gate.wait() == pytest.approx(0.06)
    assert fake.slept == pytest.approx([0.02, 0.02, 0.02])


def test_quiet_gate_gives_up_holding_after_max_hold() -> None:
    fake = FakeTime()
    gate = QuietGate(settle=0.2, max_hold=0.5, clock=fake.clock, sleep=fake.sleep)
    gate.arrived()
    fake.on_sleep = [gate.arrived] * 10
    assert gate.wait() == pytest.approx(0.5)
