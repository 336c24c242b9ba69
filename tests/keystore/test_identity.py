"""Tests for keystore.identity: attestation certificates per FIDO packed attestation."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from vfido.keystore.certificates import ID_FIDO_GEN_CE_AAGUID
from vfido.keystore.identity import (
    identity_from_bytes,
    identity_to_bytes,
    new_identity,
    rotate_credential_key,
)

AAGUID = bytes.fromhex("00112233445566778899aabbccddeeff")


@pytest.fixture(scope="module")
def chain() -> tuple[x509.Certificate, x509.Certificate]:
    ident = new_identity(AAGUID)
    assert len(ident.attestation_chain) == 2
    batch = x509.load_der_x509_certificate(ident.attestation_chain[0])
    root = x509.load_der_x509_certificate(ident.attestation_chain[1])
    return batch, root


def test_identity_fields() -> None:
    ident = new_identity(AAGUID)
    assert ident.aaguid == AAGUID
    assert len(ident.credential_key) == 32
    key = serialization.load_der_private_key(ident.attestation_key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    batch = x509.load_der_x509_certificate(ident.attestation_chain[0])
    # The attestation key is the batch certificate's key.
    assert batch.public_key() == key.public_key()
    # Secrets stay out of the repr.
    text = repr(ident)
    assert ident.credential_key.hex() not in text
    assert repr(ident.credential_key) not in text
    assert "attestation_key" not in text


def test_random_aaguid_and_keys() -> None:
    a, b = new_identity(), new_identity()
    assert len(a.aaguid) == 16
    assert a.aaguid != b.aaguid
    assert a.credential_key != b.credential_key
    assert a.attestation_key != b.attestation_key


def test_bad_aaguid_length() -> None:
    with pytest.raises(ValueError):
        new_identity(b"short")


def test_batch_certificate(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    batch, root = chain
    assert batch.version == x509.Version.v3
    subject = batch.subject
    country = subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value
    assert isinstance(country, str) and len(country) == 2
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "vfido"
    ou = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert ou == "Authenticator Attestation"
    cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "vfido Batch Certificate"
    bc = batch.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical
    assert isinstance(bc.value, x509.BasicConstraints)
    assert bc.value.ca is False
    ext = batch.extensions.get_extension_for_oid(ID_FIDO_GEN_CE_AAGUID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x10" + AAGUID
    assert batch.issuer == root.subject
    now = datetime.datetime.now(datetime.UTC)
    assert batch.not_valid_before_utc < now < batch.not_valid_after_utc
    assert batch.not_valid_after_utc - now > datetime.timedelta(days=15 * 365)


def test_root_certificate(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    _, root = chain
    assert root.version == x509.Version.v3
    assert root.issuer == root.subject
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is True
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.value.key_cert_sign is True
    root_pub = root.public_key()
    assert isinstance(root_pub, ec.EllipticCurvePublicKey)
    root_pub.verify(
        root.signature, root.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
    )  # self-signed


def test_chain_verifies(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    batch, root = chain
    root_pub = root.public_key()
    assert isinstance(root_pub, ec.EllipticCurvePublicKey)
    assert batch.signature_hash_algorithm is not None
    root_pub.verify(
        batch.signature, batch.tbs_certificate_bytes, ec.ECDSA(batch.signature_hash_algorithm)
    )
    batch.verify_directly_issued_by(root)
    # And a certificate from another identity does not verify under this root.
    other_root = x509.load_der_x509_certificate(new_identity().attestation_chain[1])
    with pytest.raises(InvalidSignature):
        batch.verify_directly_issued_by(other_root)


def test_rotate_credential_key() -> None:
    ident = new_identity(AAGUID)
    rotated = rotate_credential_key(ident)
    assert rotated.credential_key != ident.credential_key
    assert len(rotated.credential_key) == 32
    assert rotated.aaguid == ident.aaguid
    assert rotated.attestation_key == ident.attestation_key
    assert rotated.attestation_chain == ident.attestation_chain


def test_serialization_round_trip() -> None:
    ident = new_identity()
    assert identity_from_bytes(identity_to_bytes(ident)) == ident
    with pytest.raises(ValueError):
        identity_from_bytes(b"\xff\x00garbage")
    with pytest.raises(ValueError):
        identity_from_bytes(b"\xa0")  # empty map
