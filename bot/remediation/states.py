"""The life of a remediation request as one transition table.

Every other part of the bot (the database's compare-and-set, the cards, the audit trail) asks
this module what may follow what; nothing else decides it. A rollback is a request of kind
``rollback`` and lives by the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    """Where a request is in its life; the values are what the database stores."""

    PENDING = "pending"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    DENIED = "denied"
    EXPIRED = "expired"
    INTERRUPTED = "interrupted"


class Event(StrEnum):
    """What can happen to a request."""

    APPROVE = "approve"
    """An approval that does not yet reach the number required."""
    APPROVE_FINAL = "approve_final"
    """The approval that reaches the number required."""
    DENY = "deny"
    EXPIRE = "expire"
    START = "start"
    """The executor claimed the request and begins (re-reading the server first)."""
    STEP_FAILED = "step_failed"
    """A step stopped with an error record, a prompt or a time-out."""
    FINISH = "finish"
    """Every step ran and was read back."""
    ABORT = "abort"
    """Nothing (more) may run: the plan changed, or the bot is frozen."""
    INTERRUPT = "interrupt"
    """The process running it died; found at restart or by another replica."""


_TRANSITIONS: Mapping[State, Mapping[Event, State]] = MappingProxyType({
    State.PENDING: MappingProxyType({
        Event.APPROVE: State.PENDING,
        Event.APPROVE_FINAL: State.APPROVED,
        Event.DENY: State.DENIED,
        Event.EXPIRE: State.EXPIRED,
        Event.ABORT: State.ABORTED,
    }),
    State.APPROVED: MappingProxyType({
        Event.START: State.RUNNING,
        Event.ABORT: State.ABORTED,
    }),
    State.RUNNING: MappingProxyType({
        Event.FINISH: State.SUCCEEDED,
        Event.STEP_FAILED: State.FAILED,
        Event.ABORT: State.ABORTED,
        Event.INTERRUPT: State.INTERRUPTED,
    }),
    State.SUCCEEDED: MappingProxyType({}),
    State.FAILED: MappingProxyType({}),
    State.ABORTED: MappingProxyType({}),
    State.DENIED: MappingProxyType({}),
    State.EXPIRED: MappingProxyType({}),
    State.INTERRUPTED: MappingProxyType({}),
})

TRANSITIONS: Mapping[State, Mapping[Event, State]] = _TRANSITIONS
"""The whole table: state -> event -> next state. Read-only."""

TERMINAL_STATES: frozenset[State] = frozenset(s for s, out in _TRANSITIONS.items() if not out)
"""States nothing can follow: the request's life is over."""


class InvalidTransition(Exception):
    """An event that the table does not allow in the request's current state."""

    def __init__(self, state: State, event: Event) -> None:
        self.state = state
        self.event = event
        allowed = allowed_events(state)
        if allowed:
            choices = ", ".join(e.value for e in allowed)
            detail = f"allowed in {state.value!r}: {choices}"
        else:
            detail = f"{state.value!r} is terminal: nothing may follow it"
        super().__init__(f"cannot {event.value!r} a request in state {state.value!r} ({detail})")


def next_state(state: State, event: Event) -> State:
    """The state that ``event`` leads to from ``state``; raises :class:`InvalidTransition`."""
    following = _TRANSITIONS[State(state)].get(Event(event))
    if following is None:
        raise InvalidTransition(State(state), Event(event))
    return following


def allowed_events(state: State) -> tuple[Event, ...]:
    """The events allowed in ``state``, in table order."""
    return tuple(_TRANSITIONS[State(state)])


def is_terminal(state: State) -> bool:
    """True when nothing can follow ``state``."""
    return State(state) in TERMINAL_STATES


def approval_event(final: bool) -> Event:
    """The event for an approval: final when it reaches the number required."""
    return Event.APPROVE_FINAL if final else Event.APPROVE
