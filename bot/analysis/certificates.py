"""Small facts about one certificate: parsed DER, names in Exchange's spelling, time windows."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from cryptography import x509

from bot.analysis.names import _parse_dn, dn_equal, dotnet_name, tls_certificate_name_matches
from bot.exchange.snapshot import ExchangeCertificate, ExchangeService, TlsCertificateName

AUTH_CERTIFICATE_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@lru_cache(maxsize=16384)
def parse_der(der: bytes) -> x509.Certificate | None:
    """The certificate in RawData, or None when it does not parse."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def issuer_and_subject(cert: ExchangeCertificate) -> tuple[str, str]:
    """Issuer and Subject as Exchange writes them (from RawData when it parses)."""
    parsed = parse_der(cert.der)
    if parsed is None:
        return cert.issuer, cert.subject
    return dotnet_name(parsed.issuer), dotnet_name(parsed.subject)


def tls_certificate_name_value(cert: ExchangeCertificate) -> str:
    """The ``<I>{issuer}<S>{subject}`` value that pins a connector to this certificate."""
    issuer, subject = issuer_and_subject(cert)
    return f"<I>{issuer}<S>{subject}"


def is_named_by(cert: ExchangeCertificate, name: TlsCertificateName) -> bool:
    """True when a well-formed ``TlsCertificateName`` names this certificate's Issuer+Subject."""
    if not name.is_well_formed:
        return False
    if tls_certificate_name_matches(name, cert.issuer, cert.subject):
        return True
    issuer, subject = issuer_and_subject(cert)
    return tls_certificate_name_matches(name, issuer, subject)


def is_auth_certificate(cert: ExchangeCertificate) -> bool:
    """The Exchange Server Auth certificate (OAuth, hybrid free/busy): it matters when unbound."""
    return dn_equal(cert.subject, AUTH_CERTIFICATE_SUBJECT)


def within_validity(cert: ExchangeCertificate, now: datetime) -> bool:
    return as_utc(cert.not_before) <= as_utc(now) <= as_utc(cert.not_after)


def days_left(cert: ExchangeCertificate, now: datetime) -> int:
    """Whole days until NotAfter, truncated toward zero like .NET's ``TimeSpan.Days``."""
    seconds = (as_utc(cert.not_after) - as_utc(now)).total_seconds()
    whole = int(abs(seconds) // 86400)
    return whole if seconds >= 0 else -whole


def services_text(services: ExchangeService | None) -> str:
    if services is None:
        return "unknown"
    names = services.names()
    return ", ".join(names) if names else "None"


def short_thumbprint(thumbprint: str) -> str:
    return thumbprint.upper()[:8]


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second."""
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def clear_caches() -> None:
    """Forget parsed certificates and names (for benchmarks and memory-conscious callers)."""
    parse_der.cache_clear()
    _parse_dn.cache_clear()
