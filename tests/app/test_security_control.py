"""Issue #15, low 4: a control-socket client trusts no other user's directory or server.

The attack: without ``$XDG_RUNTIME_DIR`` clients use ``/tmp/vfido-<uid>``. Another local
user creates that directory first and listens on ``<name>.sock`` in it; `vfido ctl
credentials add --key` then hands them the private key, and their answers to approve /
deny / status are believed. The attacker here is a forked child running as uid 65534
(tests run as root; elsewhere they are skipped, except under CI where they must run).
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.ci import in_ci
from tests.service_helpers import vfido
from vfido.cli import main
from vfido.control import ControlClient, ControlError, ControlServer
from vfido.control import server as control  # where socket_dir lives
from vfido.transport_choice import UDP_INSECURE_FLAG

ATTACKER_UID = 65534

if os.geteuid() != 0 and not in_ci():
    pytest.skip(
        "acting as another user needs root (setuid to 65534); runs under CI",
        allow_module_level=True,
    )


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory like /tmp: everybody may create entries in it (sticky)."""
    path = Path(tempfile.mkdtemp(prefix="vfido-sec-", dir="/tmp"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def attacker_server(directory: Path, name: str, dir_mode: int) -> Iterator[Callable[[], bytes]]:
    """As uid 65534: make ``directory`` (if missing) and serve ``name`` in it, answering
    every line with a forged ``ok``. Yields a function that stops the attacker and returns
    every byte it received."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker
        status = 1
        try:
            os.close(ready_r), os.close(stop_w), os.close(report_r)
            os.setgid(ATTACKER_UID)
            os.setuid(ATTACKER_UID)
            if not directory.exists():
                directory.mkdir()
            os.chmod(directory, dir_mode)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(directory / name))
            os.chmod(directory / name, 0o777)
            server.listen(4)
            os.write(ready_w, b"1")
            received = b""
            connections: list[socket.socket] = []
            while True:
                readable, _, _ = select.select([server, stop_r, *connections], [], [], 30)
                if stop_r in readable or not readable:
                    break
                if server in readable:
                    connections.append(server.accept()[0])
                for conn in connections:
                    if conn in readable:
                        data = conn.recv(65536)
                        if not data:
                            connections.remove(conn)
                            continue
                        received += data
                        forged = {"ok": True, "id": "forged", "rp_id": "x", "request": {}}
                        for _ in range(data.count(b"\n")):
                            conn.sendall(json.dumps(forged).encode() + b"\n")
            os.write(report_w, received)
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w), os.close(stop_r), os.close(report_w)
    try:
        assert os.read(ready_r, 1) == b"1", "the attacker could not start"

        def stop() -> bytes:
            os.write(stop_w, b"x")
            chunks = []
            while chunk := os.read(report_r, 65536):
                chunks.append(chunk)
            return b"".join(chunks)

        yield stop
    finally:
        for fd in (ready_r, stop_w, report_r):
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        assert status == 0, "the attacker failed"


def _pem(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "alice.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("dir_mode", [0o700, 0o755, 0o777], ids=["0700", "0755", "0777"])
def test_a_directory_made_by_another_user_gets_no_private_key(
    tmp_path: Path, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch, dir_mode: int
) -> None:
    """`vfido ctl credentials add --key` with the default directory, which the attacker
    made first (whatever its mode): refused in one line, nothing sent."""
    squatted = shared_tmp / f"vfido-{os.getuid()}"
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(control, "socket_dir", lambda: squatted)
    pem = _pem(tmp_path)
    with attacker_server(squatted, "key.sock", dir_mode) as stop:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(
                [
                    "ctl",
                    "--name",
                    "key",
                    "credentials",
                    "add",
                    "--rp",
                    "example.com",
                    "--user-id-text",
                    "alice",
                    "--key",
                    str(pem),
                ]
            )
        received = stop()
    assert b"PRIVATE" not in received and received == b"", "the attacker got the request"
    assert status == 1 and out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert f"belongs to another user (uid {ATTACKER_UID})" in err.getvalue()


def test_approve_is_not_answered_by_another_users_server(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vfido approve` must not believe a forged "approved" from the attacker."""
    squatted = shared_tmp / f"vfido-{os.getuid()}"
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(control, "socket_dir", lambda: squatted)
    with attacker_server(squatted, "key.sock", 0o755) as stop:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(["approve", "--name", "key"])
        received = stop()
    assert received == b""
    assert status == 1 and "approved" not in out.getvalue()
    assert "belongs to another user" in err.getvalue()


def test_a_socket_served_by_another_user_is_refused_before_anything_is_sent(
    tmp_path: Path, shared_tmp: Path
) -> None:
    """The peer check: our own private directory, but the socket there leads to another
    user's server (here a symlink; however it got there): SO_PEERCRED says who serves it."""
    ours = tmp_path / "run"
    ours.mkdir(mode=0o700)
    with attacker_server(shared_tmp / "theirs", "key.sock", 0o755) as stop:
        (ours / "key.sock").symlink_to(shared_tmp / "theirs" / "key.sock")
        with pytest.raises(ControlError, match=f"served by another user \\(uid {ATTACKER_UID}\\)"):
            ControlClient(ours / "key.sock").call("credentials-add", private_key_pem="PRIVATE")
        received = stop()
    assert received == b""


def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o733)
    # A socket there, as another user could have planted it (with nothing there, the client
    # says that no key answers: there is nothing to refuse).
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        planted.bind(str(directory / "key.sock"))
        planted.listen()
        with pytest.raises(ControlError, match="accessible by other users \\(mode 733\\)"):
            ControlClient(directory / "key.sock")
    finally:
        planted.close()


def test_our_own_server_is_still_reached(tmp_path: Path) -> None:
    """The other side: the user's own key in the user's own directory answers."""
    path = tmp_path / "run" / "key.sock"
    with ControlServer(path), ControlClient(path) as client:
        assert "commands" in client.call("commands")["commands"]


def test_vfido_run_leaves_a_shared_directory_alone(shared_tmp: Path) -> None:
    """`vfido run --control-socket /tmp/k.sock` (here: a sticky directory like /tmp) used to
    chmod the directory to 0700, which as root locked every other user out of /tmp. It
    now exits with one line and leaves the directory as it was."""
    done = vfido(
        [
            *("run", "--transport", "udp", "--ephemeral", "--udp-port", "0"),
            *(UDP_INSECURE_FLAG, "--control-socket", str(shared_tmp / "k.sock")),
        ],
        passphrase=None,
    )
    assert done.returncode != 0
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "accessible by other users" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_squatted_tmp_directory_does_not_stop_the_user_running_keys(
    tmp_path: Path, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without $XDG_RUNTIME_DIR, another user made /tmp/vfido-<uid> first: the user's
    `vfido run` exited "belongs to another user: remove it", which the user cannot do in
    the sticky /tmp, so they could run no key at all (found by a security review). Now
    servers and clients both go to a directory of the user's own instead."""
    from vfido.control import KeyController

    squatted = shared_tmp / f"vfido-{os.getuid()}"
    squatted.mkdir(mode=0o700)
    os.chown(squatted, ATTACKER_UID, ATTACKER_UID)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(control, "SHARED_TMP", shared_tmp)
    own = tmp_path / "cache" / "vfido" / "run"
    assert control.socket_dir() == own
    server = ControlServer(control.socket_path("key"))
    server.start()
    try:
        with KeyController(name="key") as key:  # the client finds it there too
            assert "commands" in key.commands()
        assert stat.S_IMODE(own.stat().st_mode) == 0o700
    finally:
        server.stop()
    # Not squatted: /tmp/vfido-<uid> as before. A key started while it was squatted stays
    # in its own directory, and clients still find it there (by name, and as the only one).
    server = ControlServer(control.socket_path("key"))
    server.start()
    try:
        shutil.rmtree(squatted)
        assert control.socket_dir() == squatted
        with KeyController(name="key") as key:
            assert "commands" in key.commands()
        with KeyController() as key:
            assert key.path == own / "key.sock"
        # A stale socket of that name in the default directory does not hide the live one.
        squatted.mkdir(mode=0o700)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(squatted / "key.sock"))
        stale.close()
        with KeyController(name="key") as key:
            assert key.path == own / "key.sock"
    finally:
        server.stop()
