"""Issue #15, high: the UDP transport served the key to every local user.

`vfido run` used to serve UDP by default: as another uid (65534), python-fido2 got getInfo,
signed with the owner's credentials, power-cycled and reset the key. Now UDP serves a
persistent keystore only with --udp-insecure-any-local-user (and says so on one line), `vfido
run` without --transport serves UHID where /dev/uhid is usable, and otherwise an ephemeral
key falls back to UDP with one line while a persistent one is refused with one line.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice

from tests.ctaphid_helpers import EchoHandler, request_reports
from tests.other_user import as_other_user
from tests.rp import RelyingParty, register, sign_in
from tests.service_helpers import PASSPHRASE, env, udp_service, vfido
from vfido.api import VirtualKey
from vfido.control import ControlError
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.transport_choice import (
    UDP_INSECURE_FLAG,
    UDP_WARNING,
    TransportChoice,
    TransportChoiceError,
    choose_transport,
    prepare_unix_socket_dir,
)
from vfido.transports.ctaphid import BROADCAST_CID, DEFAULT_MAX_CHANNELS, Command
from vfido.transports.udp import UdpConnection, UdpTransport, free_ports, open_udp_device
from vfido.transports.uhid import uhid_unavailable
from vfido.transports.unix import open_unix_device

WAIT = 10.0
READY = ("vfido: listening on", "hidraw: ")
NO_UHID = uhid_unavailable()


def _no_uhid() -> str:
    return "no /dev/uhid here"


def _uhid() -> None:
    return None


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    directory = tmp_path / "ks"
    SqliteKeyStore.create(directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()).close()
    return directory


@contextmanager
def running(args: list[str], runtime: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`vfido run ARGS` until it is ready or has exited; its stderr lines so far (its control
    socket in ``runtime``, made here: vfido uses an $XDG_RUNTIME_DIR that exists)."""
    runtime.mkdir(mode=0o700, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "vfido", "run", *args],
        env={**env(XDG_RUNTIME_DIR=str(runtime)), "VFIDO_PASSPHRASE": PASSPHRASE},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                ready.set()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.05) and process.poll() is None and time.monotonic() < deadline:
        pass
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=20)
        drainer.join(timeout=5)


def _get_info_over_udp(port: int, peer_port: int) -> list[str]:
    device = open_udp_device(port, peer_port, timeout=3)
    try:
        return list(Ctap2(device).get_info().versions)
    finally:
        device.close()


# --- the attack -----------------------------------------------------------------------------------


def test_vfido_run_with_no_flags_does_not_give_another_user_the_keystore(
    keystore: Path, tmp_path: Path
) -> None:
    """The finding as seen: the owner starts `vfido run --keystore DIR` (no --transport) and
    another local user talks CTAP to it over UDP. Now that user gets nothing."""
    port, peer_port = free_ports(2)
    udp = ["--udp-port", str(port), "--udp-peer-port", str(peer_port)]
    with running(["--keystore", str(keystore), *udp], tmp_path / "rt") as (process, lines):
        outcome = as_other_user(lambda: _get_info_over_udp(port, peer_port))
        assert outcome.error is not None, f"another user used the key over UDP: {outcome}"
        assert outcome.error.startswith(
            ("NoKeyError: no key answers", "TimeoutError: no report")
        ), outcome
        if NO_UHID is not None:  # refused, in one line naming the ways out
            assert process.wait(timeout=20) == 1
            (line,) = lines
            assert line.startswith("vfido: error: no --transport given")
            assert "--transport unix" in line and UDP_INSECURE_FLAG in line
        else:  # served over UHID
            assert process.poll() is None and any(x.startswith("hidraw: ") for x in lines)


def test_udp_refuses_a_keystore_without_the_flag(keystore: Path, tmp_path: Path) -> None:
    result = vfido(
        ["run", "--transport", "udp", "--udp-port", "0", "--keystore", str(keystore)],
        XDG_RUNTIME_DIR=str(tmp_path / "rt"),
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("vfido: error: UDP serves the key to every local user")
    assert UDP_INSECURE_FLAG in line and "--transport unix" in line


def test_the_flag_serves_a_keystore_over_udp_and_warns_once(keystore: Path) -> None:
    """With the flag the owner accepts what it says: another user can use the key."""
    with udp_service(["--keystore", str(keystore), UDP_INSECURE_FLAG]) as service:
        assert service.stderr_lines.count(UDP_WARNING) == 1
        outcome = as_other_user(lambda: _get_info_over_udp(service.port, service.peer_port))
        assert outcome.ok and "FIDO_2_0" in outcome.value, outcome
    ephemeral = udp_service(["--ephemeral", UDP_INSECURE_FLAG])
    with ephemeral as service:  # nothing of value: no warning
        assert UDP_WARNING not in service.stderr_lines


@pytest.mark.skipif(NO_UHID is None, reason="this machine has a usable /dev/uhid")
def test_ephemeral_key_without_uhid_falls_back_to_udp_in_one_line(tmp_path: Path) -> None:
    port, peer_port = free_ports(2)
    args = ["--ephemeral", "--udp-port", str(port), "--udp-peer-port", str(peer_port)]
    with running(args, tmp_path / "rt") as (process, lines):
        assert process.poll() is None, lines
        notices = [line for line in lines if "serving the ephemeral key over UDP" in line]
        assert len(notices) == 1 and "UHID is not usable" in notices[0]
        device = open_udp_device(port, peer_port, timeout=WAIT)
        try:
            assert device.ping(b"hi") == b"hi"
        finally:
            device.close()


def test_unix_transport_serves_the_keystore_to_its_owner_only(
    keystore: Path, tmp_path: Path
) -> None:
    socket_path = tmp_path / "rt" / "vfido" / "key.ctaphid"
    args = ["--transport", "unix", "--unix-socket", str(socket_path), "--keystore", str(keystore)]
    with running(args, tmp_path / "rt") as (process, lines):
        assert process.poll() is None, lines
        assert f"vfido: listening on unix {socket_path}" in lines
        assert not any("warning" in line for line in lines)
        device = open_unix_device(socket_path, timeout=WAIT)
        try:
            assert "FIDO_2_0" in Ctap2(device).get_info().versions
        finally:
            device.close()
        outcome = as_other_user(lambda: Ctap2(open_unix_device(socket_path, timeout=3)).info)
        assert not outcome.ok and "PermissionError" in (outcome.error or ""), outcome


def test_unix_socket_option_needs_the_unix_transport(tmp_path: Path) -> None:
    result = vfido(
        ["run", "--ephemeral", "--transport", "udp", "--unix-socket", str(tmp_path / "s")],
        passphrase=None,
    )
    assert result.returncode == 1
    assert result.stderr == "vfido: error: --unix-socket needs --transport unix\n"


@pytest.mark.parametrize(
    "flags",
    [["--udp-port", "9999"], ["--udp-peer-port", "9998"], ["--udp-insecure-any-local-user"]],
)
def test_udp_options_need_the_udp_transport(flags: list[str]) -> None:
    """They were accepted and ignored with another transport (a newcomer's trial): a key
    served where the user did not look. Said in one line, as --unix-socket's is."""
    result = vfido(["run", "--ephemeral", "--transport", "unix", *flags], passphrase=None)
    assert result.returncode == 1
    assert result.stderr == (
        f"vfido: error: {flags[0]}: UDP options, and this key serves unix: add --transport "
        "udp, or leave them out\n"
    )


# --- the choice itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False])
def test_no_transport_given_serves_uhid_where_usable(persistent: bool) -> None:
    choice = choose_transport(
        None, persistent=persistent, udp_insecure=False, uhid_unavailable=_uhid
    )
    assert choice == TransportChoice("uhid")


def test_no_transport_given_without_uhid() -> None:
    with pytest.raises(TransportChoiceError, match="--transport unix"):
        choose_transport(None, persistent=True, udp_insecure=False, uhid_unavailable=_no_uhid)
    # The flag alone does not pick UDP for a keystore: the transport must be named too.
    with pytest.raises(TransportChoiceError, match=UDP_INSECURE_FLAG):
        choose_transport(None, persistent=True, udp_insecure=True, uhid_unavailable=_no_uhid)
    choice = choose_transport(None, persistent=False, udp_insecure=False, uhid_unavailable=_no_uhid)
    assert choice.kind == "udp" and choice.notice and "no /dev/uhid here" in choice.notice


def test_explicit_transports() -> None:
    def choose(kind: str, persistent: bool, insecure: bool = False) -> TransportChoice:
        return choose_transport(
            kind, persistent=persistent, udp_insecure=insecure, uhid_unavailable=_no_uhid
        )

    with pytest.raises(TransportChoiceError, match=UDP_INSECURE_FLAG):
        choose("udp", True)
    assert choose("udp", True, insecure=True) == TransportChoice("udp", warning=UDP_WARNING)
    assert choose("udp", False) == TransportChoice("udp")
    assert choose("unix", True) == TransportChoice("unix")
    assert choose("uhid", True) == TransportChoice("uhid")  # its own error if unusable
    with pytest.raises(TransportChoiceError, match="one of"):
        choose("usb", False)


# --- UDP clients by source address (issue #15, low 7) ---------------------------------------------


def test_udp_another_source_address_cannot_evict_the_peers_channel() -> None:
    """A process sending broadcast INITs from its own port (blind: the answers go to the
    peer port) allocated channels in a loop until the peer's channel was evicted."""
    peer_port = free_ports(1)[0]
    transport = UdpTransport(EchoHandler(), port=0, peer_port=peer_port)
    transport.start()
    connection = UdpConnection(transport.port, peer_port, timeout=WAIT)
    try:
        device = CtapHidDevice(connection.descriptor, connection)
        assert device.ping(b"before") == b"before"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for n in range(DEFAULT_MAX_CHANNELS + 12):  # (their answers must fit the peer's buffer)
                init = request_reports(BROADCAST_CID, Command.INIT, n.to_bytes(8, "big"))[0]
                attacker.sendto(init, ("127.0.0.1", transport.port))
                time.sleep(0.001)  # pace: the key's receive buffer must not drop any
        # One socket queue, read in order: every INIT above is handled before this ping.
        assert device.ping(b"after") == b"after"
    finally:
        connection.close()
        transport.stop()


def test_service_key_serves_a_keystore_over_unix_and_not_silently_over_udp(
    keystore: Path,
) -> None:
    with pytest.raises(ValueError, match="every local user"):
        VirtualKey.service(keystore=keystore, passphrase=PASSPHRASE)
    with VirtualKey.service(transport="unix", keystore=keystore, passphrase=PASSPHRASE) as key:
        rp = RelyingParty(attestation="none")
        register(key.client(), rp, rk=True)
        assert sign_in(key.client(), rp, allow=False) >= 1
        assert key.control("status")["unix_socket"] == str(key.unix_socket)
        assert not any("warning" in line for line in key.log)


def test_unix_socket_directory_checks(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "key.ctaphid"
    prepare_unix_socket_dir(fresh)  # created private, as the control socket's
    assert stat.S_IMODE(os.stat(fresh.parent).st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)
    with pytest.raises(ControlError, match="writable by other users"):
        prepare_unix_socket_dir(shared / "key.ctaphid")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o775  # not changed behind our back
    result = vfido(
        ["run", "--ephemeral", "--transport", "unix", "--unix-socket", str(shared / "k")],
        passphrase=None,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "writable by other users" in result.stderr
