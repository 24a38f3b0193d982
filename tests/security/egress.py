"""Record every outgoing TCP connection the process makes (``socket.connect`` audit events)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_recorders: list[list[tuple[str, int]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _recorders:
        return
    address = args[1]
    if isinstance(address, tuple) and len(address) >= 2:
        with _lock:
            for recorder in _recorders:
                recorder.append((str(address[0]), int(address[1])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside recording()


@contextmanager
def recording() -> Iterator[list[tuple[str, int]]]:
    """Collect the (host, port) of every connection attempted inside the block, any thread."""
    connections: list[tuple[str, int]] = []
    with _lock:
        _recorders.append(connections)
    try:
        yield connections
    finally:
        with _lock:
            _recorders.remove(connections)
