"""`exchange-tls analyze` on every real Exchange export in the shared fixtures."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.analysis.json_report import report_to_json
from bot.analysis.model import FindingCode, ServerAnalysis
from bot.cli import main
from bot.runner import run_analyze_command

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "exchange-clixml"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}"
)


def analyse(*names: str) -> ServerAnalysis:
    report = run_analyze_command(
        [FIXTURES / name for name in names], config_path=None, server_name=None, now=NOW
    )
    (server,) = report.servers
    return server


def codes(server: ServerAnalysis) -> set[FindingCode]:
    return {finding.code for finding in server.findings}


ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.xml")) if FIXTURES.is_dir() else []


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_is_analysed_without_error_and_renders(name: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["analyze", str(FIXTURES / name), "--format", "json"], out=out, err=err)
    assert code in (0, 1, 2), err.getvalue()
    report = json.loads(out.getvalue())
    assert report["verdict"] in ("ok", "warning", "critical")
    for server in report["servers"]:
        for certificate in server["certificates"]:
            assert certificate["trust"] in ("public", "internal", "self-signed", "unknown")
            assert certificate["thumbprint"] == certificate["thumbprint"].upper()


def test_rawdata_only_export_gives_services_unknown_not_a_guess() -> None:
    server = analyse("deserialized-rawdata-only.xml")
    assert FindingCode.SERVICES_UNKNOWN in codes(server)
    assert server.certificates
    assert all(c.cert.services is None for c in server.certificates)
    assert FindingCode.SMTP_MIXED_TRUST_BINDING not in codes(server)
    assert server.plan is None


def test_cloud_connector_pinned_to_self_signed_localhost_certificate() -> None:
    server = analyse(
        "e2019-send-connectors.xml", "e2019-four-certs.xml", "e2019-hybrid-configuration.xml"
    )
    (connector,) = [c for c in server.send_connectors if c.name == "Mail to O365"]
    assert connector.is_cloud
    assert connector.tls_certificate_name is not None
    assert connector.tls_certificate_name.raw == "<I>CN=localhost<S>CN=localhost"
    found = {f.code: f for f in server.findings}
    not_found = found[FindingCode.CONNECTOR_TLS_CERT_NOT_FOUND]
    assert not_found.severity == "critical"
    assert "Mail to O365" in not_found.summary
    localhost = [c for c in server.certificates if c.cert.subject == "CN=localhost"]
    assert [c.thumbprint for c in localhost] == list(not_found.thumbprints)
    mismatch = found[FindingCode.CONNECTOR_TLS_CERT_MISMATCH]
    assert "GeoTrust" in mismatch.summary
    (outbound,) = server.outbound
    assert outbound.thumbprint is None


def test_two_smtp_certificates_are_seen_with_their_services() -> None:
    server = analyse("e2019-multiple-smtp-matches.xml")
    smtp = [c for c in server.certificates if c.has_smtp]
    assert len(smtp) >= 2
    assert all(c.cert.services_source == "serialization-data" for c in server.certificates)


def test_expired_and_sha1_certificates_of_a_real_server() -> None:
    server = analyse("e2019-solo.xml")
    found = codes(server)
    assert FindingCode.CERT_EXPIRED in found
    assert FindingCode.CERT_WEAK_SIGNATURE in found
    weak = [f for f in server.findings if f.code == FindingCode.CERT_WEAK_SIGNATURE]
    assert all(f.severity == "info" for f in weak)  # self-signed: nothing trusts the signature


def test_eight_certificate_server_is_parsed_completely() -> None:
    server = analyse("e2016-eight-certs.xml")
    assert len(server.certificates) == 8
    assert report_to_json_roundtrip(server)


def report_to_json_roundtrip(server: ServerAnalysis) -> bool:
    from bot.analysis.verdict import build_report

    text = json.dumps(report_to_json(build_report((server,), NOW)))
    return len(json.loads(text)["servers"][0]["certificates"]) == len(server.certificates)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<Objs><Obj RefId='0'>", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = main(["analyze", str(broken)], out=out, err=err)
    assert code == 3
    assert "broken.xml" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert out.getvalue() == ""
