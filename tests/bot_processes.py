"""Real ``exchange-tls bot`` processes (``python -m bot.cli bot --http``), so that they can be
killed with SIGKILL, against the lab and the Slack stand-in (the fleet)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_SIGNING_SECRET,
    SlackStandIn,
    StandInUser,
)

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 20.0


@dataclass
class Fleet:
    """The lab (EX01 and the rest of the KB 2888788 organisation) and the Slack stand-in."""

    organisation: ExchangeOrganisation
    lab: LabServer
    slack: SlackStandIn
    roots: Path


@contextmanager
def running_fleet(folder: Path, users: list[StandInUser] | None = None) -> Iterator[Fleet]:
    organisation = ExchangeOrganisation(default_state(now=datetime.now(UTC)),
                                        clock=lambda: datetime.now(UTC))
    roots = folder / "lab-roots.pem"
    roots.write_bytes(b"".join(c.public_bytes(Encoding.PEM)
                               for c in organisation.public_root_certificates()))
    with LabServer(organisation, auth="ntlm") as lab, \
            SlackStandIn(socket_mode=False, users=users) as slack:
        yield Fleet(organisation, lab, slack, roots)


class BotProcess:
    """``exchange-tls bot --http`` on a free loopback port, with its stderr in a file."""

    def __init__(self, name: str, config: Path, fleet: Fleet, workdir: Path, *,
                 lease_seconds: float | None = None) -> None:
        user = fleet.lab.users[0]
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
            "SLACK_SIGNING_SECRET": DEFAULT_SIGNING_SECRET,
            "LAB_USER": f"{user.domain}\\{user.name}",
            "LAB_PASSWORD": user.password,
            "EXCHANGE_TLS_REPLICA_ID": name,
        }
        environ.pop("SLACK_API_URL", None)
        environ.pop("EXCHANGE_TLS_CLAIM_LEASE_SECONDS", None)
        if lease_seconds is not None:
            environ["EXCHANGE_TLS_CLAIM_LEASE_SECONDS"] = str(lease_seconds)
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr: IO[str] = self.stderr_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "--verbose", "bot", "--http", "--host",
             "127.0.0.1", "--port", "0", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=workdir, env=environ)
        self.events_url = ""
        self._first_line: list[str] = []
        self._line_read = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self._first_line.append(self.process.stdout.readline())
        self._line_read.set()
        for _ in self.process.stdout:  # keep the pipe drained
            pass

    def wait_started(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """The first line it printed, once it listens; fails with its stderr otherwise."""
        self._line_read.wait(timeout)
        line = self._first_line[0] if self._first_line else ""
        if "listening on " not in line:
            self.process.kill()
            self.process.wait(10)
            pytest.fail(f"{self.name} did not start: {line!r}\n{self.stderr()}")
        self.events_url = line.split("listening on ", 1)[1].split()[0]
        return line

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._stderr.close()

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()


def wait_until(what: str, condition: Callable[[], bool], timeout: float,
               *bots: BotProcess) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {b.name}:\n{b.stderr()}" for b in bots)
            pytest.fail(f"not within {timeout} s: {what}\n{logs}")
        time.sleep(0.05)
