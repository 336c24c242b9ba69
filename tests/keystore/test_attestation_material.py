"""Attestation material made on first use (#16): exactly once, however many threads ask
first; the same bytes for the key's life (reset included); never deferred under a seed."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from cryptography import x509

from tests.service_helpers import fresh_python
from vfido.authenticator.deterministic import SeededEnvironment
from vfido.keystore import certificates, entropy, kdf
from vfido.keystore.identity import identity_from_bytes, identity_to_bytes, new_identity
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import AttestationMaterial

AAGUID = bytes.fromhex("00112233445566778899aabbccddeeff")
THREADS = 16


def test_made_once_under_concurrent_first_use() -> None:
    calls: list[int] = []

    def make() -> tuple[bytes, tuple[bytes, ...]]:
        calls.append(1)
        time.sleep(0.05)  # widen the window in which a second maker could start
        return bytes([len(calls)]) * 4, (b"batch-%d" % len(calls), b"root")

    material = AttestationMaterial.on_first_use(make)
    assert not material.made
    start = threading.Barrier(THREADS)
    seen: list[tuple[bytes, tuple[bytes, ...]]] = []

    def first_use() -> None:
        start.wait()
        seen.append((material.key, material.chain))

    threads = [threading.Thread(target=first_use) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1
    assert seen == [(b"\x01" * 4, (b"batch-1", b"root"))] * THREADS
    assert material.made
    assert (material.key, material.chain) == seen[0]
    assert len(calls) == 1


def test_real_chain_made_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    real = certificates.make_chain

    def counting(aaguid: bytes) -> tuple[bytes, bytes, bytes]:
        made.append(aaguid)
        return real(aaguid)

    monkeypatch.setattr(certificates, "make_chain", counting)
    identity = new_identity(AAGUID, attestation_on_first_use=True)
    assert not made and not identity.attestation.made
    start = threading.Barrier(THREADS)
    chains: list[tuple[bytes, ...]] = []

    def first_use() -> None:
        start.wait()
        chains.append(identity.attestation_chain)

    threads = [threading.Thread(target=first_use) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert made == [AAGUID]
    assert len(chains) == THREADS and len(set(chains)) == 1
    batch = x509.load_der_x509_certificate(chains[0][0])
    batch.verify_directly_issued_by(x509.load_der_x509_certificate(chains[0][1]))
    ext = batch.extensions.get_extension_for_oid(certificates.ID_FIDO_GEN_CE_AAGUID)
    assert ext.value.public_bytes() == b"\x04\x10" + AAGUID


def test_a_failed_maker_is_tried_again() -> None:
    attempts: list[int] = []

    def make() -> tuple[bytes, tuple[bytes, ...]]:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no entropy today")
        return b"key", (b"cert",)

    material = AttestationMaterial.on_first_use(make)
    with pytest.raises(OSError):
        _ = material.key
    assert not material.made
    assert material.chain == (b"cert",) and material.key == b"key"
    assert len(attempts) == 2


def test_repr_neither_makes_nor_shows_the_key() -> None:
    made: list[int] = []
    material = AttestationMaterial.on_first_use(lambda: made.append(1) or (b"secret", (b"c",)))
    identity = replace(new_identity(AAGUID), attestation=material)
    assert "secret" not in repr(identity) and "made on first use" in repr(identity)
    assert not made
    assert material.key == b"secret"
    assert "secret" not in repr(material) and "made on first use" not in repr(material)


def test_equality_compares_the_material() -> None:
    fixed = AttestationMaterial(b"k", (b"a", b"b"))
    assert fixed == AttestationMaterial.on_first_use(lambda: (b"k", (b"a", b"b")))
    assert fixed != AttestationMaterial(b"k", (b"a",))
    assert hash(fixed) == hash(AttestationMaterial(b"k", (b"a", b"b")))


def test_ephemeral_store_makes_it_on_first_use_and_keeps_it_across_reset() -> None:
    with SqliteKeyStore.ephemeral(aaguid=AAGUID) as store:
        before = store.identity()
        assert not before.attestation.made
        store.reset()  # the credential key changes; the material is not needed for it
        after = store.identity()
        assert after.credential_key != before.credential_key
        assert after.attestation is before.attestation and not after.attestation.made
        chain = after.attestation_chain
        assert before.attestation_chain == chain  # one material, made once
        store.reset()
        assert store.identity().attestation_chain == chain
        assert store.identity().attestation_key == before.attestation_key
        # A backup of it carries the material it attests with.
        restored = identity_from_bytes(identity_to_bytes(store.identity()))
        assert restored.attestation_chain == chain and restored.aaguid == AAGUID


def test_persistent_store_makes_it_at_creation_and_reads_it_back(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path)) / "ks"
    params = kdf.insecure_test_params()
    with SqliteKeyStore.create(directory, "pw", kdf_params=params, aaguid=AAGUID) as store:
        assert store.identity().attestation.made
        chain = store.identity().attestation_chain
    with SqliteKeyStore.open(directory, "pw") as store:
        assert store.identity().attestation.made
        assert store.identity().attestation_chain == chain


def test_a_seeded_source_makes_it_at_once_and_reproducibly() -> None:
    def seeded_chain(lazy: bool) -> tuple[bytes, ...]:
        with entropy.using(SeededEnvironment(b"golden")):
            identity = new_identity(AAGUID, attestation_on_first_use=lazy)
            assert identity.attestation.made  # drawn now, in the order it always was
        return identity.attestation_chain

    assert seeded_chain(True) == seeded_chain(False) == seeded_chain(True)

    def seeded_store_chain() -> tuple[bytes, ...]:
        with entropy.using(SeededEnvironment(b"golden")):
            store = SqliteKeyStore.ephemeral(aaguid=AAGUID)
        with store:
            assert store.identity().attestation.made
            return store.identity().attestation_chain

    assert seeded_store_chain() == seeded_store_chain()


def test_ephemeral_store_loads_no_x509_until_a_certificate_is_read() -> None:
    """In a fresh interpreter: creating, using and resetting an ephemeral keystore leaves
    ``cryptography.x509`` unloaded; reading the chain loads it."""
    code = """
        import json, sys
        from vfido.keystore.sqlite_store import SqliteKeyStore
        store = SqliteKeyStore.ephemeral()
        store.put_state({"k": b"v"})
        store.reset()
        before = "cryptography.x509" in sys.modules
        chain = store.identity().attestation_chain
        print(json.dumps({"before": before, "after": "cryptography.x509" in sys.modules,
                          "certificates": len(chain)}))
    """
    assert fresh_python(code) == {"before": False, "after": True, "certificates": 2}
