"""The PIN retry counter survives a SIGKILL between a wrong PIN and its reply.

`vfido run` is started with the fault hook `kill-after:put_state=pin.retries`:
it kills itself right after persisting the decremented counter, before it
compares the PIN or answers. The next start must still count that attempt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from tests.service_helpers import udp_service, vfido
from vfido.transports.udp import open_udp_device

pytestmark = pytest.mark.slow
PIN = "24681357"


def _client_pin(port: int, peer_port: int, timeout: float = 30.0) -> tuple[ClientPin, object]:
    device = open_udp_device(port=port, peer_port=peer_port, timeout=timeout)
    return ClientPin(Ctap2(device), PinProtocolV2()), device


def test_retry_counter_survives_sigkill(tmp_path: Path) -> None:
    keystore = tmp_path / "ks"
    assert vfido(["init", "--keystore", str(keystore)]).returncode == 0
    with udp_service(["--keystore", str(keystore)]) as service:
        cp, device = _client_pin(service.port, service.peer_port)
        cp.set_pin(PIN)
        assert cp.get_pin_retries()[0] == 8
        device.close()  # type: ignore[attr-defined]

    faults = {"VFIDO_FAULTS": "kill-after:put_state=pin.retries"}
    with udp_service(["--keystore", str(keystore)], extra_env=faults) as service:
        cp, device = _client_pin(service.port, service.peer_port, timeout=5.0)
        with pytest.raises(Exception):  # noqa: B017 - no reply ever comes: the key died
            cp.get_pin_token("00000000")
        device.close()  # type: ignore[attr-defined]
        assert service.process.wait(timeout=20) == -9

    with udp_service(["--keystore", str(keystore)]) as service:
        cp, device = _client_pin(service.port, service.peer_port)
        assert cp.get_pin_retries()[0] == 7  # the killed attempt was not refunded
        cp.get_pin_token(PIN)
        assert cp.get_pin_retries()[0] == 8
        device.close()  # type: ignore[attr-defined]
