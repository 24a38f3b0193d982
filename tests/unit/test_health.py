"""Health summaries of scheduled posts: the diff with the previous post, expiring certificates,
mentions only on critical, the stored JSON, and the Slack messages within Slack's limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from bot.analysis.analyse import unreachable_server
from bot.analysis.model import (
    CertificateAnalysis,
    Finding,
    FindingCode,
    ServerAnalysis,
    Severity,
)
from bot.analysis.verdict import build_report
from bot.exchange.snapshot import ExchangeCertificate, ExchangeService
from bot.health import (
    HealthSummary,
    decode_stored_result,
    finding_key,
    findings_fingerprint,
    findings_json,
    mention_markup,
    summarise,
)
from bot.render.blocks import SlackMessage
from bot.render.health import render_health_summary
from bot.slack_standin.blocks import validate_message

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=1)
PUBLIC_TP = "59" + "AB" * 19
INTERNAL_TP = "88" + "CD" * 19
OLD_TP = "A6" + "EF" * 19


def cert_analysis(thumbprint: str, subject: str, days_left: int) -> CertificateAnalysis:
    cert = ExchangeCertificate(
        thumbprint=thumbprint, der=b"", subject=subject, issuer="CN=Test CA",
        serial_number="01", domains=(), not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=days_left), self_signed=False, key_algorithm="RSA",
        key_size=2048, signature_hash="sha256", extended_key_usages=(),
        services=ExchangeService.SMTP)
    return CertificateAnalysis(
        cert=cert, trust="public", evidence=(), matches_fqdn=True, matched_names=(),
        within_validity=days_left >= 0, days_left=days_left, in_use=True)


def finding(code: FindingCode, severity: Severity, *thumbprints: str,
            summary: str | None = None) -> Finding:
    return Finding(code, severity, summary or f"{code} on {', '.join(thumbprints) or '-'}",
                   tuple(thumbprints), "Set-SendConnector -Identity 'x' -TlsCertificateName y")


def server(name: str, *findings: Finding,
           certificates: tuple[CertificateAnalysis, ...] = ()) -> ServerAnalysis:
    return ServerAnalysis(
        name=name, fqdn=f"{name.lower()}.contoso.com", reachable=True, error=None,
        certificates=certificates, send_connectors=(), outbound=(), queues=(),
        findings=tuple(findings), plan=None, taken_at=NOW)


MIXED = finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "critical", PUBLIC_TP, INTERNAL_TP)
UNTRUSTED = finding(FindingCode.OUTBOUND_CERT_UNTRUSTED, "critical", INTERNAL_TP)
WEAK = finding(FindingCode.CERT_WEAK_SIGNATURE, "warning", OLD_TP)


def stored(analysis: ServerAnalysis, previous: str | None = None,
           at: datetime = EARLIER) -> str:
    return findings_json(analysis, checked_at=at, previous=previous)


def summary_of(*servers: ServerAnalysis, previous: Mapping[str, str | None] | None = None,
               mention: str | None = None) -> HealthSummary:
    return summarise(build_report(servers, NOW), previous or {}, NOW, mention=mention)


def keys(changes: tuple[object, ...]) -> set[tuple[str, str]]:
    return {(c.server, c.code) for c in changes}  # type: ignore[attr-defined]


# --- identity and storage -----------------------------------------------------------------


def test_identity_is_server_code_and_sorted_thumbprints() -> None:
    assert finding_key("EX01", "X", ["b", "A"]) == finding_key("ex01", "X", ["a", "B"])
    assert finding_key("EX01", "X", ["A"]) != finding_key("EX02", "X", ["A"])
    assert finding_key("EX01", "X", ["A"]) != finding_key("EX01", "Y", ["A"])
    reworded = finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "warning", INTERNAL_TP, PUBLIC_TP,
                       summary="worded differently")
    assert findings_fingerprint("EX01", [MIXED, WEAK]) == findings_fingerprint(
        "EX01", [WEAK, reworded])
    assert findings_fingerprint("EX01", [MIXED]) != findings_fingerprint("EX01", [MIXED, WEAK])


def test_stored_json_round_trips() -> None:
    text = stored(server("EX01", MIXED, WEAK))
    document = json.loads(text)
    assert document["format"] == 1
    assert {f["code"] for f in document["findings"]} == {
        "SMTP_MIXED_TRUST_BINDING", "CERT_WEAK_SIGNATURE"}
    result = decode_stored_result(text)
    assert result is not None
    assert result.server == "EX01"
    assert result.verdict == "critical"
    assert result.checked_at == EARLIER
    assert result.fingerprint == findings_fingerprint("EX01", [MIXED, WEAK])


@pytest.mark.parametrize("text", [None, "", "not json", "[]", '{"format": 99}',
                                  '{"format": 1, "server": "EX01"}'])
def test_unreadable_previous_means_nothing_to_compare(text: str | None) -> None:
    assert decode_stored_result(text) is None
    summary = summary_of(server("EX01", MIXED), previous={"EX01": text})
    assert summary.new == ()
    assert summary.resolved == ()
    assert summary.first_checks == ("EX01",)


# --- the diff -----------------------------------------------------------------------------


def test_new_resolved_and_unchanged_since_the_previous_post() -> None:
    before = {"EX01": stored(server("EX01", MIXED, WEAK)), "EX02": stored(server("EX02"))}
    summary = summary_of(server("EX01", MIXED, UNTRUSTED), server("EX02", WEAK),
                         previous=before)
    assert keys(summary.new) == {("EX01", "OUTBOUND_CERT_UNTRUSTED"),
                                 ("EX02", "CERT_WEAK_SIGNATURE")}
    assert keys(summary.resolved) == {("EX01", "CERT_WEAK_SIGNATURE")}
    assert keys(summary.unchanged) == {("EX01", "SMTP_MIXED_TRUST_BINDING")}
    assert summary.new[0].severity == "critical"
    assert summary.first_checks == ()


def test_reworded_or_reordered_findings_are_not_new() -> None:
    reworded = finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "critical", INTERNAL_TP.lower(),
                       PUBLIC_TP, summary="now worded otherwise")
    summary = summary_of(server("ex01", reworded),
                         previous={"EX01": stored(server("EX01", MIXED))})
    assert summary.new == ()
    assert summary.resolved == ()
    assert len(summary.unchanged) == 1


def test_same_code_on_another_certificate_is_new() -> None:
    other = finding(FindingCode.SMTP_MIXED_TRUST_BINDING, "critical", PUBLIC_TP, OLD_TP)
    summary = summary_of(server("EX01", other), previous={"EX01": stored(server("EX01", MIXED))})
    assert [c.thumbprints for c in summary.new] == [tuple(sorted((PUBLIC_TP, OLD_TP)))]
    assert [c.thumbprints for c in summary.resolved] == [tuple(sorted((PUBLIC_TP, INTERNAL_TP)))]


def test_server_without_previous_result_is_a_first_check() -> None:
    summary = summary_of(server("EX01", MIXED), server("EX02", WEAK),
                         previous={"EX01": stored(server("EX01", MIXED)), "EX02": None})
    assert summary.first_checks == ("EX02",)
    assert summary.new == ()
    assert summary.compared_any


def test_unreachable_server_keeps_its_findings_until_it_is_back() -> None:
    first = stored(server("EX01", MIXED, WEAK))
    down = unreachable_server("EX01", "ex01.contoso.com", "connection refused")

    went_away = summary_of(down, previous={"EX01": first})
    assert keys(went_away.new) == {("EX01", "SERVER_UNREACHABLE")}
    assert went_away.resolved == ()

    still_down = stored(down, previous=first)
    assert {f.code for f in decode_stored_result(still_down).carried} == {  # type: ignore[union-attr]
        "SMTP_MIXED_TRUST_BINDING", "CERT_WEAK_SIGNATURE"}
    again = summary_of(down, previous={"EX01": still_down})
    assert again.new == ()
    assert again.resolved == ()

    back = summary_of(server("EX01", MIXED), previous={"EX01": stored(down, previous=still_down)})
    assert keys(back.resolved) == {("EX01", "SERVER_UNREACHABLE"), ("EX01", "CERT_WEAK_SIGNATURE")}
    assert back.new == ()


def test_expiring_certificates_with_days_left_soonest_first() -> None:
    expiring = cert_analysis(PUBLIC_TP, "CN=mail.contoso.com", 12)
    expired = cert_analysis(OLD_TP, "CN=old.contoso.com", -3)
    summary = summary_of(server(
        "EX01",
        finding(FindingCode.CERT_EXPIRING, "warning", PUBLIC_TP),
        finding(FindingCode.CERT_EXPIRED, "critical", OLD_TP),
        WEAK,
        certificates=(expiring, expired),
    ))
    assert [(e.thumbprint, e.days_left, e.code) for e in summary.expiring] == [
        (OLD_TP, -3, FindingCode.CERT_EXPIRED), (PUBLIC_TP, 12, FindingCode.CERT_EXPIRING)]
    assert summary.expiring[1].subject == "CN=mail.contoso.com"


# --- mentions -----------------------------------------------------------------------------


def test_mention_markup_for_groups_and_users() -> None:
    assert mention_markup("S0ONCALL") == "<!subteam^S0ONCALL>"
    assert mention_markup("U012ABCDEF") == "<@U012ABCDEF>"
    assert mention_markup("W012ABCDEF") == "<@W012ABCDEF>"
    with pytest.raises(ValueError, match="not a Slack"):
        mention_markup("channel")


def all_text(messages: tuple[SlackMessage, ...]) -> str:
    return json.dumps([[m.text, list(m.blocks)] for m in messages])


def test_group_is_mentioned_only_when_something_is_critical() -> None:
    critical = summary_of(server("EX01", MIXED), server("EX02"), mention="S0ONCALL")
    warning = summary_of(server("EX01", WEAK), mention="S0ONCALL")
    assert critical.critical
    assert critical.mention_markup == "<!subteam^S0ONCALL>"
    assert not warning.critical
    assert warning.mention_markup is None

    channel = render_health_summary(critical, schedule_label="0 8 * * 1-5")[0]
    assert channel.text.startswith("<!subteam^S0ONCALL> ")
    assert "<!subteam^S0ONCALL>" in json.dumps(channel.blocks)
    assert "<!subteam^" not in all_text(render_health_summary(warning, schedule_label="x"))


def test_user_mention_and_no_mention_configured() -> None:
    user = render_health_summary(summary_of(server("EX01", MIXED), mention="U012ABCDEF"),
                                 schedule_label="x")
    assert user[0].text.startswith("<@U012ABCDEF> ")
    nobody = render_health_summary(summary_of(server("EX01", MIXED)), schedule_label="x")
    assert "<@" not in all_text(nobody)
    assert "<!subteam^" not in all_text(nobody)


# --- rendering ----------------------------------------------------------------------------


def assert_valid(messages: tuple[SlackMessage, ...]) -> None:
    for number, message in enumerate(messages):
        assert validate_message(message.text, list(message.blocks)) == [], number
        assert len(message.blocks) <= 50
        for block in message.blocks:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000


def test_channel_message_has_verdicts_expiring_and_changes_and_thread_has_details() -> None:
    before = {"EX01": stored(server("EX01", WEAK)), "EX02": stored(server("EX02"))}
    summary = summary_of(
        server("EX01", MIXED, finding(FindingCode.CERT_EXPIRING, "warning", PUBLIC_TP),
               certificates=(cert_analysis(PUBLIC_TP, "CN=mail.contoso.com", 12),)),
        server("EX02"),
        previous=before, mention="S0ONCALL")
    messages = render_health_summary(summary, schedule_label="0 8 * * 1-5 (Europe/Amsterdam)")
    assert_valid(messages)
    channel = json.dumps(messages[0].blocks)
    assert "Exchange TLS health: CRITICAL" in channel
    assert "*EX01*" in channel
    assert "*EX02*" in channel
    assert "in 12 days" in channel
    assert "New since the last post* (2)" in channel
    assert "SMTP_MIXED_TRUST_BINDING" in channel
    assert "Resolved since the last post* (1)" in channel
    assert "0 8 * * 1-5 (Europe/Amsterdam)" in channel
    assert "2 new, 1 resolved since the last post" in messages[0].text
    thread = json.dumps([m.blocks for m in messages[1:]])
    assert len(messages) >= 2
    assert "Remedy" in thread


def test_no_changes_and_first_check_are_said() -> None:
    unchanged = summary_of(server("EX01", WEAK), previous={"EX01": stored(server("EX01", WEAK))})
    assert "No changes since the last post" in json.dumps(
        render_health_summary(unchanged, schedule_label="x")[0].blocks)
    first = summary_of(server("EX01", WEAK))
    assert "First scheduled check" in json.dumps(
        render_health_summary(first, schedule_label="x")[0].blocks)


def test_large_fleet_with_many_changes_stays_within_slack_limits() -> None:
    fleet = []
    previous: dict[str, str | None] = {}
    for index in range(150):
        name = f"EX{index:03d}"
        tp = f"{index:04X}" + "AB" * 18
        old = server(name, finding(FindingCode.CERT_WEAK_KEY, "warning", tp,
                                   summary="x" * 900))
        previous[name] = stored(old)
        fleet.append(server(name, *([MIXED] if index % 3 == 0 else []),
                            finding(FindingCode.CERT_EXPIRING, "warning", tp,
                                    summary="soon " * 100),
                            certificates=(cert_analysis(tp, "CN=" + "s" * 300, index % 60),)))
    summary = summary_of(*fleet, previous=previous, mention="S0ONCALL")
    messages = render_health_summary(summary, schedule_label="every 10 s")
    assert_valid(messages)
    channel = json.dumps(messages[0].blocks)
    assert "<!subteam^S0ONCALL>" in channel
    assert "more new findings in the thread" in channel
    thread = json.dumps([m.blocks for m in messages[1:]])
    assert all(f"*EX{index:03d}*" in thread for index in range(150))
    assert thread.count("CERT_WEAK_KEY") >= 150


def test_hostile_values_ping_nobody() -> None:
    evil = server("EX01", finding(FindingCode.CERT_EXPIRED, "critical", OLD_TP,
                                  summary="<!channel> <@U0BOSS> &"))
    messages = render_health_summary(
        summary_of(evil, previous={"EX01": stored(server("EX01"))}),
        schedule_label="<!here>")
    text = all_text(messages)
    assert "<!channel>" not in text
    assert "<!here>" not in text
    assert "<@U0BOSS>" not in text
    assert "&lt;!channel&gt;" in text
