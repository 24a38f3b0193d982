"""The lab state file: parsing, defaults, relative dates and every validation error."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.exchange.snapshot import ExchangeService, RootCAType
from bot.lab.state import (
    LabCA,
    LabCertificateSpec,
    LabFaults,
    LabState,
    LabStateError,
    default_state,
    load_state,
    packaged_state,
    packaged_state_names,
    parse_distinguished_name,
    parse_state,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

BASE = textwrap.dedent("""\
    tenant: contoso
    cas:
      - {id: public-root, public: true}
      - {id: corp-root, public: false}
    servers:
      - name: EX01
        fqdn: ex01.contoso.com
        certificates:
          - id: public-cert
            issuer: public-root
            subject: CN=mail.contoso.com
            domains: [mail.contoso.com, ex01.contoso.com]
            not_before: -60d
            not_after: +300d
            services: [IIS, SMTP]
          - id: internal-cert
            issuer: corp-root
            subject: CN=ex01.contoso.com
            domains: [ex01.contoso.com]
            not_before: -10d
            not_after: +12h
            services: [SMTP]
        send_connectors:
          - name: Outbound to Office 365
            cloud: true
            tls_certificate_name: null
        queue_messages: 25
    hybrid:
      tls_certificate_name: public-cert
    users:
      - {domain: CONTOSO, name: admin, password: "Lab-Passw0rd!"}
    behaviour:
      enable_certificate: additive
    """)


def parse(text: str) -> LabState:
    return parse_state(text, source="state.yaml", now=NOW)


def line_of(text: str, marker: str, occurrence: int = 1) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if marker in line]
    return lines[occurrence - 1]


def expect_error(text: str, marker: str, problem: str, occurrence: int = 1) -> LabStateError:
    with pytest.raises(LabStateError) as caught:
        parse(text)
    error = caught.value
    assert error.line == line_of(text, marker, occurrence), str(error)
    assert problem in str(error)
    assert str(error).startswith(f"state.yaml:{error.line}: ")
    return error


# ---------------------------------------------------------------------------- happy paths

def test_base_state_parses_into_typed_records() -> None:
    state = parse(BASE)
    assert state.tenant == "contoso"
    assert [ca.id for ca in state.cas] == ["public-root", "corp-root"]
    assert state.cas[0].public
    assert not state.cas[1].public
    assert state.cas[0].name == "CN=Contoso Public Root CA"
    server = state.servers[0]
    assert (server.name, server.fqdn, server.queue_messages) == ("EX01", "ex01.contoso.com", 25)
    public = server.certificates[0]
    assert public.services == ExchangeService.IIS | ExchangeService.SMTP
    assert public.domains == ("mail.contoso.com", "ex01.contoso.com")
    assert public.key_size == 2048
    assert public.signature == "sha256"
    assert public.friendly_name == "public-cert"
    assert state.hybrid is not None
    assert state.hybrid.tls_certificate_name == "public-cert"
    assert state.hybrid.on_premises_smart_host == "mail.contoso.com"
    assert state.behaviour == "additive"
    assert not state.users_generated
    assert state.users[0].qualified_name == "CONTOSO\\admin"
    assert state.smart_host == "contoso.mail.protection.outlook.com"


def test_relative_dates_are_resolved_against_now() -> None:
    server = parse(BASE).servers[0]
    assert server.certificates[0].not_before == NOW - timedelta(days=60)
    assert server.certificates[0].not_after == NOW + timedelta(days=300)
    assert server.certificates[1].not_after == NOW + timedelta(hours=12)


@pytest.mark.parametrize(("text", "expected"), [
    ("+2w", NOW + timedelta(weeks=2)),
    ("-90m", NOW - timedelta(minutes=90)),
    ("2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
    ("2024-01-31T08:30:00Z", datetime(2024, 1, 31, 8, 30, tzinfo=UTC)),
    ("2024-01-31T10:30:00+02:00", datetime(2024, 1, 31, 8, 30, tzinfo=UTC)),
])
def test_absolute_and_relative_dates(text: str, expected: datetime) -> None:
    state = parse(BASE.replace("not_before: -60d", f"not_before: {text}")
                  .replace("not_after: +300d", "not_after: 2030-01-01"))
    assert state.servers[0].certificates[0].not_before == expected


def test_cloud_connector_gets_hybrid_wizard_defaults() -> None:
    connector = parse(BASE).servers[0].send_connectors[0]
    assert connector.cloud
    assert connector.tls_certificate_name is None
    assert connector.smart_hosts == ("contoso.mail.protection.outlook.com",)
    assert connector.address_spaces == ("contoso.mail.onmicrosoft.com",)
    assert connector.require_tls
    assert connector.tls_auth_level == "DomainValidation"
    assert connector.tls_domain == "mail.protection.outlook.com"
    assert connector.enabled


def test_default_smtp_certificate_is_setups_self_signed_one() -> None:
    state = default_state(now=NOW)
    assert state.servers[0].default_smtp_certificate == "exchange-self-signed"


def test_missing_users_generates_one_admin_with_a_random_password() -> None:
    text = BASE.split("users:")[0] + "behaviour: additive\n"
    first, second = parse(text), parse(text)
    assert first.users_generated
    assert len(first.users) == 1
    user = first.users[0]
    assert (user.domain, user.name) == ("CONTOSO", "admin")
    assert len(user.password) >= 16
    assert user.password != second.users[0].password
    assert user.password not in repr(user)


def test_behaviour_short_form_and_replace() -> None:
    state = parse(BASE.replace("behaviour:\n  enable_certificate: additive",
                               "behaviour: replace"))
    assert state.behaviour == "replace"


def test_yaml_merge_keys_share_certificate_templates() -> None:
    text = BASE.replace("  - id: internal-cert\n",
                        "  - &internal\n        id: internal-cert\n")
    text = text.replace("    send_connectors:", textwrap.indent(textwrap.dedent("""\
        - <<: *internal
          id: internal-copy
          not_before: -1d
        """), "      ") + "    send_connectors:", 1)
    server = parse(text).servers[0]
    copy = server.certificate("internal-copy")
    assert copy is not None
    assert copy.subject == "CN=ex01.contoso.com"
    assert copy.not_before == NOW - timedelta(days=1)


def test_faults_are_parsed() -> None:
    text = BASE + textwrap.dedent("""\
        faults:
          latency_ms: 250
          auth_refused: true
          drop_connection_on: get-queue
          wsman_fault: {cmdlet: Get-ExchangeCertificate, code: "0x80338012", message: boom}
          slow_cmdlets: {Retry-Queue: 1.5}
        """)
    faults = parse(text).faults
    assert faults.latency_ms == 250
    assert faults.auth_refused
    assert faults.drop_connection_on == "Get-Queue"
    assert faults.wsman_fault is not None
    assert (faults.wsman_fault.cmdlet, faults.wsman_fault.code) == (
        "Get-ExchangeCertificate", "0x80338012")
    assert dict(faults.slow_cmdlets) == {"Retry-Queue": 1.5}


def test_root_ca_type_override_and_optional_fields() -> None:
    text = BASE.replace("        services: [SMTP]\n", textwrap.indent(textwrap.dedent("""\
        services: [SMTP]
        root_ca_type: None
        key_size: 1024
        signature: sha1
        private_key: false
        friendly_name: Old one
        """), "        "))
    cert = parse(text).servers[0].certificates[1]
    assert cert.root_ca_type == RootCAType.NONE
    assert (cert.key_size, cert.signature, cert.has_private_key) == (1024, "sha1", False)
    assert cert.friendly_name == "Old one"


def test_literal_tls_certificate_name_is_accepted() -> None:
    text = BASE.replace("tls_certificate_name: null",
                        "tls_certificate_name: '<I>CN=localhost<S>CN=localhost'")
    connector = parse(text).servers[0].send_connectors[0]
    assert connector.tls_certificate_name == "<I>CN=localhost<S>CN=localhost"


# ---------------------------------------------------------------------------- packaged states

def test_packaged_states_load() -> None:
    assert {"kb-2888788", "healthy-pinned", "replace-behaviour"} <= set(packaged_state_names())
    for name in packaged_state_names():
        assert packaged_state(name, now=NOW).tenant == "contoso"


def test_kb_state_is_the_fault_of_the_article() -> None:
    state = default_state(now=NOW)
    server = state.servers[0]
    by_id = {c.id: c for c in server.certificates}
    public, internal = by_id["public-cert"], by_id["internal-cert"]
    assert internal.not_before > public.not_before
    assert ExchangeService.SMTP in public.services
    assert ExchangeService.SMTP in internal.services
    assert not state.ca(internal.issuer).public  # type: ignore[union-attr]
    assert state.ca(public.issuer).public  # type: ignore[union-attr]
    assert by_id["exchange-self-signed"].services == ExchangeService.from_names(
        "IMAP, POP, IIS, SMTP")
    assert by_id["auth-cert"].services == ExchangeService.SMTP
    connector = server.send_connectors[0]
    assert connector.name.startswith("Outbound to Office 365 - ")
    assert connector.tls_certificate_name is None
    assert server.queue_messages == 25
    assert state.behaviour == "additive"
    assert state.users_generated


def test_healthy_and_replace_variants() -> None:
    healthy = packaged_state("healthy-pinned", now=NOW)
    assert healthy.servers[0].send_connectors[0].tls_certificate_name == "public-cert"
    assert packaged_state("replace-behaviour.yaml", now=NOW).behaviour == "replace"


def test_unknown_packaged_state() -> None:
    with pytest.raises(LabStateError, match="no packaged state 'nope'"):
        packaged_state("nope", now=NOW)


def test_load_state_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    path.write_text(BASE.replace("issuer: corp-root", "issuer: corp-rot"), encoding="utf-8")
    with pytest.raises(LabStateError) as caught:
        load_state(path, now=NOW)
    assert str(caught.value).startswith(f"{path}:")
    with pytest.raises(LabStateError, match="cannot read"):
        load_state(tmp_path / "missing.yaml", now=NOW)


# ---------------------------------------------------------------------------- validation errors

def test_unknown_ca_message_names_line_path_and_known_ids() -> None:
    text = BASE.replace("issuer: corp-root", "issuer: corp-rot")
    error = expect_error(text, "issuer: corp-rot", "unknown CA")
    assert str(error) == (
        f"state.yaml:{line_of(text, 'corp-rot')}: servers[0].certificates[1].issuer: "
        "unknown CA 'corp-rot' (known: public-root, corp-root, self)")


@pytest.mark.parametrize(("old", "new", "marker", "problem"), [
    ("tenant: contoso", "tenant: contoso\ncolour: blue", "colour", "unknown key 'colour'"),
    ("queue_messages: 25", "queue_messages: many", "queue_messages", "expected a whole number"),
    ("queue_messages: 25", "queue_messages: -1", "queue_messages", "must be at least 0"),
    ("services: [IIS, SMTP]", "services: [IIS, SMTPX]", "SMTPX", "unknown service 'SMTPX'"),
    ("enable_certificate: additive", "enable_certificate: sometimes", "sometimes",
     "must be one of additive, replace"),
    ("not_after: +300d", "not_after: -61d", "not_after: -61d",
     "not_after must be later than not_before"),
    ("not_before: -60d", "not_before: yesterday", "yesterday", "expected a date"),
    ("subject: CN=mail.contoso.com", "subject: XX=mail", "XX=mail", "not a distinguished name"),
    ("subject: CN=mail.contoso.com", "subject: 'CN=a, C=NLD'", "C=NLD", "two letters"),
    ("id: internal-cert", "id: public-cert  # again", "# again",
     "duplicate certificate id 'public-cert'"),
    ("{id: corp-root, public: false}", "{id: public-root, public: false}",
     "{id: public-root, public: false}", "duplicate CA id"),
    ("tls_certificate_name: null", "tls_certificate_name: nowhere", "nowhere",
     "unknown certificate 'nowhere' on this server"),
    ("tls_certificate_name: public-cert", "tls_certificate_name: gone", "gone",
     "unknown certificate 'gone'"),
    ("tls_certificate_name: null", "tls_certificate_name: '<I><S>CN=x'", "<I><S>",
     "malformed TlsCertificateName"),
    ("cloud: true", "cloud: yes please", "cloud:", "expected true or false"),
    ("domains: [ex01.contoso.com]", "domains: [ex01..contoso.com]", "ex01..contoso",
     "not a valid DNS name"),
    ("fqdn: ex01.contoso.com", "fqdn: 'ex01 contoso'", "fqdn:", "not a valid host name"),
    ("- name: EX01", "- name: EX01_TOO_LONG_NAME", "EX01_TOO", "not a NetBIOS server name"),
    ("        services: [IIS, SMTP]\n", "        services: [IIS, SMTP]\n"
     "        key_size: 1000\n", "key_size: 1000", "unsupported RSA key size 1000"),
    ("        services: [IIS, SMTP]\n", "        services: [IIS, SMTP]\n"
     "        signature: md4\n", "signature: md4", "must be one of sha1"),
    ("        services: [IIS, SMTP]\n", "        services: [IIS, SMTP]\n"
     "        root_ca_type: Galactic\n", "Galactic", "unknown RootCAType"),
    ("users:\n  - {domain: CONTOSO, name: admin, password: \"Lab-Passw0rd!\"}\n", "users: []\n",
     "users:", "at least one user"),
    ("tenant: contoso", "tenant: 'Contoso Ltd'", "tenant:", "not a tenant name"),
    ("    fqdn: ex01.contoso.com\n", "", "- name: EX01", "missing required key 'fqdn'"),
    ("subject: CN=mail.contoso.com", "subject: [CN=mail]", "subject: [CN", "expected a single"),
    ("    send_connectors:\n      - name: Outbound to Office 365\n        cloud: true\n"
     "        tls_certificate_name: null\n", "    send_connectors: {name: x}\n",
     "send_connectors:", "expected a list"),
])
def test_validation_errors_name_the_line(old: str, new: str, marker: str, problem: str) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    expect_error(text, marker, problem)


def test_fault_spec_errors() -> None:
    bad_code = BASE + "faults:\n  wsman_fault: {cmdlet: Get-Queue, code: '80338012'}\n"
    expect_error(bad_code, "wsman_fault", "expected a WSMan fault code")
    bad_cmdlet = BASE + "faults:\n  drop_connection_on: Get-Mailbox\n"
    expect_error(bad_cmdlet, "drop_connection_on", "unknown cmdlet 'Get-Mailbox'")
    bad_latency = BASE + "faults:\n  latency_ms: -5\n"
    expect_error(bad_latency, "latency_ms", "must be at least 0")
    bad_slow = BASE + "faults:\n  slow_cmdlets: {Get-Queue: soon}\n"
    expect_error(bad_slow, "slow_cmdlets", "expected a number")
    huge_latency = BASE + "faults:\n  latency_ms: 60001\n"
    expect_error(huge_latency, "latency_ms", "must be at most 60000")
    endless = BASE + "faults:\n  slow_cmdlets: {Get-Queue: 99999}\n"
    expect_error(endless, "slow_cmdlets", "must be at most 3600")


def test_duplicate_keys_are_refused() -> None:
    text = BASE.replace("queue_messages: 25", "queue_messages: 25\n    queue_messages: 3")
    expect_error(text, "queue_messages: 3", "duplicate key 'queue_messages'")


def test_yaml_syntax_error_names_the_line() -> None:
    text = BASE.replace("domains: [ex01.contoso.com]", "domains: [ex01.contoso.com")
    with pytest.raises(LabStateError, match=r"^state\.yaml:\d+: YAML syntax error"):
        parse(text)


def test_arbitrary_tags_are_never_constructed() -> None:
    text = BASE.replace("queue_messages: 25",
                        "queue_messages: !!python/object/apply:os.system ['echo hi']")
    expect_error(text, "python/object", "expected a single value")
    text = BASE.replace("subject: CN=mail.contoso.com", "subject: !secret CN=mail")
    expect_error(text, "!secret", "unsupported YAML tag")


def test_empty_file() -> None:
    with pytest.raises(LabStateError, match="empty"):
        parse("")
    with pytest.raises(LabStateError, match="expected a mapping"):
        parse("- just a list\n")


def test_third_iis_certificate_is_refused() -> None:
    text = BASE.replace("services: [SMTP]", "services: [IIS, SMTP]").replace(
        "      - id: public-cert",
        "      - id: setup-cert\n        issuer: self\n        subject: CN=EX01\n"
        "        domains: [EX01]\n        not_before: -400d\n"
        "        not_after: +1000d\n        services: [IIS, SMTP]\n"
        "      - id: public-cert")
    expect_error(text, "services: [IIS, SMTP]", "IIS is already bound", occurrence=3)


def test_shared_connector_must_agree_across_servers() -> None:
    second = textwrap.dedent("""\
          - name: EX02
            fqdn: ex02.contoso.com
            send_connectors:
              - name: Outbound to Office 365
                cloud: false
        hybrid:""")
    text = BASE.replace("hybrid:", second, 1)
    expect_error(text, "- name: Outbound to Office 365", "also defined on server EX01",
                 occurrence=2)


def test_duplicate_server_names() -> None:
    second = "  - name: ex01\n    fqdn: ex02.contoso.com\nhybrid:"
    text = BASE.replace("hybrid:", second, 1)
    expect_error(text, "- name: ex01", "duplicate server name")


def test_distinguished_name_parser() -> None:
    assert parse_distinguished_name('CN=mail.contoso.com, O="Contoso, Ltd", ST=NH, C=NL') == (
        ("CN", "mail.contoso.com"), ("O", "Contoso, Ltd"), ("S", "NH"), ("C", "NL"))
    assert parse_distinguished_name(r"CN=a\,b") == (("CN", "a,b"),)
    with pytest.raises(ValueError, match="unterminated"):
        parse_distinguished_name('CN="open')


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_state(BASE, source="x", now=datetime(2025, 1, 1))


def test_direct_construction_defaults() -> None:
    ca = LabCA(id="public-root", public=True)
    assert ca.name == "CN=Public Root CA"
    spec = LabCertificateSpec(id="c1", issuer="public-root", subject="CN=a", domains=("a",),
                              not_before=NOW, not_after=NOW + timedelta(days=1))
    assert spec.friendly_name == "c1"
    assert spec.services == ExchangeService.NONE
    assert not spec.self_signed



def test_faults_made_in_code_are_bounded_too() -> None:
    with pytest.raises(ValueError, match="latency_ms must be 0 to 60000"):
        LabFaults(latency_ms=10**9)
    with pytest.raises(ValueError, match="slow_cmdlets"):
        LabFaults(slow_cmdlets={"Get-Queue": float("inf")})
    assert LabFaults(latency_ms=60_000).latency_ms == 60_000
