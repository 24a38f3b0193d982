"""The request life-cycle table: every allowed transition, and everything else refused."""

from __future__ import annotations

import itertools

import pytest

from bot.remediation.states import (
    TERMINAL_STATES,
    Event,
    InvalidTransition,
    State,
    allowed_events,
    approval_event,
    is_terminal,
    next_state,
)

# Written out independently of the module's table, so a change to it must be made here too.
ALLOWED: dict[tuple[State, Event], State] = {
    (State.PENDING, Event.APPROVE): State.PENDING,
    (State.PENDING, Event.APPROVE_FINAL): State.APPROVED,
    (State.PENDING, Event.DENY): State.DENIED,
    (State.PENDING, Event.EXPIRE): State.EXPIRED,
    (State.PENDING, Event.ABORT): State.ABORTED,
    (State.APPROVED, Event.START): State.RUNNING,
    (State.APPROVED, Event.ABORT): State.ABORTED,
    (State.RUNNING, Event.FINISH): State.SUCCEEDED,
    (State.RUNNING, Event.STEP_FAILED): State.FAILED,
    (State.RUNNING, Event.ABORT): State.ABORTED,
    (State.RUNNING, Event.INTERRUPT): State.INTERRUPTED,
}
REFUSED = [pair for pair in itertools.product(State, Event) if pair not in ALLOWED]


@pytest.mark.parametrize(("state", "event", "expected"),
                         [(s, e, t) for (s, e), t in ALLOWED.items()])
def test_allowed_transitions_lead_where_the_table_says(state: State, event: Event,
                                                       expected: State) -> None:
    assert next_state(state, event) is expected


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_every_other_transition_is_refused(state: State, event: Event) -> None:
    with pytest.raises(InvalidTransition) as raised:
        next_state(state, event)
    assert raised.value.state is state
    assert raised.value.event is event
    assert f"{event.value!r}" in str(raised.value)
    assert f"state {state.value!r}" in str(raised.value)


def test_refusal_names_what_is_allowed_instead() -> None:
    with pytest.raises(InvalidTransition,
                       match=r"cannot 'finish' a request in state 'approved' "
                             r"\(allowed in 'approved': start, abort\)"):
        next_state(State.APPROVED, Event.FINISH)


def test_refusal_from_a_terminal_state_says_it_is_terminal() -> None:
    with pytest.raises(InvalidTransition, match="'denied' is terminal: nothing may follow it"):
        next_state(State.DENIED, Event.APPROVE_FINAL)


def test_terminal_states_are_those_with_no_way_out() -> None:
    expected = {State.SUCCEEDED, State.FAILED, State.ABORTED, State.DENIED, State.EXPIRED,
                State.INTERRUPTED}
    assert set(TERMINAL_STATES) == expected
    for state in State:
        assert is_terminal(state) is (state in expected)
        assert (allowed_events(state) == ()) is (state in expected)


def test_values_accepted_as_stored_strings() -> None:
    assert next_state(State("pending"), Event("approve_final")) is State.APPROVED
    assert is_terminal(State("expired"))


def test_approval_event_is_final_only_when_required_reached() -> None:
    assert approval_event(final=True) is Event.APPROVE_FINAL
    assert approval_event(final=False) is Event.APPROVE
