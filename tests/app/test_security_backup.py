"""Issue #15, low 6: backup bundles and passphrase changes.

* A bundle's header (Argon2id parameters, nonce) is read before anything can be
  authenticated: a hostile bundle asked for up to 4 GiB of memory and 64 passes, and
  `vfido import` ran that before it could tell the passphrase was wrong. The costs are now
  bounded (four times the defaults vfido writes) before the key derivation runs.
* `vfido passphrase change` kept whatever parameters the keystore had: weak ones now
  become the current defaults (each cost raised where it is lower).
* An imported record's rpIdHash must be the hash of its rp_id: a record looked up under
  one relying party's hash and shown (and signed for) as another is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from contextlib import redirect_stderr
from pathlib import Path

import cbor2
import pytest

from tests.service_helpers import PASSPHRASE
from vfido import backup
from vfido.backup import MAGIC, BackupError, Bundle, open_bundle, seal_bundle
from vfido.cli import main
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import CredentialRecord

BUNDLE_PASSPHRASE = "bundle passphrase"


def _hostile_bundle(memory_kib: int, iterations: int, lanes: int) -> bytes:
    header = json.dumps(
        {
            "format": backup.FORMAT,
            "kdf": {
                "alg": "argon2id",
                "memory_kib": memory_kib,
                "iterations": iterations,
                "lanes": lanes,
                "salt": os.urandom(16).hex(),
            },
            "nonce": os.urandom(12).hex(),
            "aaguid": "00" * 16,
            "created": 0,
        }
    ).encode()
    return MAGIC + len(header).to_bytes(4, "big") + header + os.urandom(64)


class _KdfSpy:
    """Stands in for keystore.kdf.derive_key: records what it was asked to run, runs none
    of it (a 4 GiB Argon2id is the attack, not something a test should do)."""

    def __init__(self) -> None:
        self.calls: list[kdf.KdfParams] = []

    def __call__(self, passphrase: str, params: kdf.KdfParams) -> bytearray:
        self.calls.append(params)
        raise AssertionError(f"key derivation ran with {params}")


HOSTILE = {
    "4 GiB": (4 * 1024 * 1024, 1, 1),
    "64 passes": (64 * 1024, 64, 1),
    "64 lanes": (64 * 1024, 1, 64),
    "just above": (4 * kdf.DEFAULT_MEMORY_KIB + 1, kdf.DEFAULT_ITERATIONS, kdf.DEFAULT_LANES),
}


@pytest.mark.parametrize("costs", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_bundle_header_runs_no_key_derivation(
    costs: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _KdfSpy()
    monkeypatch.setattr(kdf, "derive_key", spy)
    with pytest.raises(BackupError, match="Argon2id costs too high") as info:
        open_bundle(_hostile_bundle(*costs), BUNDLE_PASSPHRASE)
    assert spy.calls == []
    assert "\n" not in str(info.value)


def test_vfido_import_refuses_a_hostile_header_before_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _KdfSpy()
    monkeypatch.setattr(kdf, "derive_key", spy)
    bundle = tmp_path / "evil.bundle"
    bundle.write_bytes(_hostile_bundle(*HOSTILE["4 GiB"]))
    monkeypatch.setenv("VFIDO_BUNDLE_PASSPHRASE", BUNDLE_PASSPHRASE)
    monkeypatch.setenv("VFIDO_PASSPHRASE", PASSPHRASE)
    err = io.StringIO()
    with redirect_stderr(err):
        status = main(["import", "--keystore", str(tmp_path / "ks"), str(bundle)])
    assert status == 1 and spy.calls == []
    assert err.getvalue().count("\n") == 1 and "4194304 KiB" in err.getvalue()
    assert not SqliteKeyStore.exists(tmp_path / "ks")


def test_a_bundle_with_the_default_costs_still_opens() -> None:
    """The bound is not below what vfido writes (seal_bundle's default parameters)."""
    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    bundle = Bundle(
        identity=identity,
        credentials=(),
        state={},
        counter_floor=0,
        created=0,
    )
    data = seal_bundle(bundle, BUNDLE_PASSPHRASE)
    assert open_bundle(data, BUNDLE_PASSPHRASE).credentials == ()


def _record(rp_id: str, hashed: str) -> CredentialRecord:
    return CredentialRecord(
        credential_id=os.urandom(32),
        rp_id=rp_id,
        rp_id_hash=hashlib.sha256(hashed.encode()).digest(),
        user_id=b"alice",
        algorithm=-7,
        private_key=os.urandom(32),
        created=0,
        backup_eligible=True,
        backup_state=True,
    )


def test_an_imported_record_must_hash_to_its_own_rp_id() -> None:
    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    cheap = kdf.insecure_test_params()
    honest = Bundle(identity, ((_record("bank.example", "bank.example"), 3),), {}, 0, 0)
    opened = open_bundle(seal_bundle(honest, BUNDLE_PASSPHRASE, cheap), BUNDLE_PASSPHRASE)
    assert [record.rp_id for record, _ in opened.credentials] == ["bank.example"]
    # Shown as bank.example, answering for (looked up under) evil.example, or the reverse.
    forged = Bundle(identity, ((_record("bank.example", "evil.example"), 3),), {}, 0, 0)
    with pytest.raises(BackupError, match="does not match its relying party"):
        open_bundle(seal_bundle(forged, BUNDLE_PASSPHRASE, cheap), BUNDLE_PASSPHRASE)


def _sealed(identity: object, records: tuple[tuple[CredentialRecord, int], ...], floor: int = 0):  # type: ignore[no-untyped-def]
    bundle = Bundle(identity, records, {}, floor, 0)  # type: ignore[arg-type]
    return seal_bundle(bundle, BUNDLE_PASSPHRASE, kdf.insecure_test_params())


BAD_RECORDS = {
    "a name of another type": {"rp_name": 5},
    "a large-blob key of another type": {"large_blob_key": "str"},
    "a creation time past year 9999": {"created": 2**70},
    "credProtect 99": {"cred_protect": 99},
    "an algorithm nobody knows": {"algorithm": 12345},
    "a private key not of its algorithm": {"private_key": b"not a key"},
}


@pytest.mark.parametrize("change", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_an_imported_record_is_checked_as_the_keystore_reads_it(change: dict[str, object]) -> None:
    """Each of these imported "successfully" and then broke the key: every listing and
    every sign-in to the site failed ("a stored credential is malformed"), or `vfido
    credentials list` ended in an OverflowError traceback (a review)."""
    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    record = dataclasses.replace(_record("bank.example", "bank.example"), **change)  # type: ignore[arg-type]
    with pytest.raises(BackupError, match="credentials are malformed"):
        open_bundle(_sealed(identity, ((record, 3),)), BUNDLE_PASSPHRASE)


def test_a_record_holding_a_cycle_is_malformed_not_a_traceback() -> None:
    """cbor2 decodes shared values (tags 28/29): a name that contains itself made the
    record check raise cbor2's ValueError, a traceback (a second diff review)."""
    from vfido.keystore.identity import identity_to_bytes

    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    cycle: list[object] = []
    cycle.append(cycle)
    record = {**backup._record_to_cbor(_record("bank.example", "bank.example"), 0)}
    record["rp_name"] = cycle
    payload = {
        "format": backup.FORMAT,
        "identity": identity_to_bytes(identity),
        "credentials": [record],
        "state": {},
        "counter_floor": 0,
        "created": 0,
    }
    with pytest.raises(BackupError, match="credentials are malformed"):
        backup._decode_payload(cbor2.dumps(payload, value_sharing=True))


def test_a_bundle_holding_a_credential_twice_or_a_floor_out_of_range_is_refused() -> None:
    """The same credential ID twice was merged (their counters added up), the same user of
    one site twice kept only the last; a counter floor of 2**64 was a ValueError traceback
    (a review)."""
    from vfido.keystore.integrity import MAX_COUNTER

    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    one = _record("bank.example", "bank.example")
    other_user = dataclasses.replace(one, credential_id=os.urandom(32), user_id=b"bob")
    assert (
        len(
            open_bundle(
                _sealed(identity, ((one, 1), (other_user, 2))), BUNDLE_PASSPHRASE
            ).credentials
        )
        == 2
    )
    same_id = dataclasses.replace(one, user_id=b"carol")
    same_user = dataclasses.replace(one, credential_id=os.urandom(32))
    for twice in (((one, 10), (same_id, 10)), ((one, 1), (same_user, 2))):
        with pytest.raises(BackupError, match="holds a credential twice"):
            open_bundle(_sealed(identity, twice), BUNDLE_PASSPHRASE)
    for floor in (MAX_COUNTER + 1, 2**64):
        with pytest.raises(BackupError, match="content is malformed"):
            open_bundle(_sealed(identity, (), floor), BUNDLE_PASSPHRASE)
    assert (
        open_bundle(_sealed(identity, (), MAX_COUNTER), BUNDLE_PASSPHRASE).counter_floor
        == MAX_COUNTER
    )
    for counter in (-1, MAX_COUNTER + 1):
        with pytest.raises(BackupError, match="credentials are malformed"):
            open_bundle(_sealed(identity, ((one, counter),)), BUNDLE_PASSPHRASE)


def test_the_readable_header_says_nothing_of_the_key() -> None:
    """The header is read without the passphrase: it carried the AAGUID, unique per
    keystore and seen by every relying party, linking the file to the key (a review)."""
    with SqliteKeyStore.ephemeral() as store:
        identity = store.identity()
    data = _sealed(identity, ((_record("bank.example", "bank.example"), 3),))
    header = backup.bundle_header(data)
    assert set(header) == {"format", "kdf", "nonce"}
    assert identity.aaguid.hex().encode() not in data and identity.aaguid not in data


# --- passphrase change ----------------------------------------------------------------------


def _stored_params(store: SqliteKeyStore) -> kdf.KdfParams:
    conn = store._conn
    assert conn is not None
    (text,) = conn.execute("SELECT value FROM meta WHERE name = 'kdf'").fetchone()
    return kdf.KdfParams.from_json(text)


def test_passphrase_change_upgrades_weak_kdf_parameters(tmp_path: Path) -> None:
    """Each cost below the current default is raised to it; one above stays."""
    weak = kdf.KdfParams(
        memory_kib=64, iterations=kdf.DEFAULT_ITERATIONS + 2, lanes=1, salt=os.urandom(16)
    )
    with SqliteKeyStore.create(tmp_path / "ks", PASSPHRASE, kdf_params=weak) as store:
        store.change_passphrase("a new passphrase")
        upgraded = _stored_params(store)
    assert (upgraded.memory_kib, upgraded.iterations, upgraded.lanes) == (
        kdf.DEFAULT_MEMORY_KIB,
        kdf.DEFAULT_ITERATIONS + 2,
        kdf.DEFAULT_LANES,
    )
    assert upgraded.salt != weak.salt
    with SqliteKeyStore.open(tmp_path / "ks", "a new passphrase") as store:
        assert store.count_credentials() == 0
