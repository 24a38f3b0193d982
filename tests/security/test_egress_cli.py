"""Only configured Exchange servers are ever contacted by the command line."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state
from tests.security.egress import recording


@pytest.fixture
def lab() -> Iterator[LabServer]:
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as server:
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, lab: LabServer, other_port: int) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[[servers]]
name = "EX01"
url = "{lab.url_for('EX01')}"
auth = "ntlm"
username_env = "LAB_USER"
password_env = "LAB_PASSWORD"

[[servers]]
name = "EX02"
url = "http://127.0.0.1:{other_port}/PowerShell/"
auth = "ntlm"
username_env = "LAB_USER"
password_env = "LAB_PASSWORD"
connect_timeout = 2
""", encoding="utf-8")
    return config


@pytest.fixture
def credentials(lab: LabServer, monkeypatch: pytest.MonkeyPatch) -> None:
    user = lab.users[0]
    monkeypatch.setenv("LAB_USER", f"{user.domain}\\{user.name}")
    monkeypatch.setenv("LAB_PASSWORD", user.password)


@pytest.mark.usefixtures("credentials")
def test_a_fleet_check_connects_only_to_configured_endpoints(tmp_path: Path,
                                                            lab: LabServer) -> None:
    other = closed_port()
    config = write_config(tmp_path, lab, other)
    with recording() as connections:
        code = main(["check", "--config", str(config), "--format", "json"],
                    out=io.StringIO(), err=io.StringIO())
    assert code == 2  # EX01 critical (the KB fault) outranks EX02 unknown
    assert connections, "the audit hook saw no connection: the test would prove nothing"
    assert set(connections) <= {("127.0.0.1", lab.port), ("127.0.0.1", other)}
    assert ("127.0.0.1", lab.port) in connections


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize("name", ["EX99", "evil.example.com", "127.0.0.1", "http://10.0.0.1/",
                                  "EX01; Remove-ExchangeCertificate", "<!channel>", "ex01\n"])
def test_unknown_or_hostile_server_names_contact_nothing(tmp_path: Path, lab: LabServer,
                                                        name: str) -> None:
    config = write_config(tmp_path, lab, closed_port())
    err = io.StringIO()
    with recording() as connections:
        code = main(["check", "--config", str(config), "--server", name],
                    out=io.StringIO(), err=err)
    assert code == 3
    assert connections == []
    assert "unknown server" in err.getvalue()
    assert "configured servers: EX01, EX02" in err.getvalue()
