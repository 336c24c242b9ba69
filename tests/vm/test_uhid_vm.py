"""The real Linux HID path, tested in ONE qemu guest per session (see tests/vm/README.md).

The guest (tests/vm/guest_checks.py) runs every check and records results; each test here
asserts one check, and the browser tests verify the browsers' WebAuthn responses with
python-fido2's Fido2Server on this side.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import trace_protocols
from fido2 import cose
from fido2.attestation.base import AttestationType
from fido2.attestation.packed import PackedAttestation
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
)
from vmharness import TEST_TIMEOUT, GuestResults

# The first test also waits for the session fixture (the whole guest run).
pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]

ALGS = {"es256": -7, "eddsa": -8, "rs256": -257}


def test_guest_kernel_has_uhid(vm: GuestResults) -> None:
    data = vm.require_ok("kernel_uhid")
    assert data["uname"].endswith("-amd64")


def test_uhid_create2_makes_a_fido_hidraw_node(vm: GuestResults) -> None:
    data = vm.require_ok("uhid_create_raw")
    assert data["hidraw"].startswith("/dev/hidraw")
    assert data["hidraw"] in data["fido2_token_L"]


def test_uhid_transport_echo_through_hidraw(vm: GuestResults) -> None:
    data = vm.require_ok("uhid_transport_echo")
    assert data["hidraw"] in data["fido2_token_L"]


def test_vfido_run_python_fido2_webauthn_and_u2f(vm: GuestResults) -> None:
    data = vm.require_ok("vfido_python_fido2")
    assert "FIDO_2_0" in data["info_versions"]
    assert data["u2f_version"] == "U2F_V2"


def test_vfido_run_fido2_tools(vm: GuestResults) -> None:
    data = vm.require_ok("vfido_fido2_tools")
    for key in ("es256_nonrk", "es256_rk", "eddsa_nonrk", "eddsa_rk"):
        assert data.get(key) == "ok", key


def test_two_vfido_keys_at_once(vm: GuestResults) -> None:
    data = vm.require_ok("vfido_two_keys")
    assert len(set(data["hidraw"])) == 2


# --- browsers ---------------------------------------------------------------------------------


class PageVerifier:
    """Verifies the page's create()/get() results with python-fido2's server side, and that
    CTAP2 served each one: the key's trace (``trace``, see trace_protocols) must show the
    makeCredential that made the credential and the getAssertion that made the signature.
    A browser that silently fell back to U2F REGISTER/AUTHENTICATE fails here."""

    def __init__(self, page: dict[str, Any], trace: list[dict[str, Any]]) -> None:
        self.page = page
        self.trace = trace
        self.origin = page["origin"]
        self.server = Fido2Server(
            PublicKeyCredentialRpEntity(id="localhost", name="vfido test RP"),
            verify_origin=lambda origin: origin == self.origin,
        )
        self.by_name = {s["name"]: s for s in page["scenarios"]}
        self.credentials: dict[str, AttestedCredentialData] = {}

    def scenario(self, name: str) -> dict[str, Any]:
        assert name in self.by_name, f"the page did not run {name}: {list(self.by_name)}"
        entry: dict[str, Any] = self.by_name[name]
        return entry

    def require_ok(self, name: str) -> dict[str, Any]:
        entry = self.scenario(name)
        assert entry["ok"], f"{name} failed in the browser: {entry.get('error')}"
        return entry

    def require_ctap2(self, name: str) -> None:
        entry = self.require_ok(name)
        served = trace_protocols.served(self.trace, entry["kind"], entry["credential"])
        wanted = (
            trace_protocols.CTAP2_CREATE if entry["kind"] == "create" else trace_protocols.CTAP2_GET
        )
        assert len(served) == 1 and served[0] in wanted, (
            f"{name}: the key's trace shows it served by {served or 'nothing'}, not by "
            f"{' or '.join(wanted)}"
        )

    def response(self, name: str) -> dict[str, Any]:
        """The key's trace record of the response that served scenario ``name``."""
        entry = self.require_ok(name)
        [record] = trace_protocols.responses_of(self.trace, entry["kind"], entry["credential"])
        return record

    def verify_create(self, name: str) -> AttestedCredentialData:
        self.require_ctap2(name)
        entry = self.require_ok(name)
        state = {"challenge": entry["challenge"], "user_verification": "discouraged"}
        auth_data = self.server.register_complete(state, entry["credential"])
        assert auth_data.credential_data is not None
        cred = auth_data.credential_data
        assert cred.public_key[3] == entry["alg"], "credential algorithm differs from the request"
        self.credentials[entry["credential"]["rawId"]] = cred
        return cred

    def verify_get(self, name: str) -> None:
        self.require_ctap2(name)
        entry = self.require_ok(name)
        state = {"challenge": entry["challenge"], "user_verification": "discouraged"}
        self.server.authenticate_complete(
            state, list(self.credentials.values()), entry["credential"]
        )


def page_bytes(b64url: str) -> bytes:
    return base64.urlsafe_b64decode(b64url + "=" * (-len(b64url) % 4))


def key_trace(vm: GuestResults, check: str) -> list[dict[str, Any]]:
    """The records of the browser key's `vfido run --trace` file (a missing one fails)."""
    name = vm.check(check)["data"].get("trace")
    path = vm.out_dir / str(name)
    if not name or not path.exists():
        pytest.fail(f"{check}: no trace of the browser's key ({path})", pytrace=False)
    return trace_protocols.read_trace(path)


def browser_page(vm: GuestResults, check: str) -> PageVerifier:
    """The page results, also when the page did not finish: each test then checks only its
    own scenarios (a missing one fails that test with the check's detail)."""
    result = vm.check(check)
    page = result["data"].get("page")
    if not page:
        pytest.fail(f"{check} produced no page results:\n{result['detail']}", pytrace=False)
    return PageVerifier(page, key_trace(vm, check))


@pytest.mark.parametrize("alg", sorted(ALGS))
def test_chromium_create_and_get(vm: GuestResults, alg: str) -> None:
    page = browser_page(vm, "chromium_webauthn")
    page.verify_create(f"create_{alg}")
    page.verify_get(f"get_{alg}")


def test_chromium_timing_recorded(vm: GuestResults, record_property: Any) -> None:
    page = browser_page(vm, "chromium_webauthn")
    page.verify_create("timing_create")
    page.verify_get("timing_get")
    timing = page.page["timing"]
    record_property("chromium_create_ms", round(timing["create_ms"]))
    record_property("chromium_get_ms", round(timing["get_ms"]))
    record_property("guest_boot_s", vm.results["info"]["boot_seconds"])
    (vm.out_dir / "timing.json").write_text(
        json.dumps(
            {
                "boot_seconds": vm.results["info"]["boot_seconds"],
                "guest_seconds": vm.results["info"].get("total_guest_seconds"),
                "chromium": timing,
                "chromium_run_seconds": vm.check("chromium_webauthn")["data"]["browser_seconds"],
            },
            indent=1,
        )
    )
    assert timing["ok"]


def test_chromium_discoverable_credential(vm: GuestResults) -> None:
    """residentKey "preferred", then get() with an empty allowCredentials.

    The browsers' key runs with built-in user verification (`vfido run --uv`): Chromium
    verifies the user through the key (getPinUvAuthTokenUsingUvWithPermissions) instead of
    asking for a PIN, so the discoverable credential is made and found with no UI.
    """
    page = browser_page(vm, "chromium_webauthn")
    cred = page.verify_create("create_rk_preferred")
    entry = page.scenario("create_rk_preferred")
    assert entry["credential"]["clientExtensionResults"]["credProps"]["rk"] is True
    page.verify_get("get_rk_empty_allow")
    got = page.scenario("get_rk_empty_allow")["credential"]
    assert got["rawId"] == entry["credential"]["rawId"]
    assert bytes(cred.credential_id) == page_bytes(got["rawId"])
    assert got["response"].get("userHandle"), "a discoverable assertion names its user"


def test_chromium_exclude_credentials_refused(vm: GuestResults) -> None:
    page = browser_page(vm, "chromium_webauthn")
    entry = page.scenario("create_excluded")
    assert entry["excluded"], "no credential to exclude (create_es256 failed)"
    assert not entry["ok"], "a credential was created despite excludeCredentials"
    # The key refused with CTAP2_ERR_CREDENTIAL_EXCLUDED ...
    key_log = (vm.out_dir / "vfido-vfido-vm-chromium.log").read_text(errors="replace")
    assert "MAKE_CREDENTIAL -> CREDENTIAL_EXCLUDED" in key_log
    # ... but where the spec says InvalidStateError, headless Chromium 156 keeps its "already
    # registered" sheet up, so the page's AbortSignal.timeout ends the call.
    assert entry["error"]["name"] in ("InvalidStateError", "TimeoutError", "AbortError")


def test_chromium_resident_key_required(vm: GuestResults) -> None:
    page = browser_page(vm, "chromium_webauthn")
    page.verify_create("create_rk_required")
    entry = page.scenario("create_rk_required")
    assert entry["credential"]["clientExtensionResults"]["credProps"]["rk"] is True


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_prf_gives_one_secret_per_salt_through_hmac_secret(vm: GuestResults, browser: str) -> None:
    """WebAuthn's PRF extension on the key's hmac-secret (CTAP 2.1 section 12.5): a credential
    made with it, then a get() evaluating salts A and B and one evaluating A again. Where the
    browser sent hmac-secret, each salt gives one 32-byte secret: A's twice the same, B's
    another; and Chromium's output at create() (hmac-secret-mc) is A's exactly when that
    assertion's UV flag is the creation's (CTAP keeps a secret per UV state). Firefox ESR 153
    sends no hmac-secret to a key without a PIN or UV token (authenticator-rs #364): then its
    get() has no results, which the trace shows is its doing, not the key's."""
    page = browser_page(vm, f"{browser}_webauthn")
    page.verify_create("create_prf")
    made = page.scenario("create_prf")["credential"]["clientExtensionResults"]["prf"]
    assert made["enabled"] is True  # the key answered hmac-secret: true
    secrets: dict[str, tuple[dict[str, str], bool]] = {}
    for name in ("get_prf", "get_prf_again"):
        page.verify_get(name)
        record = page.response(name)
        outputs = page.scenario(name)["credential"]["clientExtensionResults"].get("prf", {})
        if "hmac-secret" not in (record["params"].get("extensions") or {}):
            assert browser == "firefox" and "results" not in outputs, (name, outputs)
            continue
        assert "results" in outputs, f"{name}: hmac-secret asked, no PRF results: {outputs}"
        results = outputs["results"]
        assert all(len(page_bytes(value)) == 32 for value in results.values()), results
        secrets[name] = (results, "UV" in record["result"]["authData"]["flags"])
    if browser == "chromium":
        assert set(secrets) == {"get_prf", "get_prf_again"}
    if secrets:
        (both, uv), (again, uv_again) = secrets["get_prf"], secrets["get_prf_again"]
        assert uv == uv_again and both["first"] == again["first"]
        assert both["second"] != both["first"]
        if "results" in made:
            creation_uv = "UV" in page.response("create_prf")["result"]["authData"]["flags"]
            assert (made["results"]["first"] == both["first"]) == (creation_uv == uv)


# Headless Firefox ESR on the same page, against the default key (no --uv, no ML-DSA in
# getInfo): each ceremony completes over CTAP2 and verifies. (Before ML-DSA became opt-in,
# Firefox could not parse getInfo and fell back to U2F: EdDSA, RS256 and discoverable
# credentials failed, and ES256 passed through U2F REGISTER/AUTHENTICATE.)


def test_firefox_finished_the_page(vm: GuestResults) -> None:
    result = vm.check("firefox_webauthn")
    assert result["ok"], f"Firefox run did not complete: {result['detail'][:1500]}"
    assert "--uv" not in result["data"]["key_args"], "Firefox runs against the default key"


@pytest.mark.parametrize("alg", sorted(ALGS))
def test_firefox_create_and_get(vm: GuestResults, alg: str) -> None:
    page = browser_page(vm, "firefox_webauthn")
    page.verify_create(f"create_{alg}")
    page.verify_get(f"get_{alg}")


def test_firefox_discoverable_credential(vm: GuestResults) -> None:
    """residentKey "preferred", then get() with an empty allowCredentials; and "required"."""
    page = browser_page(vm, "firefox_webauthn")
    page.verify_create("create_rk_preferred")
    page.verify_get("get_rk_empty_allow")
    got = page.scenario("get_rk_empty_allow")["credential"]
    assert got["rawId"] == page.scenario("create_rk_preferred")["credential"]["rawId"]
    assert got["response"].get("userHandle"), "a discoverable assertion names its user"
    page.verify_create("create_rk_required")


def test_firefox_exclude_credentials_refused(vm: GuestResults) -> None:
    page = browser_page(vm, "firefox_webauthn")
    excluded = page.scenario("create_excluded")
    assert excluded["excluded"], "no credential to exclude"
    assert not excluded["ok"], "Firefox created a credential despite excludeCredentials"
    assert excluded["error"]["name"] == "InvalidStateError"
    # The key refused it in a CTAP2 makeCredential (not a U2F REGISTER check).
    refused = [
        r["command"]
        for r in key_trace(vm, "firefox_webauthn")
        if r.get("type") == "response" and r.get("status") == "CREDENTIAL_EXCLUDED"
    ]
    assert refused[:1] == ["makeCredential"], refused


@pytest.mark.parametrize("check", ["chromium_webauthn", "firefox_webauthn"])
def test_browser_spoke_only_ctap2_to_the_default_key(vm: GuestResults, check: str) -> None:
    """No U2F REGISTER/AUTHENTICATE reached the browser's key at all, and CTAP2 did."""
    counts = trace_protocols.protocol_counts(key_trace(vm, check))
    u2f = {c: n for c, n in counts.items() if c in trace_protocols.U2F_CEREMONIES}
    assert not u2f, f"{check}: the browser used U2F: {counts}"
    assert counts.get("CBOR makeCredential", 0) >= 1 and counts.get("CBOR getAssertion", 0) >= 1


# --- post-quantum credentials (webauthn.html?mode=mldsa) ------------------------------------

MLDSA = {"mldsa65": -49, "mldsa44": -48, "mldsa65_again": -49}


def verify_mldsa_create(page: PageVerifier, name: str) -> AttestationObject:
    """Fido2Server checks the registration; the COSE key must parse as fido2's ML-DSA class;
    a packed statement must be self attestation by that key. Returns the attestation object."""
    cred = page.verify_create(name)
    entry = page.scenario(name)
    key_class = cose.CoseKey.for_alg(entry["alg"])
    assert key_class is not cose.UnsupportedKey, "python-fido2 here has no ML-DSA"
    assert isinstance(cred.public_key, key_class)
    response = entry["credential"]["response"]
    att = AttestationObject(page_bytes(response["attestationObject"]))
    if att.fmt == "packed":
        client_data_hash = hashlib.sha256(page_bytes(response["clientDataJSON"])).digest()
        result = PackedAttestation().verify(att.att_stmt, att.auth_data, client_data_hash)
        assert result.attestation_type == AttestationType.SELF
        assert att.att_stmt["alg"] == entry["alg"]
    return att


@pytest.mark.parametrize("label", sorted(MLDSA))
def test_chromium_mldsa_credential(vm: GuestResults, label: str, record_property: Any) -> None:
    """Chromium's create() with pubKeyCredParams [{alg: -49}] (and -48), attestation "direct":
    the attestation object carries the key's packed self attestation, which verifies; the
    following get() verifies with the ML-DSA public key. (The page tries a create() that hit
    Chromium's 3 s HID timeout in the slow guest once more; the last attempt counts.)"""
    page = browser_page(vm, "chromium_mldsa")
    att = verify_mldsa_create(page, f"create_{label}")
    attempts = [s for s in page.page["scenarios"] if s["name"] == f"create_{label}"]
    record_property(f"chromium_{label}_attempts", len(attempts))
    info = page.scenario(f"create_{label}")["publicKeyInfo"]
    record_property(f"chromium_{label}_public_key_info", info)
    assert att.fmt == "packed", f"Chromium returned {att.fmt!r} for attestation 'direct'"
    page.verify_get(f"get_{label}")
    # What Chromium sent the key (from the key's trace): exactly the RP's algorithm.
    ctap = vm.check("chromium_mldsa")["data"]["ctap"]
    made = [c for c in ctap if c["command"] == "makeCredential" and c["status"] == "OK"]
    assert [MLDSA[label]] in [c["algs"] for c in made]
    record_property("chromium_mldsa_ctap", json.dumps(ctap))


def test_chromium_mldsa_attestation_none(vm: GuestResults, record_property: Any) -> None:
    """attestation "none": whatever Chromium makes of the self attestation (kept or replaced
    by "none"), the credential registers and signs."""
    page = browser_page(vm, "chromium_mldsa")
    att = verify_mldsa_create(page, "create_mldsa65_none")
    record_property("chromium_mldsa65_none_fmt", att.fmt)
    assert att.fmt in ("packed", "none")
    page.verify_get("get_mldsa65_none")


def test_firefox_mldsa(vm: GuestResults, record_property: Any) -> None:
    """Firefox ESR on the ML-DSA page, the key run with --mldsa: what completes must verify
    strictly (and over CTAP2); what the browser refuses is recorded (xfail with its error and
    the protocols the key saw). Seen on 2026-12-04: Firefox ESR drops ML-DSA from
    pubKeyCredParams (the key gets `[]` and answers UNSUPPORTED_ALGORITHM), over CTAP2."""
    result = vm.check("firefox_mldsa")
    page_data = result["data"].get("page")
    if not page_data:
        pytest.fail(f"firefox_mldsa produced no page results:\n{result['detail']}", pytrace=False)
    page = PageVerifier(page_data, key_trace(vm, "firefox_mldsa"))
    refused = []
    for label in ("mldsa65", "mldsa44", "mldsa65_none", "mldsa65_again"):
        entry = page.scenario(f"create_{label}")
        if not entry["ok"]:
            refused.append(f"{label}: {entry['error']['name']}: {entry['error']['message']}")
            continue
        att = verify_mldsa_create(page, f"create_{label}")
        record_property(f"firefox_{label}_fmt", att.fmt)
        page.verify_get(f"get_{label}")
    if refused:
        sent = [
            (c["command"], c["algs"], c["status"])
            for c in result["data"].get("ctap", [])
            if c["command"] == "makeCredential"
        ]
        protocols = trace_protocols.protocol_counts(page.trace)
        pytest.xfail(
            f"Firefox refused: {'; '.join(refused)}; it sent the key: {sent}; "
            f"protocols: {protocols}"
        )


#: Which trace responses serve a persona's create() and get() (issue #19).
PERSONA_PROTOCOLS = {
    "u2f": {"create": ("MSG REGISTER",), "get": ("MSG AUTHENTICATE",)},
    "ctap20": {"create": trace_protocols.CTAP2_CREATE, "get": trace_protocols.CTAP2_GET},
    "ctap21pre": {"create": trace_protocols.CTAP2_CREATE, "get": trace_protocols.CTAP2_GET},
    "ctap21": {"create": trace_protocols.CTAP2_CREATE, "get": trace_protocols.CTAP2_GET},
}


@pytest.mark.parametrize("persona", PERSONA_PROTOCOLS)
def test_chromium_registers_and_signs_in_with_each_persona(vm: GuestResults, persona: str) -> None:
    """`vfido run --persona NAME`: headless Chromium's ES256 create() and get() verify with
    Fido2Server, and the key's trace shows the protocol that model class speaks serving each
    one (U2F REGISTER/AUTHENTICATE for the U2F-only key, CTAP2 for the others)."""
    data = vm.require_ok("chromium_personas")[persona]
    page = PageVerifier(data["page"], trace_protocols.read_trace(vm.out_dir / data["trace"]))
    state = {"user_verification": "discouraged"}
    credentials = []
    for name in ("create_es256", "get_es256"):
        entry = page.require_ok(name)
        served = trace_protocols.served(page.trace, entry["kind"], entry["credential"])
        wanted = PERSONA_PROTOCOLS[persona][entry["kind"]]
        assert len(served) == 1 and served[0] in wanted, f"{name} served by {served or 'nothing'}"
        state["challenge"] = entry["challenge"]
        if entry["kind"] == "create":
            auth_data = page.server.register_complete(state, entry["credential"])
            assert auth_data.credential_data is not None
            credentials.append(auth_data.credential_data)
        else:
            page.server.authenticate_complete(state, credentials, entry["credential"])
    counts = trace_protocols.protocol_counts(page.trace)
    if persona != "u2f":  # a CTAP2 key: the browser never fell back to U2F
        assert not any(c in trace_protocols.U2F_CEREMONIES for c in counts), counts


def test_example_chromium_pytest(vm: GuestResults) -> None:
    """examples/flask_rp/test_chromium.py passed in the guest (vfido_hid_key + Chromium)."""
    data = vm.require_ok("example_chromium_pytest")
    assert data["summary"].startswith("1 passed"), data["summary"]


def test_example_browsers_pytest(vm: GuestResults) -> None:
    """examples/flask_rp/test_selenium.py and test_playwright.py passed in the guest: each
    registered and signed in through the page, the RP verified both, and the key's trace
    shows that CTAP2 makeCredential / getAssertion served them."""
    data = vm.require_ok("example_browsers_pytest")
    assert data["summary"].startswith("2 passed"), data["summary"]
    served = {tool: (create, get) for tool, create, get in data["served"]}
    assert served == {
        "selenium": ("CBOR makeCredential", "CBOR getAssertion"),
        "playwright": ("CBOR makeCredential", "CBOR getAssertion"),
    }, data["served"]


def test_webdriver_selenium_through_vfido_webdriver(vm: GuestResults) -> None:
    """A Selenium test written for Chromium's built-in virtual authenticator passes unmodified
    against chromedriver and through `vfido webdriver`, where the real key over UHID served
    the ceremonies (its log: CTAP2 makeCredential and getAssertion answered OK)."""
    data = vm.require_ok("webdriver_selenium")
    assert data["builtin_summary"].startswith("1 passed"), data["builtin_summary"]
    assert data["vfido_summary"].startswith("1 passed"), data["vfido_summary"]
    assert "MAKE_CREDENTIAL" in data["served"], data["key_log"]
    assert data["served"].count("GET_ASSERTION") >= 2, data["key_log"]
