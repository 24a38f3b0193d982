"""Rollback of a connector pin (product.md section 2.5) against the lab and a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from bot.config import ServerSettings
from bot.exchange.remote_object import RemoteObject
from bot.exchange.session import Credentials, ExchangeSession
from bot.lab.model import ExchangeOrganisation
from bot.lab.records import CommandCall, LabSendConnectorRecord
from bot.lab.server import LabServer
from bot.lab.state import parse_state
from bot.remediation.model import RemediationRequest
from bot.remediation.states import State
from bot.remediation.workflow import (
    RollbackUnavailable,
    plan_from_json,
    propose_rollback,
    rollback_unavailable_reason,
)
from tests.executor_env import (
    APPROVAL,
    REQUESTER,
    TEAM,
    Env,
    EnvFactory,
    assert_chain_intact,
    env_factory,
    kb_text,
)

pytest_plugins = ("tests.conftest_db",)


@pytest.fixture
def make_env(migrated_engine: Engine) -> Iterator[EnvFactory]:
    with env_factory(migrated_engine) as factory:
        yield factory


def remediated(env: Env) -> RemediationRequest:
    request = env.approved_remediation()
    result = env.executor().run(request.id)
    assert result.outcome == "succeeded", result.report.text()
    assert result.request is not None
    return result.request


def approved_rollback(env: Env, original: RemediationRequest) -> RemediationRequest:
    rollback = propose_rollback(original, requested_by=REQUESTER, team_id=TEAM,
                                channel="C0OPS", now=env.clock(), settings=APPROVAL,
                                existing_rollbacks=env.repo.rollbacks_of(original.id))
    return env.approve(rollback)


def test_rollback_restores_a_connector_that_was_not_pinned_to_null(make_env: EnvFactory
                                                                   ) -> None:
    env = make_env()
    original = remediated(env)
    assert env.connector().tls_certificate_name is not None
    rollback = approved_rollback(env, original)
    (step,) = plan_from_json(rollback.plan_json).steps
    assert step.display.endswith("-TlsCertificateName $null")
    assert step.parameters[1] == ("TlsCertificateName", None)
    assert rollback.previous_tls_certificate_name is None
    assert rollback.rollback_of == original.id

    result = env.executor().run(rollback.id)

    assert result.outcome == "succeeded", result.report.text()
    (outcome,) = result.report.steps
    assert outcome.status == "succeeded"
    assert outcome.observed_after == "TlsCertificateName: (not set)"
    assert env.connector().tls_certificate_name is None
    last_pin = env.calls("Set-SendConnector")[-1]
    assert ("TlsCertificateName", None) in last_pin.parameters
    assert last_pin.outcome.startswith("ok: TlsCertificateName <I>")
    assert last_pin.outcome.endswith("-> $null")
    # Restored as asked; the verification says plainly what that means for mail flow.
    assert result.report.verification is not None
    assert not result.report.verification.outbound_publicly_trusted
    assert "may fail again" in result.report.reason
    (event,) = [e for e in env.events(rollback.id) if e.event_type == "rollback"]
    assert event.details_object["rollback_of"] == original.id
    assert event.details_object["restored"] == {step.target: None}
    assert event.error is None
    assert env.event_types(rollback.id)[-1] == "execution_finished"
    assert_chain_intact(env)


def test_rollback_restores_the_previous_pin(make_env: EnvFactory) -> None:
    text = kb_text(**{"tls_certificate_name: null": "tls_certificate_name: internal-cert"})
    env = make_env(text=text)
    before = env.connector().tls_certificate_name
    assert before is not None
    assert before.certificate_subject == "CN=ex01.contoso.com"
    original = remediated(env)
    assert env.connector().tls_certificate_name != before

    rollback = approved_rollback(env, original)
    assert rollback.previous_tls_certificate_name == before.to_string()
    result = env.executor().run(rollback.id)

    assert result.outcome == "succeeded", result.report.text()
    assert env.connector().tls_certificate_name == before
    assert result.report.steps[0].observed_after == f"TlsCertificateName: {before.to_string()}"


def test_rollback_aborts_when_the_connector_changed_since(make_env: EnvFactory) -> None:
    env = make_env()
    original = remediated(env)
    rollback = approved_rollback(env, original)
    cleared = env.org.run([CommandCall("Set-SendConnector", (
        ("Identity", env.connector().name), ("TlsCertificateName", None)))],
        user="CONTOSO\\someone", connected_server="EX01")
    assert not cleared.failed
    pins_before = len(env.calls("Set-SendConnector"))

    result = env.executor().run(rollback.id)

    assert result.outcome == "aborted"
    assert result.request is not None
    assert result.request.state is State.ABORTED
    assert any("(not set)" in d for d in result.report.differences)
    assert len(env.calls("Set-SendConnector")) == pins_before


def test_a_rollback_is_offered_once_and_only_for_a_succeeded_pin(make_env: EnvFactory) -> None:
    env = make_env()
    pending = env.approved_remediation()
    assert rollback_unavailable_reason(pending) is not None
    with pytest.raises(RollbackUnavailable, match="only a succeeded remediation"):
        propose_rollback(pending, requested_by=REQUESTER, team_id=TEAM, channel="C0OPS",
                         now=env.clock(), settings=APPROVAL)
    result = env.executor().run(pending.id)
    assert result.request is not None
    original = result.request
    first = approved_rollback(env, original)
    with pytest.raises(RollbackUnavailable, match="already approved"):
        approved_rollback(env, original)
    assert env.executor().run(first.id).outcome == "succeeded"
    with pytest.raises(RollbackUnavailable, match="already rolled back"):
        approved_rollback(env, original)
    stored_first = env.repo.get_request(first.id)
    assert stored_first is not None
    assert rollback_unavailable_reason(stored_first) is not None  # a rollback of a rollback


# --------------------------------------------------------------------------- $null binding


def first_object(session: ExchangeSession, connector: str) -> RemoteObject:
    result = session.run("Get-SendConnector", [("Identity", connector)])
    (found,) = result.output
    assert isinstance(found, RemoteObject)
    return found


def test_a_parameter_without_value_binds_null_in_the_lab() -> None:
    """pypsrp's ``add_parameter(name)`` sends the parameter with a ``$null`` value (a name
    without a dash: PowerShell binds it as ``-Name $null``), so TlsCertificateName clears.
    The lab binds it the same way."""
    text = kb_text(**{"tls_certificate_name: null": "tls_certificate_name: public-cert"})
    organisation = ExchangeOrganisation(
        parse_state(text, source="pinned", now=datetime.now(UTC)),
        clock=lambda: datetime.now(UTC))
    connector = organisation.state.servers[0].send_connectors[0].name
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm",
                                  connect_timeout=5, operation_timeout=20)
        session = ExchangeSession(settings, Credentials(user.qualified_name, user.password))
        try:
            assert first_object(session, connector).properties["TlsCertificateName"] is not None
            session.run("Set-SendConnector", [("Identity", connector),
                                              ("TlsCertificateName", None)], read_only=False)
            assert first_object(session, connector).properties["TlsCertificateName"] is None
        finally:
            session.close()
    entries = [e for e in organisation.call_log() if e.cmdlet == "Set-SendConnector"]
    assert entries[0].parameters == (("Identity", connector), ("TlsCertificateName", None))
    assert entries[0].outcome.endswith("-> $null")
    records = organisation.run([CommandCall("Get-SendConnector")], user="t",
                               connected_server="EX01").output
    assert isinstance(records[0], LabSendConnectorRecord)
    assert records[0].tls_certificate_name is None
