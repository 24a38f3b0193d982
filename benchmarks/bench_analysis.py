"""Benchmark: analyse 50 servers x 20 certificates (1,000 certificates) against certifi + test CAs.

Run from the project root: ``.venv/bin/python -m benchmarks.bench_analysis``.
Certificate generation is not timed. Each timed run starts with empty parse caches, so every
certificate is parsed and its chain built; the goal is well under a second for the fleet.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import replace

import cryptography

from bot.analysis import analyse_server, build_report, load_trust_store
from bot.analysis.certificates import clear_caches
from bot.exchange.snapshot import (
    ExchangeServer,
    ExchangeService,
    RootCAType,
    ServerSnapshot,
)
from tests.unit.certgen import (
    NOW,
    cloud_connector,
    days,
    ec_key,
    exchange_certificate,
    issue_leaf,
    pki,
    rejected_queue,
    rsa_key,
)

SERVERS = 50
CERTIFICATES_PER_SERVER = 20
RUNS = 5


def server_snapshot(index: int) -> ServerSnapshot:
    p = pki()
    name = f"EX{index:02d}"
    fqdn = f"{name.lower()}.contoso.com"
    smtp_iis = ExchangeService.IIS | ExchangeService.SMTP
    certificates = [
        exchange_certificate(
            issue_leaf(p.public_ca, "mail.contoso.com", domains=("mail.contoso.com", fqdn),
                       not_before=NOW - days(100), key=ec_key(1)),
            services=smtp_iis, root_ca_type=RootCAType.THIRD_PARTY,
        ),
        exchange_certificate(
            issue_leaf(p.internal_root, fqdn, domains=(fqdn,), not_before=NOW - days(5),
                       key=ec_key(2)),
            services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.SMTP,
            root_ca_type=RootCAType.ENTERPRISE,
        ),
        exchange_certificate(
            issue_leaf(None, name, domains=(name, fqdn), not_before=NOW - days(700),
                       not_after=NOW + days(1100), key=ec_key(3)),
            services=ExchangeService.IMAP | ExchangeService.POP | smtp_iis,
            root_ca_type=RootCAType.REGISTRY,
        ),
        exchange_certificate(
            issue_leaf(None, "Microsoft Exchange Server Auth Certificate",
                       not_before=NOW - days(700), not_after=NOW + days(20), key=ec_key(4)),
            services=ExchangeService.SMTP, root_ca_type=RootCAType.NONE,
        ),
    ]
    for extra in range(CERTIFICATES_PER_SERVER - len(certificates)):
        kind = extra % 4
        issuer = None if kind == 0 else p.internal_root if kind == 1 else p.public_ca
        key = rsa_key(1024, 0) if kind == 3 else ec_key(10 + kind)
        certificates.append(exchange_certificate(
            issue_leaf(issuer, f"app{extra}.contoso.com", domains=(f"app{extra}.contoso.com",),
                       not_before=NOW - days(200 + extra), not_after=NOW + days(extra * 7 - 20),
                       key=key),
            services=ExchangeService.IIS if extra % 2 else ExchangeService.NONE,
        ))
    return ServerSnapshot(
        server=ExchangeServer(name=name, fqdn=fqdn),
        taken_at=NOW,
        certificates=tuple(certificates),
        send_connectors=(cloud_connector(None, source_transport_servers=()),),
        queues=(rejected_queue(),),
    )


def main() -> None:
    p = pki()
    certifi_store = load_trust_store()
    store = replace(
        certifi_store,
        public_roots=(*certifi_store.public_roots, p.public_root.cert),
        intermediates=(p.public_ca.cert,),
        internal_roots=(p.internal_root.cert,),
        description=certifi_store.description + " + test CAs",
    )
    snapshots = [server_snapshot(index) for index in range(SERVERS)]
    total = sum(len(s.certificates) for s in snapshots)

    timings = []
    for _ in range(RUNS):
        clear_caches()
        start = time.perf_counter()
        analyses = [analyse_server(snapshot, store, NOW) for snapshot in snapshots]
        report = build_report(analyses, NOW)
        timings.append(time.perf_counter() - start)

    findings = sum(len(a.findings) for a in report.servers)
    plans = sum(1 for a in report.servers if a.plan is not None)
    print(f"exchange-tls analysis benchmark ({time.strftime('%Y-%m-%d')})")
    print(f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
          f"{platform.machine()}")
    print(f"trust store: {store.description}")
    print(f"servers: {SERVERS}, certificates: {total}, runs: {RUNS} (caches cleared per run)")
    print(f"verdict: {report.verdict}, findings: {findings}, plans: {plans}")
    print(f"fleet analysis: best {min(timings):.3f} s, median {statistics.median(timings):.3f} s,"
          f" worst {max(timings):.3f} s")
    print(f"per certificate (median): {statistics.median(timings) / total * 1e6:.0f} us")
    sys.exit(0 if statistics.median(timings) < 1.0 else 1)


if __name__ == "__main__":
    main()
