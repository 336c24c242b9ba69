"""A Selenium test written for Chromium's built-in WebDriver virtual authenticator.

Nothing here knows about vfido: it is the kind of test CI suites already have. The guest
check ``webdriver_selenium`` (tests/vm/guest_webdriver.py) runs it twice, unmodified: against
chromedriver itself (Chromium's in-browser fake) and through ``vfido webdriver`` (a real key
over UHID). Not collected by the host suite (its name does not start with ``test_``).

Environment: ``WEBDRIVER_URL`` (the driver), ``PAGE_URL`` (any page on a secure origin, here
``http://localhost:PORT/``), ``CHROMIUM`` (the browser binary).
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from selenium import webdriver
from selenium.webdriver.common.virtual_authenticator import (
    Credential,
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)

CREATE = """
const done = arguments[arguments.length - 1];
navigator.credentials.create({publicKey: {
  rp: {name: "Example", id: "localhost"},
  user: {id: new Uint8Array([1, 2, 3, 4]), name: "alice", displayName: "Alice"},
  challenge: crypto.getRandomValues(new Uint8Array(32)),
  pubKeyCredParams: [{type: "public-key", alg: -7}],
  authenticatorSelection: {residentKey: "required", userVerification: "required"},
  attestation: "none",
  signal: AbortSignal.timeout(60000),
}}).then(c => done({ok: true, id: Array.from(new Uint8Array(c.rawId)),
                    flags: new Uint8Array(c.response.getAuthenticatorData())[32]}),
         e => done({ok: false, error: e.name + ": " + e.message}));
"""

GET = """
const done = arguments[arguments.length - 1];
const allow = arguments[0] === null ? [] :
  [{type: "public-key", id: new Uint8Array(arguments[0])}];
navigator.credentials.get({publicKey: {
  challenge: crypto.getRandomValues(new Uint8Array(32)),
  rpId: "localhost",
  allowCredentials: allow,
  userVerification: arguments[1],
  signal: AbortSignal.timeout(arguments[2]),
}}).then(a => done({ok: true, id: Array.from(new Uint8Array(a.rawId)),
                    userHandle: a.response.userHandle &&
                                Array.from(new Uint8Array(a.response.userHandle))}),
         e => done({ok: false, error: e.name + ": " + e.message}));
"""


@pytest.fixture
def driver() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    browser = webdriver.Remote(command_executor=os.environ["WEBDRIVER_URL"], options=options)
    browser.set_script_timeout(90)
    browser.get(os.environ["PAGE_URL"])
    try:
        yield browser
    finally:
        browser.quit()


def test_register_and_sign_in_with_a_virtual_authenticator(driver: Any) -> None:
    options = VirtualAuthenticatorOptions()
    options.protocol = Protocol.CTAP2
    options.transport = Transport.USB
    options.has_resident_key = True
    options.has_user_verification = True
    options.is_user_verified = True
    driver.add_virtual_authenticator(options)

    created = driver.execute_async_script(CREATE)
    assert created["ok"], created
    assert created["flags"] & 0x04, created  # UV
    (credential,) = driver.get_credentials()
    assert credential.is_resident_credential
    assert credential.rp_id == "localhost"
    assert credential.user_handle == base64.urlsafe_b64encode(bytes([1, 2, 3, 4])).decode()
    assert base64.urlsafe_b64decode(credential.id) == bytes(created["id"])

    # A usernameless sign-in finds the discoverable credential.
    signed = driver.execute_async_script(GET, None, "required", 60000)
    assert signed["ok"], signed
    assert signed["id"] == created["id"] and signed["userHandle"] == [1, 2, 3, 4]
    assert driver.get_credentials()[0].sign_count >= 1

    # A credential injected by the test, with the test's own ID and private key.
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    injected = Credential.create_non_resident_credential(
        bytearray(b"injected-1"), "localhost", der, 0
    )
    driver.add_credential(injected)
    signed = driver.execute_async_script(GET, list(b"injected-1"), "discouraged", 60000)
    assert signed["ok"], signed
    assert bytes(signed["id"]) == b"injected-1"
    assert len(driver.get_credentials()) == 2

    # Set User Verified (a sign-in that then requires UV is not run: with a real key, Chromium
    # answers the failed built-in UV with its retry sheet, which waits for a person).
    driver.set_user_verified(False)
    driver.set_user_verified(True)

    driver.remove_credential(bytearray(b"injected-1"))
    assert len(driver.get_credentials()) == 1
    driver.remove_all_credentials()
    assert driver.get_credentials() == []
    driver.remove_virtual_authenticator()
