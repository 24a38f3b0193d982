"""Clocks tests set by hand, injected instead of sleeping."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class ManualClock:
    """A clock the test sets; every replica (thread) in a test may share it."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now


class TickingClock:
    """Each reading is ``step`` later than the one before (thread-safe); ``advance`` jumps."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=10)) -> None:
        self._now = start
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self._now += self._step
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta
