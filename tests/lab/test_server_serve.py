"""``lab serve``: banner, credentials that work, clean stop, clear errors."""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from bot.lab.serve import run_lab_serve

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def banner_value(text: str, key: str) -> str:
    match = re.search(rf"^\s+{re.escape(key)}:\s+(\S.*)$", text, re.MULTILINE)
    assert match, f"{key} missing from:\n{text}"
    return match.group(1).strip()


def test_serve_prints_working_credentials_and_stops_cleanly() -> None:
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_lab_serve(
        None, "127.0.0.1", 0, "ntlm", False, out, stop_event=stop)))
    thread.start()
    try:
        wait_for(lambda: "serving" in out.getvalue())
        text = out.getvalue()
        url = banner_value(text, "endpoint")
        port = int(re.search(r":(\d+)/PowerShell/$", url).group(1))  # type: ignore[union-attr]
        assert banner_value(text, "configuration name") == "Microsoft.Exchange"
        assert banner_value(text, "auth").startswith("ntlm")
        assert "RunspacePool(WSMan(" in banner_value(text, "pypsrp")
        assert "EX01" in text
        wsman = WSMan("127.0.0.1", port=port, path="PowerShell/", ssl=False, auth="ntlm",
                      username=banner_value(text, "username"),
                      password=banner_value(text, "password"))
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-ExchangeServer")
            assert ps.invoke()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result == [0]
    assert out.getvalue().rstrip().endswith("lab: stopped")


def test_unusable_state_file_is_exit_code_2(tmp_path: Path) -> None:
    state = tmp_path / "state.yaml"
    state.write_text("tenant: contoso\nservers: [oops\n", encoding="utf-8")
    out = io.StringIO()
    assert run_lab_serve(state, "127.0.0.1", 0, "ntlm", False, out) == 2
    assert "state.yaml" in out.getvalue()
    assert "Traceback" not in out.getvalue()


def test_missing_state_file_is_exit_code_2(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_lab_serve(tmp_path / "absent.yaml", "127.0.0.1", 0, "basic", False, out) == 2
    assert "absent.yaml" in out.getvalue()


def test_port_in_use_is_exit_code_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = io.StringIO()
        code = run_lab_serve(None, "127.0.0.1", busy.getsockname()[1], "basic", False, out)
    assert code == 2
    assert "cannot listen" in out.getvalue()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_server_with_exit_code_0(signal_number: int) -> None:
    script = ("import sys; from bot.lab.serve import run_lab_serve; "
              "sys.exit(run_lab_serve(None, '127.0.0.1', 0, 'basic', True, sys.stdout))")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "serving" in line:
                break
        assert any("https://127.0.0.1:" in line for line in lines)
        process.send_signal(signal_number)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "lab: stopped" in stdout
    assert "Traceback" not in stderr
