"""The remediation request card and its thread lines: snapshots, buttons per state, limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.analysis.model import PlanStep, RemediationPlan
from bot.remediation.states import State
from bot.render.blocks import MAX_BLOCKS_PER_MESSAGE, SlackMessage
from bot.render.card import (
    APPROVE_ACTION,
    DENY_ACTION,
    ROLLBACK_ACTION,
    ApprovalLine,
    DenialLine,
    RefusalLine,
    RequestCardView,
    StateLine,
    StepLine,
    ThreadEvent,
    VerificationLine,
    approvers_mrkdwn,
    render_request_card,
    render_thread_line,
)
from bot.slack_standin.blocks import validate_message
from tests.unit.snapshots import assert_matches_snapshot

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONNECTOR = "Outbound to Office 365 - 6f1e2a"
PIN_VALUE = "<I>CN=Test TLS RSA CA G1, O=Test Trust Services, C=US<S>CN=mail.contoso.com"
INTERNAL = "885FF115328B52CDBF39FA9E828ECE046DF863F9"
SELF_SIGNED = "A6F6A0D6C4A94F3A30739D3ACEAC0D784486B7F4"
EXO = "contoso.mail.protection.outlook.com"
RETRY_FILTER = f"NextHopDomain -eq '{EXO}' -and Status -eq 'Retry'"


def plan() -> RemediationPlan:
    steps = (
        PlanStep(
            kind="pin_connector", cmdlet="Set-SendConnector",
            parameters=(("Identity", CONNECTOR), ("TlsCertificateName", PIN_VALUE)),
            display=f'Set-SendConnector -Identity "{CONNECTOR}" -TlsCertificateName "{PIN_VALUE}"',
            target=CONNECTOR, before="TlsCertificateName: (not set)",
            after=f"TlsCertificateName: {PIN_VALUE} (596C1B13, public)",
        ),
        PlanStep(
            kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate",
            parameters=(("Server", "EX01"), ("Thumbprint", INTERNAL),
                        ("Services", ["IMAP", "POP"])),
            display=f"Enable-ExchangeCertificate -Server EX01 -Thumbprint {INTERNAL} "
            "-Services IMAP,POP",
            target=INTERNAL, before="Services: IMAP, POP, SMTP",
            after="Services: IMAP, POP (SMTP removed; -Services is documented as additive, so "
            "the result is read back)",
        ),
        PlanStep(
            kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate", parameters=(), display="",
            target=SELF_SIGNED, before="Services: IMAP, POP, IIS, SMTP", after="unchanged",
            skipped_reason="self-signed: Exchange selects it only when no CA-issued "
            "certificate is valid, and needs the default self-signed certificate for internal "
            "transport; left as it is",
        ),
        PlanStep(
            kind="retry_queue", cmdlet="Retry-Queue",
            parameters=(("Server", "EX01"), ("Filter", RETRY_FILTER)),
            display=f'Retry-Queue -Server EX01 -Filter "{RETRY_FILTER}"',
            target=EXO, before=f"messages to {EXO} waiting for the next retry",
            after=f"queue to {EXO} retried now; it drains once Exchange Online accepts the "
            "certificate",
        ),
    )
    return RemediationPlan(
        server="EX01", steps=steps,
        hash="9a9c45aadca677eafb8b44cefc56317df2c8c77ad52892cd29358e2a09c5fe0e",
    )


def view(state: State = State.PENDING, **changes: Any) -> RequestCardView:
    base = RequestCardView(
        request_id="R-ABCDEFGHIJ",
        server="EX01",
        state=state,
        plan=plan(),
        approvals_required=2,
        approvals=(("U0APPROVER1", NOW - timedelta(minutes=3)),),
        approvers_text=approvers_mrkdwn(["U0APPROVER1", "U0APPROVER2", "S0EXCHADMINS"]),
        requested_by="U0REQUESTER",
        expires_at=NOW + timedelta(minutes=25),
        now=NOW,
    )
    return replace(base, **changes)


def walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk(item)


def buttons(msg: SlackMessage) -> dict[str, dict[str, Any]]:
    return {obj["action_id"]: obj for obj in walk(list(msg.blocks)) if obj.get("type") == "button"}


def all_text(msg: SlackMessage) -> str:
    return "\n\n".join([msg.text] + [
        str(v) for obj in walk(list(msg.blocks)) for v in obj.values() if isinstance(v, str)
    ])


def assert_within_limits(msg: SlackMessage) -> None:
    assert msg.text
    assert len(msg.text) <= 40_000
    assert 0 < len(msg.blocks) <= MAX_BLOCKS_PER_MESSAGE
    for obj in walk(list(msg.blocks)):
        if obj.get("type") == "section":
            assert "text" not in obj or len(obj["text"]["text"]) <= 3000
            assert len(obj.get("fields", [])) <= 10
        if obj.get("type") == "mrkdwn":
            assert obj.get("verbatim") is True
    assert validate_message(msg.text, list(msg.blocks)) == []


def card_json(msg: SlackMessage) -> dict[str, Any]:
    return {"text": msg.text, "blocks": list(msg.blocks)}


# --- snapshots ----------------------------------------------------------------------------


def test_pending_card_snapshot() -> None:
    msg = render_request_card(view())
    assert_within_limits(msg)
    assert_matches_snapshot("card_pending", card_json(msg))


def test_running_card_snapshot() -> None:
    msg = render_request_card(view(
        State.RUNNING,
        approvals=(("U0APPROVER1", NOW - timedelta(minutes=3)),
                   ("U0APPROVER2", NOW - timedelta(minutes=1))),
        step_outcomes=((0, f"read back: TlsCertificateName is {PIN_VALUE}", True),),
    ))
    assert_within_limits(msg)
    text = all_text(msg)
    assert ":white_check_mark: read back: TlsCertificateName is &lt;I&gt;CN=Test" in text
    assert ":gear: running now" in text
    assert_matches_snapshot("card_running", card_json(msg))


def test_succeeded_card_with_rollback_snapshot() -> None:
    msg = render_request_card(view(
        State.SUCCEEDED,
        step_outcomes=((0, "pinned", True), (1, "Services read back: IMAP, POP", True),
                       (3, "queue retried: 0 messages left", True)),
        verification_text="Predicted outbound certificate: 596C1B13 CN=mail.contoso.com "
        "(public). SMTP no longer listed on 885FF115. Queue to Exchange Online: 0 messages.",
        rollback_available=True,
    ))
    assert_within_limits(msg)
    assert_matches_snapshot("card_succeeded_rollback", card_json(msg))


def test_failed_card_snapshot() -> None:
    msg = render_request_card(view(
        State.FAILED,
        step_outcomes=((0, "pinned", True),
                       (1, "error record: The certificate <!channel> is in use & locked", False)),
        state_reason="stopped at step 2: an error record; nothing after it ran",
    ))
    assert_within_limits(msg)
    text = all_text(msg)
    assert "<!channel>" not in text
    assert ":x: error record: The certificate &lt;!channel&gt; is in use &amp; locked" in text
    assert_matches_snapshot("card_failed", card_json(msg))


# --- what the card shows ------------------------------------------------------------------


def test_card_shows_exact_cmdlets_changes_hash_approvals_and_expiry() -> None:
    text = all_text(render_request_card(view()))
    assert (
        '```Set-SendConnector -Identity "Outbound to Office 365 - 6f1e2a" -TlsCertificateName '
        '"&lt;I&gt;CN=Test TLS RSA CA G1, O=Test Trust Services, C=US&lt;S&gt;CN=mail.contoso'
        '.com"```' in text
    )
    assert f"```Enable-ExchangeCertificate -Server EX01 -Thumbprint {INTERNAL} " \
        "-Services IMAP,POP```" in text
    assert "*Before:* Services: IMAP, POP, SMTP\n*After:* Services: IMAP, POP" in text
    assert ":fast_forward: *skipped*, self-signed" in text
    assert "*Plan*\n`9a9c45aadca6` (3 steps to run, 1 skipped)" in text
    assert "*Approvals*\n1 of 2: <@U0APPROVER1> <!date^1772366220^{time}|2026-03-01 11:57 UTC>" \
        in text
    assert "*Who may approve*\n<@U0APPROVER1>, <@U0APPROVER2>, <!subteam^S0EXCHADMINS>" in text
    assert "*Requested by*\n<@U0REQUESTER>" in text
    assert "*Expires*\n<!date^1772367900^{date_short_pretty} {time}|2026-03-01 12:25 UTC> " \
        "(in 25 min)" in text


def test_pending_card_has_approve_with_confirmation_and_deny() -> None:
    found = buttons(render_request_card(view()))
    assert set(found) == {APPROVE_ACTION, DENY_ACTION}
    approve, deny = found[APPROVE_ACTION], found[DENY_ACTION]
    assert approve["style"] == "primary"
    assert deny["style"] == "danger"
    assert approve["value"] == deny["value"] == "R-ABCDEFGHIJ"
    assert approve["text"]["text"] == "Approve"
    confirm = approve["confirm"]
    assert confirm["title"]["text"] == "Approve remediation on EX01?"
    assert "*EX01*" in confirm["text"]["text"]
    assert "`9a9c45aadca6`" in confirm["text"]["text"]
    assert confirm["confirm"]["text"] == "Approve"
    assert confirm["deny"]["text"] == "Cancel"


@pytest.mark.parametrize("state", list(State))
def test_buttons_only_when_a_click_can_do_something(state: State) -> None:
    with_rollback = buttons(render_request_card(view(state, rollback_available=True)))
    without = buttons(render_request_card(view(state)))
    if state is State.PENDING:
        assert set(with_rollback) == set(without) == {APPROVE_ACTION, DENY_ACTION}
    elif state is State.SUCCEEDED:
        assert set(with_rollback) == {ROLLBACK_ACTION}
        assert without == {}
    else:
        assert with_rollback == without == {}


def test_rollback_button_asks_for_confirmation() -> None:
    msg = render_request_card(view(State.SUCCEEDED, rollback_available=True))
    rollback = buttons(msg)[ROLLBACK_ACTION]
    assert rollback["value"] == "R-ABCDEFGHIJ"
    assert "TlsCertificateName" in rollback["confirm"]["text"]["text"]
    assert "*EX01*" in rollback["confirm"]["text"]["text"]


def test_rollback_request_offers_no_rollback_of_itself() -> None:
    msg = render_request_card(view(State.SUCCEEDED, rollback_available=True, kind="rollback"))
    assert buttons(msg) == {}
    assert msg.blocks[0]["text"]["text"].startswith(":wrench: Rollback request R-ABCDEFGHIJ")


def test_past_expiry_shows_no_buttons_even_before_the_sweep() -> None:
    msg = render_request_card(view(now=NOW + timedelta(minutes=30)))
    assert buttons(msg) == {}
    assert "Expired" in all_text(msg)
    assert "expired" in msg.text


def test_frozen_pending_card_can_be_denied_but_not_approved() -> None:
    msg = render_request_card(view(frozen=True))
    assert set(buttons(msg)) == {DENY_ACTION}
    assert "Remediation is frozen" in all_text(msg)


def test_many_steps_stay_within_limits() -> None:
    step = plan().steps[0]
    many = replace(plan(), steps=tuple(
        replace(step, target=f"{CONNECTOR} {i}", display=step.display + " " + "x" * 900)
        for i in range(120)
    ))
    msg = render_request_card(view(plan=many))
    assert_within_limits(msg)
    assert APPROVE_ACTION in buttons(msg)
    assert "not shown" in all_text(msg)


def test_hostile_approvers_text_keeps_only_mentions() -> None:
    msg = render_request_card(view(approvers_text="<@U0APPROVER1> or <!channel> <!subteam^S0ABC>"))
    text = all_text(msg)
    assert "<@U0APPROVER1> or &lt;!channel&gt; <!subteam^S0ABC>" in text
    assert "<!channel>" not in text


def test_approvers_mrkdwn() -> None:
    assert approvers_mrkdwn(["U012AB", "W0XYZ1", "S0GROUP", "<!channel>"]) == (
        "<@U012AB>, <@W0XYZ1>, <!subteam^S0GROUP>, `&lt;!channel&gt;`"
    )
    assert approvers_mrkdwn([]) == "nobody is configured"


# --- thread lines -------------------------------------------------------------------------


def test_thread_lines_snapshot() -> None:
    steps = plan().steps
    events: list[ThreadEvent] = [
        ApprovalLine("U0APPROVER1", NOW, 1, 2),
        RefusalLine("U0REQUESTER", NOW + timedelta(seconds=5), "approve",
                    "the requester cannot approve their own request"),
        RefusalLine("U0STRANGER", NOW + timedelta(seconds=6), "approve",
                    "<@U0STRANGER> is not an approver <!channel>"),
        ApprovalLine("U0APPROVER2", NOW + timedelta(seconds=30), 2, 2),
        StateLine(NOW + timedelta(seconds=31), State.RUNNING),
        StepLine(0, steps[0], NOW + timedelta(seconds=32)),
        StepLine(0, steps[0], NOW + timedelta(seconds=35), f"TlsCertificateName is {PIN_VALUE}",
                 True),
        StepLine(1, steps[1], NOW + timedelta(seconds=40), "error record: access <denied>",
                 False),
        VerificationLine(NOW + timedelta(seconds=50),
                         "SMTP still listed on 885FF115 (-Services is additive)", False),
        StateLine(NOW + timedelta(seconds=51), State.FAILED, "stopped at step 2"),
        DenialLine("U0APPROVER1", NOW),
    ]
    lines = [render_thread_line(event) for event in events]
    for line in lines:
        assert_within_limits(line)
    joined = "\n".join(all_text(line) for line in lines)
    assert "<!channel>" not in joined
    assert "<denied>" not in joined
    assert "<@U0STRANGER> is not an approver &lt;!channel&gt;" in joined
    assert ":white_check_mark: <@U0APPROVER2> approved at " in joined
    assert_matches_snapshot("thread_lines", [card_json(line) for line in lines])


def test_card_json_is_plain_data() -> None:
    json.dumps(card_json(render_request_card(view(State.RUNNING))))
