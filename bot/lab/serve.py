"""``exchange-tls lab serve``: run the lab's Exchange endpoint until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

from bot.lab.server import CONFIGURATION_NAME, LabServer, LabServerError


def run_lab_serve(
    state_path: Path | None,
    host: str,
    port: int,
    auth: str,
    https: bool,
    out: TextIO,
    *,
    stop_event: threading.Event | None = None,
) -> int:
    """Serve the lab until interrupted; 0 after a clean stop, 2 for an unusable state or port.

    ``stop_event`` (tests, embedding) stops the server when set, like Ctrl-C does.
    """
    from bot.lab.model import ExchangeOrganisation
    from bot.lab.state import LabStateError, default_state, load_state

    now = datetime.now(UTC)
    try:
        state = load_state(state_path, now=now) if state_path is not None \
            else default_state(now=now)
    except LabStateError as error:
        print(f"lab: cannot use the state file: {error}", file=out)
        return 2
    organisation = ExchangeOrganisation(state, clock=lambda: datetime.now(UTC))
    try:
        server = LabServer(organisation, host=host, port=port, auth=auth, https=https)
        server.start()
    except LabServerError as error:
        print(f"lab: {error}", file=out)
        return 2

    stop = stop_event or threading.Event()
    restore = _install_sigterm(stop)
    try:
        _print_banner(server, state_path, out)
        out.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        restore()
        server.stop()
    print("lab: stopped", file=out)
    out.flush()
    return 0


def _print_banner(server: LabServer, state_path: Path | None, out: TextIO) -> None:
    def line(label: str, value: str) -> None:
        print(f"  {label + ':':<21}{value}", file=out)

    source = str(state_path) if state_path is not None else "built-in KB 2888788 fault"
    print(f"lab: simulated Exchange organisation ({source})", file=out)
    line("endpoint", server.url)
    for name in server.server_names:
        line(f"endpoint for {name}", server.url_for(name))
    line("configuration name", CONFIGURATION_NAME)
    encryption = "" if server.auth == "basic" or server.https else " (with message encryption)"
    line("auth", f"{server.auth}{encryption}")
    if server.https:
        line("https", "self-signed certificate (use cert_validation=False)")
    for user in server.users:
        line("username", user.qualified_name)
        line("password", user.password)
    user = server.users[0]
    options = ""
    if server.auth == "basic" and not server.https:
        options += ", encryption='never'"
    if server.https:
        options += ", cert_validation=False"
    line("pypsrp", f"RunspacePool(WSMan({server.host!r}, port={server.port}, "
                   f"path='PowerShell/', ssl={server.https}, auth={server.auth!r}, "
                   f"username={user.qualified_name!r}, password={user.password!r}{options}), "
                   f"configuration_name={CONFIGURATION_NAME!r})")
    print("lab: serving; press Ctrl-C to stop", file=out)


def _install_sigterm(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
