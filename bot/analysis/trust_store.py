"""Load a :class:`TrustStore` from certifi and PEM/DER files: the analysis package's only I/O."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from bot.analysis.trust import TrustStore


class TrustStoreError(Exception):
    """A trust store file could not be read; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"could not read certificates from {path}: {reason}")
        self.path = path
        self.reason = reason


def _read_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TrustStoreError(path, error.strerror or str(error)) from error
    try:
        with warnings.catch_warnings():
            # certifi's bundle holds a root with a negative serial number; it is still a root.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if b"-----BEGIN" in data:
                certs = tuple(x509.load_pem_x509_certificates(data))
            else:
                certs = (x509.load_der_x509_certificate(data),)
    except ValueError as error:
        raise TrustStoreError(path, f"not a PEM or DER certificate ({error})") from error
    if not certs:
        raise TrustStoreError(path, "no certificate in the file")
    return certs


def _unique(certs: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: set[x509.Certificate] = set()
    unique: list[x509.Certificate] = []
    for cert in certs:
        if cert not in seen:
            seen.add(cert)
            unique.append(cert)
    return tuple(unique)


def _load_all(paths: Sequence[Path]) -> tuple[x509.Certificate, ...]:
    return tuple(cert for path in paths for cert in _read_certificates(Path(path)))


def load_trust_store(
    extra_public_roots: Sequence[Path] = (),
    intermediates: Sequence[Path] = (),
    internal_roots: Sequence[Path] = (),
    include_certifi: bool = True,
) -> TrustStore:
    """Public roots (certifi plus extra files), intermediates and internal roots from files.

    Raises :class:`TrustStoreError` naming the first file that cannot be read.
    """
    public: list[x509.Certificate] = []
    parts: list[str] = []
    if include_certifi:
        bundle = _read_certificates(Path(certifi.where()))
        public.extend(bundle)
        parts.append(f"certifi {certifi.__version__} ({len(bundle)} public roots)")
    extra = _load_all(extra_public_roots)
    public.extend(extra)
    if extra_public_roots:
        names = ", ".join(Path(path).name for path in extra_public_roots)
        parts.append(f"{len(extra)} extra public roots from {names}")
    loaded_intermediates = _unique(_load_all(intermediates))
    loaded_internal = _unique(_load_all(internal_roots))
    if loaded_intermediates:
        parts.append(f"{len(loaded_intermediates)} intermediates")
    if loaded_internal:
        parts.append(f"{len(loaded_internal)} internal roots")
    return TrustStore(
        public_roots=_unique(public),
        intermediates=loaded_intermediates,
        internal_roots=loaded_internal,
        description="; ".join(parts) if parts else "empty trust store",
    )
