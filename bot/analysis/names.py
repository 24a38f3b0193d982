"""Host names, wildcards and X.500 names as Exchange compares them.

Exchange writes distinguished names the .NET way (``CN=GeoTrust TLS RSA CA G1, OU=..., C=US``:
most specific first, ``", "`` between RDNs, values with special characters in double quotes).
``TlsCertificateName`` (``<I>{issuer}<S>{subject}``) uses that form, see
e2019-hybrid-configuration.xml. Comparisons here tolerate other spellings of the same name
(RFC 4514 escaping, spacing, case, ``ST``/``S``, reversed RDN order).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509

from bot.exchange.snapshot import ExchangeCertificate, TlsCertificateName
from bot.exchange.x509_facts import windows_name

NormalizedName = tuple[tuple[tuple[str, str], ...], ...]


def _clean_host(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(pattern_or_domain: str, fqdn: str) -> bool:
    """True when a certificate name (``*.contoso.com`` or a plain domain) covers ``fqdn``.

    Case-insensitive. A wildcard stands for exactly one whole left-most label:
    ``*.contoso.com`` covers ``ex01.contoso.com`` but neither ``a.b.contoso.com`` nor
    ``contoso.com``. A ``*`` anywhere else is taken literally.
    """
    pattern = _clean_host(pattern_or_domain)
    host = _clean_host(fqdn)
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        suffix = pattern[2:]
        first, dot, rest = host.partition(".")
        return bool(suffix) and bool(first) and bool(dot) and rest == suffix
    return pattern == host


def certificate_names(cert: ExchangeCertificate) -> tuple[str, ...]:
    """The names a certificate covers: Exchange's CertificateDomains plus the subject CN."""
    names: list[str] = []
    seen: set[str] = set()
    for name in (*cert.domains, *subject_common_names(cert.subject)):
        key = _clean_host(name)
        if key and key not in seen:
            seen.add(key)
            names.append(name.strip())
    return tuple(names)


def certificate_matches(cert: ExchangeCertificate, fqdn: str) -> bool:
    """True when ``fqdn`` is in the certificate's Subject CN or SAN (wildcards count)."""
    return any(name_matches(name, fqdn) for name in certificate_names(cert))


def subject_common_names(dn: str) -> tuple[str, ...]:
    """The CN values of a distinguished name string (any common spelling)."""
    return tuple(value for rdn in _parse_dn(dn) for key, value in rdn if key == "CN")


_KEY_ALIASES = {
    "ST": "S",
    "STATEORPROVINCENAME": "S",
    "EMAILADDRESS": "E",
    "EMAIL": "E",
    "COMMONNAME": "CN",
    "ORGANIZATIONNAME": "O",
    "ORGANIZATIONALUNITNAME": "OU",
    "LOCALITYNAME": "L",
    "COUNTRYNAME": "C",
    "OID.2.5.4.3": "CN",
    "2.5.4.3": "CN",
}


def _split_unquoted(text: str, separators: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index:index + 2])
            index += 2
            continue
        if char == '"':
            in_quotes = not in_quotes
        if char in separators and not in_quotes:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape_value(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('""', '"')
    out: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            pair = value[index + 1:index + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(chr(int(pair, 16)))
                index += 3
                continue
            out.append(value[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


@lru_cache(maxsize=8192)
def _parse_dn(dn: str) -> NormalizedName:
    rdns: list[tuple[tuple[str, str], ...]] = []
    for rdn_text in _split_unquoted(dn, ",;"):
        if not rdn_text.strip():
            continue
        attributes: list[tuple[str, str]] = []
        for attribute in _split_unquoted(rdn_text, "+"):
            key, equals, value = attribute.partition("=")
            if not equals:
                attributes.append(("", " ".join(attribute.split()).casefold()))
                continue
            norm_key = key.strip().upper()
            norm_key = _KEY_ALIASES.get(norm_key, norm_key)
            attributes.append((norm_key, _unescape_value(value).strip()))
        rdns.append(tuple(sorted(attributes)))
    return tuple(rdns)


def normalize_dn(dn: str) -> NormalizedName:
    """A comparable form of a distinguished name: keys upper-case, values case-folded."""
    return tuple(
        tuple((key, " ".join(value.split()).casefold()) for key, value in rdn)
        for rdn in _parse_dn(dn)
    )


def dn_equal(left: str, right: str) -> bool:
    """True when two spellings name the same X.500 name (either RDN order accepted)."""
    a = normalize_dn(left)
    b = normalize_dn(right)
    return bool(a) and (a == b or a == tuple(reversed(b)))


def dotnet_name(name: x509.Name) -> str:
    """A name as .NET's ``X500DistinguishedName.Name`` (and so Exchange) writes it."""
    return windows_name(name)


def tls_certificate_name_matches(name: TlsCertificateName, issuer: str, subject: str) -> bool:
    """True when a well-formed ``TlsCertificateName`` names exactly this Issuer and Subject."""
    if name.issuer is None or name.subject is None:
        return False
    return dn_equal(name.issuer, issuer) and dn_equal(name.subject, subject)


def tls_certificate_names_equal(left: TlsCertificateName, right: TlsCertificateName) -> bool:
    """True when two ``TlsCertificateName`` values name the same certificate."""
    if left.is_well_formed and right.is_well_formed:
        return tls_certificate_name_matches(right, left.issuer or "", left.subject or "")
    return " ".join(left.raw.split()).casefold() == " ".join(right.raw.split()).casefold()
