"""CTAP 2.1 from the command line: `vfido pin`, `vfido run --uv`, `--presence deny-uv`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError

from tests.rp import RelyingParty, register
from tests.service_helpers import udp_service, vfido

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


def test_builtin_uv_key_verifies_without_pin() -> None:
    with udp_service(["--ephemeral", "--uv"]) as service:
        with service.client() as client:
            reg = register(client, RelyingParty(attestation="none"), uv="required")
        auth_data = reg.response.attestation_object.auth_data
        assert auth_data.is_user_verified() and auth_data.is_user_present()


def test_deny_uv_fails_verification() -> None:
    with udp_service(["--ephemeral", "--uv", "--presence", "deny-uv"]) as service:
        with service.client() as client, pytest.raises(ClientError) as info:
            register(client, RelyingParty(attestation="none"), uv="required")
        cause = info.value.cause
        assert isinstance(cause, CtapError)
        assert cause.code in (CtapError.ERR.UV_INVALID, CtapError.ERR.OPERATION_DENIED)
