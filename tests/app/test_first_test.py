"""The first test a relying-party developer writes passes with the libraries' defaults.

python-fido2's ``Fido2Server.register_begin(user)`` and py_webauthn's
``generate_registration_options(...)`` leave userVerification unset, which WebAuthn (and
python-fido2's client) read as "preferred". python-fido2's
client refuses that with CONFIGURATION_UNSUPPORTED on a key that supports clientPin but has
neither a PIN nor built-in UV, which is what a toolkit key was before built-in UV became its
default (issue 17). Each test here is written the way a newcomer writes it: defaults only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import webauthn
from fido2.client import ClientError
from fido2.ctap2.base import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions,
)
from webauthn.helpers import options_to_json
from webauthn.helpers.structs import PublicKeyCredentialDescriptor

from vfido.api import ServiceKey, VirtualKey, default_uv
from vfido.authenticator.config import Config

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://example.com"


def fido2_server_ceremonies(key: VirtualKey | ServiceKey) -> None:
    """Register and sign in with every Fido2Server default (userVerification unset)."""
    server = Fido2Server({"id": "example.com", "name": "Example"})
    client = key.client(ORIGIN)
    options, state = server.register_begin({"id": b"alice", "name": "alice"})
    assert options.public_key.authenticator_selection is None  # nothing asked: "preferred"
    result = client.make_credential(options["publicKey"])
    auth_data = server.register_complete(state, result)
    assert auth_data.is_user_verified()
    credentials = [auth_data.credential_data]
    options, state = server.authenticate_begin(credentials)
    result = client.get_assertion(options["publicKey"])
    server.authenticate_complete(state, credentials, result.get_response(0))


def py_webauthn_ceremonies(key: VirtualKey | ServiceKey) -> None:
    """Register and sign in with py_webauthn's defaults; its JSON options go to the client."""
    client = key.client(ORIGIN)
    registration = webauthn.generate_registration_options(
        rp_id="example.com", rp_name="Example", user_name="alice"
    )
    creation = json.loads(options_to_json(registration))
    # Nothing asked: WebAuthn's default, userVerification "preferred".
    assert "userVerification" not in creation.get("authenticatorSelection", {})
    result = client.make_credential(PublicKeyCredentialCreationOptions.from_dict(creation))
    verified = webauthn.verify_registration_response(
        credential=dict(result),
        expected_challenge=registration.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
    )
    authentication = webauthn.generate_authentication_options(
        rp_id="example.com",
        allow_credentials=[PublicKeyCredentialDescriptor(id=verified.credential_id)],
    )
    request = json.loads(options_to_json(authentication))
    assert request["userVerification"] == "preferred"
    assertion = client.get_assertion(PublicKeyCredentialRequestOptions.from_dict(request))
    signed_in = webauthn.verify_authentication_response(
        credential=dict(assertion.get_response(0)),
        expected_challenge=authentication.challenge,
        expected_rp_id="example.com",
        expected_origin=ORIGIN,
        credential_public_key=verified.credential_public_key,
        credential_current_sign_count=verified.sign_count,
        require_user_verification=True,
    )
    assert signed_in.new_sign_count > verified.sign_count


def test_virtual_key_with_fido2_server_defaults() -> None:
    with VirtualKey() as key:
        fido2_server_ceremonies(key)


def test_virtual_key_with_py_webauthn_defaults() -> None:
    with VirtualKey() as key:
        py_webauthn_ceremonies(key)


@pytest.mark.slow
def test_service_key_with_both_libraries_defaults() -> None:
    with VirtualKey.service() as key:
        assert "--uv" in key.argv
        fido2_server_ceremonies(key)
        py_webauthn_ceremonies(key)


def test_what_uv_false_changes() -> None:
    """Without built-in UV (or a PIN) python-fido2 refuses "preferred": the old default."""
    with VirtualKey(uv=False) as key:
        assert Ctap2(key.device).info.options.get("uv") is None
        with pytest.raises(ClientError, match="CONFIGURATION_UNSUPPORTED"):
            fido2_server_ceremonies(key)


def test_a_pin_verifies_the_user_instead_of_builtin_uv() -> None:
    with VirtualKey(pin="1234") as key:
        options = Ctap2(key.device).info.options
        assert options.get("uv") is None and options.get("clientPin") is True
        fido2_server_ceremonies(key)  # the client enters the PIN


def test_default_uv_rules() -> None:
    assert default_uv(None) is True
    assert default_uv(None, pin="1234") is False
    assert default_uv(None, config=Config()) is None  # the config's own builtin_uv
    assert default_uv(False) is False and default_uv(True, pin="1234") is True
    assert VirtualKey(config=Config(builtin_uv=True)).config.builtin_uv
    assert not VirtualKey(config=Config()).config.builtin_uv
    assert VirtualKey().config.builtin_uv


FIXTURE_TEST = """
from fido2.server import Fido2Server


def test_register_and_sign_in(vfido_key):
    server = Fido2Server({"id": "example.com", "name": "Example"})
    client = vfido_key.client("https://example.com")
    options, state = server.register_begin({"id": b"alice", "name": "alice"})
    auth_data = server.register_complete(state, client.make_credential(options["publicKey"]))
    credentials = [auth_data.credential_data]
    options, state = server.authenticate_begin(credentials)
    result = client.get_assertion(options["publicKey"])
    server.authenticate_complete(state, credentials, result.get_response(0))
"""


@pytest.mark.slow
def test_the_pytest_fixture_with_fido2_server_defaults(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside project's first test, in its own pytest process (plugin by entry point)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_first=FIXTURE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1)
