"""The hash-chained audit trail on real databases: appends, export, verify, tampering."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from bot.audit import (
    REDACTED,
    AuditEventType,
    AuditLog,
    canonical_json,
    read_jsonl,
    redact,
    verify_chain,
)
from bot.config import ApprovalSettings
from bot.remediation.model import new_request
from bot.remediation.policy import Actor
from bot.storage.repository import Applied, Refusal, Repository
from bot.storage.schema import GENESIS_HASH
from tests.clocks import TickingClock

pytest_plugins = ("tests.conftest_db",)

START = datetime(2025, 3, 30, 0, 59, 59, 999999, tzinfo=UTC)
TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.fixture
def audit(migrated_engine: Engine) -> AuditLog:
    return AuditLog(migrated_engine, bot_version="0.1.0-test",
                    clock=TickingClock(START, timedelta(seconds=1)),
                    secret_values=["Lab-Passw0rd!", "abc"])


def append_some(audit: AuditLog, count: int) -> None:
    for n in range(count):
        audit.append(AuditEventType.STEP_FINISHED, request_id="R-AAAAAAAAAA",
                     actor_user="U0ALICE", actor_team="T0TEAM", server="EX01",
                     plan_hash="ab" * 32, before_state="running", after_state="running",
                     result=f"step {n} read back", details={"step": n, "cmdlet": "Retry-Queue"})


def execute(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def test_events_are_chained_as_documented(audit: AuditLog) -> None:
    append_some(audit, 3)
    events = audit.events()
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    for previous, event in zip([None, *events], events, strict=False):
        body = json.loads(event.to_json())
        del body["hash"]
        expected = hashlib.sha256(
            (event.prev_hash + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False)).encode()).hexdigest()
        assert event.hash == expected
        if previous is not None:
            assert event.prev_hash == previous.hash
    assert events[0].occurred_at == "2025-03-30T01:00:00.999999Z"
    assert events[0].bot_version == "0.1.0-test"
    assert events[1].details_object == {"cmdlet": "Retry-Queue", "step": 1}
    assert audit.verify().ok


def test_empty_chain_verifies(audit: AuditLog) -> None:
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence, result.events_checked) == (True, None, 0)


def test_edited_event_is_detected(audit: AuditLog, migrated_engine: Engine) -> None:
    append_some(audit, 5)
    execute(migrated_engine, "UPDATE audit_events SET result = 'nothing happened' "
                             "WHERE sequence = 3")
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence) == (False, 3)
    assert "altered" in result.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(audit: AuditLog,
                                                        migrated_engine: Engine) -> None:
    append_some(audit, 5)
    event = audit.events()[1]
    forged = {**json.loads(event.to_json()), "actor_user": "U0MALLORY"}
    del forged["hash"]
    forged_hash = hashlib.sha256((event.prev_hash + canonical_json(forged)).encode()).hexdigest()
    execute(migrated_engine, "UPDATE audit_events SET actor_user = 'U0MALLORY', hash = :h "
                             "WHERE sequence = 2", h=forged_hash)
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence) == (False, 3)


def test_deleted_event_is_detected(audit: AuditLog, migrated_engine: Engine) -> None:
    append_some(audit, 5)
    execute(migrated_engine, "DELETE FROM audit_events WHERE sequence = 2")
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence) == (False, 2)
    assert "missing" in result.reason


def test_deleted_last_events_are_detected(audit: AuditLog, migrated_engine: Engine) -> None:
    append_some(audit, 5)
    execute(migrated_engine, "DELETE FROM audit_events WHERE sequence >= 4")
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence) == (False, 4)


def test_reordered_events_are_detected(audit: AuditLog, migrated_engine: Engine) -> None:
    append_some(audit, 5)
    execute(migrated_engine, "UPDATE audit_events SET sequence = 1000 WHERE sequence = 3")
    execute(migrated_engine, "UPDATE audit_events SET sequence = 3 WHERE sequence = 4")
    execute(migrated_engine, "UPDATE audit_events SET sequence = 4 WHERE sequence = 1000")
    result = audit.verify()
    assert (result.ok, result.first_broken_sequence) == (False, 3)


def test_concurrent_appends_keep_one_gap_free_chain(make_engine: Callable[[], Engine],
                                                    migrated_engine: Engine) -> None:
    logs = [AuditLog(make_engine(), bot_version="t") for _ in range(2)] + [
        AuditLog(migrated_engine, bot_version="t")]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(log: AuditLog) -> None:
        try:
            barrier.wait()
            append_some(log, 10)
        except BaseException as error:  # handed to the test thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(logs[i % 3],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    events = logs[0].events()
    assert [e.sequence for e in events] == list(range(1, 61))
    result = logs[0].verify()
    assert (result.ok, result.events_checked) == (True, 60)


def test_secrets_never_reach_the_database(audit: AuditLog, migrated_engine: Engine) -> None:
    audit.append(AuditEventType.EXECUTION_FAILED,
                 error=f"Slack said invalid_auth for {TOKEN} (Authorization: Bearer {TOKEN})",
                 result="login with Lab-Passw0rd! failed",
                 details={"headers": {"Authorization": "Basic YWRtaW46TGFiLVBhc3N3MHJkIQ=="},
                          "password_env": None,
                          "nested": ["xapp-1-A0123456789-1234567890-abcdef", 7]})
    with migrated_engine.connect() as connection:
        stored = " ".join(str(v) for v in connection.execute(
            text("SELECT * FROM audit_events")).one())
    assert "xoxb-" not in stored
    assert "xapp-" not in stored
    assert "Lab-Passw0rd!" not in stored
    assert "YWRtaW46" not in stored
    assert stored.count(REDACTED) >= 5
    assert audit.verify().ok


def test_redact_keeps_context_and_ignores_tiny_secrets() -> None:
    assert redact(f"token {TOKEN} rejected") == f"token {REDACTED} rejected"
    assert redact("an abc in a sentence", ["abc"]) == "an abc in a sentence"
    assert redact("Authorization: Negotiate YII=", []) == f"Authorization: {REDACTED}"
    key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"
    assert redact(f"pem {key} end") == f"pem {REDACTED} end"


def test_export_round_trips_and_offline_verify_catches_tampering(audit: AuditLog) -> None:
    append_some(audit, 4)
    out = io.StringIO()
    assert audit.export_jsonl(out) == 4
    lines = out.getvalue().splitlines()
    assert all(json.loads(line)["hash"] for line in lines)
    assert verify_chain(read_jsonl(lines)).ok
    tampered = json.loads(lines[2])
    tampered["after_state"] = "succeeded"
    lines[2] = json.dumps(tampered)
    broken = verify_chain(read_jsonl(lines))
    assert (broken.ok, broken.first_broken_sequence) == (False, 3)
    one_request = io.StringIO()
    assert audit.export_jsonl(one_request, request_id="R-NOTHERE00") == 0


def test_repository_audits_changes_and_refused_clicks(migrated_engine: Engine) -> None:
    audit = AuditLog(migrated_engine, bot_version="t")
    repo = Repository(migrated_engine, audit=audit)
    now = START
    settings = ApprovalSettings(approvers=("U0ALICE",), admins=("U0ALICE",))
    request = repo.create_request(new_request(
        kind="remediation", server="EX01", plan_hash="ab" * 32, plan_json="{}",
        requested_by="U0REQ", team_id="T0TEAM", channel="C0OPS", now=now,
        expires_after=timedelta(minutes=30), message_ts="1712345678.000100"))
    refused = repo.approve(request.id, Actor("U0MALLORY", "T0TEAM"), settings, now)
    assert isinstance(refused, Refusal)
    approved = repo.approve(request.id, Actor("U0ALICE", "T0TEAM"), settings, now)
    assert isinstance(approved, Applied)
    repo.claim_execution(request.id, owner="replica-a", now=now)
    repo.set_freeze(True, actor_user="U0ALICE", actor_team="T0TEAM", now=now, reason="window")
    events = audit.events(request_id=request.id)
    assert [(e.event_type, e.before_state, e.after_state, e.actor_user) for e in events] == [
        ("request_created", None, "pending", "U0REQ"),
        ("refused_click", "pending", "pending", "U0MALLORY"),
        ("approved", "pending", "approved", "U0ALICE"),
        ("execution_started", "approved", "running", None),
    ]
    assert events[1].result is not None
    assert "not an approver" in events[1].result
    assert {(e.server, e.plan_hash, e.slack_channel, e.slack_ts) for e in events} == {
        ("EX01", "ab" * 32, "C0OPS", "1712345678.000100")}
    assert audit.events()[-1].event_type == "freeze"
    assert audit.verify().ok
