"""Block Kit validation: the limits Slack enforces, at their boundaries."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    SectionBlock,
)

from bot.slack_standin.blocks import check_message, validate_blocks, validate_message, validate_view


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(action_id: str = "approve", text: str = "Approve", **extra: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        **extra,
    }


def test_a_plain_report_is_valid() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "EX01: critical"}},
        section("*SMTP* is bound to an untrusted certificate"),
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "plan 3f2a"}]},
        {"type": "actions", "elements": [button(), button("deny", "Deny", style="danger")]},
    ]
    assert validate_message("EX01: critical", blocks) == []


def test_slack_sdk_block_objects_are_accepted() -> None:
    blocks = [
        HeaderBlock(text="Report"),
        SectionBlock(text="fine"),
        DividerBlock(),
        ActionsBlock(elements=[ButtonElement(text="Approve", action_id="approve", value="r1")]),
    ]
    assert validate_message("Report", blocks) == []


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([section("x" * 3001)], "/blocks/0/text/text"),
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "/blocks/0/text/text",
        ),
        (
            [{"type": "actions", "elements": [button(text="b" * 76)]}],
            "/blocks/0/elements/0/text/text",
        ),
        (
            [{"type": "actions", "elements": [button(action_id="a" * 256)]}],
            "/blocks/0/elements/0/action_id",
        ),
        (
            [{"type": "actions", "elements": [button(f"a{i}") for i in range(26)]}],
            "/blocks/0/elements",
        ),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
            "/blocks/0/fields",
        ),
        ([section("ok")] * 51, "/blocks"),
        ([{"type": "carousel"}], "/blocks/0/type"),
        ([{"type": "section"}], "/blocks/0/text"),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}], "/blocks/0/text/type"),
        ([section("")], "/blocks/0/text/text"),
        ([section("x", colour="red")], "/blocks/0"),
        ([section("a", block_id="b1"), section("b", block_id="b1")], "/blocks/1/block_id"),
        (
            [{"type": "actions", "elements": [button("same"), button("same")]}],
            "/blocks/0/elements/1/action_id",
        ),
        (
            [{"type": "actions", "elements": [{"type": "plain_text_input"}]}],
            "/blocks/0/elements/0/type",
        ),
        ([{"type": "image", "image_url": "https://x/y.png"}], "/blocks/0/alt_text"),
    ],
    ids=[
        "section-text-3001",
        "header-151",
        "button-text-76",
        "action-id-256",
        "actions-26-elements",
        "fields-11",
        "51-blocks",
        "unknown-block-type",
        "section-without-text-or-fields",
        "header-not-plain-text",
        "empty-text",
        "unknown-property",
        "duplicate-block-id",
        "duplicate-action-id",
        "input-element-in-actions",
        "image-without-alt-text",
    ],
)
def test_what_slack_rejects_is_reported_with_its_pointer(
    blocks: list[dict[str, Any]], pointer: str
) -> None:
    rejection = check_message("fallback", blocks)
    assert rejection is not None
    assert rejection.error == "invalid_blocks"
    assert any(problem.endswith(f"[json-pointer:{pointer}]") for problem in rejection.problems), (
        rejection.problems
    )


def test_limits_are_inclusive() -> None:
    blocks = [
        section("x" * 3000),
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 10},
        {
            "type": "actions",
            "elements": [button(f"a{i}", "b" * 75) for i in range(24)] + [button("z" * 255)],
        },
    ]
    blocks += [{"type": "divider"}] * (50 - len(blocks))
    assert validate_blocks(blocks) == []


def test_message_level_errors() -> None:
    too_long = check_message("x" * 40_001, None)
    assert too_long is not None
    assert too_long.error == "msg_too_long"
    assert check_message("x" * 40_000, None) is None
    no_text = check_message("", [])
    assert no_text is not None
    assert no_text.error == "no_text"
    assert check_message(None, None) is not None
    assert check_message(None, [section("blocks alone are enough")]) is None
    malformed = check_message("t", "not a list")
    assert malformed is not None
    assert malformed.error == "invalid_blocks_format"


def test_confirm_dialog_limits() -> None:
    confirm = {
        "title": {"type": "plain_text", "text": "Approve?"},
        "text": {"type": "mrkdwn", "text": "Runs 3 cmdlets on EX01"},
        "confirm": {"type": "plain_text", "text": "Approve"},
        "deny": {"type": "plain_text", "text": "c" * 31},
    }
    problems = validate_blocks([{"type": "actions", "elements": [button(confirm=confirm)]}])
    assert problems == [
        "must be less than 31 characters [json-pointer:/blocks/0/elements/0/confirm/deny/text]"
    ]


def test_markdown_blocks_share_a_budget() -> None:
    blocks = [{"type": "markdown", "text": "m" * 7000}, {"type": "markdown", "text": "m" * 7000}]
    assert any("markdown blocks" in p for p in validate_blocks(blocks))
    assert validate_blocks(blocks[:1]) == []


def test_views() -> None:
    modal = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Deny request"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "reason"},
            }
        ],
    }
    assert validate_view(modal) == [
        "must provide submit when the view has input blocks [json-pointer:/view/submit]"
    ]
    modal["submit"] = {"type": "plain_text", "text": "Deny"}
    assert validate_view(modal) == []
    modal["title"] = {"type": "plain_text", "text": "t" * 25}
    assert validate_view(modal) == [
        "must be less than 25 characters [json-pointer:/view/title/text]"
    ]
