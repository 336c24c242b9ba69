"""CTAP 2.1 from the command line: `vfido pin`, `vfido run --uv`, `--presence deny-uv`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
from fido2.ctap import CtapError

from tests.service_helpers import udp_service, vfido
from transports.udp import open_udp_device

pytestmark = pytest.mark.slow


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    directory = tmp_path / "ks"
    assert vfido(["init", "--keystore", str(directory)]).returncode == 0
    return directory


def test_pin_set_status_change(keystore: Path) -> None:
    ks = ["--keystore", str(keystore)]
    status = vfido(["pin", "status", *ks])
    assert status.returncode == 0, status.stderr
    assert "not set" in status.stdout and "minimum length:   4" in status.stdout
    short = vfido(["pin", "set", *ks], VFIDO_NEW_PIN="12")
    assert short.returncode == 1 and "Traceback" not in short.stderr
    assert "PIN must be >= 4" in short.stderr
    assert vfido(["pin", "set", *ks], VFIDO_NEW_PIN="135790").returncode == 0
    again = vfido(["pin", "set", *ks], VFIDO_NEW_PIN="135790")
    assert again.returncode == 1 and "already set" in again.stderr
    wrong = vfido(["pin", "change", *ks], VFIDO_PIN="000000", VFIDO_NEW_PIN="24680")
    assert wrong.returncode == 1 and "wrong PIN" in wrong.stderr
    status = vfido(["pin", "status", *ks])
    assert "retries left:     7" in status.stdout
    ok = vfido(["pin", "change", *ks], VFIDO_PIN="135790", VFIDO_NEW_PIN="24680")
    assert ok.returncode == 0, ok.stderr
    assert "retries left:     8" in vfido(["pin", "status", *ks]).stdout


def _register(port: int, peer_port: int, uv: str) -> object:
    device = open_udp_device(port=port, peer_port=peer_port)
    try:
        client = Fido2Client(device, DefaultClientDataCollector("https://example.com"))
        return client.make_credential(
            {
                "rp": {"id": "example.com", "name": "Example"},
                "user": {"id": os.urandom(8), "name": "u"},
                "challenge": os.urandom(32),
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
                "authenticatorSelection": {"userVerification": uv},
            }
        )
    finally:
        device.close()


def test_builtin_uv_key_verifies_without_pin() -> None:
    with udp_service(["--ephemeral", "--uv"]) as service:
        reg = _register(service.port, service.peer_port, "required")
        auth_data = reg.response.attestation_object.auth_data  # type: ignore[attr-defined]
        assert auth_data.is_user_verified() and auth_data.is_user_present()


def test_deny_uv_fails_verification() -> None:
    with udp_service(["--ephemeral", "--uv", "--presence", "deny-uv"]) as service:
        with pytest.raises(ClientError) as info:
            _register(service.port, service.peer_port, "required")
        cause = info.value.cause
        assert isinstance(cause, CtapError)
        assert cause.code in (CtapError.ERR.UV_INVALID, CtapError.ERR.OPERATION_DENIED)
