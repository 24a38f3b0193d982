"""The Block Kit report: snapshots of its JSON, Slack's limits, paging, escaping, small replies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.analysis.model import (
    CandidateRanking,
    CertificateAnalysis,
    Finding,
    FindingCode,
    FleetReport,
    OutboundSelection,
    PlanStep,
    RemediationPlan,
    ServerAnalysis,
    Trust,
    Verdict,
)
from bot.exchange.snapshot import (
    CertificateStatus,
    ExchangeCertificate,
    ExchangeService,
    Queue,
    RootCAType,
    SendConnector,
    ServicesSource,
    TlsCertificateName,
)
from bot.remediation.states import State
from bot.render.blocks import (
    MAX_BLOCKS_PER_MESSAGE,
    OpenRequest,
    ServerStatus,
    SlackMessage,
    certificates_that_matter,
    escape_mrkdwn,
    fit_mrkdwn,
    format_remedy,
    render_error,
    render_help,
    render_report,
    render_status,
    render_unknown_server,
    truncate_text,
)
from bot.slack_standin.blocks import validate_message
from tests.unit.snapshots import assert_matches_snapshot

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PUBLIC_ISSUER = "CN=Test TLS RSA CA G1, O=Test Trust Services, C=US"
INTERNAL_ISSUER = "CN=Contoso Enterprise Root CA"
CONNECTOR = "Outbound to Office 365 - 6f1e2a"
EXO = "contoso.mail.protection.outlook.com"
PIN_VALUE = f"<I>{PUBLIC_ISSUER}<S>CN=mail.contoso.com"
QUEUE_ERROR = (
    '451 4.4.0 Primary target IP address responded with: "454 4.7.0 Temporary authentication '
    'failure" Attempted failover to alternate host, but that did not succeed. TLS channel: '
    "UntrustedRoot: Access Denied"
)
OUTBOUND_REASON = (
    "TlsCertificateName is not set, so Exchange looks for certificates whose Subject or SAN "
    "covers the server FQDN {fqdn}. Eligible (SMTP enabled, within validity): 3. Ranked newest "
    "NotBefore first: 1. {internal} CN={fqdn} (internal, CA-issued, NotBefore 2026-02-19); "
    "2. {public} CN=mail.contoso.com (public, CA-issued, NotBefore 2025-11-01); 3. {self} "
    "CN={name} (self-signed, NotBefore 2023-09-13). The first valid CA-issued certificate "
    "wins: {internal} (internal). Prediction: Exchange's documented inbound STARTTLS ranking "
    "applied to the send connector (not confirmed by Microsoft for outbound)."
)


# --- hand-made analysis values ------------------------------------------------------------


def certificate(
    thumbprint: str,
    subject: str,
    *,
    issuer: str = PUBLIC_ISSUER,
    domains: tuple[str, ...] = (),
    services: ExchangeService | None = ExchangeService.SMTP,
    not_before: datetime = NOW - timedelta(days=120),
    not_after: datetime = NOW + timedelta(days=245),
    self_signed: bool = False,
) -> ExchangeCertificate:
    return ExchangeCertificate(
        thumbprint=thumbprint,
        der=b"",
        subject=subject,
        issuer=issuer,
        serial_number="0A1B",
        domains=domains,
        not_before=not_before,
        not_after=not_after,
        self_signed=self_signed,
        key_algorithm="RSA",
        key_size=2048,
        signature_hash="sha256",
        extended_key_usages=("1.3.6.1.5.5.7.3.1",),
        services=services,
        root_ca_type=RootCAType.REGISTRY if self_signed else RootCAType.THIRD_PARTY,
        status=CertificateStatus.VALID,
        services_source=ServicesSource.SERIALIZATION_DATA,
    )


def analysed(cert: ExchangeCertificate, trust: Trust, *, matches: tuple[str, ...] = ()
             ) -> CertificateAnalysis:
    return CertificateAnalysis(
        cert=cert,
        trust=trust,
        evidence=(f"trust {trust} (hand-made)",),
        matches_fqdn=bool(matches),
        matched_names=matches,
        within_validity=True,
        days_left=(cert.not_after - NOW).days,
        in_use=cert.services is None or bool(cert.services),
    )


def thumbprint(index: int, kind: int) -> str:
    return f"{kind:02X}{index:06X}" + "AB" * 16


def kb_server(index: int = 1, *, connector: str = CONNECTOR) -> ServerAnalysis:
    """A server with the KB 2888788 fault: an internal and a public certificate both on SMTP."""
    name = f"EX{index:02d}"
    fqdn = f"ex{index:02d}.contoso.com"
    public_tp, internal_tp, self_tp, other_tp = (
        thumbprint(index, kind) for kind in (0x59, 0x88, 0xA6, 0x4A)
    )
    public = analysed(certificate(
        public_tp, "CN=mail.contoso.com", domains=("mail.contoso.com", fqdn),
        services=ExchangeService.IIS | ExchangeService.SMTP,
    ), "public", matches=(fqdn,))
    internal = analysed(certificate(
        internal_tp, f"CN={fqdn}", issuer=INTERNAL_ISSUER, domains=(fqdn,),
        services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.SMTP,
        not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=355),
    ), "internal", matches=(fqdn,))
    default = analysed(certificate(
        self_tp, f"CN={name}", issuer=f"CN={name}", domains=(name, fqdn),
        services=ExchangeService.IMAP | ExchangeService.POP | ExchangeService.IIS
        | ExchangeService.SMTP,
        not_before=NOW - timedelta(days=900), not_after=NOW + timedelta(days=925),
        self_signed=True,
    ), "self-signed", matches=(fqdn,))
    unused = analysed(certificate(
        other_tp, "CN=legacy.contoso.com", domains=("legacy.contoso.com",),
        services=ExchangeService.NONE, not_after=NOW + timedelta(days=20),
    ), "public")
    send_connector = SendConnector(
        name=connector, enabled=True, cloud_services_mail_enabled=True, smart_hosts=(EXO,),
        address_spaces=("smtp:contoso.mail.onmicrosoft.com;1",), fqdn=None, require_tls=True,
        tls_auth_level="DomainValidation", tls_domain="mail.protection.outlook.com",
        tls_certificate_name=None, source_transport_servers=(name,),
    )
    reason = OUTBOUND_REASON.format(
        fqdn=fqdn, name=name, internal=internal_tp[:8], public=public_tp[:8], self=self_tp[:8]
    )
    outbound = OutboundSelection(
        connector=connector, thumbprint=internal_tp, reason=reason, trust="internal",
        candidates=(CandidateRanking(
            rank=1, thumbprint=internal_tp, subject=f"CN={fqdn}", not_before=NOW,
            not_after=NOW, trust="internal", ca_issued=True, valid=True, services_known=True,
            note="CA-issued",
        ),),
    )
    queue = Queue(
        identity=f"{name}\\{EXO}", delivery_type="SmartHostConnectorDelivery",
        next_hop_domain=EXO, status="Retry", message_count=25, last_error=QUEUE_ERROR,
    )
    pin = (
        f'Set-SendConnector -Identity "{connector}" -TlsCertificateName "{PIN_VALUE}"'
    )
    unbind = (
        f"Enable-ExchangeCertificate -Server {name} -Thumbprint {internal_tp} -Services IMAP,POP"
    )
    findings = (
        Finding(
            FindingCode.SMTP_MIXED_TRUST_BINDING, "critical",
            f"SMTP is bound to 2 certificates covering {fqdn}: publicly trusted "
            f"{public_tp[:8]} CN=mail.contoso.com; not publicly trusted {internal_tp[:8]} "
            f"CN={fqdn} (internal). Exchange may present the untrusted one to Exchange Online, "
            "which refuses it (KB 2888788).",
            (internal_tp, public_tp),
            f"{pin}; {unbind} (KB 2888788), then check: Get-ExchangeCertificate -Server {name} "
            f"-Thumbprint {internal_tp} | Format-List FriendlyName,Services",
        ),
        Finding(
            FindingCode.OUTBOUND_CERT_UNTRUSTED, "critical",
            f"Send connector '{connector}' is predicted to present {internal_tp[:8]} "
            f"CN={fqdn} (internal) to Exchange Online, which accepts only publicly trusted "
            "certificates (454 4.7.0 UntrustedRoot otherwise).",
            (internal_tp,), pin,
        ),
        Finding(
            FindingCode.QUEUE_TLS_REJECTED, "critical",
            f"Queue {name}\\{EXO} to {EXO} holds 25 messages (Status Retry); Exchange Online "
            f"refused TLS: {QUEUE_ERROR}",
            (internal_tp,),
            "Make the outbound certificate a publicly trusted one (see OUTBOUND_CERT_UNTRUSTED "
            f"and SMTP_MIXED_TRUST_BINDING), then: Retry-Queue -Server {name} -Filter "
            f"\"NextHopDomain -eq '{EXO}' -and Status -eq 'Retry'\"",
        ),
        Finding(
            FindingCode.CERT_EXPIRING, "info",
            f"{other_tp[:8]} CN=legacy.contoso.com expires in 20 days; nothing uses it.",
            (other_tp,),
            f"Nothing uses it: remove it: Remove-ExchangeCertificate -Server {name} "
            f"-Thumbprint {other_tp}",
        ),
    )
    steps = (
        PlanStep(
            kind="pin_connector", cmdlet="Set-SendConnector",
            parameters=(("Identity", connector), ("TlsCertificateName", PIN_VALUE)),
            display=pin, target=connector, before="TlsCertificateName: (not set)",
            after=f"TlsCertificateName: {PIN_VALUE} ({public_tp[:8]}, public)",
        ),
        PlanStep(
            kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate",
            parameters=(("Server", name), ("Thumbprint", internal_tp),
                        ("Services", ["IMAP", "POP"])),
            display=unbind, target=internal_tp, before="Services: IMAP, POP, SMTP",
            after="Services: IMAP, POP (SMTP removed; -Services is documented as additive, so "
            "the result is read back)",
        ),
        PlanStep(
            kind="unbind_smtp", cmdlet="Enable-ExchangeCertificate", parameters=(), display="",
            target=self_tp, before="Services: IMAP, POP, IIS, SMTP", after="unchanged",
            skipped_reason="self-signed: Exchange selects it only when no CA-issued "
            "certificate is valid, and needs the default self-signed certificate for internal "
            "transport; left as it is",
        ),
        PlanStep(
            kind="retry_queue", cmdlet="Retry-Queue",
            parameters=(("Server", name),
                        ("Filter", f"NextHopDomain -eq '{EXO}' -and Status -eq 'Retry'")),
            display=f"Retry-Queue -Server {name} -Filter \"NextHopDomain -eq '{EXO}' -and "
            "Status -eq 'Retry'\"",
            target=EXO, before=f"messages to {EXO} waiting for the next retry",
            after=f"queue to {EXO} retried now; it drains once Exchange Online accepts the "
            "certificate",
        ),
    )
    plan = RemediationPlan(server=name, steps=steps, hash=f"{index:04x}" + "9a9c45aadca6" * 5)
    return ServerAnalysis(
        name=name, fqdn=fqdn, reachable=True, error=None,
        certificates=(public, internal, default, unused), send_connectors=(send_connector,),
        outbound=(outbound,), queues=(queue,), findings=findings, plan=plan, taken_at=NOW,
    )


def healthy_server() -> ServerAnalysis:
    public_tp = thumbprint(2, 0x3C)
    public = analysed(certificate(
        public_tp, "CN=mail.fabrikam.com", domains=("mail.fabrikam.com", "ex02.fabrikam.com"),
        services=ExchangeService.IIS | ExchangeService.SMTP,
    ), "public", matches=("ex02.fabrikam.com",))
    pinned_name = TlsCertificateName.parse(f"<I>{PUBLIC_ISSUER}<S>CN=mail.fabrikam.com")
    connector = SendConnector(
        name="Outbound to Office 365", enabled=True, cloud_services_mail_enabled=True,
        smart_hosts=("fabrikam.mail.protection.outlook.com",), address_spaces=(), fqdn=None,
        require_tls=True, tls_auth_level="DomainValidation",
        tls_domain="mail.protection.outlook.com", tls_certificate_name=pinned_name,
    )
    return ServerAnalysis(
        name="EX02", fqdn="ex02.fabrikam.com", reachable=True, error=None,
        certificates=(public,), send_connectors=(connector,),
        outbound=(OutboundSelection(
            connector="Outbound to Office 365", thumbprint=public_tp, trust="public",
            reason="TlsCertificateName names <I>...<S>CN=mail.fabrikam.com: Exchange presents "
            f"that certificate ({public_tp[:8]}).", candidates=(),
        ),),
        queues=(), findings=(), plan=None, taken_at=NOW,
    )


def unreachable(name: str = "EX09", error: str = "WinRM: connection timed out after 10 s"
                ) -> ServerAnalysis:
    return ServerAnalysis(
        name=name, fqdn=f"{name.lower()}.contoso.com", reachable=False, error=error,
        certificates=(), send_connectors=(), outbound=(), queues=(),
        findings=(Finding(
            FindingCode.SERVER_UNREACHABLE, "warning",
            f"Server {name} could not be checked: {error}", (),
            f"Check the connection: Test-NetConnection {name.lower()}.contoso.com -Port 80; the "
            f"remote PowerShell endpoint http://{name.lower()}.contoso.com/PowerShell/ and the "
            "credentials named in the configuration.",
        ),),
        plan=None,
    )


def fleet(servers: list[ServerAnalysis], verdict: Verdict = "critical") -> FleetReport:
    return FleetReport(generated_at=NOW, servers=tuple(servers), verdict=verdict)


# --- checks of rendered messages ----------------------------------------------------------


def walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk(item)


def all_text(messages: tuple[SlackMessage, ...] | list[SlackMessage]) -> str:
    """The fallback texts and every string in the blocks, one after another."""
    parts: list[str] = []
    for msg in messages:
        parts.append(msg.text)
        parts += [str(v) for obj in walk(list(msg.blocks)) for v in obj.values()
                  if isinstance(v, str)]
    return "\n\n".join(parts)


def assert_within_limits(msg: SlackMessage) -> None:
    assert msg.text
    assert len(msg.text) <= 40_000
    assert 0 < len(msg.blocks) <= MAX_BLOCKS_PER_MESSAGE
    total = 0
    for obj in walk(list(msg.blocks)):
        if obj.get("type") in ("mrkdwn", "plain_text"):
            total += len(obj["text"])
            assert obj["text"], "empty text object"
        if obj.get("type") == "mrkdwn":
            assert obj.get("verbatim") is True
        if obj.get("type") == "section":
            assert "text" not in obj or len(obj["text"]["text"]) <= 3000
            assert len(obj.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in obj.get("fields", []))
        if obj.get("type") == "header":
            assert len(obj["text"]["text"]) <= 150
        if obj.get("type") == "button":
            assert len(obj["text"]["text"]) <= 75
    assert total <= 40_000
    assert validate_message(msg.text, list(msg.blocks)) == []


def as_json(messages: tuple[SlackMessage, ...]) -> list[dict[str, Any]]:
    return [{"text": m.text, "blocks": list(m.blocks)} for m in messages]


# --- snapshots ----------------------------------------------------------------------------


def test_kb_fault_report_snapshot() -> None:
    messages = render_report(fleet([kb_server()]))
    assert len(messages) == 1
    assert_within_limits(messages[0])
    assert_matches_snapshot("report_kb_fault", as_json(messages))


def test_mixed_fleet_report_snapshot() -> None:
    messages = render_report(fleet([kb_server(), healthy_server(), unreachable()]),
                             title="Nightly TLS check")
    for msg in messages:
        assert_within_limits(msg)
    assert_matches_snapshot("report_mixed_fleet", as_json(messages))


def test_forty_server_fleet_first_message_snapshot() -> None:
    messages = render_report(fleet([kb_server(i) for i in range(1, 41)]))
    assert_matches_snapshot("report_40_servers_first_message", as_json(messages[:1]))


# --- content ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "emoji"),
    [("ok", ":large_green_circle:"), ("warning", ":large_yellow_circle:"),
     ("critical", ":red_circle:"), ("unknown", ":white_circle:")],
)
def test_verdict_comes_first_with_its_colour(verdict: Verdict, emoji: str) -> None:
    first = render_report(fleet([healthy_server()], verdict))[0]
    assert first.blocks[0]["type"] == "header"
    assert first.blocks[0]["text"]["text"] == f"{emoji} Exchange TLS check: {verdict.upper()}"
    assert verdict.upper() in first.text


def test_one_summary_line_per_server() -> None:
    servers = [kb_server(), healthy_server(), unreachable()]
    summary = render_report(fleet(servers))[0].blocks[2]["text"]["text"]
    lines = summary.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(":red_circle: *EX01* (ex01.contoso.com): *critical*")
    assert "3 critical, 1 info" in lines[0]
    assert "25 messages queued" in lines[0]
    assert lines[1].startswith(":large_green_circle: *EX02*")
    assert "no findings" in lines[1]
    assert lines[2].startswith(":white_circle: *EX09*")
    assert "unreachable" in lines[2]


def test_server_details_show_prediction_evidence_findings_and_plan() -> None:
    text = all_text(render_report(fleet([kb_server()])))
    assert "a prediction, not an observation" in text
    assert "_Why (prediction):_ TlsCertificateName is not set" in text
    assert "*Queue to Exchange Online*" in text
    assert "*Messages*\n25" in text
    assert "Last error: `451 4.4.0" in text
    assert ":red_circle: *SMTP_MIXED_TRUST_BINDING* (critical)" in text
    assert "*Remedy:* `Set-SendConnector -Identity" in text
    assert "Remediation plan* `00019a9c45aa`: 3 steps to run, 1 skipped" in text
    assert "TlsCertificateName: (not set) → TlsCertificateName: &lt;I&gt;CN=Test TLS" in text
    assert ":fast_forward: ~Unbind SMTP~" in text
    assert "skipped, self-signed" in text


def test_certificates_that_matter_hide_unused_ones() -> None:
    server = kb_server()
    shown = certificates_that_matter(server)
    assert [a.cert.subject for a in shown] == [
        "CN=mail.contoso.com", "CN=ex01.contoso.com", "CN=EX01", "CN=legacy.contoso.com"
    ]  # legacy has a finding
    quiet = replace(server, findings=server.findings[:3])
    assert "CN=legacy.contoso.com" not in [a.cert.subject for a in certificates_that_matter(quiet)]
    text = all_text(render_report(fleet([quiet])))
    assert "1 other certificate not shown" in text


def test_certificate_named_by_a_connector_is_shown_without_smtp() -> None:
    server = healthy_server()
    cert = replace(server.certificates[0], cert=replace(
        server.certificates[0].cert, services=ExchangeService.IIS,
        domains=("mail.fabrikam.com",)), matches_fqdn=False, matched_names=())
    server = replace(server, certificates=(cert,), outbound=())
    assert certificates_that_matter(server) == (cert,)
    assert "named by 'Outbound to Office 365'" in all_text(render_report(fleet([server])))


# --- limits and paging --------------------------------------------------------------------


def test_forty_server_fleet_pages_into_the_thread_within_limits() -> None:
    servers = [kb_server(i) for i in range(1, 41)]
    messages = render_report(fleet(servers))
    assert len(messages) > 1
    for msg in messages:
        assert_within_limits(msg)
    first = json.dumps(messages[0].blocks)
    assert all(f"*EX{i:02d}*" in first for i in range(1, 41))
    assert "Details for each server are in the thread" in first
    assert "Remedy" not in first
    thread = all_text(messages[1:])
    for i in range(1, 41):
        assert f"*EX{i:02d}* (ex{i:02d}.contoso.com): *critical* · snapshot" in thread
    pages = len(messages) - 1
    assert messages[1].text.startswith(f"Exchange TLS check: details 1 of {pages}: EX01")


def test_huge_values_are_cut_and_say_so() -> None:
    server = kb_server()
    many_certs = tuple(
        analysed(certificate(thumbprint(i, 0x11), f"CN=host{i}.contoso.com " + "x" * 400,
                             domains=(f"host{i}.contoso.com",)), "internal")
        for i in range(300)
    )
    findings = tuple(
        replace(server.findings[0], summary="S" * 20_000,
                remedy="Set-SendConnector " + "-X y " * 5000)
        for _ in range(70)
    )
    queue = replace(server.queues[0], last_error="E" * 50_000)
    big = replace(server, certificates=many_certs, findings=findings, queues=(queue,) * 12,
                  error=None)
    messages = render_report(fleet([big, unreachable(error="boom " * 10_000)]))
    assert len(messages) > 3
    for msg in messages:
        assert_within_limits(msg)
    text = all_text(messages)
    assert "truncated, 20000 characters in all" in text
    assert "7 more queues to Exchange Online not shown" in text
    assert "EX01 (continued)" in text


def test_long_fleet_summary_itself_pages() -> None:
    servers = [replace(unreachable(f"SRV{i:04d}", error="timed out " * 20)) for i in range(400)]
    messages = render_report(fleet(servers, "unknown"))
    for msg in messages:
        assert_within_limits(msg)
    summary_lines = [
        line for msg in messages for block in msg.blocks if block["type"] == "section"
        for line in block["text"]["text"].splitlines() if line.startswith(":white_circle: *SRV")
    ]
    assert len(summary_lines) >= 400


def test_empty_fleet() -> None:
    (msg,) = render_report(fleet([], "unknown"))
    assert_within_limits(msg)
    assert "No servers were checked." in all_text([msg])


# --- escaping -----------------------------------------------------------------------------

HOSTILE = ["<!channel>", "<!here>", "<!everyone>", "<@U0ABCDEF>", "<https://evil.example|x>",
           "<#C0123ABC>", "<!subteam^S0ABC>"]


def test_hostile_server_values_ping_nobody() -> None:
    server = kb_server(connector="<!channel> & <@U0ABCDEF>")
    cert = server.certificates[1]
    server = replace(
        server,
        name="<!here>",
        certificates=(replace(cert, cert=replace(cert.cert, subject="CN=<!everyone> & co")),
                      *server.certificates[2:]),
        queues=(replace(server.queues[0], last_error="<https://evil.example|x> <!channel>",
                        identity="<#C0123ABC>"),),
        findings=(replace(server.findings[0], summary="hi <!subteam^S0ABC>",
                          remedy='Set-SendConnector -Identity "<!channel>"'),),
    )
    messages = render_report(fleet([server, unreachable(error="<!channel> down")]))
    text = all_text(messages)
    for token in HOSTILE:
        assert token not in text
    assert "&lt;!channel&gt; &amp; &lt;@U0ABCDEF&gt;" in text
    assert "CN=&lt;!everyone&gt; &amp; co" in text
    assert '`Set-SendConnector -Identity "&lt;!channel&gt;"`' in text
    for msg in messages:
        assert_within_limits(msg)


def test_escape_keeps_only_safe_mentions_when_asked() -> None:
    text = "<@U0ABC123> <!subteam^S0XYZ9> <#C0AAA111> <!channel> <@U0ABC123|x> a&b"
    assert escape_mrkdwn(text) == (
        "&lt;@U0ABC123&gt; &lt;!subteam^S0XYZ9&gt; &lt;#C0AAA111&gt; &lt;!channel&gt; "
        "&lt;@U0ABC123|x&gt; a&amp;b"
    )
    assert escape_mrkdwn(text, keep_mentions=True) == (
        "<@U0ABC123> <!subteam^S0XYZ9> <#C0AAA111> &lt;!channel&gt; &lt;@U0ABC123|x&gt; a&amp;b"
    )


# --- text helpers -------------------------------------------------------------------------


def test_remedy_commands_are_code() -> None:
    remedy = (
        "SMTP is the only service of 885FF115: Remove-ExchangeCertificate -Server EX01 "
        "-Thumbprint ABC once nothing uses it; then Enable-ExchangeCertificate -Server EX01 "
        "-Thumbprint <new> -Services SMTP (answer No). Get-ExchangeCertificate -Server EX01 | "
        "Format-List FriendlyName,Services"
    )
    assert format_remedy(remedy) == (
        "SMTP is the only service of 885FF115: `Remove-ExchangeCertificate -Server EX01 "
        "-Thumbprint ABC` once nothing uses it; then `Enable-ExchangeCertificate -Server EX01 "
        "-Thumbprint &lt;new&gt; -Services SMTP` (answer No). `Get-ExchangeCertificate -Server "
        "EX01 | Format-List FriendlyName,Services`"
    )
    assert format_remedy('Set-Thing -Name "a`"b"') == '```Set-Thing -Name "a`"b"```'


def test_truncate_text_says_so() -> None:
    assert truncate_text("short", 10) == "short"
    cut = truncate_text("x" * 5000, 1000)
    assert len(cut) <= 1000
    assert cut.endswith("… [truncated, 5000 characters in all]")


_SEGMENT = st.one_of(
    st.text(alphabet="ab &<>\n*", max_size=60).map(escape_mrkdwn),
    st.text(alphabet="ab &<>", min_size=1, max_size=60).map(lambda t: f"`{escape_mrkdwn(t)}`"),
    st.text(alphabet="ab &<>`", min_size=1, max_size=60).map(
        lambda t: f"```{escape_mrkdwn(t)}```"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEGMENT, max_size=12), st.integers(min_value=60, max_value=300))
def test_fit_mrkdwn_keeps_entities_and_code_whole(segments: list[str], limit: int) -> None:
    text = " ".join(segments)
    fitted = fit_mrkdwn(text, limit)
    assert len(fitted) <= limit
    if fitted == text:
        return
    assert "truncated" in fitted
    body = fitted.split("\n_… truncated")[0]
    assert body.count("```") % 2 == 0
    assert body.replace("```", "").count("`") % 2 == 0 or body.count("```") > 0
    for position, char in enumerate(body):
        if char == "&":
            assert body[position:].startswith(("&amp;", "&lt;", "&gt;"))


# --- small replies ------------------------------------------------------------------------


def test_small_replies_snapshot() -> None:
    replies = {
        "help": render_help(["EX01", "EX02"]),
        "unknown_server": render_unknown_server("<!channel>", ["EX01", "EX02"]),
        "error": render_error("Exchange EX01 did not answer within 20 s <!here>"),
        "status": render_status(
            [ServerStatus("EX01", "critical", NOW, "3 critical findings"),
             ServerStatus("EX02", None)],
            [OpenRequest("R-ABCDEFGHIJ", "EX01", State.PENDING, NOW + timedelta(minutes=30))],
            frozen=True,
        ),
    }
    for reply in replies.values():
        assert_within_limits(reply)
    text = all_text(list(replies.values()))
    for token in HOSTILE:
        assert token not in text
    assert "Remediation is frozen" in text
    assert "`/exchange-tls check [SERVER|all]`" in text
    assert_matches_snapshot(
        "small_replies", {name: {"text": r.text, "blocks": list(r.blocks)}
                          for name, r in replies.items()},
    )


def test_status_with_many_servers_stays_within_limits() -> None:
    servers = [ServerStatus(f"EX{i:03d}", "ok", NOW, "fine " * 50) for i in range(500)]
    msg = render_status(servers, [], frozen=False)
    assert_within_limits(msg)
    assert "more blocks not shown" in all_text([msg])


def test_unreachable_server_without_a_finding_still_says_why() -> None:
    server = replace(unreachable(error="Kerberos: <no ticket>"), findings=())
    text = all_text(render_report(fleet([server], "unknown")))
    assert ":electric_plug: *Unreachable:* Kerberos: &lt;no ticket&gt;" in text
