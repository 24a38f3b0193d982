"""Verdicts, exit codes and the JSON report of docs/product.md section 6."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bot.analysis.analyse import analyse_server, unreachable_server
from bot.analysis.json_report import report_to_json
from bot.analysis.model import Finding, FindingCode, ServerAnalysis, Verdict
from bot.analysis.verdict import build_report, exit_code, server_verdict
from bot.exchange.snapshot import ServicesSource
from tests.unit.certgen import NOW, healthy_scenario, kb_scenario, pki


def critical_server() -> ServerAnalysis:
    return analyse_server(kb_scenario().snapshot, pki().store, NOW)


def healthy_server() -> ServerAnalysis:
    return analyse_server(healthy_scenario().snapshot, pki().store, NOW)


def warning_server() -> ServerAnalysis:
    finding = Finding(FindingCode.CERT_EXPIRING, "warning", "expires soon", ("AA",), "renew")
    return replace(healthy_server(), findings=(finding,))


UNREACHABLE = unreachable_server("EX09", "ex09.contoso.com", "timed out")


@pytest.mark.parametrize(
    ("servers", "verdict"),
    [
        ([], "unknown"),
        (["ok"], "ok"),
        (["ok", "warning"], "warning"),
        (["warning", "unreachable"], "unknown"),
        (["unreachable", "critical"], "critical"),
        (["ok", "critical", "warning"], "critical"),
    ],
)
def test_fleet_verdict_order(servers: list[str], verdict: Verdict) -> None:
    make = {
        "ok": healthy_server, "warning": warning_server, "critical": critical_server,
        "unreachable": lambda: UNREACHABLE,
    }
    report = build_report([make[name]() for name in servers], NOW)
    assert report.verdict == verdict


def test_server_verdicts() -> None:
    assert server_verdict(healthy_server()) == "ok"
    assert server_verdict(warning_server()) == "warning"
    assert server_verdict(critical_server()) == "critical"
    assert server_verdict(UNREACHABLE) == "unknown"


@pytest.mark.parametrize(
    ("verdict", "code"), [("ok", 0), ("warning", 1), ("critical", 2), ("unknown", 3)]
)
def test_exit_codes(verdict: Verdict, code: int) -> None:
    assert exit_code(verdict) == code


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_json_report_shape() -> None:
    scenario = kb_scenario()
    report = build_report([critical_server(), UNREACHABLE], NOW)
    data = report_to_json(report)
    json.dumps(data)
    assert data["verdict"] == "critical"
    assert data["generated_at"] == "2026-03-01T12:00:00Z"
    server, unreachable = data["servers"]
    assert set(server) >= {
        "name", "fqdn", "reachable", "error", "certificates", "send_connectors", "outbound",
        "queues", "findings", "plan",
    }
    assert (server["name"], server["fqdn"], server["reachable"], server["error"]) == (
        "EX01", "ex01.contoso.com", True, None,
    )
    for cert in server["certificates"]:
        assert set(cert) >= {
            "thumbprint", "subject", "issuer", "domains", "not_before", "not_after",
            "services", "trust", "trust_evidence",
        }
        assert re.fullmatch(r"[0-9A-F]{40}", cert["thumbprint"])
        assert ISO_UTC.match(cert["not_before"])
        assert ISO_UTC.match(cert["not_after"])
        assert cert["trust"] in {"public", "internal", "self-signed", "unknown"}
        assert cert["trust_evidence"]
    by_thumbprint = {c["thumbprint"]: c for c in server["certificates"]}
    assert by_thumbprint[scenario.internal.thumbprint]["services"] == ["IMAP", "POP", "SMTP"]
    assert by_thumbprint[scenario.internal.thumbprint]["trust"] == "internal"
    assert by_thumbprint[scenario.public.thumbprint]["trust"] == "public"
    assert by_thumbprint[scenario.default.thumbprint]["trust"] == "self-signed"

    connector = server["send_connectors"][0]
    assert connector["name"] == "Outbound to Office 365 - 6f1e2a"
    assert connector["cloud"] is True
    assert connector["tls_certificate_name"] is None
    assert connector["smart_hosts"] == ["contoso.mail.protection.outlook.com"]

    outbound = server["outbound"][0]
    assert outbound["connector"] == connector["name"]
    assert outbound["thumbprint"] == scenario.internal.thumbprint
    assert "newest NotBefore first" in outbound["reason"]

    assert server["queues"][0]["message_count"] == 25
    assert "454 4.7.0" in server["queues"][0]["last_error"]

    assert [f["code"] for f in server["findings"]][:3] == [
        "SMTP_MIXED_TRUST_BINDING", "OUTBOUND_CERT_UNTRUSTED", "QUEUE_TLS_REJECTED",
    ]
    for finding in server["findings"]:
        assert set(finding) == {"code", "severity", "summary", "thumbprints", "remedy"}
        assert finding["severity"] in {"info", "warning", "critical"}

    plan = server["plan"]
    assert re.fullmatch(r"[0-9a-f]{64}", plan["hash"])
    assert plan["short_hash"] == plan["hash"][:12]
    first = plan["steps"][0]
    assert set(first) >= {"cmdlet", "parameters", "display", "before", "after",
                          "skipped_reason"}
    assert first["parameters"] == {
        "Identity": "Outbound to Office 365 - 6f1e2a",
        "TlsCertificateName": f"<I>{scenario.public.issuer}<S>{scenario.public.subject}",
    }
    unbind = next(s for s in plan["steps"] if s["kind"] == "unbind_smtp" and s["display"])
    assert unbind["parameters"]["Services"] == ["IMAP", "POP"]

    assert unreachable["reachable"] is False
    assert unreachable["error"] == "timed out"
    assert unreachable["plan"] is None
    assert unreachable["certificates"] == []
    assert unreachable["findings"][0]["code"] == "SERVER_UNREACHABLE"


def test_unknown_services_are_null_in_json() -> None:
    scenario = healthy_scenario()
    blind = tuple(replace(c, services=None, services_source=ServicesSource.UNKNOWN)
                  for c in scenario.snapshot.certificates)
    analysis = analyse_server(replace(scenario.snapshot, certificates=blind), pki().store, NOW)
    data = report_to_json(build_report([analysis], NOW))
    assert all(c["services"] is None for c in data["servers"][0]["certificates"])
    assert data["servers"][0]["plan"] is None


def test_healthy_report_is_ok_without_plan() -> None:
    data = report_to_json(build_report([healthy_server()], NOW))
    assert data["verdict"] == "ok"
    assert data["servers"][0]["findings"] == []
    assert data["servers"][0]["plan"] is None
    assert data["servers"][0]["outbound"][0]["thumbprint"] == healthy_scenario().public.thumbprint
