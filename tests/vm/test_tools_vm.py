"""libfido2's tools and OpenSSH against three key configurations, in the guest (issue #14).
The guest records outcomes (tests/vm/guest_tools.py); the expectations are here.

Every combination either works or fails with the tool's own clear error; none may hang (each
command runs under a timeout in the guest, and a timeout is an outcome that fails here).
"""

from __future__ import annotations

from typing import Any

import pytest
from vmharness import TEST_TIMEOUT, GuestResults

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]

OK = ("ok", "")


def error(text: str) -> tuple[str, str]:
    return ("error", text)


# Why the errors are what they are (Debian's libfido2 1.12 and OpenSSH 9.2):
PIN_PROMPT = "invalid PIN length"
# ^ libfido2's tools ask for a PIN on the terminal (readpassphrase on /dev/tty) and the key has
#   none to give (the guest answers with Enter, as a user would): `fido2-assert -G -v` always
#   asks for a PIN (libfido2 1.12's tool has no built-in UV path), and on a key without a PIN
#   or built-in UV `fido2-cred -M -v` gets PIN_REQUIRED (no way to verify the user).
NO_PIN_TO_ASK = "FIDO_ERR_OPERATION_DENIED"
# ^ `fido2-cred -M -r` on the built-in UV key (`vfido run --uv`, no PIN): a discoverable
#   credential without "uv" and without a pinUvAuthParam on a key protected by user
#   verification. CTAP 2.1 authenticatorMakeCredential step 7: PUAT_REQUIRED only "if ClientPin
#   option ID is true", otherwise OPERATION_DENIED. The key used to answer PUAT_REQUIRED (0x36),
#   which libfido2 reads as FIDO_ERR_PIN_REQUIRED: fido2-cred then asked for a PIN on the
#   terminal and waited for ever -- the "never returned" of issue #14 (`-r -v` works).
PREVIEW_ONLY = "FIDO_ERR_INVALID_COMMAND"
# ^ libfido2 up to 1.14 sends every credential-management request as command 0x41
#   (credentialManagementPreview, CTAP 2.1-PRE) and never 0x0A; vfido implements 0x0A only
#   unless the `--ctap21-pre` compatibility flag of issue #14 is given. Affects `fido2-token
#   -L -r/-L -k/-D -i`, `-L -b` and OpenSSH's `ssh-keygen -K`.
# pam_u2f 1.1 (pamu2fcfg enrolls, pamtester authenticates through pam_u2f.so):
NOT_OURS = "Device for this keyhandle is not present"
# ^ a key handle with one character changed: the key answers NO_CREDENTIALS, as any key does
#   for a credential it did not make.
NO_PIN = "ctap21_uv_token_tx: fido_blob_set"
# ^ the credential requires the PIN (pamu2fcfg -N) and the key has none: the user can only
#   press Enter, and libfido2 refuses the empty PIN before asking the key.
NO_BUILT_IN_UV = "ctap21_uv_token_tx: fido_dev_has_uv"
# ^ the credential requires user verification (pamu2fcfg -V) and the key has no built-in UV:
#   libfido2 refuses before asking the key (pam_u2f documents -V for biometric keys).
WRONG_PIN = "blob[0]=0x31"  # the key's CTAP2_ERR_PIN_INVALID
PAM_EVERYWHERE = {
    "pam_enroll": OK,
    "pam_auth": OK,
    "pam_auth_tampered": error(NOT_OURS),
    "pam_enroll_rk": OK,
    "pam_auth_rk": OK,
    "pam_enroll_rs256": OK,
    "pam_auth_rs256": OK,
    "pam_enroll_pin": OK,
    "pam_enroll_uv": OK,
}
# systemd 252's systemd-cryptenroll and cryptsetup 2.6 with systemd's FIDO2 token plugin:
LUKS_EVERYWHERE = {
    "luks_list": OK,
    "luks_enroll": OK,
    "luks_unlock": OK,
    "luks_enroll_eddsa": OK,
    "luks_unlock_eddsa": OK,
}
UV_SECRET_NOT_ENROLLED = "cryptsetup exit status 2"
# ^ systemd-cryptenroll (Debian's 252 here; issue #31443, open, reported with 252-255) on a
#   CTAP 2.1 key with a PIN and makeCredUvNotRqd (a YubiKey 5 with firmware 5.7, or vfido)
#   makes the credential and the secret without the PIN, yet records "PIN required". At
#   unlock the PIN goes with the assertion, so the key answers with the hmac-secret of a
#   verified user, CredRandomWithUV, which CTAP 2.1 section 12.5 keeps apart from the
#   enrolled CredRandomWithoutUV: no key slot opens.
#   `--fido2-with-client-pin=no` (the eddsa rows) enrolls and unlocks.

EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "nopin": {
        "list": OK,
        "info": OK,
        "pin_change": error("FIDO_ERR_PIN_NOT_SET"),
        "make": OK,
        "make_uv": error(PIN_PROMPT),
        "make_rk": OK,
        "make_rk_uv": error(PIN_PROMPT),
        "get": OK,
        "get_uv": error(PIN_PROMPT),
        "get_rk": OK,
        "get_rk_uv": error(PIN_PROMPT),
        # fido2-token refuses credential management without a PIN before asking the key.
        "cm_list_rps": error("FIDO_ERR_PIN_REQUIRED"),
        "cm_list_creds": error("FIDO_ERR_PIN_REQUIRED"),
        "cm_delete": error("FIDO_ERR_PIN_REQUIRED"),
        "lb_make": OK,
        # libfido2 wants a pinUvAuthToken for a largeBlobs write whenever the key supports
        # permissions, even when the key would accept the write without one: no PIN, no write.
        "lb_set": error("FIDO_ERR_PIN_REQUIRED"),
        "lb_get": error("FIDO_ERR_NOTFOUND"),
        "lb_list": error("FIDO_ERR_INVALID_ARGUMENT"),
        "lb_delete": error("FIDO_ERR_NOTFOUND"),
        "lb_get_deleted": error("FIDO_ERR_NOTFOUND"),
        # OpenSSH enrolls a verify-required key (credProtect 3) on a key with no way to verify
        # the user; signing with it then needs a PIN the key does not have.
        "ssh_enroll": OK,
        "ssh_sign": error("incorrect passphrase"),
        "ssh_download": error("incorrect passphrase"),
        **PAM_EVERYWHERE,
        "pam_auth_pin": error(NO_PIN),
        "pam_auth_uv": error(NO_BUILT_IN_UV),
        **LUKS_EVERYWHERE,
    },
    "pin": {
        "list": OK,
        "info": OK,
        "pin_set": OK,
        "pin_change": OK,
        "make": OK,
        "make_uv": OK,
        "make_rk": OK,
        "make_rk_uv": OK,
        "get": OK,
        "get_uv": OK,
        "get_rk": OK,
        "get_rk_uv": OK,
        "cm_list_rps": error(PREVIEW_ONLY),
        "cm_list_creds": error(PREVIEW_ONLY),
        "cm_delete": error(PREVIEW_ONLY),
        "lb_make": OK,
        "lb_set": OK,
        "lb_get": OK,
        "lb_list": error(PREVIEW_ONLY),
        "lb_delete": OK,
        "lb_get_deleted": error("FIDO_ERR_NOTFOUND"),
        "ssh_enroll": OK,
        "ssh_sign": OK,
        # ssh-keygen -K takes INVALID_COMMAND for "no credential management": no keys.
        "ssh_download": ("wrong", "No keys to download"),
        **PAM_EVERYWHERE,
        "pam_auth_pin": OK,
        "pam_auth_uv": error(NO_BUILT_IN_UV),
        "pam_auth_wrong_pin": error(WRONG_PIN),
        **LUKS_EVERYWHERE,
        "luks_unlock": error(UV_SECRET_NOT_ENROLLED),
    },
    "uv": {
        "list": OK,
        "info": OK,
        "pin_change": error("FIDO_ERR_PIN_NOT_SET"),
        "make": OK,
        "make_uv": OK,
        "make_rk": error(NO_PIN_TO_ASK),  # the "never returned" of issue #14
        "make_rk_uv": OK,
        "get": OK,
        "get_uv": error(PIN_PROMPT),
        "get_rk": OK,
        "get_rk_uv": error(PIN_PROMPT),
        "cm_list_rps": error(PREVIEW_ONLY),
        "cm_list_creds": error(PREVIEW_ONLY),
        "cm_delete": error(PREVIEW_ONLY),
        "lb_make": OK,
        "lb_set": OK,
        "lb_get": OK,
        "lb_list": error("FIDO_ERR_INVALID_ARGUMENT"),  # -L -b asks for a PIN first
        "lb_delete": OK,
        "lb_get_deleted": error("FIDO_ERR_NOTFOUND"),
        # OpenSSH 9.2 makes the resident credential without "uv"; it reads the key's
        # OPERATION_DENIED as "PIN required" and asks (askpass) for a PIN the key does not have.
        "ssh_enroll": error("Too many incorrect PINs"),
        "ssh_sign": ("skipped", ""),
        "ssh_download": ("skipped", ""),
        **PAM_EVERYWHERE,
        "pam_enroll_rk": error(NO_PIN_TO_ASK),  # as fido2-cred -M -r above
        "pam_auth_rk": ("skipped", ""),
        "pam_auth_pin": error(NO_PIN),
        "pam_auth_uv": OK,
        **LUKS_EVERYWHERE,
    },
}


def mismatches(
    matrix: dict[str, dict[str, dict[str, Any]]],
    expected: dict[str, dict[str, tuple[str, str]]] = EXPECTED,
) -> list[str]:
    """Each combination whose outcome differs from the table (or is missing, or extra)."""
    problems = []
    for config, ops in expected.items():
        got = matrix.get(config, {})
        for op, (outcome, text) in ops.items():
            if op not in got:
                problems.append(f"{config}.{op}: did not run")
                continue
            result = got[op]
            if result["outcome"] == "timeout":
                problems.append(f"{config}.{op}: HUNG (killed after the timeout)")
            elif result["outcome"] != outcome or text not in result["error"]:
                problems.append(
                    f"{config}.{op}: expected {outcome} {text!r}, got {result['outcome']} "
                    f"{result['error']!r} (prompts {result['prompts']})"
                )
            elif outcome == "error" and not result["error"]:
                problems.append(f"{config}.{op}: failed without an error message")
        problems += [f"{config}.{op}: not in the table" for op in got if op not in ops]
    return problems


@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_tools_and_openssh_outcomes(vm: GuestResults, config: str) -> None:
    data = vm.require_ok("tools_matrix")
    matrix = data["matrix"]
    assert config in matrix, f"{config} did not run: {list(matrix)}"
    problems = mismatches({config: matrix[config]}, {config: EXPECTED[config]})
    assert not problems, "\n".join(problems)


def test_no_combination_hangs(vm: GuestResults) -> None:
    data = vm.require_ok("tools_matrix")
    assert data["hung"] == []


@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_pam_u2f_and_luks_are_served_over_ctap2(vm: GuestResults, config: str) -> None:
    """Every pam_u2f and systemd-cryptenroll step that reached the key was served by CTAP2
    (libfido2 would fall back to U2F for a key whose getInfo it cannot use: a login would
    still work, over the wrong protocol); each enrollment by a makeCredential, each sign-in
    or unlock by a getAssertion, the refused ones that reached the key included."""
    ops = vm.require_ok("tools_matrix")["matrix"][config]
    traced = {op: r for op, r in ops.items() if "served" in r}
    assert {op.split("_")[0] for op in traced} == {"pam", "luks"}, sorted(traced)
    for op, result in traced.items():
        served = result["served"]
        assert not [s for s in served if not s.startswith("CBOR ")], (op, served)
        reached = op in ("pam_auth_tampered", "luks_unlock")
        if result["outcome"] == "ok" or reached:
            wanted = "CBOR makeCredential" if "_enroll" in op else "CBOR getAssertion"
            assert wanted in served, (op, served)


@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_luks_opens_exactly_when_the_unlock_asks_for_the_enrolled_secret(
    vm: GuestResults, config: str
) -> None:
    """hmac-secret gives one secret to assertions with user verification and another to those
    without (CTAP 2.1 section 12.5): a volume opens when the unlock's assertion has the UV flag
    the enrollment's had, and only then (the PIN key's default enrollment, systemd #31443)."""
    ops = vm.require_ok("tools_matrix")["matrix"][config]
    for variant in ("", "_eddsa"):
        enrolled, unlocked = ops[f"luks_enroll{variant}"], ops[f"luks_unlock{variant}"]
        assert enrolled["outcome"] == "ok", enrolled
        for step in (enrolled, unlocked):  # one assertion each: the secret's
            assert len(step["assertions"]) == 1, (variant, step["served"], step["assertions"])
        [at_enrollment], [at_unlock] = enrolled["assertions"], unlocked["assertions"]
        same = ("UV" in at_enrollment) == ("UV" in at_unlock)
        assert (unlocked["outcome"] == "ok") == same, (variant, at_enrollment, at_unlock)


def test_discoverable_credential_with_built_in_uv(vm: GuestResults) -> None:
    """The issue's case: against `vfido run --uv`, a discoverable credential made with -v, then
    found by `fido2-assert -G -r` and verified: both return."""
    uv = vm.require_ok("tools_matrix")["matrix"]["uv"]
    assert uv["make_rk_uv"]["outcome"] == "ok"
    assert uv["get_rk"]["outcome"] == "ok"
    assert uv["make_rk"]["prompts"] == []  # a clear error, no PIN prompt (it waited before)
