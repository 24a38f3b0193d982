"""Benchmark the lab server on loopback with the real pypsrp client.

Measures, for NTLM with message encryption and for Basic (encryption='never'):
pool open + close time (a new WSMan client each time: TCP connect, authentication, Create,
Receive, Delete),
per-pipeline round trip (invoke, without and with ``close()``) and the HTTP requests each
costs (from ``LabServer.request_count``). Writes ``benchmarks/results/lab.txt``.

    .venv/bin/python benchmarks/bench_lab.py [--runs 50]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from bot.lab.server import LabServer, start_lab

RESULTS = Path(__file__).resolve().parent / "results" / "lab.txt"


def client(lab: LabServer) -> WSMan:
    user = lab.users[0]
    return WSMan(lab.host, port=lab.port, path="PowerShell/", ssl=False, auth=lab.auth,
                 username=user.qualified_name, password=user.password,
                 encryption="never" if lab.auth == "basic" else "auto")


def timed(runs: int, lab: LabServer, action: Callable[[], object]) -> tuple[list[float], float]:
    """Durations in ms of ``runs`` calls and the HTTP requests each used on average."""
    action()
    durations = []
    before = lab.request_count
    for _ in range(runs):
        started = time.perf_counter()
        action()
        durations.append((time.perf_counter() - started) * 1000)
    return durations, (lab.request_count - before) / runs


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def line(label: str, durations: list[float], requests: float) -> str:
    return (f"  {label:<44} median {statistics.median(durations):7.1f} ms   "
            f"p95 {percentile(durations, 0.95):7.1f} ms   {requests:4.1f} HTTP requests")


def bench(auth: str, runs: int) -> list[str]:
    lab = start_lab(auth=auth)
    try:
        def open_pool() -> None:
            pool = RunspacePool(client(lab), configuration_name="Microsoft.Exchange")
            pool.open()
            pool.close()

        wsman = client(lab)
        pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
        pool.open()

        def pipeline(cmdlet: str, *, close: bool) -> Callable[[], object]:
            def run() -> object:
                ps = PowerShell(pool)
                ps.add_cmdlet(cmdlet)
                output = ps.invoke()
                if close:
                    ps.close()
                return output
            return run

        title = "NTLM + message encryption" if auth == "ntlm" else "Basic, encryption='never'"
        lines = [f"{title}:"]
        lines.append(line("pool open + close (new client, auth)", *timed(runs, lab, open_pool)))
        for cmdlet in ("Get-ExchangeServer", "Get-ExchangeCertificate"):
            lines.append(line(f"pipeline {cmdlet}", *timed(runs, lab, pipeline(cmdlet,
                                                                               close=False))))
            lines.append(line(f"pipeline {cmdlet} + close()", *timed(
                runs, lab, pipeline(cmdlet, close=True))))
        pool.close()
        return lines
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    report = [
        "exchange-tls lab server benchmark (loopback, real pypsrp client)",
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; runs per measurement: {args.runs} "
        "(after one warm-up)",
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}; "
        f"pypsrp {version('pypsrp')}, psrpcore {version('psrpcore')}, "
        f"pyspnego {version('pyspnego')}",
        "",
    ]
    for auth in ("ntlm", "basic"):
        report.extend(bench(auth, args.runs))
        report.append("")
    report.append("Pool open + close: Create + Receive + Delete, plus the authentication round "
                  "trips of a new connection (NTLM: empty POST, 2 legs).")
    report.append("Pipeline: Command + Receive (output and Completed together); close() adds "
                  "a Signal.")
    text = "\n".join(report) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
