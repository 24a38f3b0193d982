"""The remediation executor's test environment: a lab server, a real database (an engine
given by the test), and what an executor needs; the clock ticks (``TickingClock``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from bot.analysis.model import RemediationPlan, ServerAnalysis
from bot.analysis.trust import TrustStore
from bot.audit import AuditEvent, AuditLog
from bot.check import check_server
from bot.config import ApprovalSettings, ServerSettings, TrustSettings
from bot.exchange.session import Credentials, SessionCache
from bot.lab.model import ExchangeOrganisation
from bot.lab.records import CommandCall, LabSendConnectorRecord
from bot.lab.server import LabServer
from bot.lab.state import parse_state
from bot.remediation.executor import RemediationExecutor
from bot.remediation.model import RemediationRequest, new_request
from bot.remediation.policy import Actor
from bot.remediation.states import State
from bot.remediation.workflow import (
    ExecutionUpdate,
    plan_to_json,
    propose_remediation,
)
from bot.runner import trust_store_for
from bot.storage.repository import Applied, Repository
from tests.clocks import TickingClock

STATES = Path(__file__).resolve().parents[1] / "bot" / "lab" / "states"
TEAM = "T0TEAM"
REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER"
APPROVAL = ApprovalSettings(approvers=(APPROVER,), admins=(APPROVER,), required=1)


def lab_calls(org: ExchangeOrganisation, cmdlet: str) -> list[Any]:
    """The lab's log of ``cmdlet`` runs."""
    return [entry for entry in org.call_log() if entry.cmdlet == cmdlet]


def lab_send_connector(org: ExchangeOrganisation) -> LabSendConnectorRecord:
    """The lab organisation's one send connector, as Get-SendConnector returns it now."""
    result = org.run([CommandCall("Get-SendConnector")], user="test", connected_server="EX01")
    (record,) = result.output
    assert isinstance(record, LabSendConnectorRecord)
    return record


@dataclass
class Env:
    """One lab server, one database, and what an executor needs."""

    lab: LabServer
    org: ExchangeOrganisation
    engine: Engine
    repo: Repository
    audit: AuditLog
    sessions: SessionCache
    settings: ServerSettings
    trust: TrustStore
    clock: TickingClock
    credentials: Credentials
    updates: list[ExecutionUpdate] = field(default_factory=list)

    def lookup(self, name: str) -> ServerSettings | None:
        return self.settings if name.casefold() == self.settings.name.casefold() else None

    def executor(self, owner: str = "replica-1", **options: Any) -> RemediationExecutor:
        options.setdefault("on_update", self.updates.append)
        return RemediationExecutor(self.repo, self.audit, self.sessions, self.lookup,
                                   self.trust, clock=self.clock, owner=owner, **options)

    def new_sessions(self) -> SessionCache:
        return SessionCache(credentials=lambda _: self.credentials)

    def analyse(self) -> ServerAnalysis:
        return check_server(self.settings, self.sessions, self.trust, clock=self.clock)

    def approve(self, request: RemediationRequest) -> RemediationRequest:
        stored = self.repo.create_request(request)
        applied = self.repo.approve(stored.id, Actor(APPROVER, TEAM), APPROVAL, self.clock())
        assert isinstance(applied, Applied)
        assert applied.request.state is State.APPROVED
        return applied.request

    def approved_remediation(self) -> RemediationRequest:
        request = propose_remediation(self.analyse(), requested_by=REQUESTER, team_id=TEAM,
                                      channel="C0OPS", now=self.clock(), settings=APPROVAL)
        assert request is not None
        return self.approve(request)

    def approved_plan(self, plan: RemediationPlan) -> RemediationRequest:
        return self.approve(new_request(
            kind="remediation", server=plan.server, plan_hash=plan.hash,
            plan_json=plan_to_json(plan), requested_by=REQUESTER, team_id=TEAM,
            channel="C0OPS", now=self.clock(), expires_after=timedelta(minutes=30)))

    def calls(self, cmdlet: str) -> list[Any]:
        return lab_calls(self.org, cmdlet)

    def connector(self) -> LabSendConnectorRecord:
        return lab_send_connector(self.org)

    def services(self, thumbprint: str) -> list[str]:
        (record,) = [c for c in self.org.certificates("EX01") if c.thumbprint == thumbprint]
        return record.services.names()

    def events(self, request_id: str) -> list[AuditEvent]:
        return self.audit.events(request_id=request_id)

    def event_types(self, request_id: str) -> list[str]:
        return [e.event_type for e in self.events(request_id)]


EnvFactory = Callable[..., Env]


@contextmanager
def env_factory(engine: Engine) -> Iterator[EnvFactory]:
    """Starts labs from a packaged state (or YAML text) on ``engine``; stops them at exit."""
    started: list[tuple[LabServer, SessionCache]] = []

    def factory(state: str = "kb-2888788", *, text: str | None = None,
                operation_timeout: float = 20.0) -> Env:
        start = datetime.now(UTC)
        yaml_text = text if text is not None else (STATES / f"{state}.yaml").read_text("utf-8")
        org = ExchangeOrganisation(parse_state(yaml_text, source=state, now=start),
                                   clock=lambda: datetime.now(UTC))
        lab = LabServer(org, auth="ntlm")
        lab.start()
        user = lab.users[0]
        credentials = Credentials(user.qualified_name, user.password)
        sessions = SessionCache(credentials=lambda _: credentials)
        started.append((lab, sessions))
        audit = AuditLog(engine, bot_version="test")
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm",
                                  username_env=None, password_env=None, connect_timeout=5,
                                  operation_timeout=operation_timeout)
        return Env(lab=lab, org=org, engine=engine,
                   repo=Repository(engine, audit=audit), audit=audit,
                   sessions=sessions, settings=settings,
                   trust=trust_store_for(TrustSettings(), org.public_root_certificates()),
                   clock=TickingClock(start), credentials=credentials)

    try:
        yield factory
    finally:
        for lab, sessions in started:
            sessions.close_all()
            lab.stop()


def kb_text(**replacements: str) -> str:
    text = (STATES / "kb-2888788.yaml").read_text("utf-8")
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    return text


def assert_chain_intact(env: Env) -> None:
    result = env.audit.verify()
    assert result.ok, result.reason
