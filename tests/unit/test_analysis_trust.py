"""Trust assessment against generated CA chains, and loading trust stores from files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from bot.analysis.trust import TrustStore, assess_trust
from bot.analysis.trust_store import TrustStoreError, load_trust_store
from bot.exchange.snapshot import RootCAType, ServicesSource
from tests.unit.certgen import (
    NOW,
    days,
    ec_key,
    exchange_certificate,
    issue_leaf,
    make_intermediate,
    make_root,
    pki,
    rsa_key,
)


def _store(*, intermediates: bool = True) -> TrustStore:
    p = pki()
    return replace(
        p.store,
        intermediates=(p.public_ca.cert,) if intermediates else (),
    )


def test_public_chain_through_intermediate() -> None:
    leaf = exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com"))
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "public"
    assert assessment.evidence[0] == (
        "chain built to public root CN=Test Public Root G2, O=Test Trust Services, C=US "
        "via CN=Test TLS RSA CA G1, O=Test Trust Services, C=US"
    )


def test_missing_intermediate_is_unknown_with_evidence() -> None:
    leaf = exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com"))
    assessment = assess_trust(leaf, _store(intermediates=False), NOW)
    assert assessment.trust == "unknown"
    assert assessment.evidence[0] == (
        "issuer CN=Test TLS RSA CA G1, O=Test Trust Services, C=US not in the public root set "
        "and intermediates missing"
    )


def test_root_ca_type_third_party_without_chain_is_public() -> None:
    leaf = exchange_certificate(
        issue_leaf(pki().public_ca, "mail.contoso.com"), root_ca_type=RootCAType.THIRD_PARTY
    )
    assessment = assess_trust(leaf, _store(intermediates=False), NOW)
    assert assessment.trust == "public"
    assert assessment.evidence[0] == "RootCAType ThirdParty; chain not built: intermediate missing"


def test_internal_root_chain_is_internal() -> None:
    leaf = exchange_certificate(issue_leaf(pki().internal_root, "ex01.contoso.com"))
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "internal"
    assert "internal root CN=Contoso Enterprise Root CA" in assessment.evidence[0]


@pytest.mark.parametrize("root_type", [RootCAType.ENTERPRISE, RootCAType.GROUP_POLICY,
                                       RootCAType.REGISTRY])
def test_root_ca_type_of_an_unknown_ca_makes_it_internal(root_type: RootCAType) -> None:
    other_ca = make_root("Fabrikam Issuing CA", key=ec_key(50))
    leaf = exchange_certificate(issue_leaf(other_ca, "ex01.contoso.com"), root_ca_type=root_type)
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "internal"
    expected = {RootCAType.ENTERPRISE: "Enterprise", RootCAType.GROUP_POLICY: "GroupPolicy",
                RootCAType.REGISTRY: "Registry"}[root_type]
    assert assessment.evidence[0].startswith(f"RootCAType {expected}:")


def test_unknown_ca_without_exchange_facts_is_unknown_not_internal() -> None:
    other_ca = make_root("Fabrikam Issuing CA", key=ec_key(50))
    leaf = exchange_certificate(
        issue_leaf(other_ca, "ex01.contoso.com"), services_source=ServicesSource.UNKNOWN
    )
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "unknown"
    assert "CN=Fabrikam Issuing CA not in the public root set" in assessment.evidence[0]


def test_self_signed() -> None:
    leaf = exchange_certificate(issue_leaf(None, "EX01", domains=("ex01.contoso.com",)),
                                root_ca_type=RootCAType.REGISTRY)
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "self-signed"
    assert assessment.evidence[0] == "issuer equals subject and the self-signature verifies"
    assert "RootCAType Registry" in assessment.evidence


def test_self_signed_sha1_rests_on_exchange_flag() -> None:
    leaf = exchange_certificate(
        issue_leaf(None, "EX01", key=rsa_key(2048, 7), signature="sha1"),
    )
    assert leaf.signature_hash == "sha1"
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "self-signed"
    assert assessment.evidence[0] == (
        "issuer equals subject; Exchange reports IsSelfSigned (self-signature not checked: "
        "a SHA1 signature is not supported by the verifier)"
    )


def test_sha1_leaf_from_internal_root_is_internal_by_issuer_name() -> None:
    leaf = exchange_certificate(
        issue_leaf(pki().internal_root, "ex01.contoso.com", signature="sha1"),
        services_source=ServicesSource.UNKNOWN,
    )
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "internal"
    assert "subject of a configured internal root" in assessment.evidence[0]
    assert "Forbidden signature algorithm" in assessment.evidence[1]


def test_sha1_leaf_from_public_ca_is_not_called_public() -> None:
    p = pki()
    leaf = exchange_certificate(
        issue_leaf(p.public_ca, "mail.contoso.com", signature="sha1"),
        services_source=ServicesSource.UNKNOWN,
    )
    assessment = assess_trust(leaf, p.store, NOW)
    assert assessment.trust == "unknown"
    assert "is a known intermediate but the chain was refused" in assessment.evidence[0]


def test_expired_certificate_keeps_its_trust_and_says_when_the_chain_was_checked() -> None:
    leaf = exchange_certificate(
        issue_leaf(pki().public_ca, "mail.contoso.com",
                   not_before=NOW - days(400), not_after=NOW - days(35))
    )
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "public"
    assert any("the certificate has expired" in line for line in assessment.evidence)


def test_rsa_1024_leaf_still_chains() -> None:
    leaf = exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com",
                                           key=rsa_key(1024, 0)))
    assert leaf.key_size == 1024
    assert assess_trust(leaf, pki().store, NOW).trust == "public"


def test_chain_through_internal_intermediate() -> None:
    p = pki()
    issuing = make_intermediate(p.internal_root, "Contoso Issuing CA 01", key=ec_key(60))
    store = replace(p.store, intermediates=(p.public_ca.cert, issuing.cert))
    leaf = exchange_certificate(issue_leaf(issuing, "ex01.contoso.com"))
    assessment = assess_trust(leaf, store, NOW)
    assert assessment.trust == "internal"
    assert "via CN=Contoso Issuing CA 01" in assessment.evidence[0]


def test_empty_store_relies_on_exchange() -> None:
    empty = TrustStore((), (), (), "empty")
    leaf = exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com"),
                                root_ca_type=RootCAType.THIRD_PARTY)
    assert assess_trust(leaf, empty, NOW).trust == "public"


def test_unparsable_rawdata_is_unknown() -> None:
    leaf = replace(
        exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com")),
        der=b"not a certificate",
        root_ca_type=None,
    )
    assessment = assess_trust(leaf, pki().store, NOW)
    assert assessment.trust == "unknown"
    assert assessment.evidence[0] == "RawData could not be parsed as X.509"


def test_load_trust_store_from_pem_and_der(tmp_path: Path) -> None:
    p = pki()
    roots = tmp_path / "roots.pem"
    roots.write_bytes(p.public_root.cert.public_bytes(Encoding.PEM))
    intermediate = tmp_path / "issuing.cer"
    intermediate.write_bytes(p.public_ca.cert.public_bytes(Encoding.DER))
    internal = tmp_path / "corp.pem"
    internal.write_bytes(p.internal_root.cert.public_bytes(Encoding.PEM) * 2)
    store = load_trust_store([roots], [intermediate], [internal], include_certifi=False)
    assert store.public_roots == (p.public_root.cert,)
    assert store.intermediates == (p.public_ca.cert,)
    assert store.internal_roots == (p.internal_root.cert,)
    assert "1 extra public roots from roots.pem" in store.description
    leaf = exchange_certificate(issue_leaf(p.public_ca, "mail.contoso.com"))
    assert assess_trust(leaf, store, NOW).trust == "public"


def test_load_trust_store_includes_certifi() -> None:
    store = load_trust_store()
    assert len(store.public_roots) > 50
    assert store.description.startswith("certifi ")
    leaf = exchange_certificate(issue_leaf(pki().public_ca, "mail.contoso.com"))
    assert assess_trust(leaf, store, NOW).trust == "unknown"


def test_load_trust_store_names_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustStoreError, match=r"broken\.pem") as raised:
        load_trust_store(internal_roots=[bad], include_certifi=False)
    assert raised.value.path == bad
    with pytest.raises(TrustStoreError, match=r"missing\.pem"):
        load_trust_store(intermediates=[tmp_path / "missing.pem"], include_certifi=False)
