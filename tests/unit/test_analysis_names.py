"""Host name, wildcard and distinguished-name matching."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from bot.analysis.names import (
    certificate_matches,
    dn_equal,
    dotnet_name,
    name_matches,
    subject_common_names,
)
from tests.unit.certgen import kb_certificates

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=2, max_size=4).map(".".join)


@pytest.mark.parametrize(
    ("pattern", "fqdn", "expected"),
    [
        ("*.contoso.com", "ex01.contoso.com", True),
        ("*.contoso.com", "a.b.contoso.com", False),
        ("*.contoso.com", "contoso.com", False),
        ("*.CONTOSO.com", "EX01.contoso.COM", True),
        ("ex01.contoso.com", "EX01.Contoso.Com", True),
        ("ex01.contoso.com.", "ex01.contoso.com", True),
        ("ex*.contoso.com", "ex01.contoso.com", False),
        ("*", "ex01", False),
        ("", "ex01.contoso.com", False),
        ("mail.contoso.com", "ex01.contoso.com", False),
    ],
)
def test_name_matches_examples(pattern: str, fqdn: str, expected: bool) -> None:
    assert name_matches(pattern, fqdn) is expected


@given(LABEL, DOMAIN)
def test_wildcard_covers_exactly_one_label(label: str, parent: str) -> None:
    assert name_matches(f"*.{parent}", f"{label}.{parent}")
    assert not name_matches(f"*.{parent}", parent)
    assert not name_matches(f"*.{parent}", f"{label}.{label}.{parent}")


@given(DOMAIN)
def test_plain_name_matches_itself_in_any_case(domain: str) -> None:
    assert name_matches(domain, domain.upper())
    assert name_matches(domain.upper(), domain)


@given(DOMAIN, DOMAIN)
def test_plain_names_match_only_when_equal(left: str, right: str) -> None:
    assert name_matches(left, right) == (left == right)


@given(LABEL, DOMAIN, DOMAIN)
def test_wildcard_never_matches_another_parent(label: str, parent: str, other: str) -> None:
    if other != parent:
        assert not name_matches(f"*.{parent}", f"{label}.{other}")


def test_certificate_matches_san_and_subject_cn() -> None:
    public, _internal, default, auth = kb_certificates()
    assert certificate_matches(public, "autodiscover.contoso.com")
    assert certificate_matches(default, "EX01.contoso.com")
    assert not certificate_matches(auth, "ex01.contoso.com")
    only_cn = replace(public, domains=())
    assert certificate_matches(only_cn, "mail.contoso.com")
    assert not certificate_matches(only_cn, "ex01.contoso.com")
    wildcard = replace(public, domains=("*.contoso.com",))
    assert certificate_matches(wildcard, "ex01.contoso.com")
    assert not certificate_matches(wildcard, "ex01.eu.contoso.com")


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US",
         "CN=GeoTrust TLS RSA CA G1,OU=www.digicert.com,O=DigiCert Inc,C=US", True),
        ("CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US",
         "C=US, O=DigiCert Inc, OU=www.digicert.com, CN=GeoTrust TLS RSA CA G1", True),
        ("cn=mail.contoso.com", "CN=Mail.Contoso.com", True),
        ('CN=Contoso, O="Contoso, Ltd", C=NL', r"CN=Contoso,O=Contoso\, Ltd,C=NL", True),
        ("CN=a, ST=Zuid-Holland", "CN=a, S=Zuid-Holland", True),
        ("CN=mail.contoso.com", "CN=mail.contoso.org", False),
        ("CN=a, O=b", "CN=a", False),
        ("", "", False),
    ],
)
def test_dn_equal(left: str, right: str, expected: bool) -> None:
    assert dn_equal(left, right) is expected


def test_dotnet_name_is_most_specific_first_with_quotes() -> None:
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso, Ltd"),
        x509.NameAttribute(NameOID.COMMON_NAME, "mail.contoso.com"),
    ])
    assert dotnet_name(name) == 'CN=mail.contoso.com, O="Contoso, Ltd", S=Washington, C=US'
    assert dn_equal(dotnet_name(name), name.rfc4514_string())


def test_subject_common_names() -> None:
    assert subject_common_names('CN=mail.contoso.com, O="A, B"') == ("mail.contoso.com",)
    assert subject_common_names("O=Contoso") == ()
