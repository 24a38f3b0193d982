"""`exchange-tls check` against the protocol floor (issue 7, item 6).

The floor is a minimal pypsrp script that opens a runspace pool on the same lab server and runs
the same cmdlets the check runs, and nothing else: no parsing, no analysis, no report. Both are
measured in one run, interleaved, against one lab process (`exchange-tls lab serve`), two ways:

- whole commands: `exchange-tls check --config C --format json` vs `python floor.py`, each a
  fresh process (interpreter start and imports included, as a person or a cron job sees it);
- in process: one cold check (pool open, read, analysis, report) vs the floor's pool open and
  cmdlets, after imports.

Goal: the check within 1.3x of the floor. Run from the project root:

    python -m benchmarks.bench_floor [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.bench_check import PASSWORD, LabProcess, fleet_state

ROOT = Path(__file__).resolve().parents[1]

FLOOR_SCRIPT = textwrap.dedent('''
    """The protocol floor: the check's cmdlets with plain pypsrp, nothing more."""
    import os
    import sys

    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    from bot.exchange.remote_object import TolerantPypsrpSerializer

    port, server = int(sys.argv[1]), sys.argv[2]
    wsman = WSMan("127.0.0.1", port=port, path=f"PowerShell/{server}/", ssl=False, auth="ntlm",
                  username=os.environ["LAB_USER"], password=os.environ["LAB_PASSWORD"])
    pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
    # Without it pypsrp 0.9 cannot read Get-SendConnector at all (KeyError): the floor needs it.
    pool._serializer = pool._fragmenter.serializer = TolerantPypsrpSerializer()
    pool.open()
    commands = [("Get-ExchangeServer", {"Identity": server}),
                ("Get-ExchangeCertificate", {"Server": server}),
                ("Get-SendConnector", {}),
                ("Get-ReceiveConnector", {"Server": server}),
                ("Get-HybridConfiguration", {}),
                ("Get-Queue", {"Server": server})]
    count = 0
    for cmdlet, parameters in commands:
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            ps.add_parameter(name, value)
        count += len(ps.invoke())
    pool.close()
    print(count)
''')


def run_command(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1, 2):
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def in_process_check(port: int, trust: object) -> float:
    from bot.check import check_fleet
    from bot.config import ServerSettings
    from bot.exchange.session import Credentials, SessionCache

    settings = ServerSettings(name="EX01", url=f"http://127.0.0.1:{port}/PowerShell/EX01/",
                              auth="ntlm")
    cache = SessionCache(credentials=lambda _: Credentials("CONTOSO\\bench", PASSWORD))
    started = time.perf_counter()
    check_fleet((settings,), cache, trust)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    cache.close_all()
    return elapsed


def in_process_floor(port: int) -> float:
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    from bot.exchange.remote_object import TolerantPypsrpSerializer

    started = time.perf_counter()
    wsman = WSMan("127.0.0.1", port=port, path="PowerShell/EX01/", ssl=False, auth="ntlm",
                  username="CONTOSO\\bench", password=PASSWORD)
    pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
    pool._serializer = pool._fragmenter.serializer = TolerantPypsrpSerializer()
    pool.open()
    for cmdlet, parameters in (("Get-ExchangeServer", {"Identity": "EX01"}),
                               ("Get-ExchangeCertificate", {"Server": "EX01"}),
                               ("Get-SendConnector", {}),
                               ("Get-ReceiveConnector", {"Server": "EX01"}),
                               ("Get-HybridConfiguration", {}),
                               ("Get-Queue", {"Server": "EX01"})):
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            ps.add_parameter(name, value)
        ps.invoke()
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "floor.txt"))
    args = parser.parse_args()

    from bot.config import TrustSettings
    from bot.lab.model import ExchangeOrganisation
    from bot.lab.state import load_state
    from bot.runner import trust_store_for

    with tempfile.TemporaryDirectory() as tmp:
        state_file = Path(tmp) / "one.yaml"
        state_file.write_text(fleet_state(1, 0), encoding="utf-8")
        floor_file = Path(tmp) / "floor.py"
        floor_file.write_text(FLOOR_SCRIPT, encoding="utf-8")
        now = datetime.now(UTC)
        organisation = ExchangeOrganisation(load_state(state_file, now=now), clock=lambda: now)
        trust = trust_store_for(TrustSettings(), organisation.public_root_certificates())
        roots = Path(tmp) / "lab-roots.pem"
        from cryptography.hazmat.primitives.serialization import Encoding

        roots.write_bytes(b"".join(c.public_bytes(Encoding.PEM)
                                   for c in organisation.public_root_certificates()))
        lab = LabProcess(state_file)
        try:
            config = Path(tmp) / "config.toml"
            config.write_text(textwrap.dedent(f"""
                [[servers]]
                name = "EX01"
                url = "{lab.url('EX01')}"
                auth = "ntlm"
                username_env = "LAB_USER"
                password_env = "LAB_PASSWORD"

                [trust]
                extra_public_roots = ["{roots}"]
            """), encoding="utf-8")
            env = dict(os.environ, LAB_USER="CONTOSO\\bench", LAB_PASSWORD=PASSWORD,
                       PYTHONPATH=str(ROOT))
            check_argv = [sys.executable, "-m", "bot.cli", "check", "--config", str(config),
                          "--format", "json"]
            floor_argv = [sys.executable, str(floor_file), str(lab.port), "EX01"]
            run_command(check_argv, env)
            run_command(floor_argv, env)
            in_process_check(lab.port, trust)
            in_process_floor(lab.port)
            cmd_check, cmd_floor, proc_check, proc_floor = [], [], [], []
            for _ in range(args.runs):
                cmd_check.append(run_command(check_argv, env))
                cmd_floor.append(run_command(floor_argv, env))
                proc_check.append(in_process_check(lab.port, trust))
                proc_floor.append(in_process_floor(lab.port))
        finally:
            lab.stop()

    def line(label: str, check: list[float], floor: list[float]) -> str:
        ratio = statistics.median(check) / statistics.median(floor)
        verdict = "PASS" if ratio <= 1.3 else "FAIL"
        return (f"{label}: check median {statistics.median(check) * 1000:.0f} ms, floor median "
                f"{statistics.median(floor) * 1000:.0f} ms, ratio {ratio:.2f}x "
                f"(goal <= 1.3x: {verdict})")

    text = "\n".join([
        f"exchange-tls check vs the pypsrp floor, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.runs} interleaved runs",
        "one lab server (KB fault), NTLM with message encryption, no injected latency",
        line("whole command (process start, imports, config, trust store, report)",
             cmd_check, cmd_floor),
        line("in process (pool open, the same 6 cmdlets; check adds parsing, analysis, report)",
             proc_check, proc_floor),
        f"command: python -m benchmarks.bench_floor --runs {args.runs}",
    ]) + "\n"
    print(text, end="")
    Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
