"""Would Exchange Online trust this certificate? A verdict with the evidence it rests on.

Rules, in order (the first that applies decides):

1. A chain built by cryptography's verifier from the leaf, through the configured
   intermediates, to a root of the **public** set -> ``public``. A public verdict always rests
   on a verified chain or on Exchange's own RootCAType ThirdParty (rule 5), because the plan
   pins connectors to public certificates.
2. Issuer equals Subject and the self-signature verifies, or cannot be checked (Exchange's own
   default and Auth certificates are SHA-1 signed, which the verifier refuses) ->
   ``self-signed``.
3. A chain to a configured **internal** root (relaxed extension checks: enterprise CAs often
   omit what the Web PKI requires) -> ``internal``.
4. RootCAType Enterprise or GroupPolicy (root published by Active Directory) -> ``internal``;
   RootCAType Registry on a certificate that is not self-signed (root imported by hand on the
   server, not from the Microsoft Trusted Root Program) -> ``internal``.
5. RootCAType ThirdParty (root from the Microsoft Trusted Root Program, docs section 7) without a
   chain we could build -> ``public``, saying why no chain was built.
6. The issuer's name is the subject of a configured internal root, but the chain did not verify
   (e.g. SHA-1 signature) -> ``internal``: a negative verdict may rest on weaker evidence.
7. Anything else CA-issued -> ``unknown``, never ``internal``: RawData is the leaf only, so a
   missing intermediate is the usual reason, and calling such a certificate internal would
   have the plan unbind SMTP from what may well be a public certificate.

Trust and expiry are separate findings: a chain is built at ``now`` when the leaf is within its
validity, otherwise at the nearest moment inside it, and the evidence says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from bot.analysis.certificates import as_utc, iso_utc, parse_der
from bot.analysis.model import TrustAssessment
from bot.analysis.names import dotnet_name
from bot.exchange.snapshot import CertificateStatus, ExchangeCertificate, RootCAType

_ROOT_CA_TYPE_NAMES = {
    RootCAType.NONE: "None",
    RootCAType.THIRD_PARTY: "ThirdParty",
    RootCAType.ENTERPRISE: "Enterprise",
    RootCAType.REGISTRY: "Registry",
    RootCAType.GROUP_POLICY: "GroupPolicy",
    RootCAType.UNKNOWN: "Unknown",
}

_STATUS_NAMES = {
    CertificateStatus.UNKNOWN: "Unknown",
    CertificateStatus.VALID: "Valid",
    CertificateStatus.REVOKED: "Revoked",
    CertificateStatus.DATE_INVALID: "DateInvalid",
    CertificateStatus.UNTRUSTED: "Untrusted",
    CertificateStatus.INVALID: "Invalid",
    CertificateStatus.REVOCATION_CHECK_FAILURE: "RevocationCheckFailure",
    CertificateStatus.PENDING_REQUEST: "PendingRequest",
}


def root_ca_type_name(value: RootCAType | None) -> str | None:
    return None if value is None else _ROOT_CA_TYPE_NAMES.get(value, str(int(value)))


def status_name(value: CertificateStatus | None) -> str | None:
    return None if value is None else _STATUS_NAMES.get(value, str(int(value)))


def _store_or_none(certs: tuple[x509.Certificate, ...]) -> Store | None:
    return Store(list(certs)) if certs else None


@dataclass(frozen=True)
class TrustStore:
    """The roots and intermediates trust is judged against.

    ``public_roots``: what Exchange Online trusts (certifi / Mozilla by default).
    ``intermediates``: issuing CAs, public or internal (RawData carries the leaf only).
    ``internal_roots``: enterprise roots the Exchange servers trust and Exchange Online does not.
    """

    public_roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    internal_roots: tuple[x509.Certificate, ...]
    description: str
    _public_store: Store | None = field(init=False, repr=False, compare=False)
    _internal_store: Store | None = field(init=False, repr=False, compare=False)
    _known_subjects: dict[bytes, str] = field(init=False, repr=False, compare=False)
    _internal_root_subjects: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_public_store", _store_or_none(self.public_roots))
        object.__setattr__(self, "_internal_store", _store_or_none(self.internal_roots))
        known: dict[bytes, str] = {}
        for kind, certs in (
            ("public root", self.public_roots),
            ("intermediate", self.intermediates),
            ("internal root", self.internal_roots),
        ):
            for cert in certs:
                known.setdefault(cert.subject.public_bytes(), kind)
        object.__setattr__(self, "_known_subjects", known)
        object.__setattr__(
            self,
            "_internal_root_subjects",
            frozenset(cert.subject.public_bytes() for cert in self.internal_roots),
        )


_PUBLIC_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_RELAXED_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, None
)
# The leaf is judged for who issued it, not for its extensions: Exchange Online receives it as
# a TLS client certificate, and EKU / SAN rules there are not documented.
_LEAF_POLICY = ExtensionPolicy.permit_all()


def _validation_time(leaf: x509.Certificate, now: datetime) -> tuple[datetime, str | None]:
    start = leaf.not_valid_before_utc
    end = leaf.not_valid_after_utc
    moment = as_utc(now)
    if moment > end:
        at = max(start, end - timedelta(seconds=1))
        return at, (
            f"chain checked at {iso_utc(at)}, inside the validity: the certificate has expired"
        )
    if moment < start:
        return start, (
            f"chain checked at {iso_utc(start)}, inside the validity: "
            "the certificate is not valid yet"
        )
    return moment, None


def _build_chain(
    leaf: x509.Certificate,
    store: Store,
    intermediates: list[x509.Certificate],
    at: datetime,
    ca_policy: ExtensionPolicy,
) -> tuple[list[x509.Certificate] | None, str | None]:
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    try:
        return verifier.verify(leaf, intermediates).chain, None
    except VerificationError as error:
        return None, str(error)


def _chain_text(kind: str, chain: list[x509.Certificate]) -> str:
    root = dotnet_name(chain[-1].subject)
    via = [dotnet_name(cert.subject) for cert in chain[1:-1]]
    text = f"chain built to {kind} root {root}"
    return text + (f" via {'; '.join(via)}" if via else " (issued by the root directly)")


def _self_signature(leaf: x509.Certificate) -> bool | None:
    """True/False when the self-signature was checked, None when it cannot be (e.g. SHA-1)."""
    try:
        leaf.verify_directly_issued_by(leaf)
    except InvalidSignature:
        return False
    except (ValueError, TypeError):
        return None
    return True


def _signature_name(leaf: x509.Certificate) -> str:
    try:
        algorithm = leaf.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None:
        return f"signature algorithm {leaf.signature_algorithm_oid.dotted_string}"
    return f"a {algorithm.name.upper()} signature"


def _exchange_view(cert: ExchangeCertificate) -> list[str]:
    notes: list[str] = []
    root_type = root_ca_type_name(cert.root_ca_type)
    if root_type is not None:
        notes.append(f"RootCAType {root_type}")
    status = status_name(cert.status)
    if status is not None:
        notes.append(
            f"Exchange Status {status} (the server's own trust, not Exchange Online's)"
        )
    return notes


def assess_trust(cert: ExchangeCertificate, store: TrustStore, now: datetime) -> TrustAssessment:
    """Classify a certificate as public, internal, self-signed or unknown, with evidence."""
    leaf = parse_der(cert.der)
    exchange_notes = _exchange_view(cert)
    if leaf is None:
        return _from_root_ca_type(cert, ["RawData could not be parsed as X.509"], exchange_notes)

    evidence: list[str] = []
    at, time_note = _validation_time(leaf, now)
    intermediates = list(store.intermediates)
    public_error: str | None = None
    if store._public_store is not None:
        chain, public_error = _build_chain(
            leaf, store._public_store, intermediates, at, _PUBLIC_CA_POLICY
        )
        if chain is not None:
            evidence.append(_chain_text("public", chain))
            if time_note:
                evidence.append(time_note)
            return TrustAssessment("public", tuple(evidence + exchange_notes))

    issuer = dotnet_name(leaf.issuer)
    if leaf.issuer == leaf.subject:
        signature = _self_signature(leaf)
        if signature is True:
            return TrustAssessment(
                "self-signed",
                ("issuer equals subject and the self-signature verifies", *exchange_notes),
            )
        if signature is None:
            flag = "; Exchange reports IsSelfSigned" if cert.self_signed else ""
            return TrustAssessment(
                "self-signed",
                (
                    f"issuer equals subject{flag} (self-signature not checked: "
                    f"{_signature_name(leaf)} is not supported by the verifier)",
                    *exchange_notes,
                ),
            )

    internal_error: str | None = None
    if store._internal_store is not None:
        chain, internal_error = _build_chain(
            leaf, store._internal_store, intermediates, at, _RELAXED_CA_POLICY
        )
        if chain is not None:
            evidence.append(_chain_text("internal", chain))
            if time_note:
                evidence.append(time_note)
            return TrustAssessment("internal", tuple(evidence + exchange_notes))

    issuer_key = leaf.issuer.public_bytes()
    known_as = store._known_subjects.get(issuer_key)
    if known_as is None:
        unbuilt = f"issuer {issuer} not in the public root set and intermediates missing"
    else:
        reason = public_error if known_as != "internal root" else internal_error
        unbuilt = f"issuer {issuer} is a known {known_as} but the chain was refused: {reason}"
    if time_note:
        unbuilt += f" ({time_note})"

    decided = _from_root_ca_type(cert, [unbuilt], exchange_notes)
    if decided.trust != "unknown":
        return decided
    if issuer_key in store._internal_root_subjects:
        return TrustAssessment(
            "internal",
            (f"issuer {issuer} is the subject of a configured internal root", unbuilt,
             *exchange_notes),
        )
    return decided


def _from_root_ca_type(
    cert: ExchangeCertificate, evidence: list[str], exchange_notes: list[str]
) -> TrustAssessment:
    root_type = cert.root_ca_type
    if root_type in (RootCAType.ENTERPRISE, RootCAType.GROUP_POLICY):
        source = "Active Directory" if root_type == RootCAType.ENTERPRISE else "Group Policy"
        return TrustAssessment(
            "internal",
            (
                f"RootCAType {root_ca_type_name(root_type)}: root published by {source}, "
                "which Exchange Online does not trust",
                *evidence,
                *[note for note in exchange_notes if not note.startswith("RootCAType")],
            ),
        )
    if root_type == RootCAType.REGISTRY and not cert.self_signed:
        return TrustAssessment(
            "internal",
            (
                "RootCAType Registry: root installed on the server by hand, "
                "not from the Microsoft Trusted Root Program",
                *evidence,
                *[note for note in exchange_notes if not note.startswith("RootCAType")],
            ),
        )
    if root_type == RootCAType.REGISTRY and cert.self_signed:
        return TrustAssessment(
            "self-signed",
            ("Exchange reports IsSelfSigned with RootCAType Registry", *evidence,
             *[note for note in exchange_notes if not note.startswith("RootCAType")]),
        )
    if root_type == RootCAType.THIRD_PARTY:
        reason = evidence[0] if evidence else "no chain"
        missing = "intermediate missing" if "intermediates missing" in reason else reason
        return TrustAssessment(
            "public",
            (
                f"RootCAType ThirdParty; chain not built: {missing}",
                *[note for note in exchange_notes if not note.startswith("RootCAType")],
            ),
        )
    return TrustAssessment("unknown", (*evidence, *exchange_notes))
