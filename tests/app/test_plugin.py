"""The pytest plugin, used the way an outside project uses it (pytester runs inner sessions)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from vfido.testing.pytest_plugin import uhid_unavailable

# pytester's in-process runs drop the modules an inner session imported; modules with native
# parts (cryptography's bindings) cannot be imported twice, so import what the inner tests
# use here, once.
PRELOADED = [
    importlib.import_module(name)
    for name in ("cryptography.x509", "fido2.attestation", "fido2.server", "webauthn", "vfido.api")
]

pytest_plugins = ["pytester"]
#: The outer session imported the plugin module before the inner ones load it.
QUIET = ("-W", "ignore::pytest.PytestAssertRewriteWarning")

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "vfido.pytest_plugin"

#: An outside project's test: python-fido2's client against the key, checked by python-fido2's
#: Fido2Server and by py_webauthn (the `webauthn` package), attestation trusted up to the
#: key's own root.
RP_TEST = """
import json

import pytest
import webauthn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity
from webauthn.helpers.structs import AttestationFormat

ORIGIN = "https://shop.example"


class TrustKeyRoot:
    def __init__(self, root):
        from fido2.attestation import AttestationVerifier

        class Verifier(AttestationVerifier):
            def ca_lookup(self, result, auth_data):
                return root

        self.verifier = Verifier()


def test_register_then_login(vfido_key):
    server = Fido2Server(
        PublicKeyCredentialRpEntity(id="shop.example", name="Shop"),
        attestation="direct",
        verify_attestation=TrustKeyRoot(vfido_key.attestation_root).verifier,
    )
    user = PublicKeyCredentialUserEntity(id=b"u-42", name="carol", display_name="Carol")
    # Fido2Server's default userVerification ("preferred"): the default key verifies through
    # its built-in UV. ("required" residentKey with "discouraged" UV is refused by a key with
    # built-in UV and no PIN, CTAP 2.1 section 6.1.2 step 7; docs/toolkit.md says so.)
    options, state = server.register_begin(user, resident_key_requirement="required")
    response = vfido_key.client(ORIGIN).make_credential(options.public_key)
    cred = server.register_complete(state, response).credential_data
    root_pem = x509.load_der_x509_certificate(vfido_key.attestation_root).public_bytes(
        Encoding.PEM
    )
    verified = webauthn.verify_registration_response(
        credential=json.dumps(dict(response)),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="shop.example",
        expected_origin=ORIGIN,
        pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: [root_pem]},
    )
    assert verified.fmt == AttestationFormat.PACKED

    options, state = server.authenticate_begin([cred], user_verification="discouraged")
    assertion = vfido_key.client(ORIGIN).get_assertion(options.public_key).get_response(0)
    server.authenticate_complete(state, [cred], assertion)
    login = webauthn.verify_authentication_response(
        credential=json.dumps(dict(assertion)),
        expected_challenge=options.public_key.challenge,
        expected_rp_id="shop.example",
        expected_origin=ORIGIN,
        credential_public_key=verified.credential_public_key,
        credential_current_sign_count=0,
    )
    [held] = vfido_key.credentials()
    assert held.user_id == b"u-42" and held.user_name == "carol"
    assert held.rp_id == "shop.example"
    assert held.sign_count == login.new_sign_count >= 1


@pytest.mark.vfido(attestation="none", uv=True)
def test_marker_options(vfido_key):
    from fido2.ctap2.base import Ctap2

    assert Ctap2(vfido_key.device).info.options["uv"] is True
    server = Fido2Server(PublicKeyCredentialRpEntity(id="shop.example", name="Shop"))
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(id=b"u", name="u", display_name="u"),
        user_verification="required",
    )
    response = vfido_key.client(ORIGIN).make_credential(options.public_key)
    assert response.response.attestation_object.fmt == "none"
    assert server.register_complete(state, response).is_user_verified()


def test_a_fresh_key_per_test(vfido_key):
    assert vfido_key.credentials() == []
"""


def run_outside(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_rp=RP_TEST)
    return pytester.runpytest(*QUIET, "-p", PLUGIN, *args)


def test_fixtures_from_an_outside_project(pytester: pytest.Pytester) -> None:
    result = run_outside(pytester)
    result.assert_outcomes(passed=3)


def test_factory_keys_are_distinct_and_closed_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from vfido.api import VirtualKeyError

        KEYS = []

        def test_two_keys(vfido_key_factory, vfido_key):
            second = vfido_key_factory(presence="deny")
            KEYS.extend([vfido_key, second])
            assert vfido_key.aaguid != second.aaguid
            assert second.presence.mode == "deny"

        def test_closed_afterwards():
            for key in KEYS:
                with pytest.raises(VirtualKeyError):
                    key.device
        """
    )
    pytester.runpytest(*QUIET, "-p", PLUGIN).assert_outcomes(passed=2)


def test_marker_takes_keyword_options_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.vfido("uv")
        def test_x(vfido_key):
            pass
        """
    )
    result = pytester.runpytest(*QUIET, "-p", PLUGIN)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*keyword arguments*"])


HID_TEST = """
from fido2.ctap2.base import Ctap2

def test_hid(vfido_hid_key):
    assert vfido_hid_key.hidraw_path.startswith("/dev/hidraw")
    assert Ctap2(vfido_hid_key.device).info.aaguid == vfido_hid_key.aaguid
"""


def test_hid_key_fixture_or_skip_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HID_TEST)
    result = pytester.runpytest(*QUIET, "-p", PLUGIN, "-rs")
    reason = uhid_unavailable()
    if reason is None:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*SKIPPED*/dev/uhid*"])


def test_hid_key_required_fails_instead_of_skipping(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if uhid_unavailable() is None:
        pytest.skip("/dev/uhid is usable here: nothing to refuse")
    monkeypatch.setenv("VFIDO_REQUIRE_UHID", "1")
    pytester.makepyfile(HID_TEST)
    result = pytester.runpytest(*QUIET, "-p", PLUGIN)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*VFIDO_REQUIRE_UHID is set but /dev/uhid*"])


def fake_installation(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dist-info carrying the entry points pyproject.toml declares, as pip would install it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plugins = project["entry-points"]["pytest11"]
    site = pytester.mkdir("site")
    dist = site / "vfido_plugin_probe-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vfido-plugin-probe\nVersion: 0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
    (dist / "entry_points.txt").write_text("[pytest11]\n" + lines)
    monkeypatch.syspath_prepend(site)


def test_entry_point_loads_the_plugin_without_configuration(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_installation(pytester, monkeypatch)
    pytester.makepyfile(test_rp=RP_TEST)
    pytester.runpytest(*QUIET).assert_outcomes(passed=3)


@pytest.mark.parametrize("how", ["conftest", "option"])
def test_entry_point_plus_explicit_loading_registers_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """An installed vfido plus `pytest_plugins`/`-p` (the repo's own suite, or a project that
    also lists it) must not register the plugin twice."""
    fake_installation(pytester, monkeypatch)
    args: list[str] = []
    if how == "conftest":
        pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    else:
        args = ["-p", PLUGIN]
    pytester.makepyfile(test_rp=RP_TEST)
    result = pytester.runpytest(*QUIET, *args)
    result.assert_outcomes(passed=3)
    assert "already registered" not in result.stdout.str() + result.stderr.str()
