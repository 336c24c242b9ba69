"""The declared dependency floors are read right, and the keystore works where cryptography
has no ``derive_into`` / ``decrypt_into`` (before 47; pyproject.toml says >= 44).
``tests/dependency_floors.py`` (a ./run-tests step) runs the unit tests on the real floors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.dependency_floors import FloorError, _same_version, floors, pins
from vfido.keystore import crypto
from vfido.keystore.kdf import derive_key, insecure_test_params


def test_floors_of_this_project() -> None:
    lowest = floors()
    assert lowest["cryptography"] == "44" and "fido2" in lowest and "cbor2" in lowest
    assert "cryptography==44" in pins(lowest)


def test_every_dependency_needs_one_floor(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["fido2>=2.2,<3", "cbor2"]\n')
    with pytest.raises(FloorError, match="cbor2"):
        floors(pyproject)
    pyproject.write_text('[project]\ndependencies = ["fido2 >= 2.2, <3"]\n')
    assert floors(pyproject) == {"fido2": "2.2"}


def test_installed_version_matches_its_floor() -> None:
    assert _same_version("44.0.0", "44") and _same_version("5.6.0", "5.6")
    assert not _same_version("46.0.1", "44") and not _same_version("5.6.1", "5.6")


class OldHkdf:
    """HKDF as cryptography < 47 has it: derive() only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hkdf = HKDF(*args, **kwargs)

    def derive(self, key_material: bytes) -> bytes:
        return self._hkdf.derive(key_material)


class OldAesGcm:
    """AESGCM without decrypt_into (cryptography < 47)."""

    def __init__(self, key: bytes | bytearray) -> None:
        self._aead = AESGCM(bytes(key))

    def encrypt(self, *args: Any) -> bytes:
        return self._aead.encrypt(*args)

    def decrypt(self, *args: Any) -> bytes:
        return self._aead.decrypt(*args)


def test_derive_into_without_derive_into() -> None:
    master = bytes(range(32))
    new, old = bytearray(32), bytearray(32)
    info = {"algorithm": hashes.SHA256(), "length": 32, "salt": None, "info": b"x"}
    crypto.derive_into(HKDF(**info), master, new)
    crypto.derive_into(OldHkdf(**info), bytearray(master), old)
    assert new == old != bytearray(32)
    with pytest.raises(ValueError):
        crypto.derive_into(OldHkdf(**info), master, bytearray(16))


def test_keystore_keys_without_the_into_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    master = crypto.new_master_key()
    kek = derive_key("passphrase", insecure_test_params())
    wrapped = crypto.wrap_master_key(kek, master, format_version=4)
    expected = crypto.RecordKeys.derive(master)
    monkeypatch.setattr(crypto, "AESGCM", OldAesGcm)
    monkeypatch.setattr(crypto, "HKDF", OldHkdf)
    assert crypto.unwrap_master_key(kek, wrapped, format_version=4) == master
    with pytest.raises(crypto.AuthenticationFailed):
        crypto.unwrap_master_key(bytearray(32), wrapped, format_version=4)
    derived = crypto.RecordKeys.derive(master)
    assert derived.record_key == expected.record_key
    assert derived.counter_key == expected.counter_key
