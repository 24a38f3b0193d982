"""Remediation in Slack, end to end: the bot with the Slack stand-in (signed HTTP requests; Socket
Mode envelopes for the happy path and the concurrent clicks), the lab over WinRM/PSRP behind
it, and a real database (SQLite; PostgreSQL too for the tests that take ``make_bot_on``: the
happy path, 2 of N, the concurrency tests and the audit CLI).

Clocks are injected: expiry is reached by advancing the bot's clock, nothing sleeps; the tests
wait on the stand-in (acks, messages) and on the bot's worker pool going idle.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.audit import AuditEvent
from bot.cli import main
from bot.remediation.states import Event, State
from bot.remediation_service import Click, UserGroupCache, parse_request_id
from bot.render.card import APPROVE_ACTION, DENY_ACTION, ROLLBACK_ACTION
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_TEAM_ID,
    SlackStandIn,
    validate_message,
)
from bot.slack_standin.requests import block_actions_payload
from bot.storage.repository import Applied
from bot.transcript import buttons_of
from handlers.actions import click_from_payload
from tests.slack_bots import (
    APPROVER,
    CHANNEL,
    CROWD,
    GROUP,
    GROUP_APPROVER,
    REQUESTER,
    STRANGER,
    BotFactory,
    SlackBot,
    bot_factory,
    request_id_of,
)

pytest_plugins = ("tests.conftest_db",)


def refused_codes(events: list[AuditEvent]) -> list[str]:
    return [e.details_object["code"] for e in events if e.event_type == "refused_click"]


@pytest.fixture
def make_bot(tmp_path: Path) -> Iterator[BotFactory]:
    """Bots on a SQLite file."""
    with ExitStack() as stack:
        yield bot_factory(stack, f"sqlite:///{tmp_path / 'bot.db'}")


@pytest.fixture
def make_bot_on(db_url: str) -> Iterator[BotFactory]:
    """Bots on SQLite, then on PostgreSQL (skipped when it is not configured)."""
    with ExitStack() as stack:
        yield bot_factory(stack, db_url)


def assert_slack_calls_ok(bot: SlackBot) -> None:
    """Every message the bot posted or updated passed the stand-in's Block Kit checks."""
    failed = [(c.method, c.error) for c in bot.slack.calls()
              if c.method.startswith("chat.") and not c.ok]
    assert failed == []


# --------------------------------------------------------------------------- happy paths


def test_additive_lab_approved_runs_once_and_the_card_says_smtp_is_still_listed(
        make_bot_on: BotFactory) -> None:
    bot = make_bot_on("kb-2888788", mode="socket")
    card = bot.check()
    request_id = request_id_of(card)

    assert bot.buttons(card) == ["Approve", "Deny"]
    approve = next(b for b in buttons_of(card.blocks) if b.label == "Approve")
    assert approve.value == request_id
    assert next(b for b in card.blocks if b["type"] == "actions")["elements"][0]["confirm"]
    assert "Set-SendConnector" in json.dumps(card.blocks)
    assert validate_message(card.text, card.blocks) == []
    stored = bot.request(card)
    assert (stored.state, stored.channel, stored.message_ts) == (State.PENDING, CHANNEL,
                                                                  card.ts)

    bot.press(card, APPROVE_ACTION, APPROVER)

    assert bot.request(card).state is State.SUCCEEDED
    shown = bot.card_text(card)
    assert "Succeeded" in shown
    assert "SMTP is still listed on this certificate" in shown
    assert "SMTP still listed" in shown
    assert "Ready, 0 messages" in shown
    assert bot.buttons(card) == ["Request rollback"]
    lines = bot.lines(card)
    assert f"<@{APPROVER}> approved" in lines[0]
    assert "(1 of 1)" in lines[0]
    assert "request *running*" in lines[1]
    assert sum("started at" in line for line in lines) == 3
    assert any("Unbind SMTP" in line and "still listed" in line for line in lines)
    assert any(line.startswith(":mag: verification") for line in lines)
    assert "request *succeeded*" in lines[-1]
    assert [len(bot.calls(c)) for c in ("Set-SendConnector", "Enable-ExchangeCertificate",
                                        "Retry-Queue")] == [1, 1, 1]
    types = [e.event_type for e in bot.events(request_id)]
    assert types[:3] == ["request_created", "approved", "execution_started"]
    assert types[-2:] == ["verification", "execution_finished"]
    assert all(e.slack_ts == card.ts and e.slack_channel == CHANNEL
               for e in bot.events(request_id)[1:])
    assert bot.remediation.audit.verify().ok
    assert_slack_calls_ok(bot)


def test_replace_lab_card_says_smtp_is_gone(make_bot: BotFactory) -> None:
    bot = make_bot("replace-behaviour")
    card = bot.check()

    bot.press(card, APPROVE_ACTION, APPROVER)

    assert bot.request(card).state is State.SUCCEEDED
    shown = bot.card_text(card)
    assert "Services: IMAP, POP, SMTP -&gt; Services: IMAP, POP" in shown
    assert "SMTP not listed" in shown
    assert "SMTP was not removed" not in shown
    assert "still listed on this certificate" not in shown
    assert "Ready, 0 messages" in shown
    assert_slack_calls_ok(bot)


def test_connector_pin_is_rolled_back_after_its_own_approval(make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()
    bot.press(card, APPROVE_ACTION, APPROVER)
    assert bot.connector().tls_certificate_name is not None

    bot.press(card, ROLLBACK_ACTION, REQUESTER)

    rollback_card = bot.cards()[-1]
    assert rollback_card.text.startswith("Rollback request")
    rollback = bot.request(rollback_card)
    assert (rollback.kind, rollback.rollback_of, rollback.state) == (
        "rollback", request_id_of(card), State.PENDING)
    assert "-TlsCertificateName $null" in json.dumps(rollback_card.blocks)
    assert bot.buttons(rollback_card) == ["Approve", "Deny"]
    assert bot.buttons(card) == []
    assert "requested a rollback" in bot.lines(card)[-1]
    assert bot.connector().tls_certificate_name is not None

    bot.press(rollback_card, APPROVE_ACTION, REQUESTER)
    assert "the requester cannot approve their own request" in bot.lines(rollback_card)[-1]
    bot.press(rollback_card, APPROVE_ACTION, APPROVER)

    assert bot.request(rollback_card).state is State.SUCCEEDED
    assert bot.connector().tls_certificate_name is None
    pins = bot.calls("Set-SendConnector")
    assert len(pins) == 2
    assert ("TlsCertificateName", None) in pins[-1].parameters
    assert "request *succeeded*" in bot.lines(rollback_card)[-1]
    assert [e.event_type for e in bot.events(rollback.id)].count("rollback") == 1
    assert bot.buttons(card) == []

    bot.press_stale(card, ROLLBACK_ACTION, REQUESTER)
    assert "was already rolled back by" in bot.lines(card)[-1]
    assert len(bot.cards()) == 2
    assert bot.remediation.audit.verify().ok
    assert_slack_calls_ok(bot)


# --------------------------------------------------------------------------- approval policy


def test_unauthorised_approver_and_self_approval_are_refused_audited_and_shown(
        make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()
    request_id = request_id_of(card)
    bot.slack.fail_next("usergroups.users.list", status=200, error="missing_scope")

    bot.press(card, APPROVE_ACTION, GROUP_APPROVER)
    bot.press(card, APPROVE_ACTION, STRANGER)
    bot.press(card, APPROVE_ACTION, REQUESTER)
    bot.press(card, DENY_ACTION, STRANGER)

    lines = bot.lines(card)
    assert len(lines) == 4
    assert f"<@{GROUP_APPROVER}> is not an approver" in lines[0]
    assert f"the members of {GROUP} (missing_scope) could not be read" in lines[0]
    assert f"approve by <@{STRANGER}> refused" in lines[1]
    assert f"<@{STRANGER}> is not an approver" in lines[1]
    assert "could not be read" not in lines[1]
    assert f"approve by <@{REQUESTER}> refused" in lines[2]
    assert "the requester cannot approve their own request" in lines[2]
    assert f"deny by <@{STRANGER}> refused" in lines[3]
    assert refused_codes(bot.events(request_id)) == ["not_approver", "not_approver",
                                                     "self_approval", "not_approver"]
    refused = [e for e in bot.events(request_id) if e.event_type == "refused_click"]
    assert [e.actor_user for e in refused] == [GROUP_APPROVER, STRANGER, REQUESTER, STRANGER]
    assert all(e.slack_ts == card.ts for e in refused)
    assert bot.request(card).state is State.PENDING
    assert bot.buttons(card) == ["Approve", "Deny"]
    assert bot.calls("Set-SendConnector") == []

    # The same plan, checked again while it waits, is not proposed a second time.
    bot.command("check EX01")
    bot.idle()
    assert len(bot.cards()) == 1
    notice = bot.slack.responses()[-1]
    assert f"already waits for approval: request `{request_id}`" in notice.body["text"]


def test_two_of_n_approvers_one_of_them_through_a_user_group(make_bot: BotFactory) -> None:
    bot = make_bot(required=2)
    card = bot.check()

    bot.press(card, APPROVE_ACTION, APPROVER)
    assert bot.request(card).state is State.PENDING
    assert "1 of 2" in bot.card_text(card)
    assert bot.buttons(card) == ["Approve", "Deny"]
    bot.press(card, APPROVE_ACTION, APPROVER)
    assert "already approved" in bot.lines(card)[-1]
    assert bot.calls("Set-SendConnector") == []

    bot.press(card, APPROVE_ACTION, GROUP_APPROVER)

    request = bot.request(card)
    assert request.state is State.SUCCEEDED
    assert [a.user_id for a in request.approvals] == [APPROVER, GROUP_APPROVER]
    lines = bot.lines(card)
    assert "(1 of 2)" in lines[0]
    assert "(2 of 2)" in lines[2]
    assert len(bot.calls("Set-SendConnector")) == 1
    # Three clicks within the cache time: the group's members were read once.
    assert len(bot.slack.calls("usergroups.users.list")) == 1


def test_deny_closes_the_request_and_nothing_runs(make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()

    bot.press(card, DENY_ACTION, GROUP_APPROVER)

    assert bot.request(card).state is State.DENIED
    assert bot.buttons(card) == []
    assert "Denied" in bot.card_text(card)
    assert f"<@{GROUP_APPROVER}> denied" in bot.lines(card)[-1]
    bot.press_stale(card, APPROVE_ACTION, APPROVER)
    assert "is denied, no longer pending" in bot.lines(card)[-1]
    assert bot.calls("Set-SendConnector") == []
    types = [e.event_type for e in bot.events(request_id_of(card))]
    assert types == ["request_created", "denied", "refused_click"]


def test_expiry_by_the_sweep_and_by_a_late_click(make_bot: BotFactory) -> None:
    bot = make_bot()
    swept = bot.check()
    bot.clock.advance(timedelta(minutes=31))

    expired = bot.remediation.sweep_expired()

    assert [r.id for r in expired] == [request_id_of(swept)]
    assert bot.buttons(swept) == []
    assert "Expired" in bot.card_text(swept)
    assert "request *expired*" in bot.lines(swept)[-1]
    bot.press_stale(swept, APPROVE_ACTION, APPROVER)
    assert "is expired, no longer pending" in bot.lines(swept)[-1]

    clicked = bot.check()
    assert clicked.ts != swept.ts
    bot.clock.advance(timedelta(minutes=31))
    bot.press(clicked, APPROVE_ACTION, APPROVER)

    assert bot.request(clicked).state is State.EXPIRED
    assert bot.buttons(clicked) == []
    lines = bot.lines(clicked)
    assert "request *expired*" in lines[0]
    assert "expired at" in lines[1]
    assert bot.calls("Set-SendConnector") == []
    assert [e.event_type for e in bot.events(request_id_of(clicked))] == [
        "request_created", "refused_click", "expired"]


# --------------------------------------------------------------------------- exactly once


def test_a_double_click_and_ten_concurrent_clicks_run_once(make_bot_on: BotFactory) -> None:
    bot = make_bot_on(workers=10, mode="socket")
    card = bot.check()
    request_id = request_id_of(card)

    bot.press_many(card, APPROVE_ACTION, [APPROVER, APPROVER, *CROWD[:8]])

    assert bot.request(card).state is State.SUCCEEDED
    assert len(bot.calls("Set-SendConnector")) == 1
    events = bot.events(request_id)
    types = [e.event_type for e in events]
    assert (types.count("approved"), types.count("execution_started")) == (1, 1)
    assert len(refused_codes(events)) == 9
    lines = bot.lines(card)
    assert sum(" approved at " in line for line in lines) == 1
    assert sum("refused at" in line for line in lines) == 9
    assert bot.remediation.audit.verify().ok


def test_two_replicas_clicked_at_once_run_once(make_bot_on: BotFactory) -> None:
    bot = make_bot_on(workers=6)
    card = bot.check()
    request_id = request_id_of(card)
    other = bot.replica("replica-2")
    try:
        assert other.remediation is not None
        services = [bot.remediation, other.remediation]
        start = threading.Barrier(10)

        def click(index: int) -> None:
            start.wait()
            services[index % 2].handle_click(
                Click("approve", request_id, CROWD[index], DEFAULT_TEAM_ID, CHANNEL, card.ts),
                request_id)

        threads = [threading.Thread(target=click, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        bot.idle()
        assert other.service.wait_until_idle(60)
    finally:
        other.close()

    assert bot.request(card).state is State.SUCCEEDED
    assert len(bot.calls("Set-SendConnector")) == 1
    types = [e.event_type for e in bot.events(request_id)]
    assert (types.count("approved"), types.count("execution_started")) == (1, 1)
    assert types.count("refused_click") == 9
    assert bot.remediation.audit.verify().ok


# --------------------------------------------------------------------------- restarts


def test_a_restart_marks_a_dead_run_interrupted_and_starts_what_was_approved(
        make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()
    repository = bot.remediation.repository
    request_id = request_id_of(card)
    approver = bot.remediation.actor(APPROVER, DEFAULT_TEAM_ID).actor
    assert isinstance(repository.approve(request_id, approver, bot.remediation.approval,
                                         bot.clock()), Applied)
    # The process died right after claiming the run: the request stays running, nothing ran.
    assert isinstance(repository.claim_execution(request_id, owner="replica-1",
                                                 now=bot.clock()), Applied)

    restarted = bot.replica("replica-1")
    try:
        assert restarted.remediation is not None
        assert restarted.remediation.wait_started(30)
        assert restarted.service.wait_until_idle(30)
    finally:
        restarted.close()

    assert bot.request(card).state is State.INTERRUPTED
    assert "Interrupted" in bot.card_text(card)
    assert "request *interrupted*" in bot.lines(card)[-1]
    assert bot.calls("Set-SendConnector") == []
    assert bot.buttons(card) == []

    # Approved, but the process stopped before it could start the run: the next start runs it.
    second = bot.check()
    assert isinstance(repository.approve(request_id_of(second), approver,
                                         bot.remediation.approval, bot.clock()), Applied)
    restarted = bot.replica("replica-1")
    try:
        assert restarted.remediation is not None
        assert restarted.remediation.wait_started(30)
        assert restarted.service.wait_until_idle(60)
    finally:
        restarted.close()
    assert bot.request(second).state is State.SUCCEEDED
    assert len(bot.calls("Set-SendConnector")) == 1
    assert "request *succeeded*" in bot.lines(second)[-1]


def test_a_run_waits_while_another_runs_on_the_same_server(make_bot: BotFactory) -> None:
    bot = make_bot()
    first = bot.check()
    repository = bot.remediation.repository
    approver = bot.remediation.actor(APPROVER, DEFAULT_TEAM_ID).actor
    approval = bot.remediation.approval
    assert isinstance(repository.approve(request_id_of(first), approver, approval,
                                         bot.clock()), Applied)
    assert isinstance(repository.claim_execution(request_id_of(first), owner="replica-2",
                                                 now=bot.clock()), Applied)
    waiting = bot.check()

    bot.press(waiting, APPROVE_ACTION, APPROVER)

    assert bot.request(waiting).state is State.APPROVED
    assert f"waiting: {request_id_of(first)} is already running on EX01" in bot.lines(waiting)[-1]
    assert bot.calls("Set-SendConnector") == []

    assert isinstance(repository.transition(request_id_of(first), State.RUNNING, Event.ABORT,
                                            now=bot.clock(), reason="stopped by hand"), Applied)
    bot.remediation.start_waiting("EX01")
    bot.idle()
    assert bot.request(waiting).state is State.SUCCEEDED
    assert len(bot.calls("Set-SendConnector")) == 1


# --------------------------------------------------------------------------- freeze


def test_freeze_stops_approvals_visibly_and_unfreeze_allows_them_again(
        make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()

    assert "Freezing" in bot.command("freeze", user=STRANGER)["text"]
    bot.idle()
    assert f"<@{STRANGER}> is not an admin" in bot.slack.responses()[-1].body["text"]
    assert not bot.remediation.is_frozen()

    bot.command("freeze certificate renewal tonight")
    bot.idle()

    assert bot.remediation.is_frozen()
    announcement = bot.slack.messages(CHANNEL)[-1]
    assert "froze remediation" in announcement.text
    assert "Reason: certificate renewal tonight" in announcement.text
    assert bot.buttons(card) == ["Deny"]
    assert "Remediation is frozen" in bot.card_text(card)
    bot.press_stale(card, APPROVE_ACTION, APPROVER)
    assert "remediation is frozen" in bot.lines(card)[-1]
    assert bot.request(card).state is State.PENDING
    assert bot.calls("Set-SendConnector") == []
    bot.command("status")
    bot.idle()
    status = json.dumps(bot.slack.responses()[-1].body["blocks"])
    assert "Remediation is frozen" in status
    assert f"`{request_id_of(card)}` on *EX01*: pending" in status

    bot.command("unfreeze")
    bot.idle()
    assert "unfroze remediation" in bot.slack.messages(CHANNEL)[-1].text
    assert bot.buttons(card) == ["Approve", "Deny"]
    bot.press(card, APPROVE_ACTION, APPROVER)
    assert bot.request(card).state is State.SUCCEEDED
    assert len(bot.calls("Set-SendConnector")) == 1

    everything = bot.events()
    freezes = [e for e in everything if e.event_type in ("freeze", "unfreeze")]
    assert [(e.event_type, e.actor_user) for e in freezes] == [("freeze", REQUESTER),
                                                                ("unfreeze", REQUESTER)]
    assert freezes[0].result == "certificate renewal tonight"
    refused = [e.details_object for e in everything if e.event_type == "refused_click"]
    assert [(d["action"], d["code"]) for d in refused] == [("freeze", "not_admin"),
                                                           ("approve", "frozen")]


def test_a_freeze_after_the_approval_aborts_the_run_before_it_starts(
        make_bot: BotFactory) -> None:
    bot = make_bot()
    card = bot.check()
    request = bot.request(card)
    repository = bot.remediation.repository
    applied = repository.approve(request.id, bot.remediation.actor(APPROVER, "T").actor,
                                 bot.remediation.approval, bot.clock())
    assert isinstance(applied, Applied)
    repository.set_freeze(True, actor_user=REQUESTER, actor_team="T", now=bot.clock())

    bot.remediation.run(request.id)

    after = bot.request(card)
    assert after.state is State.ABORTED
    assert "frozen by" in (after.state_reason or "")
    assert "nothing ran" in bot.lines(card)[-1]
    assert bot.buttons(card) == []
    assert bot.calls("Set-SendConnector") == []


# --------------------------------------------------------------------------- audit


def test_audit_command_and_cli_show_and_verify_the_trail_the_bot_wrote(
        make_bot_on: BotFactory, tmp_path: Path) -> None:
    bot = make_bot_on()
    card = bot.check()
    request_id = request_id_of(card)
    bot.press(card, APPROVE_ACTION, STRANGER)
    bot.press(card, APPROVE_ACTION, APPROVER)

    assert "Reading the audit trail" in bot.command(f"audit {request_id}")["text"]
    bot.idle()
    answer = bot.slack.responses()[-1].body
    assert answer["response_type"] == "ephemeral"
    assert validate_message(answer["text"], answer["blocks"]) == []
    shown = json.dumps(answer["blocks"])
    for event_type in ("request_created", "refused_click", "approved", "execution_started",
                       "step_finished", "verification", "execution_finished"):
        assert f"*{event_type}*" in shown
    assert f"<@{STRANGER}> is not an approver" in shown
    assert "chain verified" in shown
    assert f"--request {request_id}" in shown

    bot.command("audit")
    bot.idle()
    latest = json.dumps(bot.slack.responses()[-1].body["blocks"])
    assert "the latest events" in latest
    assert "*execution_finished*" in latest

    bot.command("audit R-AAAAAAAAAA")
    bot.idle()
    assert "no remediation request R-AAAAAAAAAA" in bot.slack.responses()[-1].body["text"]

    config = tmp_path / "exchange-tls.toml"
    config.write_text(f'[storage]\nurl = "{bot.db_url}"\n', encoding="utf-8")

    code, exported, _ = run_cli("audit", "export", "--format", "jsonl", "--config", str(config))
    assert code == 0
    lines = exported.splitlines()
    assert len(lines) == len(bot.events())
    assert [json.loads(line)["sequence"] for line in lines] == list(range(1, len(lines) + 1))
    assert lab_password(bot) not in exported

    code, one, _ = run_cli("audit", "export", "--format", "jsonl", "--config", str(config),
                           "--request", request_id)
    assert code == 0
    assert {json.loads(line)["request_id"] for line in one.splitlines()} == {request_id}

    code, out, _ = run_cli("audit", "verify", "--config", str(config))
    assert (code, "chain intact" in out) == (0, True)
    export = tmp_path / "trail.jsonl"
    export.write_text(exported, encoding="utf-8")
    assert run_cli("audit", "verify", "--file", str(export))[0] == 0

    events = [json.loads(line) for line in lines]
    events[5]["result"] = "approved by nobody"
    export.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    code, out, _ = run_cli("audit", "verify", "--file", str(export))
    assert code == 1
    assert "broken at sequence 6" in out


def test_cli_audit_says_what_it_could_not_check(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_TLS_CONFIG", raising=False)
    missing = tmp_path / "missing.db"
    config = tmp_path / "exchange-tls.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{missing}"\n', encoding="utf-8")

    for command in ("export", "verify"):
        code, out, err = run_cli("audit", command, "--config", str(config))
        assert (code, out) == (2, "")
        assert f"no database at {missing}" in err
    assert not missing.exists()
    code, _, err = run_cli("audit", "verify")
    assert code == 2
    assert "no configuration" in err
    code, _, err = run_cli("audit", "export", "--config", str(config), "--request", "bogus")
    assert code == 3
    assert "--request needs a request id" in err
    code, _, err = run_cli("audit", "verify", "--file", str(tmp_path / "none.jsonl"))
    assert code == 2
    assert "cannot read" in err


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def lab_password(bot: SlackBot) -> str:
    return bot.lab.users[0].password


# --------------------------------------------------------------------------- malformed input


def test_a_button_value_that_is_not_a_request_id_is_refused_without_a_lookup(
        make_bot: BotFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = make_bot()
    card = bot.check()
    events_before = len(bot.events())

    def no_lookup(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the database was asked about a malformed request id")

    monkeypatch.setattr(bot.remediation.repository, "get_request", no_lookup)
    monkeypatch.setattr(bot.remediation.repository, "approve", no_lookup)
    for value in ("R-abcdefghij", "R-AAAAAAAAAA' OR 1=1", "", "R-AAAAAAAAA1"):
        bot.press_stale(card, APPROVE_ACTION, APPROVER, value=value)
    monkeypatch.undo()

    notices = [r.body["text"] for r in bot.slack.responses()]
    assert len(notices) == 4
    assert all("does not name a remediation request" in text for text in notices)
    assert len(bot.events()) == events_before
    assert bot.request(card).state is State.PENDING


# --------------------------------------------------------------------------- the pieces


def test_user_group_members_are_cached_for_a_minute_and_failures_are_not() -> None:
    seconds = [1000.0]
    with SlackStandIn(socket_mode=False, usergroups={GROUP: [GROUP_APPROVER]}) as slack:
        client = WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url)
        groups = UserGroupCache(client, [GROUP, "S0MISSING"], clock=lambda: seconds[0])

        first = groups.resolve(GROUP_APPROVER, DEFAULT_TEAM_ID)
        assert first.actor.group_ids == frozenset({GROUP})
        assert first.unreadable == ("S0MISSING (no_such_subteam)",)
        slack.set_usergroup(GROUP, [])
        seconds[0] += 59
        assert groups.resolve(GROUP_APPROVER, DEFAULT_TEAM_ID).actor.group_ids == {GROUP}
        seconds[0] += 2
        assert groups.resolve(GROUP_APPROVER, DEFAULT_TEAM_ID).actor.group_ids == frozenset()

        listed = [c.args.get("usergroup") for c in slack.calls("usergroups.users.list")]
        assert listed == [GROUP, "S0MISSING", "S0MISSING", GROUP, "S0MISSING"]


def test_a_click_is_read_from_the_block_actions_payload() -> None:
    payload = block_actions_payload(action_id=DENY_ACTION, value="R-ABCDEFGHJK",
                                    user_id=APPROVER, channel_id=CHANNEL,
                                    message_ts="1700000000.000100",
                                    response_url="https://hooks.slack.com/actions/T/1/x")
    click = click_from_payload(payload, payload["actions"][0])
    assert click == Click("deny", "R-ABCDEFGHJK", APPROVER, DEFAULT_TEAM_ID, CHANNEL,
                          "1700000000.000100", "https://hooks.slack.com/actions/T/1/x")
    other = block_actions_payload(action_id="something_else", value="R-ABCDEFGHJK")
    assert click_from_payload(other, other["actions"][0]) is None
    assert [parse_request_id(v) for v in ("R-ABCDEFGHJK", "R-ABCDEFGHJK\n", "r-abcdefghjk",
                                          "R-ABCDEFGH01", None)] == [
        "R-ABCDEFGHJK", None, None, None, None]
