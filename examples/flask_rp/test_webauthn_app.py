"""Test the relying party's HTTP endpoints with python-fido2's client and a vfido key.

``vfido_key`` (vfido's pytest plugin) is a fresh in-process security key; python-fido2's
``Fido2Client`` plays the browser: it takes the options the RP sends, talks CTAP to the key,
and returns the credential JSON the RP verifies.
"""

from __future__ import annotations

from typing import Any

import pytest
from fido2.client import ClientError, Fido2Client
from fido2.utils import websafe_decode, websafe_encode
from flask import Flask
from flask.testing import FlaskClient

from vfido.api import VirtualKey

ORIGIN = "http://localhost"  # what the browser would report for http://localhost/


def register(http: FlaskClient, browser: Fido2Client, username: str) -> Any:
    options = http.post("/api/register/begin", json={"username": username})
    assert options.status_code == 200, options.get_json()
    credential = browser.make_credential(options.get_json()["publicKey"])
    return http.post("/api/register/complete", json=dict(credential))


def login(http: FlaskClient, browser: Fido2Client, username: str, tamper: bool = False) -> Any:
    options = http.post("/api/login/begin", json={"username": username})
    assert options.status_code == 200, options.get_json()
    assertion = browser.get_assertion(options.get_json()["publicKey"]).get_response(0)
    data = dict(assertion)
    if tamper:  # one flipped bit in the signature
        signature = bytearray(websafe_decode(data["response"]["signature"]))
        signature[-1] ^= 1
        data["response"]["signature"] = websafe_encode(bytes(signature))
    return http.post("/api/login/complete", json=data)


def test_register_then_sign_in(app: Flask, vfido_key: VirtualKey) -> None:
    http = app.test_client()
    browser = vfido_key.client(ORIGIN)
    registered = register(http, browser, "alice")
    assert registered.status_code == 200, registered.get_json()
    assert http.get("/api/me").get_json() == {"username": None}

    first = login(http, browser, "alice")
    assert first.status_code == 200, first.get_json()
    assert http.get("/api/me").get_json() == {"username": "alice"}
    second = login(http, browser, "alice")
    assert second.get_json()["sign_count"] > first.get_json()["sign_count"]

    # The RP stored what the key made: a server-side credential (the key keeps nothing).
    [stored] = app.config["ACCOUNTS"]["alice"].credentials
    assert websafe_encode(stored.credential_id) == registered.get_json()["credential_id"]
    assert vfido_key.credentials() == []


def test_a_bad_signature_is_refused(app: Flask, vfido_key: VirtualKey) -> None:
    http = app.test_client()
    browser = vfido_key.client(ORIGIN)
    assert register(http, browser, "bob").status_code == 200
    refused = login(http, browser, "bob", tamper=True)
    assert refused.status_code == 400
    assert "login refused" in refused.get_json()["error"]
    assert http.get("/api/me").get_json() == {"username": None}


def test_another_key_cannot_sign_in(app: Flask, vfido_key_factory: Any) -> None:
    http = app.test_client()
    mine, other = vfido_key_factory(), vfido_key_factory()
    assert register(http, mine.client(ORIGIN), "carol").status_code == 200
    with pytest.raises(ClientError):  # the other key knows none of carol's credentials
        login(http, other.client(ORIGIN), "carol")


def test_one_registration_per_key(app: Flask, vfido_key: VirtualKey) -> None:
    http = app.test_client()
    browser = vfido_key.client(ORIGIN)
    assert register(http, browser, "dave").status_code == 200
    with pytest.raises(ClientError) as excluded:  # excludeCredentials names this key's credential
        register(http, browser, "dave")
    assert excluded.value.code == ClientError.ERR.DEVICE_INELIGIBLE


@pytest.mark.vfido(presence="deny")
def test_user_refuses_registration(app: Flask, vfido_key: VirtualKey) -> None:
    with pytest.raises(ClientError):
        register(app.test_client(), vfido_key.client(ORIGIN), "erin")
    assert "erin" not in app.config["ACCOUNTS"]


def test_a_cloned_key_is_refused(app: Flask, vfido_key: VirtualKey) -> None:
    """Scripted misbehaviour: the key reports a signature counter below the last one, as a
    cloned key would; the RP refuses the login (WebAuthn section 7.2 step 21)."""
    http = app.test_client()
    browser = vfido_key.client(ORIGIN)
    assert register(http, browser, "frank").status_code == 200
    assert login(http, browser, "frank").status_code == 200
    vfido_key.behaviours.set("counter-regression")
    refused = login(http, browser, "frank")
    assert refused.status_code == 400
    assert "cloned" in refused.get_json()["error"]
