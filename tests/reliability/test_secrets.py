"""Secrets: never in logs, reprs or exception texts; IDs authenticated bit by bit;
secret comparisons constant-time.

Covered elsewhere and referenced from SECURITY.md (not repeated here):
keystore file modes and refusal of group/world-accessible files
(tests/keystore/test_keystore.py::test_permissions_private_even_with_permissive_umask,
test_group_readable_file_refused, test_world_readable_directory_refused),
nothing sensitive stored in clear (test_nothing_sensitive_stored_in_clear),
repr of keystore objects (test_no_secrets_in_repr), seal-level bit flips
(tests/keystore/test_credential_id.py::test_every_bit_flip_rejected), reset kills old IDs
(tests/authenticator/test_ctap2_device.py::test_reset_erases_everything_and_kills_old_ids,
tests/app/test_cli.py::test_reset_voids_old_credentials), internal errors not
leaking
(tests/authenticator/test_ctap2_device.py::test_internal_errors_become_other_without_leaking),
verbose runner log without payloads (tests/transports/test_runner.py).
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.webauthn import (
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)

from tests.ctap2_helpers import EventContext, make_key
from tests.service_helpers import PASSPHRASE, env, vfido
from vfido.authenticator.errors import CtapStatus
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.transports.udp import free_ports, open_udp_device

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vfido.authenticator", "vfido.keystore", "vfido.transports", "vfido")
PIN = "73195824"
NEW_PIN = "46820137"
ORIGIN = "https://secrets.example"
RP_ID = "secrets.example"


def _encodings(secret: bytes | str) -> Iterator[str]:
    """The ways a secret could show up in text."""
    if isinstance(secret, str):
        yield secret
        return
    if len(secret) < 8:
        return
    yield secret.hex()
    yield secret.hex().upper()
    yield base64.b64encode(secret).decode().rstrip("=")
    yield base64.urlsafe_b64encode(secret).decode().rstrip("=")
    yield repr(secret)[2:-1][:40]
    yield secret.decode("latin-1")


def _leaks(text: str, secrets: Mapping[str, bytes | str]) -> list[str]:
    found = []
    for name, secret in secrets.items():
        for form in _encodings(secret):
            if len(form) >= 8 and form in text:
                found.append(name)
                break
    return found


class Interaction(UserInteraction):
    def request_pin(self, permissions: Any, rp_id: str | None) -> str:
        return PIN

    def request_uv(self, permissions: Any, rp_id: str | None) -> bool:
        return True


@pytest.mark.slow
def test_no_secret_in_the_logs_of_a_full_verbose_run(tmp_path: Path) -> None:
    keystore = tmp_path / "ks"
    SqliteKeyStore.create(keystore, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    seen: dict[str, bytes | str] = {"passphrase": PASSPHRASE, "pin": PIN, "new pin": NEW_PIN}
    outputs: list[str] = []
    port, peer = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "vfido", "-v", "run", "--transport", "udp",
         "--udp-port", str(port), "--udp-peer-port", str(peer), "--keystore", str(keystore),
         "--udp-insecure-any-local-user"],
        env={**env(), "VFIDO_PASSPHRASE": PASSPHRASE},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            outputs.append(line)
            if "listening on udp" in line:
                break
        device = open_udp_device(port, peer, timeout=30)
        ctap2 = Ctap2(device)
        client_pin = ClientPin(ctap2, PinProtocolV2())
        client_pin.set_pin(PIN)
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
        seen["pin token"] = token
        with pytest.raises(CtapError):
            client_pin.get_pin_token("00000000")  # a wrong PIN is logged as a status only
        client = Fido2Client(device, DefaultClientDataCollector(ORIGIN), Interaction())
        created = client.make_credential(
            PublicKeyCredentialCreationOptions(
                rp=PublicKeyCredentialRpEntity(id=RP_ID, name="Secrets"),
                user=PublicKeyCredentialUserEntity(id=b"secret-user", name="u"),
                challenge=os.urandom(32),
                pub_key_cred_params=[{"type": "public-key", "alg": -7}],  # type: ignore[list-item]
                extensions={"prf": {}},
                authenticator_selection={"residentKey": "required"},  # type: ignore[arg-type]
            )
        )
        salt = os.urandom(32)
        asserted = client.get_assertion(
            PublicKeyCredentialRequestOptions(
                challenge=os.urandom(32),
                rp_id=RP_ID,
                extensions={"prf": {"eval": {"first": salt}}},
            )
        ).get_response(0)
        prf = asserted.client_extension_results["prf"]["results"]["first"]
        seen["hmac-secret output"] = base64.urlsafe_b64decode(prf + "=" * (-len(prf) % 4))
        assert created.raw_id
        ClientPin(ctap2, PinProtocolV2()).change_pin(PIN, NEW_PIN)
        device.close()
        process.terminate()
        rest, _ = process.communicate(timeout=30)
        outputs.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for args in (["info"], ["credentials", "list"]):
        result = vfido([*args, "--keystore", str(keystore)])
        assert result.returncode == 0, result.stderr
        outputs.extend([result.stdout, result.stderr])

    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        identity = store.identity()
        seen["credential sealing key"] = identity.credential_key
        seen["attestation key"] = identity.attestation_key
        seen["master key"] = store._master_key
        for n, summary in enumerate(store.list_credentials()):
            record = summary.record
            seen[f"private key {n}"] = record.private_key
            if record.cred_random_uv:
                seen[f"cred random {n}"] = record.cred_random_uv
            if record.cred_random_no_uv:
                seen[f"cred random no uv {n}"] = record.cred_random_no_uv
        for name in store.state_keys():
            if name.startswith("pin.hash"):
                value = store.get_state(name)
                assert value is not None
                seen[name] = value
    log = "\n".join(outputs)
    assert "CTAPHID" in log or "cbor" in log.lower(), "the verbose log was not captured"
    assert len(seen) >= 9
    assert _leaks(log, seen) == []
    # The oracle itself finds a secret that is there.
    assert _leaks(log + token.hex(), seen) == ["pin token"]


# --- reprs and exception texts ------------------------------------------------------

SECRET_FIELD = re.compile(
    r"(private|secret|token|passphrase|pin_hash|auth_param|master|shared|_key$|^key$)"
)
NOT_SECRET = {"public_key", "large_blob_key_requested", "key_handle", "rp_id", "algorithm"}
PUBLIC = {
    # client inputs: salts encrypted to the shared secret, plus the platform's public key
    "vfido.authenticator.extensions.MakeCredentialExtensions.hmac_secret_mc",
    "vfido.authenticator.extensions.GetAssertionExtensions.hmac_secret",
    "vfido.authenticator.ctap1._Prompt.key",  # (presence kind, application parameter): a dedupe key
}


def _modules() -> Iterator[Any]:
    for package in PACKAGES:
        module = importlib.import_module(package)
        yield module
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if info.name.endswith("__main__"):
                continue
            try:
                yield importlib.import_module(info.name)
            except Exception:  # optional platform modules (D-Bus...) may not import
                continue


def test_secret_dataclass_fields_are_kept_out_of_reprs() -> None:
    offenders = []
    checked = 0
    for module in _modules():
        for obj in vars(module).values():
            if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
                continue
            if obj.__module__ != module.__name__:
                continue
            for f in dataclasses.fields(obj):
                qualified = f"{obj.__module__}.{obj.__qualname__}.{f.name}"
                if f.type in ("bool", bool) or f.name in NOT_SECRET or qualified in PUBLIC:
                    continue  # flags ("hmac_secret: bool" asks for the extension)
                if SECRET_FIELD.search(f.name):
                    checked += 1
                    if f.repr and not f.name.endswith(("_id", "_name")):
                        offenders.append(qualified)
    assert checked >= 5
    assert offenders == []


SECRET_NAME = re.compile(r"(token|pin_hash|pin_auth|secret|mac|digest|signature)", re.I)


def test_secret_comparisons_are_constant_time() -> None:
    """No ``==``/``!=`` between values whose names say they are tokens, PIN hashes,
    MACs or signatures (hmac.compare_digest instead)."""
    offenders = []
    for package in PACKAGES:
        folder = Path(importlib.import_module(package).__path__[0])
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Compare):
                    continue
                if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                    continue
                operands = [node.left, *node.comparators]
                if any(
                    isinstance(o, ast.Constant)  # None, a literal: nothing secret compared
                    or (isinstance(o, ast.Attribute) and o.attr.isupper())  # an enum member
                    for o in operands
                ):
                    continue
                if any(isinstance(o, ast.Call) and getattr(o.func, "id", "") == "len"
                       for o in operands):  # fmt: skip
                    continue
                names = [ast.unparse(o) for o in operands]
                if any(SECRET_NAME.search(n) for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {' / '.join(names)}")
    assert offenders == [], "\n".join(offenders)


# --- authenticated credential IDs, end to end -----------------------------------------


def test_every_bit_flip_of_a_real_credential_id_is_rejected() -> None:
    key = make_key()
    ctap2 = key.ctap2()
    response = ctap2.make_credential(
        bytes(32), {"id": RP_ID}, {"id": b"u", "name": "u"}, [{"type": "public-key", "alg": -7}]
    )
    assert response.auth_data.credential_data is not None
    cred_id = bytes(response.auth_data.credential_data.credential_id)
    ctap2.get_assertion(RP_ID, bytes(32), [{"type": "public-key", "id": cred_id}])
    rejected = 0
    for bit in range(len(cred_id) * 8):
        flipped = bytearray(cred_id)
        flipped[bit // 8] ^= 1 << (bit % 8)
        status, _ = key.call(0x02, {1: RP_ID, 2: bytes(32), 3: [{"type": "public-key",
                                                               "id": bytes(flipped)}]})  # fmt: skip
        assert status == CtapStatus.NO_CREDENTIALS, bit
        rejected += 1
    assert rejected == len(cred_id) * 8
    assert key.store.get_counter(cred_id) == 1  # only the genuine assertion counted


def test_every_bit_flip_of_a_u2f_key_handle_is_rejected() -> None:
    key = make_key()
    challenge, app = bytes(32), bytes(range(32))
    register = key.authenticator.handle_msg(
        bytes([0, 1, 3, 0, 0, 0, 64]) + challenge + app + b"\x00\x00", EventContext()
    )
    assert register[-2:] == b"\x90\x00"
    handle = register[67 : 67 + register[66]]

    def check(kh: bytes) -> bytes:
        apdu = bytes([0, 2, 7, 0, 0, 0, 65 + len(kh)]) + challenge + app + bytes([len(kh)]) + kh
        return key.authenticator.handle_msg(apdu, EventContext())[-2:]

    assert check(handle) == b"\x69\x85"  # genuine: "test of user presence required"
    for bit in range(len(handle) * 8):
        flipped = bytearray(handle)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert check(bytes(flipped)) == b"\x6a\x80", bit


def test_keystore_errors_do_not_echo_the_passphrase(tmp_path: Path) -> None:
    keystore = tmp_path / "ks"
    SqliteKeyStore.create(keystore, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    wrong = "wrong-passphrase-31337"
    result = vfido(["info", "--keystore", str(keystore)], passphrase=wrong)
    assert result.returncode == 1
    assert wrong not in result.stderr + result.stdout
    assert "wrong passphrase" in result.stderr
