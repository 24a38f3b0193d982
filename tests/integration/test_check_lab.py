"""`exchange-tls check` end to end: the real pypsrp client against the lab over WinRM/PSRP."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state, load_state

STATES = Path(__file__).resolve().parents[2] / "bot" / "lab" / "states"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def check_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli("check", "--lab", "--format", "json", *argv)
    assert out, err
    return code, json.loads(out)


def codes(server: dict[str, Any]) -> set[str]:
    return {finding["code"] for finding in server["findings"]}


def with_faults(tmp_path: Path, faults: str, base: str = "kb-2888788.yaml") -> Path:
    state = tmp_path / "state.yaml"
    state.write_text(
        (STATES / base).read_text(encoding="utf-8") + "\nfaults:\n" + faults, encoding="utf-8"
    )
    return state


def test_kb_fault_is_diagnosed_critical_with_the_internal_certificate_predicted() -> None:
    code, report = check_json()
    assert code == 2
    assert report["verdict"] == "critical"
    (server,) = report["servers"]
    assert server["reachable"] is True
    assert {"SMTP_MIXED_TRUST_BINDING", "OUTBOUND_CERT_UNTRUSTED", "QUEUE_TLS_REJECTED"} <= codes(
        server
    )
    by_thumbprint = {c["thumbprint"]: c for c in server["certificates"]}
    (outbound,) = server["outbound"]
    predicted = by_thumbprint[outbound["thumbprint"]]
    assert predicted["trust"] == "internal"
    assert predicted["subject"] == "CN=ex01.contoso.com"
    assert "SMTP" in predicted["services"]
    kinds = [step["kind"] for step in server["plan"]["steps"] if step["skipped_reason"] is None]
    assert kinds == ["pin_connector", "unbind_smtp", "retry_queue"]
    for certificate in server["certificates"]:
        assert certificate["thumbprint"] == certificate["thumbprint"].upper()
        assert len(certificate["thumbprint"]) == 40


def test_prediction_agrees_with_the_lab_s_own_mail_flow_ranking() -> None:
    """The analysis's prediction and the simulated server's choice are independent codes."""
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: now)
    connector = organisation.state.servers[0].send_connectors[0].name
    lab_choice = organisation.predicted_outbound_thumbprint("EX01", connector)
    code, report = check_json()
    # Both runs build the same certificates: the lab's PKI is deterministic per process.
    assert report["servers"][0]["outbound"][0]["thumbprint"] == lab_choice
    assert code == 2


def test_healthy_pinned_state_is_ok_with_exit_zero() -> None:
    code, report = check_json("--lab-state", str(STATES / "healthy-pinned.yaml"))
    assert code == 0, report["servers"][0]["findings"]
    assert report["verdict"] == "ok"
    assert report["servers"][0]["plan"] is None
    assert report["servers"][0]["outbound"][0]["reason"]


def test_text_report_is_plain_when_piped_and_names_the_plan() -> None:
    code, out, _ = run_cli("check", "--lab")
    assert code == 2
    assert "\033[" not in out
    assert "Verdict: CRITICAL" in out
    assert "Set-SendConnector -Identity" in out
    assert "Enable-ExchangeCertificate -Server EX01" in out


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ("  auth_refused: true\n", "authentication"),
        ("  drop_connection_on: Get-ExchangeCertificate\n", "connection"),
        (
            "  wsman_fault: {cmdlet: Get-SendConnector, code: '0x80338012', message: 'The client "
            "cannot connect'}\n",
            "0x80338012",
        ),
    ],
)
def test_lab_faults_give_server_unreachable_with_a_readable_reason(
    tmp_path: Path, faults: str, reason: str
) -> None:
    code, report = check_json("--lab-state", str(with_faults(tmp_path, faults)))
    assert code == 3
    assert report["verdict"] == "unknown"
    (server,) = report["servers"]
    assert server["reachable"] is False
    assert codes(server) == {"SERVER_UNREACHABLE"}
    assert reason.lower() in server["error"].lower()
    assert "Traceback" not in server["error"]


def test_unknown_server_name_is_refused_without_contacting_anything() -> None:
    code, out, err = run_cli("check", "--lab", "--server", "EX99")
    assert code == 3
    assert out == ""
    assert "unknown server 'EX99'" in err
    assert "EX01" in err


def test_malformed_lab_state_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "bad.yaml"
    state.write_text("tenant: contoso\ncas: [\n", encoding="utf-8")
    code, _, err = run_cli("check", "--lab", "--lab-state", str(state))
    assert code == 3
    assert "bad.yaml" in err
    assert "Traceback" not in err


@pytest.fixture
def slow_lab(tmp_path: Path) -> Iterator[LabServer]:
    now = datetime.now(UTC)
    state = load_state(with_faults(tmp_path, "  slow_cmdlets: {Get-Queue: 3}\n"), now=now)
    organisation = ExchangeOrganisation(state, clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        yield lab


def test_operation_time_out_gives_server_unreachable(
    slow_lab: LabServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = slow_lab.users[0]
    monkeypatch.setenv("LAB_USER", f"{user.domain}\\{user.name}")
    monkeypatch.setenv("LAB_PASSWORD", user.password)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[[servers]]
name = "EX01"
url = "{slow_lab.url_for("EX01")}"
auth = "ntlm"
username_env = "LAB_USER"
password_env = "LAB_PASSWORD"
operation_timeout = 1
""",
        encoding="utf-8",
    )
    code, out, err = run_cli("check", "--config", str(config), "--format", "json")
    report = json.loads(out)
    assert code == 3, err
    assert report["servers"][0]["reachable"] is False
    assert "time" in report["servers"][0]["error"].lower()
    assert user.password not in out + err


def test_fleet_check_keeps_going_when_one_server_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        monkeypatch.setenv("LAB_USER", f"{user.domain}\\{user.name}")
        monkeypatch.setenv("LAB_PASSWORD", user.password)
        closed_port = _closed_port()
        config = tmp_path / "config.toml"
        config.write_text(
            f"""
[[servers]]
name = "EX01"
url = "{lab.url_for("EX01")}"
auth = "ntlm"
username_env = "LAB_USER"
password_env = "LAB_PASSWORD"

[[servers]]
name = "EX02"
url = "http://127.0.0.1:{closed_port}/PowerShell/"
auth = "ntlm"
username_env = "LAB_USER"
password_env = "LAB_PASSWORD"
connect_timeout = 2
""",
            encoding="utf-8",
        )
        code, out, _ = run_cli("check", "--config", str(config), "--format", "json")
    report = json.loads(out)
    assert code == 2
    first, second = report["servers"]
    assert (first["name"], first["reachable"]) == ("EX01", True)
    assert (second["name"], second["reachable"]) == ("EX02", False)
    assert "refused" in second["error"] or "connect" in second["error"]


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_warm_session_reuses_its_runspace_pool() -> None:
    from bot.config import ServerSettings
    from bot.exchange.reader import read_snapshot
    from bot.exchange.session import Credentials, SessionCache

    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm")
        cache = SessionCache(
            credentials=lambda _: Credentials(f"{user.domain}\\{user.name}", user.password)
        )
        try:
            with cache.session(settings) as session:
                read_snapshot(session, "EX01", now=now)
                first_requests = lab.request_count
                read_snapshot(session, "EX01", now=now)
                second_requests = lab.request_count - first_requests
                assert session.pools_opened == 1
        finally:
            cache.close_all()
    # A warm check: no Create, no handshake; two requests per command.
    assert second_requests < first_requests


def test_concurrent_checks_of_one_server_share_its_session_safely() -> None:
    from bot.config import ServerSettings
    from bot.exchange.reader import read_snapshot
    from bot.exchange.session import Credentials, SessionCache

    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    errors: list[BaseException] = []
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm")
        cache = SessionCache(
            credentials=lambda _: Credentials(f"{user.domain}\\{user.name}", user.password)
        )

        def work() -> None:
            try:
                with cache.session(settings) as session:
                    assert len(read_snapshot(session, "EX01", now=now).certificates) == 4
            except BaseException as error:  # collected for the assertion below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cache.close_all()
    assert errors == []


def test_a_long_lived_session_does_not_keep_finished_pipelines() -> None:
    from bot.config import ServerSettings
    from bot.exchange.reader import read_snapshot
    from bot.exchange.session import Credentials, SessionCache

    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm")
        cache = SessionCache(
            credentials=lambda _: Credentials(f"{user.domain}\\{user.name}", user.password)
        )
        try:
            with cache.session(settings) as session:
                for _ in range(3):
                    read_snapshot(session, "EX01", now=now)
                assert session._pool is not None
                assert len(session._pool.pipelines) == 0
        finally:
            cache.close_all()


def test_without_serialization_data_services_come_from_select_object(tmp_path: Path) -> None:
    """Exchange sends RawData only to a client that does not verify its signed payloads (Nov
    2023 SU); the check then reads Services through Select-Object, and says so."""
    state = tmp_path / "rawdata-only.yaml"
    text = (STATES / "kb-2888788.yaml").read_text(encoding="utf-8")
    state.write_text(text.replace("behaviour:\n", "behaviour:\n  serialization_data: false\n", 1),
                     encoding="utf-8")
    assert "serialization_data: false" in state.read_text(encoding="utf-8")
    code, report = check_json("--lab-state", str(state))
    assert code == 2
    (server,) = report["servers"]
    assert {c["services_source"] for c in server["certificates"]} == {"select-object"}
    assert "SERVICES_UNKNOWN" not in codes(server)
    assert {"SMTP_MIXED_TRUST_BINDING", "OUTBOUND_CERT_UNTRUSTED"} <= codes(server)
    assert any("Select-Object" in note for note in server["notes"])
