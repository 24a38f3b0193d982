"""Capture every log record the test suite writes, so a last test can scan it for secrets.

Installed from tests/conftest.py. The project's own loggers (``bot``, ``handlers``) are
captured at DEBUG, every other library at its configured level (WARNING by default).
Slack messages and audit events are scanned where they are produced (tests/security).
"""

from __future__ import annotations

import logging
import re
import threading

SECRET_PATTERNS = (
    re.compile(r"xox[abpr]-[A-Za-z0-9-]{10,}"),          # Slack bot/user tokens
    re.compile(r"xapp-\d-[A-Za-z0-9-]{10,}"),            # Slack app-level tokens
    re.compile(r"standin-signing-secret-[0-9a-f]+"),     # the stand-in's signing secret
    re.compile(r"Lab-[A-Za-z0-9_-]{12,}-9a"),            # generated lab admin passwords
    re.compile(r"Lab-Passw0rd!|Bench-Passw0rd!"),        # fixed lab passwords in states
)


class CapturingHandler(logging.Handler):
    """Keeps the formatted text of every record (bounded), thread-safe."""

    def __init__(self, limit: int = 200_000) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock_records = threading.Lock()
        self.records: list[str] = []
        self.limit = limit
        self.total = 0
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is still counted
            text = repr(record.msg)
        with self._lock_records:
            self.total += 1
            if len(self.records) < self.limit:
                self.records.append(text)


HANDLER = CapturingHandler()


def install() -> None:
    root = logging.getLogger()
    if HANDLER not in root.handlers:
        root.addHandler(HANDLER)
    for name in ("bot", "handlers"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def find_secrets(texts: list[str]) -> list[str]:
    """Every text that contains something shaped like one of the suite's secrets."""
    return [text for text in texts if any(p.search(text) for p in SECRET_PATTERNS)]
