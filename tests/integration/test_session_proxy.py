"""An Exchange session never proxies and does not re-read proxy variables on every request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from bot.config import ServerSettings
from bot.exchange.session import Credentials, ExchangeSession
from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state


def test_commands_go_direct_without_proxy_lookups_per_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []

    def should_bypass(url: str, no_proxy: object = None) -> bool:
        lookups.append(url)
        return False

    def environ_proxies(url: str, no_proxy: object = None) -> dict[str, str]:
        lookups.append(url)
        return {"http": "http://127.0.0.1:9"}

    monkeypatch.setattr(requests.utils, "should_bypass_proxies", should_bypass)
    monkeypatch.setattr(requests.utils, "get_environ_proxies", environ_proxies)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there

    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    with LabServer(organisation, auth="ntlm") as lab:
        user = lab.users[0]
        settings = ServerSettings(name="EX01", url=lab.url_for("EX01"), auth="ntlm")
        session = ExchangeSession(settings, Credentials(f"{user.domain}\\{user.name}",
                                                        user.password))
        try:
            session.open()
            after_open = len(lookups)
            servers = session.run("Get-ExchangeServer", [("Identity", "EX01")])
            queues = session.run("Get-Queue", [("Server", "EX01")])
        finally:
            session.close()
    assert len(servers.output) == 1
    assert queues.output
    assert len(lookups) == after_open
