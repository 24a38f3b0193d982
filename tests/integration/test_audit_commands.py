"""``audit export`` / ``audit verify`` on real databases and on exports: tampering is found."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, update

from bot.audit import AuditLog, event_hash
from bot.audit_commands import EXIT_BROKEN, EXIT_INTACT, EXIT_UNCHECKED, audit_export, audit_verify
from bot.config import ApprovalSettings
from bot.remediation.model import new_request
from bot.remediation.policy import Actor
from bot.storage.repository import Repository
from bot.storage.schema import audit_events

pytest_plugins = ("tests.conftest_db",)

NOW = datetime(2025, 10, 26, 9, 30, tzinfo=UTC)
SETTINGS = ApprovalSettings(approvers=("U0APPROVER",), required=1)


def fill(engine: Engine) -> list[str]:
    """Eight events from two requests, a refused click and a freeze; returns the request ids."""
    repo = Repository(engine, audit=AuditLog(engine, bot_version="test"))
    ids = []
    for minute in range(2):
        request = new_request(kind="remediation", server="EX01", plan_hash="ab" * 32,
                              plan_json="{}", requested_by="U0REQUESTER", team_id="T0TEAM",
                              channel="C0OPS", now=NOW + timedelta(minutes=minute),
                              expires_after=timedelta(minutes=30))
        repo.create_request(request)
        repo.approve(request.id, Actor("U0REQUESTER", "T0TEAM"), SETTINGS, NOW)  # refused
        repo.approve(request.id, Actor("U0APPROVER", "T0TEAM"), SETTINGS, NOW)
        ids.append(request.id)
    repo.set_freeze(True, actor_user="U0APPROVER", actor_team="T0TEAM", now=NOW)
    repo.set_freeze(False, actor_user="U0APPROVER", actor_team="T0TEAM", now=NOW)
    return ids


@pytest.fixture
def filled(migrated_engine: Engine) -> tuple[Engine, list[str]]:
    return migrated_engine, fill(migrated_engine)


def export(engine: Engine | str, tmp_path: Path, request_id: str | None = None) -> Path:
    out = io.StringIO()
    count = audit_export(engine, out, request_id=request_id)
    path = tmp_path / "audit.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert count == len(out.getvalue().splitlines())
    return path


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --------------------------------------------------------------------------- export


def test_export_writes_every_event_in_order_and_verifies(filled: tuple[Engine, list[str]],
                                                         tmp_path: Path) -> None:
    engine, _ = filled
    path = export(engine, tmp_path)
    events = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, 9))
    assert {"hash", "prev_hash", "event_type", "actor_user", "bot_version"} <= set(events[0])
    assert [e["event_type"] for e in events][:3] == ["request_created", "refused_click",
                                                     "approved"]
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_INTACT
    assert "8 events, chain intact" in message


def test_export_of_one_request(filled: tuple[Engine, list[str]], tmp_path: Path) -> None:
    engine, ids = filled
    path = export(engine, tmp_path, ids[1])
    events = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert len(events) == 3
    assert {e["request_id"] for e in events} == {ids[1]}


def test_export_and_verify_by_url(db_url: str, migrated_engine: Engine, tmp_path: Path) -> None:
    fill(migrated_engine)
    assert audit_verify(db_url) == (EXIT_INTACT, "database: 8 events, chain intact")
    path = export(db_url, tmp_path)
    assert audit_verify(jsonl_path=path)[0] == EXIT_INTACT


# --------------------------------------------------------------------------- the export file


def test_an_edited_event_in_the_export_is_found(filled: tuple[Engine, list[str]],
                                                tmp_path: Path) -> None:
    path = export(filled[0], tmp_path)
    lines = path.read_text("utf-8").splitlines()
    event = json.loads(lines[2])
    event["actor_user"] = "U0SOMEONEELSE"
    lines[2] = json.dumps(event)
    rewrite(path, lines)
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_BROKEN
    assert "broken at sequence 3" in message
    assert "altered" in message


def test_a_deleted_event_in_the_export_is_found(filled: tuple[Engine, list[str]],
                                                tmp_path: Path) -> None:
    path = export(filled[0], tmp_path)
    lines = path.read_text("utf-8").splitlines()
    del lines[3]
    rewrite(path, lines)
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_BROKEN
    assert "broken at sequence 4" in message
    assert "missing" in message


def test_reordered_events_in_the_export_are_found(filled: tuple[Engine, list[str]],
                                                  tmp_path: Path) -> None:
    path = export(filled[0], tmp_path)
    lines = path.read_text("utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(path, lines)
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_BROKEN
    assert "broken at sequence 2" in message


def test_renumbered_events_in_the_export_are_found(filled: tuple[Engine, list[str]],
                                                   tmp_path: Path) -> None:
    path = export(filled[0], tmp_path)
    lines = path.read_text("utf-8").splitlines()
    second, third = json.loads(lines[1]), json.loads(lines[2])
    second["sequence"], third["sequence"] = 3, 2
    lines[1], lines[2] = json.dumps(third), json.dumps(second)
    rewrite(path, lines)
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_BROKEN
    assert "broken at sequence 2" in message


def test_a_malformed_line_is_a_broken_chain(filled: tuple[Engine, list[str]],
                                            tmp_path: Path) -> None:
    path = export(filled[0], tmp_path)
    lines = path.read_text("utf-8").splitlines()
    lines[4] = '{"sequence": 5'
    rewrite(path, lines)
    code, message = audit_verify(jsonl_path=path)
    assert code == EXIT_BROKEN
    assert "broken at sequence 5" in message
    assert "line 5" in message


def test_a_per_request_export_is_not_a_chain(filled: tuple[Engine, list[str]],
                                             tmp_path: Path) -> None:
    engine, ids = filled
    assert audit_verify(jsonl_path=export(engine, tmp_path, ids[1]))[0] == EXIT_BROKEN


def test_what_cannot_be_checked(tmp_path: Path) -> None:
    assert audit_verify(jsonl_path=tmp_path / "missing.jsonl")[0] == EXIT_UNCHECKED
    assert audit_verify()[0] == EXIT_UNCHECKED
    assert audit_verify("sqlite://", jsonl_path=tmp_path / "x")[0] == EXIT_UNCHECKED
    code, message = audit_verify(f"sqlite:///{tmp_path / 'empty.db'}")
    assert code == EXIT_UNCHECKED
    assert "cannot read the audit trail" in message
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    assert audit_verify(jsonl_path=binary)[0] == EXIT_UNCHECKED


# --------------------------------------------------------------------------- the database


def test_an_edited_event_in_the_database_is_found(filled: tuple[Engine, list[str]]) -> None:
    engine, _ = filled
    with engine.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.sequence == 3)
                           .values(result="approved by nobody"))
    code, message = audit_verify(engine)
    assert code == EXIT_BROKEN
    assert "broken at sequence 3" in message


def test_a_deleted_event_in_the_database_is_found(filled: tuple[Engine, list[str]]) -> None:
    engine, _ = filled
    with engine.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.sequence == 4))
    code, message = audit_verify(engine)
    assert code == EXIT_BROKEN
    assert "broken at sequence 4" in message


def test_deleting_the_last_events_in_the_database_is_found(filled: tuple[Engine, list[str]]
                                                           ) -> None:
    engine, _ = filled
    with engine.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.sequence >= 7))
    code, message = audit_verify(engine)
    assert code == EXIT_BROKEN
    assert "broken at sequence 7" in message


def test_reordered_events_in_the_database_are_found(filled: tuple[Engine, list[str]]) -> None:
    engine, _ = filled
    with engine.begin() as connection:
        for old, new in ((2, -2), (3, 2), (-2, 3)):
            connection.execute(update(audit_events).where(audit_events.c.sequence == old)
                               .values(sequence=new))
    code, message = audit_verify(engine)
    assert code == EXIT_BROKEN
    assert "broken at sequence 2" in message


def test_an_event_replaced_with_a_recomputed_hash_is_found(filled: tuple[Engine, list[str]]
                                                           ) -> None:
    """Re-hashing one edited event does not help: the next event no longer follows it."""
    engine, _ = filled
    (third,) = AuditLog(engine).events(after_sequence=2, limit=1)
    forged = replace(third, actor_user="U0SOMEONEELSE")
    body = {k: v for k, v in forged.__dict__.items() if k != "hash"}
    with engine.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.sequence == 3)
                           .values(actor_user=forged.actor_user,
                                   hash=event_hash(forged.prev_hash, body)))
    code, message = audit_verify(engine)
    assert code == EXIT_BROKEN
    assert "broken at sequence 4" in message
