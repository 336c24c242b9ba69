"""The attestation certificates: a self-signed P-256 attestation root CA and a batch
certificate issued by it.

This is the one keystore module that imports ``cryptography.x509``; nothing imports it
before a certificate is needed (:mod:`vfido.keystore.identity` imports it in the function
that makes the material), so a key that never attests never loads X.509.

The batch certificate meets the FIDO packed attestation certificate requirements
(WebAuthn Level 2, section 8.2.1):

* X.509 version 3;
* subject C (ISO 3166 two-letter code), O (vendor), OU = "Authenticator
  Attestation", CN (vendor-chosen);
* Basic Constraints CA=false (marked critical);
* the non-critical extension id-fido-gen-ce-aaguid (1.3.6.1.4.1.45724.1.1.4)
  whose value is the DER OCTET STRING holding the 16-byte AAGUID.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vfido.keystore import entropy
from vfido.keystore.store import AAGUID_SIZE

ID_FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

COUNTRY = "US"
ORGANIZATION = "vfido"
BATCH_OU = "Authenticator Attestation"
BATCH_CN = "vfido Batch Certificate"
ROOT_CN = "vfido Attestation Root CA"

_VALIDITY = datetime.timedelta(days=20 * 365)


def _name(ou: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def aaguid_extension_value(aaguid: bytes) -> bytes:
    """DER OCTET STRING of ``aaguid`` (the value of id-fido-gen-ce-aaguid)."""
    if len(aaguid) != AAGUID_SIZE:
        raise ValueError("AAGUID must be 16 bytes")
    return bytes([0x04, AAGUID_SIZE]) + aaguid


def make_chain(aaguid: bytes) -> tuple[bytes, bytes, bytes]:
    """(batch key PKCS#8 DER, batch cert DER, root cert DER), drawn from the entropy
    source in force (:mod:`vfido.keystore.entropy`) in a fixed order: root key, root
    serial, batch key, batch serial."""
    not_before = entropy.utc_now() - datetime.timedelta(days=1)
    not_after = not_before + _VALIDITY

    root_key = entropy.ec_private_key(ec.SECP256R1())
    root_name = _name("Attestation Root", ROOT_CN)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = entropy.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(root_ski, critical=False),
        root_key,
    )

    batch_key = entropy.ec_private_key(ec.SECP256R1())
    batch_cert = entropy.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(_name(BATCH_OU, BATCH_CN))
        .issuer_name(root_name)
        .public_key(batch_key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(batch_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(ID_FIDO_GEN_CE_AAGUID, aaguid_extension_value(aaguid)),
            critical=False,
        ),
        root_key,
    )
    # The root private key is discarded: nothing else is ever signed by it.
    batch_der = batch_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        batch_der,
        batch_cert.public_bytes(serialization.Encoding.DER),
        root_cert.public_bytes(serialization.Encoding.DER),
    )
