"""``exchange-tls demo``: the lab, the Slack stand-in and the real bot in one process, printed
as a chat transcript; and the transcript's rendering of Slack messages."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import yaml

from bot.analysis.model import PlanStep, RemediationPlan
from bot.cli import main
from bot.demo import run_demo
from bot.remediation.states import State
from bot.render.blocks import render_error
from bot.render.card import RequestCardView, render_request_card
from bot.transcript import (
    ChatEntry,
    TranscriptStyle,
    buttons_of,
    format_entry,
    mrkdwn_to_text,
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_scripted_demo_shows_help_check_and_status_and_exits_0() -> None:
    code, out, err = run_cli("demo")

    assert code == 0, err
    transcript = out
    order = [
        transcript.index("Alex Admin\n    /exchange-tls help\n"),
        transcript.index("Alex Admin\n    /exchange-tls check\n"),
        transcript.index("Checking EX01… the report will be posted in this channel."),
        transcript.index("Exchange TLS check: CRITICAL"),
        transcript.index("Alex Admin\n    /exchange-tls status\n"),
        transcript.index("Exchange TLS status"),
    ]
    assert order == sorted(order)
    assert "(only visible to you)" in transcript
    assert "SMTP_MIXED_TRUST_BINDING" in transcript
    assert "Requested by @Alex Admin" in transcript
    assert "&lt;" not in transcript
    assert "<!date" not in transcript
    assert "\033[" not in transcript


def test_interactive_demo_reads_commands_until_quit() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("check EX99\n\n/exchange-tls bogus\n/giphy cats\npress Approve\nquit\n"
                        "check EX01\n")

    code = run_demo(interactive=True, out=out, err=err, stdin=stdin)

    transcript = out.getvalue()
    assert code == 0, err.getvalue()
    assert "I don't know a server called `EX99`" in transcript
    assert "Servers you can check: `EX01`" in transcript
    assert "I don't know the command `bogus`" in transcript
    assert "only /exchange-tls is installed" in transcript
    assert "no button labelled 'Approve'" in transcript
    assert "Exchange TLS check:" not in transcript


def test_other_new_commands_slack_manifest() -> None:
    code, out, _ = run_cli("slack-manifest")
    manifest = yaml.safe_load(out)
    assert code == 0
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["slash_commands"][0]["command"] == "/exchange-tls"
    code, out, _ = run_cli("slack-manifest", "--request-url", "https://bot.example.com/slack/events")
    assert code == 0
    assert yaml.safe_load(out)["settings"]["socket_mode_enabled"] is False
    assert run_cli("slack-manifest", "--request-url", "http://plain.example.com")[0] == 3


def test_bot_command_refuses_to_start_without_its_configuration() -> None:
    code, _, err = run_cli("bot", "--http", "--port", "0", "--config", "/nonexistent.toml")
    assert code == 3
    assert "configuration file not found" in err
    assert run_cli("bot", "--port", "8080")[0] == 3


# --- the transcript, pure ------------------------------------------------------------------

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _card() -> dict[str, object]:
    step = PlanStep(
        kind="pin_connector",
        cmdlet="Set-SendConnector",
        parameters=(("Identity", "Outbound to Office 365"),
                    ("TlsCertificateName", "<I>CN=Root<S>CN=mail.contoso.com")),
        display='Set-SendConnector -Identity "Outbound to Office 365" '
        '-TlsCertificateName "<I>CN=Root<S>CN=mail.contoso.com"',
        target="Outbound to Office 365",
        before="(not set)",
        after="<I>CN=Root<S>CN=mail.contoso.com",
    )
    view = RequestCardView(
        request_id="R-ABCDEFGHJK",
        server="EX01",
        state=State.PENDING,
        plan=RemediationPlan(server="EX01", steps=(step,), hash="ab" * 32),
        approvals_required=1,
        approvals=(),
        approvers_text="<@U0APPROVE>",
        requested_by="U0ADMIN01",
        expires_at=NOW + timedelta(minutes=30),
        now=NOW,
    )
    card = render_request_card(view)
    return {"text": card.text, "blocks": card.blocks}


def test_buttons_are_shown_as_labels_in_brackets() -> None:
    card = _card()
    blocks = card["blocks"]
    assert isinstance(blocks, tuple)
    entry = ChatEntry(NOW.timestamp(), "exchange-tls", "channel", str(card["text"]), blocks)
    shown = format_entry(entry, TranscriptStyle(names={"U0ADMIN01": "Alex Admin",
                                                       "U0APPROVE": "Sam Approver"}))
    assert "[ Approve ] [ Deny ]" in shown
    assert "@Alex Admin" in shown
    assert "@Sam Approver" in shown
    assert "<I>CN=Root<S>CN=mail.contoso.com" in shown
    assert "&lt;" not in shown
    assert "<!date" not in shown
    assert [b.label for b in buttons_of(blocks)] == ["Approve", "Deny"]
    assert buttons_of(blocks)[0].value == "R-ABCDEFGHJK"


def test_mrkdwn_is_read_as_slack_shows_it() -> None:
    style = TranscriptStyle(names={"U1": "Ann"}, emoji=True)
    text = ("*Bold* and _it_ · <!date^1700000000^{date}|2023-11-14> <@U1> <!channel> "
            "<https://example.com|site> :red_circle: SMTP_MIXED_TRUST_BINDING "
            "`a &lt; b` &amp; ```line1\nline2```")
    shown = mrkdwn_to_text(text, style)
    assert shown.startswith("Bold and it · 2023-11-14 @Ann @channel site (https://example.com) 🔴")
    assert "SMTP_MIXED_TRUST_BINDING" in shown
    assert "`a < b` &" in shown
    assert "  │ line1\n  │ line2" in shown
    assert mrkdwn_to_text(":red_circle:", TranscriptStyle(emoji=False)) == ":red_circle:"


def test_colour_only_when_asked() -> None:
    message = render_error("it broke")
    entry = ChatEntry(NOW.timestamp(), "exchange-tls", "thread", message.text, message.blocks)
    plain = format_entry(entry, TranscriptStyle())
    coloured = format_entry(entry, TranscriptStyle(color=True))
    assert "\033[" not in plain
    assert "\033[1m" in coloured
    assert "↳ in the thread" in plain
    assert "it broke" in plain
