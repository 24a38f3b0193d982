"""Benchmark the Slack bot in HTTP mode (issue 4's numbers).

- acknowledgement latency of N concurrent signed ``/exchange-tls check EX01`` requests
  (p50/p99 over several rounds; goal: p99 under 100 ms), each one a real check afterwards;
- the time from the command to the report arriving at Slack, for one lab server (cold: the
  first check opens the runspace pool; warm: the pool is reused);
- the bot's idle memory (VmRSS after start, and after the load).

The bot runs as it does in production, ``exchange-tls bot --http`` in its own process, against
the Slack stand-in's Web API; the lab runs in this process (so its CA can be handed to the
bot as a trusted root). Run from the project root:

    python -m benchmarks.bench_bot [--concurrent 50] [--rounds 5] [--report-runs 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding

from bot.lab.model import ExchangeOrganisation
from bot.lab.server import LabServer
from bot.lab.state import default_state
from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_SIGNING_SECRET,
    SignedRequest,
    SlackStandIn,
    slash_command,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bot.txt"


class BotProcess:
    """``exchange-tls bot --http`` on a free loopback port."""

    def __init__(self, config: Path, environ: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "bot", "--http", "--host", "127.0.0.1",
             "--port", "0", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, **environ},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.process.kill()
            raise RuntimeError(f"bot did not start: {line}{self.process.stderr.read()}")  # type: ignore[union-attr]
        self.events_url = line.split("listening on ", 1)[1].split()[0]
        parts = urlsplit(self.events_url)
        self.host, self.port = parts.hostname or "127.0.0.1", int(parts.port or 80)

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def health(self) -> dict[str, object]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()

    def wait_idle(self, timeout: float = 300) -> float:
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health().get("jobs") == 0:
                return time.perf_counter() - started
            time.sleep(0.05)
        raise RuntimeError("the bot did not finish its jobs")

    def stop(self) -> tuple[int, float]:
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code, time.perf_counter() - started


def send(bot: BotProcess, signed: SignedRequest) -> tuple[int, float]:
    """POST on a new connection; (status, seconds until the whole answer was read)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(bot.host, bot.port, timeout=30)
    try:
        connection.request("POST", "/slack/events", body=signed.body, headers=signed.headers)
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


def burst_with_threads(bot: BotProcess, requests: list[SignedRequest]) -> list[float]:
    """The requests sent at the same moment from Python threads; their latencies."""
    barrier = threading.Barrier(len(requests))
    latencies: list[float] = [0.0] * len(requests)
    statuses: list[int] = [0] * len(requests)

    def one(index: int) -> None:
        barrier.wait()
        statuses[index], latencies[index] = send(bot, requests[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return latencies


def burst_with_curl(bot: BotProcess, requests: list[SignedRequest], curl: str) -> list[float]:
    """The requests sent at the same moment by ``curl --parallel`` (one C process, one event
    loop: no client-side GIL in the numbers); their ``time_total``."""
    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for index, signed in enumerate(requests):
            body = Path(tmp) / f"body-{index}"
            body.write_bytes(signed.body)
            headers = "".join(f'header = "{name}: {value}"\n'
                              for name, value in signed.headers.items())
            entries.append(
                f'url = "{bot.events_url}"\noutput = "/dev/null"\n'
                f'write-out = "%{{http_code}} %{{time_total}}\\n"\n'
                f'data-binary = "@{body}"\n{headers}'
            )
        config = Path(tmp) / "curl.conf"
        config.write_text("next\n".join(entries), encoding="utf-8")
        answer = subprocess.run(
            [curl, "--silent", "--parallel", "--parallel-immediate",
             "--parallel-max", str(len(requests)), "--config", str(config)],
            capture_output=True, text=True, check=True, timeout=120,
        )
    rows = [line.split() for line in answer.stdout.splitlines() if line.strip()]
    if len(rows) != len(requests) or {row[0] for row in rows} != {"200"}:
        raise RuntimeError(f"unexpected curl results: {rows[:5]}")
    return [float(row[1]) for row in rows]


def burst(bot: BotProcess, count: int, client: str) -> list[float]:
    """``count`` signed ``check EX01`` slash commands at once; their ack latencies."""
    requests = [slash_command(signing_secret=DEFAULT_SIGNING_SECRET, text="check EX01")
                for _ in range(count)]
    if client == "threads":
        return burst_with_threads(bot, requests)
    return burst_with_curl(bot, requests, client)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def command_to_report(bot: BotProcess, slack: SlackStandIn) -> float:
    """Seconds from sending ``check EX01`` to the report's chat.postMessage at Slack."""
    before = len(slack.calls("chat.postMessage"))
    signed = slash_command(signing_secret=DEFAULT_SIGNING_SECRET, text="check EX01")
    sent_at = time.time()
    status, _ = send(bot, signed)
    assert status == 200
    call = slack.wait_for(
        lambda: next((c for c in slack.calls("chat.postMessage")[before:] if c.ok), None),
        timeout=60,
    )
    return call.at - sent_at


def ack_latency(bot: BotProcess, concurrent: int, rounds: int, client: str) -> list[str]:
    """Rounds of ``concurrent`` commands at once, each round drained before the next."""
    burst(bot, min(concurrent, 10), client)  # warm-up
    bot.wait_idle()
    latencies: list[float] = []
    per_round: list[list[float]] = []
    drains: list[float] = []
    for _ in range(rounds):
        round_latencies = burst(bot, concurrent, client)
        latencies += round_latencies
        per_round.append(round_latencies)
        drains.append(bot.wait_idle())
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    worst_rounds = ", ".join(f"{max(r) * 1000:.0f}" for r in per_round)
    verdict = "PASS" if p99 < 0.100 else "FAIL"
    what = "curl --parallel (one C process)" if client != "threads" else "Python threads"
    return [
        f"acknowledgement latency, {concurrent} concurrent signed slash commands x {rounds} "
        f"rounds ({len(latencies)} requests, a new connection each; client: {what}):",
        f"  p50 {p50 * 1000:6.1f} ms   p95 {percentile(latencies, 0.95) * 1000:6.1f} ms   "
        f"p99 {p99 * 1000:6.1f} ms   max {max(latencies) * 1000:6.1f} ms   "
        f"(goal: p99 < 100 ms): {verdict}",
        f"  slowest ack of each round (ms): {worst_rounds}",
        f"  then the {concurrent} checks ran on the worker pool and were posted: "
        f"median {statistics.median(drains):.1f} s to drain a round",
        "",
    ]


def sustained_load(bot: BotProcess, slack: SlackStandIn, count: int, seconds: float) -> list[str]:
    """``count`` slash commands spread evenly over ``seconds`` (issue 7: 200 within 10 s)."""
    posted_before = sum(1 for c in slack.calls("chat.postMessage") if c.ok)
    responses_before = len(slack.responses())
    rss_before, _ = bot.rss_kib()
    latencies: list[float] = [0.0] * count
    statuses: list[int] = [0] * count
    requests = [slash_command(signing_secret=DEFAULT_SIGNING_SECRET, text="check EX01")
                for _ in range(count)]
    threads: list[threading.Thread] = []

    def one(index: int) -> None:
        statuses[index], latencies[index] = send(bot, requests[index])

    started = time.perf_counter()
    for index in range(count):
        delay = started + index * seconds / count - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one, args=(index,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    sent_in = time.perf_counter() - started
    drained = bot.wait_idle()
    posted = sum(1 for c in slack.calls("chat.postMessage") if c.ok) - posted_before
    busy = sum(1 for r in slack.responses()[responses_before:]
               if "I am busy" in json.dumps(r.body))
    rss_after, peak = bot.rss_kib()
    late = sum(1 for latency in latencies if latency >= 3.0)
    return [
        f"sustained load: {count} slash commands (check EX01) sent evenly over {seconds:g} s "
        f"(all sent in {sent_in:.1f} s), a new connection each:",
        f"  acks: p50 {percentile(latencies, 0.50) * 1000:.1f} ms, p99 "
        f"{percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
        f"HTTP 200: {statuses.count(200)}/{count}; later than Slack's 3 s: {late}",
        f"  reports posted: {posted}/{count}; told 'busy, nothing started' (queue full): {busy}; "
        f"unanswered: {count - posted - busy}; the worker pool drained {drained:.1f} s after "
        "the last command",
        f"  memory: VmRSS {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after, "
        f"peak {peak / 1024:.1f} MiB",
        "",
    ]


def run(concurrent: int, rounds: int, report_runs: int, clients: list[str],
        load_commands: int = 200, load_seconds: float = 10.0) -> str:
    now = datetime.now(UTC)
    organisation = ExchangeOrganisation(default_state(now=now), clock=lambda: datetime.now(UTC))
    lines = [
        f"exchange-tls bot benchmark (HTTP mode), {now:%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "bot: `exchange-tls bot --http` in its own process, workers = 4; Slack: the stand-in; "
        "Exchange: the lab (KB 2888788 state, NTLM), both in the benchmark process",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp, LabServer(organisation, auth="ntlm") as lab, \
            SlackStandIn(socket_mode=False) as slack:
        roots = Path(tmp) / "lab-roots.pem"
        roots.write_bytes(b"".join(c.public_bytes(Encoding.PEM)
                                   for c in organisation.public_root_certificates()))
        config = Path(tmp) / "exchange-tls.toml"
        config.write_text(
            f'[slack]\napi_url = "{slack.api_url}"\nworkers = 4\n\n'
            f'[[servers]]\nname = "EX01"\nurl = "{lab.url_for("EX01")}"\nauth = "ntlm"\n'
            'username_env = "EX01_USER"\npassword_env = "EX01_PASSWORD"\n\n'
            f'[trust]\nextra_public_roots = ["{roots}"]\n\n'
            f'[storage]\nurl = "sqlite:///{Path(tmp) / "bot.db"}"\n',
            encoding="utf-8",
        )
        user = lab.users[0]
        bot = BotProcess(config, {
            "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
            "SLACK_SIGNING_SECRET": DEFAULT_SIGNING_SECRET,
            "EX01_USER": f"{user.domain}\\{user.name}",
            "EX01_PASSWORD": user.password,
        })
        try:
            bot.health()
            time.sleep(1.0)
            idle_rss, _ = bot.rss_kib()

            times = [command_to_report(bot, slack) for _ in range(report_runs)]
            bot.wait_idle()
            cold, warm = times[0], times[1:]
            lines.append("command -> report at Slack, one lab server (check EX01):")
            lines.append(f"  cold (first check, pool opened)   {cold * 1000:7.1f} ms")
            if warm:
                lines.append(
                    f"  warm (pool reused), {len(warm)} runs     median "
                    f"{statistics.median(warm) * 1000:6.1f} ms   min {min(warm) * 1000:6.1f} ms"
                    f"   max {max(warm) * 1000:6.1f} ms"
                )
            lines.append("")

            for client in clients:
                lines += ack_latency(bot, concurrent, rounds, client)
            if load_commands:
                lines += sustained_load(bot, slack, load_commands, load_seconds)
            reports = sum(1 for c in slack.calls("chat.postMessage") if c.ok)
            lines.append(f"Slack: {reports} reports posted in all, "
                         f"{sum(1 for c in slack.calls() if not c.ok)} failed calls")
            lines.append("")
            loaded_rss, peak = bot.rss_kib()
            lines.append("memory of the bot process (/proc/PID/status):")
            lines.append(f"  idle after start   VmRSS {idle_rss / 1024:6.1f} MiB")
            lines.append(f"  after the load     VmRSS {loaded_rss / 1024:6.1f} MiB   "
                         f"VmHWM {peak / 1024:6.1f} MiB")
        finally:
            code, seconds = bot.stop()
        lines.append("")
        lines.append(f"SIGTERM -> exit {code} in {seconds * 1000:.0f} ms")
        lines.append("")
        lines.append(
            f"command: python -m benchmarks.bench_bot --concurrent {concurrent} --rounds {rounds}"
            f" --report-runs {report_runs} --load-commands {load_commands}"
            f" --load-seconds {load_seconds:g}" + (" --threads" if clients == ["threads"] else "")
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--report-runs", type=int, default=10)
    parser.add_argument("--load-commands", type=int, default=200)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--threads", action="store_true",
                        help="send the bursts from Python threads only (default: curl, if "
                        "installed, then Python threads)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    curl = shutil.which("curl")
    clients = ["threads"] if args.threads or curl is None else [curl, "threads"]
    text = run(args.concurrent, args.rounds, args.report_runs, clients, args.load_commands,
               args.load_seconds)
    sys.stdout.write(text)
    if not args.no_save:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
