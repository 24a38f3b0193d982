"""Runs last (directory order): no log record written during the suite holds a secret."""

from __future__ import annotations

from tests.secret_scan import HANDLER, SECRET_PATTERNS, find_secrets


def test_the_scanner_recognises_each_kind_of_secret() -> None:
    samples = ["token xoxb-0000000000-standin-bot-token", "xapp-1-A0STANDIN-0000000000-x",
               "standin-signing-secret-0123456789abcdef", "password Lab-9LDAstd7_B4DQNh9-9a",
               "Lab-Passw0rd!"]
    assert find_secrets(samples) == samples
    assert find_secrets(["xoxb- alone", "Lab-short-9a", "nothing here"]) == []
    assert len(SECRET_PATTERNS) == 5


def test_no_log_record_of_the_suite_contains_a_secret() -> None:
    leaked = find_secrets(HANDLER.records)
    assert leaked == [], f"{len(leaked)} log record(s) hold a secret; first: {leaked[0][:300]}"


def test_records_were_captured_when_other_tests_ran(request: object) -> None:
    """The scan proves something only if the capture saw the suite's records."""
    session = request.session  # type: ignore[attr-defined]
    if session.testscollected <= 3:
        return
    assert HANDLER.total > 0
