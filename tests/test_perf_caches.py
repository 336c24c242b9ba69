"""The caches added for speed (bench/) must never serve stale values.

* authenticatorConfig settings (alwaysUv) are cached per keystore: toggling and
  authenticatorReset must be visible at once;
* loaded credential keys are cached: after a reset the old IDs are dead anyway, and
  a new credential signs with its own key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.ctap2.config import Config

from authenticator.config import Config as KeyConfig
from tests.vkey import running_key


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
