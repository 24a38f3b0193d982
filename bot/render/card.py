"""The remediation request card and the lines of its thread (docs/product.md sections 1-2).

Pure: the card is a function of a :class:`RequestCardView` (``now`` included). Buttons appear
only while a click can do something: Approve and Deny while the request is pending and not
past its expiry (Approve not while remediation is frozen, since the policy refuses it then),
Rollback once a remediation that pinned a connector has succeeded; never in other terminal states.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject, PlainTextObject

from bot.analysis.model import PlanStep, RemediationPlan
from bot.remediation.model import RequestKind
from bot.remediation.states import State, is_terminal
from bot.render.blocks import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_BUTTON_TEXT,
    STEP_TITLES,
    Block,
    SlackMessage,
    code,
    code_block,
    context,
    escape_mrkdwn,
    fit_mrkdwn,
    fits_message,
    header,
    message,
    mrkdwn,
    plain_fit,
    plan_counts,
    section,
    slack_date,
    trimmed,
    truncate_text,
)

APPROVE_ACTION: Final = "remediation_approve"
DENY_ACTION: Final = "remediation_deny"
ROLLBACK_ACTION: Final = "remediation_rollback"

STATE_EMOJI: Final[Mapping[State, str]] = {
    State.PENDING: ":hourglass_flowing_sand:",
    State.APPROVED: ":white_check_mark:",
    State.RUNNING: ":gear:",
    State.SUCCEEDED: ":large_green_circle:",
    State.FAILED: ":red_circle:",
    State.ABORTED: ":octagonal_sign:",
    State.DENIED: ":no_entry_sign:",
    State.EXPIRED: ":alarm_clock:",
    State.INTERRUPTED: ":warning:",
}
STATE_TEXT: Final[Mapping[State, str]] = {
    State.PENDING: ":hourglass_flowing_sand: *Waiting for approval*",
    State.APPROVED: ":white_check_mark: *Approved*: starting",
    State.RUNNING: ":gear: *Running*",
    State.SUCCEEDED: ":large_green_circle: *Succeeded*",
    State.FAILED: ":red_circle: *Failed*: stopped at the first error, nothing retried",
    State.ABORTED: ":octagonal_sign: *Aborted*: nothing (more) ran",
    State.DENIED: ":no_entry_sign: *Denied*: nothing ran",
    State.EXPIRED: ":alarm_clock: *Expired*: nothing ran",
    State.INTERRUPTED: ":warning: *Interrupted*: the bot stopped while running; check the server",
}

_TRIMMED_TEXT: Final = 1500
_CONFIRM_TEXT: Final = 300
_CONFIRM_TITLE: Final = 100
_MANY_STEPS: Final = 20
_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,30}$")


@dataclass(frozen=True)
class RequestCardView:
    """Everything the card shows about one remediation (or rollback) request.

    ``approvals`` are (Slack user ID, time); ``approvers_text`` is mrkdwn naming who may approve
    (see :func:`approvers_mrkdwn`; only user and group mentions are kept from it);
    ``step_outcomes`` are (index into ``plan.steps``, outcome text read back from the server,
    ok); ``verification_text`` and ``state_reason`` are plain text (escaped when shown).
    """

    request_id: str
    server: str
    state: State
    plan: RemediationPlan
    approvals_required: int
    approvals: tuple[tuple[str, datetime], ...]
    approvers_text: str
    requested_by: str
    expires_at: datetime
    now: datetime
    step_outcomes: tuple[tuple[int, str, bool], ...] = ()
    verification_text: str | None = None
    rollback_available: bool = False
    frozen: bool = False
    state_reason: str | None = None
    kind: RequestKind = "remediation"

    @property
    def is_open_for_approval(self) -> bool:
        """Pending and not yet past its expiry at ``now``."""
        return self.state is State.PENDING and self.now < self.expires_at


def approvers_mrkdwn(principals: Sequence[str]) -> str:
    """Configured approver IDs as mentions: ``U..``/``W..`` users, ``S..`` user groups.

    Anything that is not a Slack ID is shown as escaped code, never as a mention.
    """
    mentions = []
    for principal in principals:
        if _PRINCIPAL.match(principal):
            mentions.append(
                f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"
            )
        else:
            mentions.append(code(principal))
    return ", ".join(mentions) if mentions else "nobody is configured"


def _title(view: RequestCardView) -> str:
    what = "Rollback request" if view.kind == "rollback" else "Remediation request"
    return f":wrench: {what} {view.request_id} · {view.server}"


def _approvals_text(view: RequestCardView) -> str:
    given = len(view.approvals)
    who = ", ".join(
        f"<@{escape_mrkdwn(user)}> {slack_date(at, '{time}')}" for user, at in view.approvals
    )
    return f"{given} of {view.approvals_required}" + (f": {who}" if who else "")


def _expiry_text(view: RequestCardView) -> str:
    if view.is_open_for_approval:
        minutes = int((view.expires_at - view.now).total_seconds() // 60)
        left = f"in {minutes} min" if minutes >= 1 else "in less than a minute"
        return f"{slack_date(view.expires_at)} ({left})"
    if view.state in (State.PENDING, State.EXPIRED):
        return f"expired {slack_date(view.expires_at)}"
    return f"{slack_date(view.expires_at)} (no longer applies)"


def _approvers(view: RequestCardView) -> str:
    return fit_mrkdwn(escape_mrkdwn(view.approvers_text, keep_mentions=True), 1500)


def _status_block(view: RequestCardView) -> Block:
    text = STATE_TEXT[view.state]
    if view.state is State.PENDING and not view.is_open_for_approval:
        text = ":alarm_clock: *Expired*: waiting to be closed, nothing will run"
    if view.state_reason:
        text += f"\n{trimmed(view.state_reason, _TRIMMED_TEXT)}"
    if view.frozen and not is_terminal(view.state):
        text += (
            "\n:ice_cube: *Remediation is frozen* by an admin: no request can be approved or run "
            "until `/exchange-tls unfreeze`."
        )
    return section(
        text,
        fields=[
            f"*Server*\n{escape_mrkdwn(view.server)}",
            f"*Plan*\n`{escape_mrkdwn(view.plan.short_hash)}` ({plan_counts(view.plan)})",
            f"*Requested by*\n<@{escape_mrkdwn(view.requested_by)}>",
            f"*Approvals*\n{_approvals_text(view)}",
            f"*Who may approve*\n{_approvers(view)}",
            f"*Expires*\n{_expiry_text(view)}",
        ],
    )


def _outcome_line(view: RequestCardView, index: int) -> str:
    outcomes = [(text, ok) for i, text, ok in view.step_outcomes if i == index]
    if outcomes:
        text, ok = outcomes[-1]
        return f"\n{':white_check_mark:' if ok else ':x:'} {trimmed(text, _TRIMMED_TEXT)}"
    if view.state is State.RUNNING and view.plan.steps[index].runnable:
        done = {i for i, _, _ in view.step_outcomes}
        earlier = [
            i for i, step in enumerate(view.plan.steps[:index]) if step.runnable and i not in done
        ]
        if not earlier:
            return "\n:gear: running now"
    return ""


def step_text(view: RequestCardView, index: int, step: PlanStep) -> str:
    """One plan step: title and target, the exact cmdlet, before -> after, and its outcome."""
    title = f"*{index + 1}. {STEP_TITLES.get(step.kind, step.kind)}* {code(step.target)}"
    if not step.runnable:
        return (
            f"{title}: :fast_forward: *skipped*, {trimmed(step.skipped_reason, _TRIMMED_TEXT)}\n"
            f"*Stays:* {trimmed(step.before, 500)}"
        )
    return (
        f"{title}\n{code_block(truncate_text(step.display, 1200))}\n"
        f"*Before:* {trimmed(step.before, 500)}\n*After:* {trimmed(step.after, 500)}"
        + _outcome_line(view, index)
    )


def _step_blocks(view: RequestCardView) -> list[Block]:
    texts = [step_text(view, index, step) for index, step in enumerate(view.plan.steps)]
    if len(texts) <= _MANY_STEPS:
        return [section(text) for text in texts]
    blocks: list[Block] = []
    current = ""
    for text in texts:
        candidate = f"{current}\n\n{text}" if current else text
        if len(candidate) > 3000 and current:
            blocks.append(section(current))
            candidate = text
        current = candidate
    if current:
        blocks.append(section(current))
    return blocks


def _confirm(title: str, text: str, confirm: str, style: str) -> ConfirmObject:
    return ConfirmObject(
        title=PlainTextObject(text=plain_fit(title, _CONFIRM_TITLE)),
        text=mrkdwn(text, _CONFIRM_TEXT),
        confirm=PlainTextObject(text=confirm),
        deny=PlainTextObject(text="Cancel"),
        style=style,
    )


def _button(text: str, action_id: str, value: str, style: str,
            confirm: ConfirmObject | None = None) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text=plain_fit(text, MAX_BUTTON_TEXT), emoji=True),
        action_id=action_id,
        value=value,
        style=style,
        confirm=confirm,
    )


def _buttons(view: RequestCardView) -> list[ButtonElement]:
    server = escape_mrkdwn(plain_fit(view.server, 60))
    plan = f"`{escape_mrkdwn(view.plan.short_hash)}`"
    if view.is_open_for_approval:
        buttons = []
        if not view.frozen:
            runnable = sum(1 for step in view.plan.steps if step.runnable)
            buttons.append(_button(
                "Approve", APPROVE_ACTION, view.request_id, "primary",
                _confirm(
                    f"Approve remediation on {plain_fit(view.server, 60)}?",
                    f"This approves {runnable} step{'s' if runnable != 1 else ''} on *{server}*, "
                    f"plan {plan}. The server is re-read first: if its plan changed, nothing "
                    "runs.",
                    "Approve", "primary",
                ),
            ))
        buttons.append(_button("Deny", DENY_ACTION, view.request_id, "danger"))
        return buttons
    if view.state is State.SUCCEEDED and view.rollback_available and view.kind == "remediation":
        return [_button(
            "Request rollback", ROLLBACK_ACTION, view.request_id, "danger",
            _confirm(
                "Request a rollback?",
                f"This asks for approval to restore the previous TlsCertificateName on the "
                f"connectors pinned by plan {plan} on *{server}*. Nothing changes until it is "
                "approved.",
                "Request rollback", "danger",
            ),
        )]
    return []


def render_request_card(view: RequestCardView) -> SlackMessage:
    """The card for ``chat.postMessage`` / ``chat.update``: plan, approvals, state, buttons."""
    blocks: list[Block] = [header(_title(view)), _status_block(view)]
    step_blocks = _step_blocks(view)
    tail: list[Block] = []
    if view.verification_text:
        tail.append(section(
            f":mag: *Verification (as observed on the server)*\n"
            f"{trimmed(view.verification_text, 2500)}"
        ))
    tail.append(context(
        f"Plan hash `{escape_mrkdwn(view.plan.hash)}` · request `{escape_mrkdwn(view.request_id)}`"
        " · every decision and step is in the audit trail"
    ))
    buttons = _buttons(view)
    if buttons:
        actions: Block = ActionsBlock(elements=buttons).to_dict()
        tail.append(actions)
    room = MAX_BLOCKS_PER_MESSAGE - len(blocks) - len(tail) - 1
    if len(step_blocks) > room or not fits_message([*blocks, *step_blocks, *tail]):
        shown = step_blocks[:room]
        while shown and not fits_message([*blocks, *shown, *tail]):
            shown.pop()
        hidden = len(step_blocks) - len(shown)
        step_blocks = [*shown, context(
            f"_… {hidden} more step block{'s' if hidden != 1 else ''} not shown: Slack's limits; "
            "the plan hash covers every step_"
        )]
    counts = f"{len(view.approvals)} of {view.approvals_required} approvals"
    state = view.state.value if view.is_open_for_approval or view.state is not State.PENDING \
        else "expired"
    text = escape_mrkdwn(
        f"{'Rollback' if view.kind == 'rollback' else 'Remediation'} request "
        f"{view.request_id} on {view.server}: {state}, {counts}, plan {view.plan.short_hash}"
    )
    return message(text, [*blocks, *step_blocks, *tail])


# --- thread lines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalLine:
    """An approval was recorded (``given`` of ``required``)."""

    actor: str
    at: datetime
    given: int
    required: int


@dataclass(frozen=True)
class DenialLine:
    actor: str
    at: datetime


@dataclass(frozen=True)
class RefusalLine:
    """A click the policy refused; ``reason`` comes from the policy (mentions are kept)."""

    actor: str
    at: datetime
    action: Literal["approve", "deny", "rollback"]
    reason: str


@dataclass(frozen=True)
class StepLine:
    """A step started (``ok`` None) or finished with the outcome read back from the server."""

    index: int
    step: PlanStep
    at: datetime
    outcome: str = ""
    ok: bool | None = None


@dataclass(frozen=True)
class VerificationLine:
    at: datetime
    text: str
    ok: bool


@dataclass(frozen=True)
class StateLine:
    """The request reached ``state`` (``reason`` plain text, e.g. why it aborted)."""

    at: datetime
    state: State
    reason: str | None = None


ThreadEvent = ApprovalLine | DenialLine | RefusalLine | StepLine | VerificationLine | StateLine


def _when(at: datetime) -> str:
    return slack_date(at, "{date_short_pretty} {time_secs}")


def thread_line_text(event: ThreadEvent) -> str:
    """The mrkdwn line for one event in the request's thread."""
    if isinstance(event, ApprovalLine):
        return (
            f":white_check_mark: <@{escape_mrkdwn(event.actor)}> approved at {_when(event.at)} "
            f"({event.given} of {event.required})"
        )
    if isinstance(event, DenialLine):
        return f":no_entry_sign: <@{escape_mrkdwn(event.actor)}> denied at {_when(event.at)}"
    if isinstance(event, RefusalLine):
        return (
            f":no_entry: {event.action} by <@{escape_mrkdwn(event.actor)}> refused at "
            f"{_when(event.at)}: "
            f"{escape_mrkdwn(truncate_text(event.reason, _TRIMMED_TEXT), keep_mentions=True)}"
        )
    if isinstance(event, StepLine):
        title = f"step {event.index + 1} {STEP_TITLES.get(event.step.kind, event.step.kind)} " \
            f"{code(truncate_text(event.step.target, 120))}"
        if event.ok is None:
            return f":gear: {title} started at {_when(event.at)}"
        emoji = ":white_check_mark:" if event.ok else ":x:"
        outcome = trimmed(event.outcome, _TRIMMED_TEXT, empty="no outcome read back")
        return f"{emoji} {title} {'done' if event.ok else 'failed'} at {_when(event.at)}: {outcome}"
    if isinstance(event, VerificationLine):
        emoji = ":mag:" if event.ok else ":warning:"
        return f"{emoji} verification at {_when(event.at)}: {trimmed(event.text, 2500)}"
    reason = f": {trimmed(event.reason, _TRIMMED_TEXT)}" if event.reason else ""
    return (
        f"{STATE_EMOJI[event.state]} request *{event.state.value}* at {_when(event.at)}{reason}"
    )


def render_thread_line(event: ThreadEvent) -> SlackMessage:
    """One thread message for a state change of a request."""
    text = thread_line_text(event)
    return message(text, [section(text)])
