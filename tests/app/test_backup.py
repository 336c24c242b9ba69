"""Backups (vfido.backup): export a keystore, import it into a new directory, and the
credentials made before work on the restored key (python-fido2 client, Fido2Server and
py_webauthn verifying), with counters that never go back and the BE/BS flags WebAuthn asks
for, with and without the backup-eligible opt-in."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fido2.client import UserInteraction
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.webauthn import AuthenticationResponse, AuthenticatorData, RegistrationResponse

from tests.rp import RelyingParty, assertion, register
from tests.service_helpers import PASSPHRASE as CLI_PASSPHRASE
from tests.service_helpers import vfido
from tests.vkey import Key
from vfido.authenticator.config import Config
from vfido.authenticator.cose import CredentialKey
from vfido.authenticator.device import Authenticator
from vfido.backup import (
    MAGIC,
    BackupError,
    backup_eligible_identity,
    export_keystore,
    import_bundle,
    open_bundle,
)
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import CredentialRecord
from vfido.presence import AutoPresence
from vfido.transports.inprocess import open_device

PASSPHRASE = "keystore passphrase"
BUNDLE_PASSPHRASE = "bundle passphrase, not the keystore's"
PIN = "246810"
BE, BS = AuthenticatorData.FLAG.BE, AuthenticatorData.FLAG.BS


def cheap() -> kdf.KdfParams:
    return kdf.insecure_test_params()


def new_store(directory: Path, *, eligible: bool) -> SqliteKeyStore:
    identity = backup_eligible_identity() if eligible else None
    return SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=cheap(), identity=identity)


@contextmanager
def key_on(store: SqliteKeyStore) -> Iterator[Key]:
    """An in-process key on ``store`` (which stays open afterwards)."""
    authenticator = Authenticator(store, AutoPresence(), Config())
    device = open_device(authenticator)
    try:
        yield Key(store, authenticator, device)
    finally:
        device.close()


class GivesPin(UserInteraction):
    def request_pin(self, permissions: Any, rd_id: str | None) -> str:
        return PIN


def signed_in(
    key: Key, rp: RelyingParty, *, discoverable: bool = False
) -> tuple[int, tuple[bool, bool]]:
    """One sign-in both RP libraries accept (an empty allowList for ``discoverable``):
    (the new counter, (BE, BS))."""
    state, response, challenge = assertion(key.client(), rp, allow=not discoverable)
    return rp.complete_authentication(state, response, challenge), backup_flags(response)


def fresh_view(rp: RelyingParty) -> RelyingParty:
    """The same relying party's credentials with forgotten counters."""
    other = RelyingParty(root_der=rp.root_der)
    other.credentials = list(rp.credentials)
    other.public_keys = dict(rp.public_keys)
    return other


def backup_flags(response: RegistrationResponse | AuthenticationResponse) -> tuple[bool, bool]:
    """(BE, BS) of a registration's or a sign-in's authenticator data."""
    data = (
        response.response.attestation_object.auth_data
        if isinstance(response, RegistrationResponse)
        else response.response.authenticator_data
    )
    return bool(data.flags & BE), bool(data.flags & BS)


def test_export_import_with_the_opt_in(tmp_path: Path) -> None:
    source = new_store(tmp_path / "a", eligible=True)
    root = source.identity().attestation_chain[-1]
    server_rp, discoverable_rp = RelyingParty(root_der=root), RelyingParty(root_der=root)
    with key_on(source) as key:
        # BE is fixed at creation: 1 on this keystore; nothing is backed up yet.
        assert backup_flags(register(key.client(), server_rp, rk=False)) == (True, False)
        assert backup_flags(register(key.client(), discoverable_rp, rk=True)) == (True, False)
        for _ in range(2):
            assert signed_in(key, server_rp)[1] == (True, False)
        for _ in range(3):
            counter, _ = signed_in(key, discoverable_rp, discoverable=True)
        assert counter == 3
        ClientPin(Ctap2(key.device)).set_pin(PIN)

    bundle_path = tmp_path / "key.vfido-backup"
    export_keystore(source, bundle_path, BUNDLE_PASSPHRASE, kdf_params=cheap())
    assert stat.S_IMODE(bundle_path.stat().st_mode) == 0o600
    data = bundle_path.read_bytes()
    assert data.startswith(MAGIC)
    for secret in (source.identity().credential_key, source.identity().attestation_key):
        assert secret not in data
    for summary in source.list_credentials():
        assert summary.record.private_key not in data

    restored = import_bundle(
        open_bundle(data, BUNDLE_PASSPHRASE),
        tmp_path / "b",
        "another passphrase",
        kdf_params=cheap(),
    )
    try:
        assert restored.identity() == source.identity()
        assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700
        for path in (tmp_path / "b").iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        with key_on(restored) as key:
            # Both credentials answer on the restored key, verified by both RP libraries with
            # their counters (py_webauthn refuses a counter that does not grow): the
            # discoverable one carried its 3 over, the server-side one (2 before) starts
            # above the largest exported counter. Both are backed up now: BE=1, BS=1.
            assert signed_in(key, server_rp) == (4, (True, True))
            assert signed_in(key, discoverable_rp, discoverable=True) == (4, (True, True))
            # The PIN came along.
            ctap = Ctap2(key.device)
            assert ctap.info.options["clientPin"] is True
            ClientPin(ctap).get_pin_token(PIN)
            # A credential made on the restored key is eligible, not yet backed up.
            new_rp = RelyingParty(root_der=root)
            made = register(key.client(interaction=GivesPin()), new_rp, rk=True)
            assert backup_flags(made) == (True, False)
    finally:
        restored.close()

    with key_on(source) as key:
        # The exported keystore's credentials are backed up too (BS=1 from the export on).
        assert signed_in(key, fresh_view(server_rp)) == (3, (True, True))  # marking kept counters
        assert signed_in(key, fresh_view(discoverable_rp), discoverable=True) == (4, (True, True))
    source.close()


def test_export_leaves_every_other_file_alone(tmp_path: Path) -> None:
    """The bundle is written through a temporary file of its own: the user's `FILE.tmp` (which
    an earlier version removed and reused) and everything else beside it stay as they were."""
    source = new_store(tmp_path / "a", eligible=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "key.bundle.tmp").write_bytes(b"precious")
    (out / ".key.bundle.tmp").write_bytes(b"also precious")
    export_keystore(source, out / "key.bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    assert sorted(p.name for p in out.iterdir()) == [
        ".key.bundle.tmp",
        "key.bundle",
        "key.bundle.tmp",
    ]
    assert (out / "key.bundle.tmp").read_bytes() == b"precious"
    assert (out / ".key.bundle.tmp").read_bytes() == b"also precious"
    assert stat.S_IMODE((out / "key.bundle").stat().st_mode) == 0o600


def _export_killed_before_the_link(tmp_path: Path, out: Path, *, unnamed: bool) -> None:
    """Export into ``out`` in another process, killed (no cleanup runs) once the bundle's
    data is written and synced, before it has its name."""
    import subprocess
    import sys
    import textwrap

    new_store(tmp_path / "a", eligible=True).close()
    killed = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from vfido import backup
        from vfido.keystore import kdf
        from vfido.keystore.sqlite_store import SqliteKeyStore

        def dying_link(source, path, **kwargs):
            os._exit(9)
        backup._link_new = dying_link
        if not {unnamed!r}:
            backup._unnamed_file = lambda directory: None
        store = SqliteKeyStore.open(Path({str(tmp_path / "a")!r}), {PASSPHRASE!r})
        backup.export_keystore(store, Path({str(out / "key.bundle")!r}), "bundle passphrase",
                               kdf_params=kdf.insecure_test_params())
        """
    )
    result = subprocess.run([sys.executable, "-c", killed], check=False)
    assert result.returncode == 9


def test_an_export_killed_before_its_bundle_has_a_name_leaves_nothing(tmp_path: Path) -> None:
    """A killed export left a hidden `.key.bundle.*.tmp` beside the target, with the whole
    sealed keystore in it, which nothing ever removed (a backup review). The bundle is now
    written to a file without a name (O_TMPFILE) until it is complete: killed, nothing stays."""
    out = tmp_path / "out"
    out.mkdir()
    _export_killed_before_the_link(tmp_path, out, unnamed=True)
    assert list(out.iterdir()) == []


def test_without_unnamed_files_a_killed_export_leaves_only_its_own_temporary_file(
    tmp_path: Path,
) -> None:
    """On a file system without O_TMPFILE the bundle goes through a temporary file of a new
    name: a kill leaves that one file (and the next export does not reuse it)."""
    out = tmp_path / "out"
    out.mkdir()
    _export_killed_before_the_link(tmp_path, out, unnamed=False)
    (left,) = out.iterdir()
    assert left.name.startswith(".key.bundle.") and left.name.endswith(".tmp")
    assert stat.S_IMODE(left.stat().st_mode) == 0o600


def test_export_works_without_unnamed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfido import backup

    monkeypatch.setattr(backup, "_unnamed_file", lambda directory: None)
    source = new_store(tmp_path / "a", eligible=True)
    out = tmp_path / "out"
    out.mkdir()
    export_keystore(source, out / "key.bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    assert [p.name for p in out.iterdir()] == ["key.bundle"]
    assert stat.S_IMODE((out / "key.bundle").stat().st_mode) == 0o600
    bundle = open_bundle((out / "key.bundle").read_bytes(), BUNDLE_PASSPHRASE)
    assert bundle.backup_eligible


def test_without_the_opt_in_export_refuses_unless_forced_and_flags_stay_zero(
    tmp_path: Path,
) -> None:
    source = new_store(tmp_path / "a", eligible=False)
    rp = RelyingParty(root_der=source.identity().attestation_chain[-1])
    with key_on(source) as key:
        assert backup_flags(register(key.client(), rp, rk=True)) == (False, False)
        assert signed_in(key, rp, discoverable=True) == (1, (False, False))
    bundle_path = tmp_path / "bundle"
    with pytest.raises(BackupError, match=r"not created backup-eligible.*--force"):
        export_keystore(source, bundle_path, BUNDLE_PASSPHRASE, kdf_params=cheap())
    assert not bundle_path.exists()
    export_keystore(source, bundle_path, BUNDLE_PASSPHRASE, force=True, kdf_params=cheap())
    with key_on(source) as key:
        assert signed_in(key, rp, discoverable=True) == (2, (False, False))  # no BS after export
    source.close()
    bundle = open_bundle(bundle_path.read_bytes(), BUNDLE_PASSPHRASE)
    with (
        import_bundle(bundle, tmp_path / "b", PASSPHRASE, kdf_params=cheap()) as restored,
        key_on(restored) as key,
    ):
        assert signed_in(key, fresh_view(rp), discoverable=True) == (2, (False, False))


def test_an_export_whose_flags_cannot_be_stored_says_the_bundle_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle is written first, then each credential marked backed up (BS). A full disk
    in between said "cannot store the credential" beside a complete bundle, and the user
    took the export for failed (a review): now it says the bundle is whole and usable."""
    from vfido.keystore.store import KeystoreFull

    source = new_store(tmp_path / "a", eligible=True)
    root = source.identity().attestation_chain[-1]
    with key_on(source) as key:
        for _ in range(2):
            register(key.client(), RelyingParty(root_der=root), rk=True)

    def full(record: CredentialRecord) -> None:
        raise KeystoreFull("no space left for the keystore (SQLITE_FULL)")

    monkeypatch.setattr(source, "put_credential", full)
    bundle_path = tmp_path / "bundle"
    with pytest.raises(BackupError) as info:
        export_keystore(source, bundle_path, BUNDLE_PASSPHRASE, kdf_params=cheap())
    assert str(info.value).startswith(f"{bundle_path} is written and complete, but ")
    assert "SQLITE_FULL" in str(info.value) and "\n" not in str(info.value)
    bundle = open_bundle(bundle_path.read_bytes(), BUNDLE_PASSPHRASE)
    assert len(bundle.credentials) == 2
    source.close()


def test_backup_eligibility_survives_a_reset_and_bs_does_not(tmp_path: Path) -> None:
    """The opt-in is part of the device identity (like the AAGUID); a reset erases the
    credentials, so nothing is backed up afterwards."""
    store = new_store(tmp_path / "a", eligible=True)
    with key_on(store) as key:
        register(key.client(), RelyingParty(root_der=None, attestation="none"), rk=False)
    export_keystore(store, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    with key_on(store) as key:
        made = register(key.client(), RelyingParty(attestation="none"), rk=False)
        # Server-side: its key is sealed under the exported credential key.
        assert backup_flags(made) == (True, True)
        ctap = Ctap2(key.device)
        ctap.reset()  # authenticatorReset (within 10 s of power-up)
        assert ctap.get_info().aaguid == store.identity().aaguid
        for rk in (False, True):
            made = register(key.client(), RelyingParty(attestation="none"), rk=rk)
            assert backup_flags(made) == (True, False)
    store.close()


@pytest.fixture
def bundle_bytes(tmp_path: Path) -> bytes:
    with new_store(tmp_path / "src", eligible=True) as store:
        with key_on(store) as key:
            register(key.client(), RelyingParty(root_der=None, attestation="none"), rk=True)
        export_keystore(store, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    return (tmp_path / "bundle").read_bytes()


def test_wrong_bundle_passphrase(bundle_bytes: bytes) -> None:
    with pytest.raises(BackupError, match="wrong bundle passphrase"):
        open_bundle(bundle_bytes, PASSPHRASE)
    assert len(open_bundle(bundle_bytes, BUNDLE_PASSPHRASE).credentials) == 1


@pytest.mark.parametrize(
    "where", ["last byte", "middle of the ciphertext", "header", "nonce", "truncated"]
)
def test_tampered_bundle_is_rejected(bundle_bytes: bytes, where: str, tmp_path: Path) -> None:
    data = bytearray(bundle_bytes)
    header_end = data.index(b"}") + 1
    if where == "last byte":
        data[-1] ^= 0x01
    elif where == "middle of the ciphertext":
        data[(header_end + len(data)) // 2] ^= 0x80
    elif where == "header":  # a member added: the header is authenticated as it is
        start = len(MAGIC) + 4
        size = int.from_bytes(data[len(MAGIC) : start], "big")
        header = json.loads(data[start : start + size])
        extended = json.dumps({**header, "note": "added"}, sort_keys=True).encode()
        data = bytearray(MAGIC + len(extended).to_bytes(4, "big") + extended + data[start + size :])
    elif where == "nonce":
        at = data.index(b'"nonce": "') + len(b'"nonce": "')
        data[at] = ord("0") if data[at] != ord("0") else ord("1")
    else:
        data = data[:-20]
    with pytest.raises(BackupError, match="cannot be decrypted"):
        open_bundle(bytes(data), BUNDLE_PASSPHRASE)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not a vfido backup bundle"):
        open_bundle(b"SQLite format 3\x00" + bytes(100), BUNDLE_PASSPHRASE)
    with pytest.raises(BackupError, match="damaged"):
        open_bundle(MAGIC + (10_000).to_bytes(4, "big") + b"{}", BUNDLE_PASSPHRASE)


def test_never_overwrites(bundle_bytes: bytes, tmp_path: Path) -> None:
    bundle = open_bundle(bundle_bytes, BUNDLE_PASSPHRASE)
    existing = new_store(tmp_path / "existing", eligible=False)
    existing.close()
    with pytest.raises(BackupError, match="already exists"):
        import_bundle(bundle, tmp_path / "existing", PASSPHRASE, kdf_params=cheap())
    other = tmp_path / "not-empty"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="not empty"):
        import_bundle(bundle, other, PASSPHRASE, kdf_params=cheap())
    assert (other / "notes.txt").read_text() == "mine"
    with SqliteKeyStore.open(tmp_path / "existing", PASSPHRASE) as store:
        assert store.count_credentials() == 0
        target = tmp_path / "taken"
        target.write_text("keep me")
        with pytest.raises(BackupError, match="exists"):
            export_keystore(store, target, BUNDLE_PASSPHRASE, force=True, kdf_params=cheap())
        assert target.read_text() == "keep me"


def test_restored_counters_never_go_backwards_for_unlisted_credentials(tmp_path: Path) -> None:
    """A server-side credential's counter lives under its ID, which only the relying party
    knows: the restored key starts every such counter above the largest exported one."""
    with new_store(tmp_path / "a", eligible=True) as source:
        unseen = os.urandom(40)  # stands for a server-side credential ID
        for _ in range(7):
            source.increment_counter(unseen)
        export_keystore(source, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    bundle = open_bundle((tmp_path / "bundle").read_bytes(), BUNDLE_PASSPHRASE)
    assert bundle.counter_floor == 7
    with import_bundle(bundle, tmp_path / "b", PASSPHRASE, kdf_params=cheap()) as restored:
        assert restored.get_counter(unseen) == 7
        assert restored.increment_counter(unseen) == 8
        assert restored.increment_counter(os.urandom(40)) == 8
    with SqliteKeyStore.open(tmp_path / "b", PASSPHRASE) as reopened:
        assert reopened.increment_counter(unseen) == 9
        reopened.reset()  # a reset forgets the floor with the credentials
        assert reopened.increment_counter(unseen) == 1


def test_cli_init_export_import(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    env = {"VFIDO_BUNDLE_PASSPHRASE": BUNDLE_PASSPHRASE}
    result = vfido(["init", "--backup-eligible", "--keystore", str(a)])
    assert result.returncode == 0, result.stderr
    with SqliteKeyStore.open(a, "correct horse battery staple") as store:
        rp = RelyingParty(root_der=store.identity().attestation_chain[-1])
        with key_on(store) as key:
            assert backup_flags(register(key.client(), rp, rk=True)) == (True, False)
    bundle = tmp_path / "out.bundle"
    result = vfido(["export", "--keystore", str(a), str(bundle)], **env)
    assert result.returncode == 0, result.stderr
    assert "exported 1 discoverable credential(s)" in result.stdout
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    result = vfido(["export", "--keystore", str(a), str(bundle)], **env)
    assert result.returncode == 1 and "refusing to overwrite" in result.stderr

    result = vfido(["import", "--keystore", str(b), str(bundle)], VFIDO_BUNDLE_PASSPHRASE="wrong")
    assert result.returncode == 1 and "wrong bundle passphrase" in result.stderr
    assert not SqliteKeyStore.exists(b)
    result = vfido(["import", "--keystore", str(b), str(bundle)], **env)
    assert result.returncode == 0, result.stderr
    assert "restored keystore" in result.stdout
    result = vfido(["import", "--keystore", str(b), str(bundle)], **env)
    assert result.returncode == 1 and "already exists" in result.stderr
    with SqliteKeyStore.open(b, "correct horse battery staple") as store, key_on(store) as key:
        assert signed_in(key, rp, discoverable=True) == (1, (True, True))

    plain = tmp_path / "plain"
    assert vfido(["init", "--keystore", str(plain)]).returncode == 0
    result = vfido(["export", "--keystore", str(plain), str(tmp_path / "p.bundle")], **env)
    assert result.returncode == 1
    assert "not created backup-eligible" in result.stderr and "--force" in result.stderr
    result = vfido(
        ["export", "--force", "--keystore", str(plain), str(tmp_path / "p.bundle")], **env
    )
    assert result.returncode == 0, result.stderr
    assert "BE=0" in result.stdout


def _record(n: int) -> CredentialRecord:
    """A discoverable credential of RP number ``n`` (its key made once per n)."""
    rp_id = f"rp{n}.example"
    return CredentialRecord(
        credential_id=bytes([n]) * 16,
        rp_id=rp_id,
        rp_id_hash=hashlib.sha256(rp_id.encode()).digest(),
        user_id=b"user-%d" % n,
        algorithm=-7,
        private_key=_KEYS.setdefault(n, CredentialKey.generate(-7).private_bytes()),
        created=0,
    )


_KEYS: dict[int, bytes] = {}


def test_an_import_killed_midway_leaves_no_keystore(tmp_path: Path) -> None:
    """A restore is all or nothing. Killed after its second credential (SIGKILL-like: no
    cleanup runs), it leaves no keystore at the target, where a half restore would have
    opened with credentials missing, their counters at 0 and the floor not raised (an
    outside review's finding); the same import then completes."""
    import subprocess
    import sys
    import textwrap

    with new_store(tmp_path / "a", eligible=True) as source:
        for n in range(4):
            source.put_credential(_record(n))
            source.increment_counter(_record(n).credential_id, 50 + n)
        source.put_state({"pin.retries": b"\x08"})
        export_keystore(source, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    killed = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from vfido.backup import import_bundle, open_bundle
        from vfido.keystore import kdf
        from vfido.keystore.sqlite_store import SqliteKeyStore

        put, count = SqliteKeyStore.put_credential, [0]
        def dying_put(self, record):
            put(self, record)
            count[0] += 1
            if count[0] == 2:
                os._exit(9)
        SqliteKeyStore.put_credential = dying_put
        data = Path({str(tmp_path / "bundle")!r}).read_bytes()
        bundle = open_bundle(data, {BUNDLE_PASSPHRASE!r})
        import_bundle(bundle, Path({str(tmp_path / "b")!r}), {PASSPHRASE!r},
                      kdf_params=kdf.insecure_test_params())
        """
    )
    result = subprocess.run([sys.executable, "-c", killed], check=False)
    assert result.returncode == 9
    assert not SqliteKeyStore.exists(tmp_path / "b")
    (leftover,) = (tmp_path / "b").iterdir()  # the half-built keystore, hidden
    assert leftover.name.startswith(".importing-")
    bundle = open_bundle((tmp_path / "bundle").read_bytes(), BUNDLE_PASSPHRASE)
    with import_bundle(bundle, tmp_path / "b", PASSPHRASE, kdf_params=cheap()) as restored:
        assert restored.count_credentials() == 4
        assert restored.get_counter(_record(0).credential_id) == 50
        assert restored.get_state("pin.retries") == b"\x08"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "vfido.db",
        "vfido.lock",
    ]  # the next import removed what the killed one left


def test_an_import_never_replaces_a_keystore_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keystore made in the target while the import builds its own (`vfido init`, another
    import) is kept; the import says so in one line and leaves nothing of its own."""
    from vfido import backup

    with new_store(tmp_path / "a", eligible=True) as source:
        export_keystore(source, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    bundle = open_bundle((tmp_path / "bundle").read_bytes(), BUNDLE_PASSPHRASE)
    target = tmp_path / "b"
    real_fill = backup._fill

    def fill_while_init_finishes(store: SqliteKeyStore, bundle: backup.Bundle) -> None:
        real_fill(store, bundle)
        new_store(target, eligible=False).close()

    monkeypatch.setattr(backup, "_fill", fill_while_init_finishes)
    with pytest.raises(BackupError, match=r"a keystore appeared in .* meanwhile"):
        import_bundle(bundle, target, PASSPHRASE, kdf_params=cheap())
    assert sorted(p.name for p in target.iterdir()) == ["vfido.db", "vfido.lock"]
    with SqliteKeyStore.open(target, PASSPHRASE) as kept:
        assert not backup.keystore_backup_eligible(kept)  # init's, not the bundle's


def test_import_into_a_directory_made_for_it(tmp_path: Path) -> None:
    """A restore goes into an empty directory someone made for it (a service's state
    directory, a mount point, `--keystore .`): an import that built its keystore beside the
    target and renamed it into place failed there ("Device or resource busy" for `.`)."""
    with new_store(tmp_path / "a", eligible=True) as source:
        source.put_credential(_record(1))
        export_keystore(source, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    made = tmp_path / "made"
    made.mkdir(mode=0o755)
    result = vfido(
        ["import", str(tmp_path / "bundle"), "--keystore", "."],
        cwd=made,
        VFIDO_BUNDLE_PASSPHRASE=BUNDLE_PASSPHRASE,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    with SqliteKeyStore.open(made, CLI_PASSPHRASE) as restored:
        assert restored.count_credentials() == 1


def test_only_what_an_import_left_is_removed(tmp_path: Path) -> None:
    """The next import removes a killed one's hidden directory, and nothing else: not a
    symbolic link named like one (it pointed at the user's other keystore, whose files went;
    a review did it), not a directory holding other files, not one an import still holds."""
    from vfido.keystore.lock import DirectoryLock

    with new_store(tmp_path / "a", eligible=True) as source:
        export_keystore(source, tmp_path / "bundle", BUNDLE_PASSPHRASE, kdf_params=cheap())
    bundle = open_bundle((tmp_path / "bundle").read_bytes(), BUNDLE_PASSPHRASE)
    victim = tmp_path / "victim"
    new_store(victim, eligible=False).close()
    target = tmp_path / "t"
    target.mkdir(mode=0o700)
    (target / ".importing-x").symlink_to(victim)
    with pytest.raises(BackupError, match="is not empty"):
        import_bundle(bundle, target, PASSPHRASE, kdf_params=cheap())
    assert SqliteKeyStore.exists(victim)
    (target / ".importing-x").unlink()
    notes = target / ".importing-notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="is not empty"):
        import_bundle(bundle, target, PASSPHRASE, kdf_params=cheap())
    assert (notes / "notes.txt").read_text() == "mine"
    (notes / "notes.txt").unlink()
    lock = DirectoryLock(notes / "vfido.lock")  # an import building its keystore there
    try:
        with pytest.raises(BackupError, match=r"another import into .* is running"):
            import_bundle(bundle, target, PASSPHRASE, kdf_params=cheap())
    finally:
        lock.release()
    with import_bundle(bundle, target, PASSPHRASE, kdf_params=cheap()) as restored:
        assert restored.identity() == bundle.identity
    assert not notes.exists()
