"""Remediation requests: their life cycle, the approval policy, and the request model.

Pure: no I/O and no clock. Storage is :mod:`bot.storage`; the audit trail :mod:`bot.audit`.
"""

from bot.remediation.model import (
    REQUEST_KINDS,
    Approval,
    RemediationRequest,
    RequestKind,
    new_request,
    new_request_id,
)
from bot.remediation.policy import (
    Actor,
    Decision,
    DecisionCode,
    decide_approval,
    decide_denial,
    may_freeze,
    may_run_check,
)
from bot.remediation.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    Event,
    InvalidTransition,
    State,
    allowed_events,
    approval_event,
    is_terminal,
    next_state,
)

__all__ = [
    "REQUEST_KINDS",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Actor",
    "Approval",
    "Decision",
    "DecisionCode",
    "Event",
    "InvalidTransition",
    "RemediationRequest",
    "RequestKind",
    "State",
    "allowed_events",
    "approval_event",
    "decide_approval",
    "decide_denial",
    "is_terminal",
    "may_freeze",
    "may_run_check",
    "new_request",
    "new_request_id",
    "next_state",
]
