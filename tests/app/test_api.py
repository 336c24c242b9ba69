"""vfido.api.VirtualKey: a whole key from Python, verified by two independent RP libraries."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fido2.client import ClientError, UserInteraction
from fido2.ctap2.base import Ctap2
from fido2.webauthn import PublicKeyCredentialParameters, PublicKeyCredentialType

from tests.rp import RelyingParty, attestation_fmt, random_user, register, sign_in
from vfido.api import Credential, VirtualKey, VirtualKeyError
from vfido.keystore.store import WrongPassphrase
from vfido.testing.pytest_plugin import uhid_unavailable

PASSPHRASE = "api test passphrase"


def test_register_authenticate_and_list_credentials() -> None:
    with VirtualKey() as key:
        assert key.hidraw_path is None
        rp = RelyingParty(root_der=key.attestation_root)  # packed, trusted up to the root
        response = register(key.client(), rp, rk=True)
        assert attestation_fmt(response) == "packed"
        counter = sign_in(key.client(), rp)
        assert counter >= 1
        [cred] = key.credentials()
        stored = rp.credentials[0]
        assert isinstance(cred, Credential)
        assert cred.credential_id == stored.credential_id
        assert cred.rp_id == "example.com"
        assert cred.user_name and cred.user_name.startswith("user-")
        assert cred.user_id.hex().startswith(cred.user_name[5:])
        assert cred.algorithm == -7
        assert cred.public_key == dict(stored.public_key)
        assert cred.sign_count == counter
        assert cred.created.tzinfo is not None
        # A server-side credential lives in its ID only: not listed.
        register(key.client(), RelyingParty())
        assert [c.credential_id for c in key.credentials()] == [cred.credential_id]


def test_keystore_directory_keeps_credentials_across_runs(tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    with pytest.raises(VirtualKeyError, match="create=True"):
        VirtualKey(keystore=directory, passphrase=PASSPHRASE).start()
    with VirtualKey(keystore=directory, passphrase=PASSPHRASE, create=True) as key:
        rp = RelyingParty(root_der=key.attestation_root)
        register(key.client(), rp, rk=True)
        first = key.credentials()
        aaguid = key.aaguid
    with VirtualKey(keystore=directory, passphrase=PASSPHRASE) as key:
        assert key.aaguid == aaguid
        assert [c.credential_id for c in key.credentials()] == [first[0].credential_id]
        assert sign_in(key.client(), rp) >= 1
    with pytest.raises(WrongPassphrase):
        VirtualKey(keystore=directory, passphrase="not it").start()


@pytest.mark.parametrize(
    ("uv", "refusal"),
    # With built-in UV (the default) the client asks for a UV token first: the refusal is a
    # failed verification (getPinUvAuthTokenUsingUvWithPermissions, CTAP 2.1 6.5.5.7.3).
    [(True, "UV_INVALID"), (False, "OPERATION_DENIED")],
    ids=["builtin-uv", "no-uv"],
)
def test_presence_deny_refuses_registration(uv: bool, refusal: str) -> None:
    with VirtualKey(presence="deny", uv=uv) as key:
        with pytest.raises(ClientError) as info:
            register(key.client(), RelyingParty(), rk=True)
        assert refusal in repr(info.value.cause)
        assert key.credentials() == []


def test_a_manual_key_says_how_it_is_answered(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The log line of a request nobody is asked about names what answers it: it named
    `vfido approve`, which cannot reach an in-process key without a control socket, nor one
    whose socket is not in its directory (a newcomer, a diff review): the key's methods,
    and `vfido approve --socket PATH` where there is one."""
    socket_path = tmp_path / "k.sock"
    with_socket = f"key.approve() or key.deny() (or `vfido approve --socket {socket_path}`)"
    for control, hint in ((False, "key.approve() or key.deny() ("), (True, with_socket)):
        socket = socket_path if control else None
        caplog.clear()
        with VirtualKey(presence="manual", control_socket=socket) as key:
            thread = threading.Thread(target=lambda k=key: register(k.client(), RelyingParty()))
            with caplog.at_level(logging.WARNING, logger="vfido"):
                thread.start()
                key.approve(wait=30)
                thread.join(60)
        said = [r.getMessage() for r in caplog.records if "presence: request" in r.getMessage()]
        assert said and hint in said[0], said


@pytest.mark.parametrize("uv", [True, False], ids=["builtin-uv", "no-uv"])
@pytest.mark.parametrize("granted", [True, False], ids=["approve", "deny"])
def test_manual_presence_answered_from_the_test(granted: bool, uv: bool) -> None:
    with VirtualKey(presence="manual", uv=uv) as key:
        rp = RelyingParty(root_der=key.attestation_root)
        outcome: dict[str, Any] = {}

        def ceremony() -> None:
            try:
                outcome["response"] = register(key.client(), rp, rk=True)
            except ClientError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=ceremony)
        thread.start()
        answered = (key.approve if granted else key.deny)(wait=30)
        thread.join(60)
        # With built-in UV the user is asked once, for the UV token (mc permission): the key
        # knows the site and that it is a registration, not yet the user.
        assert answered.kind == "register"
        assert answered.rp_id == "example.com"
        if uv:
            assert answered.user_name is None
        else:
            assert answered.user_name and answered.user_name.startswith("user-")
        if granted:
            assert "response" in outcome, outcome
            assert len(key.credentials()) == 1
        else:
            refusal = "UV_INVALID" if uv else "OPERATION_DENIED"
            assert refusal in repr(outcome["error"].cause)
            assert key.credentials() == []
        with pytest.raises(VirtualKeyError, match="no request"):
            key.approve(wait=0.1)


def test_builtin_uv_sets_the_uv_flag_and_deny_uv_fails_it() -> None:
    with VirtualKey(uv=True) as key:
        assert Ctap2(key.device).info.options.get("uv") is True
        response = register(key.client(), RelyingParty(), rk=True, uv="required")
        assert response.response.attestation_object.auth_data.is_user_verified()
    with VirtualKey(uv=True, presence="deny-uv") as key, pytest.raises(ClientError):
        register(key.client(), RelyingParty(), rk=True, uv="required")


def test_a_behaviour_the_key_cannot_act_out_is_refused_at_assembly() -> None:
    """uv-fail on a key without built-in UV: `vfido run` and the control socket refused it,
    VirtualKey took it silently and then never failed anything (a newcomer review). The
    Authenticator refuses it, for every front end, at start and at every later set()."""
    from vfido.authenticator.behaviours import BehaviourError

    with pytest.raises(BehaviourError, match="needs a key with built-in UV"):
        VirtualKey(behaviours={"uv-fail": True}, uv=False).start()
    with VirtualKey(uv=False) as key:  # and later, through key.behaviours (a diff review)
        with pytest.raises(BehaviourError, match="needs a key with built-in UV"):
            key.behaviours.set("uv-fail")
        assert key.behaviours.active() == {}
    with VirtualKey(behaviours={"uv-fail": True}, uv=True) as key:
        assert key.behaviours.active() == {"uv-fail": None}


def test_pin_is_set_and_entered_by_the_client() -> None:
    with VirtualKey(pin="4321") as key:
        assert Ctap2(key.device).info.options.get("clientPin") is True
        response = register(key.client(), RelyingParty(), rk=True, uv="required")
        assert response.response.attestation_object.auth_data.is_user_verified()
        # A client that does not know the PIN cannot verify the user.
        with pytest.raises(ClientError):
            register(
                key.client(user_interaction=UserInteraction()),
                RelyingParty(),
                rk=True,
                uv="required",
            )
        assert "4321" not in repr(key) and "4321" not in repr(key.client())


def test_attestation_algorithms_and_zero_counter_options() -> None:
    with VirtualKey(attestation="none", algorithms=[-8], zero_counter=True) as key:
        rp = RelyingParty(attestation="none")
        # The RP offers ES256 first; the key only accepts EdDSA.
        rp.server.allowed_algorithms = [
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
            for alg in (-7, -8)
        ]
        response = register(key.client(), rp, rk=True)
        assert attestation_fmt(response) == "none"
        assert sign_in(key.client(), rp) == 0
        [cred] = key.credentials()
        assert cred.algorithm == -8 and cred.sign_count == 0


def test_power_cycle_and_second_device() -> None:
    with VirtualKey() as key:
        rp = RelyingParty()
        register(key.client(), rp, rk=True)
        key.power_cycle()
        other = key.open_device()
        assert sign_in(key.client(device=other), rp) >= 1
        # The key's own device is opened again, as a re-plugged key is: its old channel is
        # gone, and a client on it fell back to U2F (found by a newcomer's trial).
        assert "FIDO_2_1" in Ctap2(key.device).get_info().versions
        assert sign_in(key.client(), rp) >= 2
        # The old device is closed once, not again with the key (over UHID a second close
        # of its fd number would close whatever reused it: the new device's).
        assert len(key._devices) == 2 and key.device in key._devices
    with pytest.raises(VirtualKeyError, match="not running"):
        _ = key.device


def test_secrets_not_in_repr(tmp_path: Path) -> None:
    key = VirtualKey(keystore=tmp_path / "k", passphrase="hunter2-secret", pin="98765")
    assert "hunter2" not in repr(key) and "98765" not in repr(key)
    assert "hunter2" not in repr(vars(key).get("_store"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"presence": "prompt"}, "presence must be one of"),
        ({"transport": "usb"}, "transport must be one of"),
        ({"keystore": "/nonexistent"}, "passphrase"),
        ({"pin": "12"}, "at least 4"),
        ({"attestation": "basic"}, "attestation must be one of"),
        ({"algorithms": [-999]}, "unsupported algorithms"),
        # A newcomer trial: these were taken, and nan failed every request at once.
        ({"presence_timeout": float("nan")}, "presence_timeout must be a positive number"),
        ({"presence_timeout": float("inf")}, "presence_timeout must be a positive number"),
        ({"passphrase": "x"}, "give keystore= too"),
        ({"pin": "12\udcff4"}, "not UTF-8 text"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VirtualKey(**options)


def test_a_pin_that_is_not_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="pin must be a str, not int"):
        VirtualKey(pin=1234)  # type: ignore[arg-type]


def test_uhid_key_or_the_reason_it_cannot_exist() -> None:
    reason = uhid_unavailable()
    if reason is None:
        with VirtualKey(transport="uhid") as key:
            assert key.hidraw_path and key.hidraw_path.startswith("/dev/hidraw")
            assert Ctap2(key.device).info.aaguid == key.aaguid
        with VirtualKey.service(transport="uhid") as service:
            assert service.hidraw_path and service.hidraw_path.startswith("/dev/hidraw")
            assert Ctap2(service.device).info.versions
    else:
        with pytest.raises(VirtualKeyError, match="uhid"):
            VirtualKey(transport="uhid").start()
        with pytest.raises(VirtualKeyError, match="uhid"):  # vfido run says why and exits
            VirtualKey.service(transport="uhid").start()


def test_a_service_never_stopped_is_stopped_when_the_interpreter_exits(tmp_path: Path) -> None:
    """A test that starts ``VirtualKey.service()`` without ``with`` and never stops it (or
    fails before its ``stop()``) left ``vfido run`` running, orphaned, on the CI machine."""
    script = tmp_path / "forgets.py"
    script.write_text(
        "from vfido.api import VirtualKey\n"
        "key = VirtualKey.service().start()\n"
        "print(key.process.pid, key.control_socket, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    pid, socket = done.stdout.split()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by nobody once orphaned: gone, or a zombie of init's
    alive = Path(f"/proc/{pid}/status").exists() and "State:\tZ" not in _status(pid)
    assert not alive, f"vfido run {pid} is still running"
    assert not Path(socket).parent.exists()


def test_a_forked_child_exiting_leaves_its_parents_services_running() -> None:
    """The exit hook stops only the services its own process started."""
    from vfido.testing import service_key

    with VirtualKey.service() as key:
        child = os.fork()
        if child == 0:  # the child runs the exit hook as its exit would, and goes
            try:
                service_key._stop_left_running()
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert key.process.poll() is None
        assert key.control("status")["transport"] == "udp"


def _status(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def test_service_udp_register_authenticate_and_control_socket() -> None:
    with VirtualKey.service(presence="manual") as key:
        assert key.hidraw_path is None
        status = key.control("status")
        assert status["transport"] == "udp" and status["presence"] == "manual"
        rp = RelyingParty()
        result: dict[str, Any] = {}

        def ceremony() -> None:
            try:
                result["r"] = register(key.client(), rp)
            except ClientError as exc:  # reported by the assertion below
                result["error"] = exc

        thread = threading.Thread(target=ceremony)
        thread.start()
        answer = key.approve(wait=30)
        thread.join(60)
        assert "r" in result, result
        assert answer["request"]["kind"] == "register"
        assert len(rp.credentials) == 1  # verified by both RP libraries
        # key.log is filled by a thread reading the service's stderr: on a loaded machine the
        # line can arrive a moment after the ceremony returned.
        deadline = time.monotonic() + 30
        while not any("MAKE_CREDENTIAL" in line for line in key.log):
            assert time.monotonic() < deadline, key.log[-20:]
            time.sleep(0.05)
    assert key.process is not None and key.process.returncode == 0


def test_behaviours_at_start_and_at_run_time() -> None:
    with VirtualKey(behaviours={"counter-jump": 1000}) as key:
        rp = RelyingParty()
        register(key.client(), rp, rk=True)
        assert sign_in(key.client(), rp) >= 1000
        key.behaviours.set("wrong-signature")
        with pytest.raises(ValueError, match="Invalid signature"):  # Fido2Server refuses it
            sign_in(key.client(), rp)
        key.behaviours.clear()
        assert sign_in(key.client(), rp) >= 2000


def test_control_socket_of_an_in_process_key(tmp_path: Path) -> None:
    path = tmp_path / "key.sock"
    with VirtualKey(control_socket=path, presence="manual") as key:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        with key.controller() as ctl:
            assert ctl.status()["presence"] == "manual"
            added = ctl.add_credential("example.com", user_id=b"seeded", user_name="sam")
            assert added["user_name"] == "sam"
            ctl.set_behaviour("zero-counter")
            assert list(ctl.behaviours()) == ["zero-counter"]
        [cred] = key.credentials()
        assert cred.user_id == b"seeded" and cred.user_name == "sam"
        assert key.behaviours.current().zero_counter
    assert not path.exists()
    with VirtualKey() as key, pytest.raises(VirtualKeyError, match="control_socket"):
        key.controller()


def test_service_credentials_and_behaviours() -> None:
    with VirtualKey.service(behaviours={"zero-counter": True}) as key:
        rp = RelyingParty()
        user_id, name = random_user()
        register(key.client(), rp, rk=True, user=(user_id, name))
        [cred] = key.credentials()
        assert cred.user_id == user_id and cred.rp_id == "example.com"
        assert cred.public_key == dict(rp.credentials[0].public_key)
        with key.controller() as ctl:
            assert list(ctl.behaviours()) == ["zero-counter"]


def test_service_key_puts_the_folder_vfido_is_imported_from_on_the_path() -> None:
    """Regression (#18 move): ServiceKey's subprocess got vfido/ itself on its PYTHONPATH,
    which shadows the standard library's `trace` with vfido/trace/."""
    from vfido.testing import service_key

    assert (service_key.IMPORT_ROOT / "vfido" / "__init__.py").is_file()


def test_a_hidraw_connection_closes_once() -> None:
    """A device from open_device() that the caller closed was closed again with the key:
    over UHID that is os.close of a number another device may have reused meanwhile."""
    from vfido.testing.common import CloseOnce

    closes: list[int] = []

    class Connection:
        def close(self) -> None:
            closes.append(1)

        def write_packet(self, data: bytes) -> None: ...

    connection = CloseOnce(Connection())
    connection.close()
    connection.close()
    assert closes == [1]
    assert connection.write_packet(b"") is None  # everything else is the connection's
