"""The caches added for speed (bench/) must never serve stale values.

* authenticatorConfig settings (alwaysUv) are cached per keystore: toggling and
  authenticatorReset must be visible at once;
* loaded credential keys are cached: after a reset the old IDs are dead anyway, and
  a new credential signs with its own key;
* EC public keys are turned into COSE maps without python-fido2's per-byte loop: the
  maps must stay exactly python-fido2's;
* getInfo's members that repeat are kept encoded (``GetInfoResponse.to_encoded_map``): the
  bytes must stay those of the plain map, whatever the configuration, PIN or model;
* encIdentifier's key is HKDF written out with two HMACs: it must stay RFC 5869's HKDF;
  the members are one-block CBC built on a kept block cipher: it must stay AES-128-CBC
  under the current token's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fido2.ctap import CtapError
from fido2.ctap1 import Ctap1
from fido2.ctap2.base import Ctap2
from fido2.ctap2.config import Config
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from tests.vkey import running_key
from vfido.authenticator import cbor
from vfido.authenticator.config import Config as KeyConfig
from vfido.authenticator.cose import _COSE_CLASSES, _EC_CURVES, CredentialKey
from vfido.authenticator.get_info import build_info
from vfido.authenticator.persistent_token import encrypt_info_member, info_member_key
from vfido.personas import load as load_persona
from vfido.transports.runner import HidTransaction


def test_always_uv_cache_follows_toggle_and_reset() -> None:
    with running_key(config=KeyConfig(reset_window=60.0)) as key:
        ctap = Ctap2(key.device)
        assert ctap.get_info().options["alwaysUv"] is False
        Config(ctap).toggle_always_uv()
        assert ctap.get_info().options["alwaysUv"] is True
        ctap.reset()
        assert ctap.get_info().options["alwaysUv"] is False


def test_each_credential_signs_with_its_own_key() -> None:
    with running_key(config=KeyConfig(attestation="none")) as key:
        ctap = Ctap2(key.device)
        cdh = b"\x11" * 32
        rp = {"id": "example.com", "name": "Example"}
        creds = []
        for i in range(3):
            att = ctap.make_credential(
                cdh, rp, {"id": bytes([i]), "name": "u"}, [{"type": "public-key", "alg": -7}]
            )
            data = att.auth_data.credential_data
            assert data is not None
            creds.append(data)
        for _ in range(2):  # the second round is served from the key cache
            for data in creds:
                allow: list[Mapping[str, Any]] = [{"type": "public-key", "id": data.credential_id}]
                assertion = ctap.get_assertion("example.com", cdh, allow)
                # Raises InvalidSignature if a cached key of another credential signed.
                data.public_key.verify(bytes(assertion.auth_data) + cdh, assertion.signature)


def test_pin_set_cache_follows_set_pin_and_reset() -> None:
    from fido2.ctap2.pin import ClientPin

    with running_key(config=KeyConfig(reset_window=60.0)) as key:
        ctap = Ctap2(key.device)
        assert ctap.get_info().options["clientPin"] is False  # cached: no PIN
        ClientPin(ctap).set_pin("12345678")
        assert ctap.get_info().options["clientPin"] is True
        # A discoverable credential now needs user verification (makeCredUvNotRqd covers
        # only server-side ones); uv_protected reads the cache.
        params: list[Mapping[str, Any]] = [{"type": "public-key", "alg": -7}]
        rp = {"id": "example.com", "name": "Example"}
        with pytest.raises(CtapError) as info:
            ctap.make_credential(
                b"\x22" * 32, rp, {"id": b"u", "name": "u"}, params, options={"rk": True}
            )
        assert info.value.code == CtapError.ERR.PUAT_REQUIRED
        ctap.reset()
        assert ctap.get_info().options["clientPin"] is False
        ctap.make_credential(
            b"\x22" * 32, rp, {"id": b"u", "name": "u"}, params, options={"rk": True}
        )


def test_ephemeral_counters_are_written_back_before_any_read() -> None:
    """A memory-only keystore keeps advanced counters in memory (write-back), the first
    counter of a credential too; every query still sees the current values, and the rows
    written back carry valid MACs and the right row count."""
    from vfido.keystore.sqlite_store import SqliteKeyStore

    store = SqliteKeyStore.ephemeral()
    ids = [bytes([i]) * 32 for i in range(5)]
    for round_ in range(1, 4):
        for i, cid in enumerate(ids):
            assert store.increment_counter(cid, step=i + 1) == round_ * (i + 1)
    # max_counter reads every row of the table (after the write-back).
    assert store.max_counter() == 3 * 5
    for i, cid in enumerate(ids):
        assert store.get_counter(cid) == 3 * (i + 1)
    store.increment_counter(ids[4])  # dirty again, then read by a SELECT over all rows
    assert store.max_counter() == 16
    later = b"\x09" * 32
    assert store.increment_counter(later) == 1  # a new row and an old one, written together
    store.increment_counter(ids[0])
    # Every row's MAC and the authenticated row count, as an open checks them.
    assert store._verify_counters().rows == 6
    # A reopened view of the table: drop the cache, the values come from the rows.
    store._counters.clear()
    assert [store.get_counter(cid) for cid in [*ids, later]] == [4, 6, 9, 12, 16, 1]
    store.close()


def _statements(store: Any) -> list[str]:
    """Collect the SQL statements the store's connection runs from now on."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def test_ephemeral_first_assertion_and_get_info_reads_run_no_statement() -> None:
    """A memory-only store answers from memory what only it writes: a new credential's
    first counter, the state rows and the credential count. The answers stay those of the
    rows (checked after a write-back, a deletion and a reset)."""
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.keystore.store import CredentialRecord

    store = SqliteKeyStore.ephemeral()
    store.put_state({"pin.retries": b"\x08", "x": b"1"})
    record = CredentialRecord(
        credential_id=b"\x01" * 16,
        rp_id="example.com",
        rp_id_hash=b"\x02" * 32,
        user_id=b"u",
        algorithm=-7,
        private_key=b"\x03" * 32,
        created=1,
    )
    store.put_credential(record)
    assert store.count_credentials() == 1
    seen = _statements(store)
    assert store.increment_counter(b"\x05" * 16) == 1
    assert store.get_state("pin.retries") == b"\x08"
    assert store.get_state("absent") is None
    assert store.count_credentials() == 1
    assert seen == []
    assert store.get_counter(b"\x05" * 16) == 1
    assert store.delete_credential(record.credential_id)  # writes the counter back first
    assert seen and store.count_credentials() == 0
    store.put_state({"x": None, "pin.retries": b"\x07"})
    assert (store.get_state("x"), store.get_state("pin.retries")) == (None, b"\x07")
    # The replaced and deleted rows' decoded values are not kept.
    assert sorted(store._state_plain.values()) == [("pin.retries", b"\x07")]
    store.put_credential(record)
    assert store.count_credentials() == 1
    store.reset()
    assert store.count_credentials() == 0
    assert store.get_state("pin.retries") is None
    assert store.get_counter(b"\x05" * 16) == 0
    assert store.increment_counter(b"\x05" * 16) == 1
    assert store._verify_counters().rows == 1
    store.close()


def test_a_new_credentials_first_assertion_loads_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """makeCredential and U2F register keep the key they made, under the serialization in
    the credential ID (key handle): the assertion that follows loads nothing. A key only
    serialized (a credential that was never made) is not kept."""
    from vfido.authenticator import cose as cose_module

    key = CredentialKey.generate(-7)
    data = key.private_bytes()
    assert (-7, data) not in cose_module._KEY_CACHE
    key.remember(data)
    assert CredentialKey.from_private_bytes(-7, data) is key
    loads: list[bytes] = []
    original = CredentialKey._load

    def counted(cls: type[CredentialKey], algorithm: int, raw: bytes) -> CredentialKey:
        loads.append(raw)
        return original(algorithm, raw)

    monkeypatch.setattr(CredentialKey, "_load", classmethod(counted))
    with running_key(config=KeyConfig(attestation="none")) as key_process:
        ctap = Ctap2(key_process.device)
        cdh = b"\x11" * 32
        made = ctap.make_credential(
            cdh,
            {"id": "example.com", "name": "E"},
            {"id": b"u", "name": "u"},
            [{"type": "public-key", "alg": -7}],
        )
        data_ = made.auth_data.credential_data
        assert data_ is not None
        allow: list[Mapping[str, Any]] = [{"type": "public-key", "id": data_.credential_id}]
        assertion = ctap.get_assertion("example.com", cdh, allow)
        data_.public_key.verify(bytes(assertion.auth_data) + cdh, assertion.signature)
        # U2F: REGISTER, then AUTHENTICATE with its key handle.
        u2f = Ctap1(key_process.device)
        app, challenge = b"\x22" * 32, b"\x33" * 32
        registration = u2f.register(challenge, app)
        signed = u2f.authenticate(challenge, app, registration.key_handle)
        signed.verify(app, challenge, registration.public_key)
    assert loads == []


def test_file_keystore_counter_writes_are_not_deferred(tmp_path: Any) -> None:
    """Write-back is for memory-only stores: a file keystore's counter is in the
    database (another connection sees it) when increment_counter returns."""
    import sqlite3

    from vfido.keystore import kdf
    from vfido.keystore.sqlite_store import DB_NAME, SqliteKeyStore

    store = SqliteKeyStore.create(tmp_path / "ks", "pw", kdf_params=kdf.insecure_test_params())
    cid = b"\x07" * 32
    store.increment_counter(cid)  # the first: INSERT
    before = sqlite3.connect(tmp_path / "ks" / DB_NAME).execute(
        "SELECT value FROM counters WHERE value = 2"
    )
    assert before.fetchall() == []
    store.increment_counter(cid)  # the cached path: UPDATE
    other = sqlite3.connect(tmp_path / "ks" / DB_NAME)
    assert other.execute("SELECT count(*) FROM counters WHERE value = 2").fetchone() == (1,)
    store.close()


@pytest.mark.parametrize("algorithm", sorted(_EC_CURVES))
def test_ec2_public_key_is_what_python_fido2_builds(algorithm: int) -> None:
    """The EC2 COSE key made from the SEC1 point (the fast path) equals python-fido2's own
    ``from_cryptography_key`` for every EC algorithm: same class, kty, alg, crv, x and y."""
    key = CredentialKey.generate(algorithm)
    ours = key.cose_public_key()
    theirs = _COSE_CLASSES[algorithm].from_cryptography_key(key.public_key())
    assert type(ours) is type(theirs)
    assert dict(ours) == dict(theirs)
    ours.verify(b"signed", key.sign(b"signed"))  # python-fido2 verifies with our map


def _assert_plain_bytes(info: Any) -> None:
    """Both kept forms of a getInfo response encode to the plain map's bytes."""
    plain = cbor.encode(info.to_cbor_map())
    assert cbor.encode(info.to_encoded_map()) == plain
    assert info.encoded().data == plain


@pytest.mark.parametrize(
    "config",
    [
        KeyConfig(),
        KeyConfig(attestation="none", ctap21_pre=True, builtin_uv=True),
        KeyConfig(enterprise_attestation=1, enterprise_rp_ids=("example.com",)),
    ],
    ids=["default", "pre-uv", "ep"],
)
def test_kept_getinfo_encodings_give_the_plain_bytes(config: KeyConfig) -> None:
    with running_key(config=config) as key:
        ctap = Ctap2(key.device)
        answers = []
        for _ in range(2):  # the second getInfo is made from the kept encodings
            info = build_info(key.authenticator._services)
            _assert_plain_bytes(info)
            answers.append(ctap.get_info())
        ClientPin(ctap, PinProtocolV2()).set_pin("12345678")  # options change
        info = build_info(key.authenticator._services)
        assert info.options["clientPin"] is True
        _assert_plain_bytes(info)
        assert ctap.get_info().options["clientPin"] is True
        assert answers[0].algorithms == answers[1].algorithms
        assert answers[0].options == answers[1].options


@pytest.mark.parametrize("persona", ["u2f", "ctap20", "ctap21pre", "ctap21"])
def test_kept_getinfo_encodings_keep_a_models_members_out(persona: str) -> None:
    config = load_persona(persona).config
    with running_key(config=config) as key:
        info = build_info(key.authenticator._services)
        _assert_plain_bytes(info)


def test_getinfo_answers_keep_all_but_the_fresh_members() -> None:
    """Two getInfo answers of an unchanged key are equal but for encIdentifier and
    encCredStoreState (fresh IVs); a change (a discoverable credential: the remaining count
    and credStoreState) shows in the next answer, decoded by cbor2."""
    import cbor2

    with running_key() as key:
        ctap = Ctap2(key.device)

        def answer() -> dict[int, Any]:
            raw = key.authenticator.handle_cbor(b"\x04", HidTransaction(1, 1))
            assert raw[0] == 0
            decoded: dict[int, Any] = cbor2.loads(raw[1:])
            return decoded

        fresh = {0x19, 0x1E}
        first, second = answer(), answer()
        assert {k: v for k, v in first.items() if k not in fresh} == {
            k: v for k, v in second.items() if k not in fresh
        }
        assert all(first[k] != second[k] for k in fresh)
        ctap.make_credential(
            b"\x11" * 32,
            {"id": "example.com", "name": "Example"},
            {"id": b"u", "name": "u"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
        third = answer()
        assert third[0x14] == first[0x14] - 1  # remainingDiscoverableCredentials
        assert {k for k in first if first[k] != third[k]} == {0x14, *fresh}


@pytest.mark.parametrize("label", [b"encIdentifier", b"encCredStoreState"])
def test_info_member_key_is_rfc5869_hkdf(label: bytes) -> None:
    token = bytes(range(32))
    expected = HKDF(algorithm=hashes.SHA256(), length=16, salt=bytes(32), info=label)
    assert info_member_key(token, label) == expected.derive(token)


def test_info_members_are_aes_cbc_under_the_current_tokens_key() -> None:
    """Decrypted with `cryptography`'s own AES-128-CBC under HKDF(token): each member is
    its value, for alternating tokens (the kept cipher follows a new token) and labels."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    for round_ in range(3):
        for token in (bytes(range(32)), bytes(range(1, 33))):
            for label in (b"encIdentifier", b"encCredStoreState"):
                value = bytes([round_, *token[:15]])
                sealed = encrypt_info_member(token, label, value)
                iv, body = sealed[:16], sealed[16:]
                key = info_member_key(token, label)
                decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
                assert decryptor.update(body) + decryptor.finalize() == value
    first = encrypt_info_member(bytes(32), b"encIdentifier", bytes(16))
    assert first[:16] != encrypt_info_member(bytes(32), b"encIdentifier", bytes(16))[:16]


def test_kept_getinfo_layouts_follow_a_models_members() -> None:
    """The kept layouts are keyed by the whole response, its class and a model's members
    included: a full key's response and a model's with the same values (and two models
    that differ only in their members) each encode to their own bytes, in any order."""
    from dataclasses import asdict

    from vfido.authenticator.model import ModelInfoResponse

    with running_key() as key:
        full = build_info(key.authenticator._services)
    values = asdict(full)
    narrow = ModelInfoResponse(**values, members=frozenset({1, 3, 4}))
    narrower = ModelInfoResponse(**values, members=frozenset({1, 3}))
    for response in (full, narrow, narrower, narrow, full):
        assert response.encoded().data == cbor.encode(response.to_cbor_map())
    assert len({r.encoded().data[:1] for r in (full, narrow, narrower)}) == 3  # map sizes


def test_reset_forgets_the_kept_getinfo_secrets() -> None:
    """authenticatorReset drops the kept device identifier and encIdentifier /
    encCredStoreState ciphers (SECURITY.md), and the next getInfo rebuilds them."""
    from vfido.authenticator import persistent_token as kept

    def held() -> list[object]:
        return [kept._IDENTIFIER._value, *(c._value for c in kept._BLOCK_CIPHERS.values())]

    with running_key(config=KeyConfig(reset_window=60.0)) as key:
        ctap = Ctap2(key.device)
        ctap.get_info()
        assert all(v is not None for v in held())
        ctap.reset()
        assert held() == [None, None, None]
        assert len(ctap.get_info().enc_identifier or b"") == 32
        assert all(v is not None for v in held())
