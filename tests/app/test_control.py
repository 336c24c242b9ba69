"""The control socket (server, client, permissions) and the presence broker it answers for,
in-process and through `vfido run` / `vfido approve` / `vfido deny` subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fido2.client import ClientError
from fido2.ctap import CtapError
from fido2.webauthn import RegistrationResponse

from tests.presence_helpers import REGISTER, SIGN_IN, Asking, as_other_user
from tests.rp import RelyingParty, register
from tests.service_helpers import Service, udp_service, vfido
from vfido.authenticator.env import PresenceResult
from vfido.control import (
    CommandError,
    ControlClient,
    ControlError,
    ControlServer,
    NotRunningError,
    find_key,
    running_keys,
    socket_dir,
    socket_path,
)
from vfido.control import server as control_server
from vfido.control.commands import add_presence_commands
from vfido.presence import AutoFrontEnd, DenyFrontEnd, PresenceBroker
from vfido.presence.pending import PendingPresence


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    return tmp_path / "run" / "vfido"


def serve(path: Path, broker: PresenceBroker | None = None) -> ControlServer:
    server = ControlServer(path)
    server.register("status", lambda _args: {"name": path.stem}, accepts=())  # as the key's
    if broker is not None:
        add_presence_commands(server, broker)
    server.start()
    return server


# --- the socket -------------------------------------------------------------------------------


def test_socket_location_follows_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert socket_path("k1") == tmp_path / "vfido" / "k1.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert socket_dir() == Path(f"/tmp/vfido-{os.getuid()}")
    for bad in ("", "a/b", ".hidden", "x" * 65):
        with pytest.raises(ValueError):
            socket_path(bad)


def test_private_directory_and_socket(sock_dir: Path) -> None:
    with serve(sock_dir / "k.sock") as server:
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
        mode = os.lstat(server.path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with ControlClient(server.path) as client:
            assert client.call("status") == {"name": "k"}
            assert "status" in client.call("commands")["commands"]
            # several requests on one connection
            assert client.call("status") == {"name": "k"}
    assert not server.path.exists()  # removed on stop


def test_loose_default_directory_is_tightened(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vfido's own directory ($XDG_RUNTIME_DIR/vfido) found open to others is made 0700."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(sock_dir.parent))
    sock_dir.mkdir(parents=True, mode=0o755)
    assert socket_dir() == sock_dir
    sock_dir.chmod(0o755)
    with serve(sock_dir / "k.sock"):
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "mode", [0o755, 0o1777, 0o770], ids=["0755", "1777 like /tmp", "0770 open to the group"]
)
def test_a_chosen_directory_open_to_others_is_refused_not_chmoded(
    tmp_path: Path, mode: int
) -> None:
    """A directory the user chose for the socket is never chmod'ed: as root, `vfido run
    --control-socket /tmp/k.sock` used to turn /tmp into 0700 and lock every other user
    out of it. It is refused in one line, and keeps its mode."""
    chosen = tmp_path / "shared"
    chosen.mkdir()
    chosen.chmod(mode)
    with pytest.raises(ControlError, match=r"accessible by other users.*does not chmod"):
        serve(chosen / "k.sock")
    assert stat.S_IMODE(chosen.stat().st_mode) == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another user")
def test_directory_of_another_user_is_refused(sock_dir: Path) -> None:
    sock_dir.mkdir(parents=True, mode=0o700)
    os.chown(sock_dir, 65534, 65534)
    with pytest.raises(ControlError, match="another user"):
        serve(sock_dir / "k.sock")


def test_errors_are_answers_not_disconnects(sock_dir: Path) -> None:
    def broken(_args: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("secret detail")

    def refusing(_args: dict[str, object]) -> dict[str, object]:
        raise CommandError("not now")

    with serve(sock_dir / "k.sock") as server:
        server.register("broken", broken)
        server.register("refusing", refusing)
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(server.path))
            raw.sendall(b'not json\n[1]\n{"cmd": "nope"}\n{"cmd": "broken"}\n{"cmd": "refusing"}\n')
            replies: list[dict[str, Any]] = []
            buffer = b""
            while len(replies) < 5:
                buffer += raw.recv(4096)
                *lines, buffer = buffer.split(b"\n")
                replies += [json.loads(line) for line in lines]
        assert all(r["ok"] is False for r in replies)
        assert "JSON" in replies[0]["error"] and "cmd" in replies[1]["error"]
        assert "unknown command" in replies[2]["error"]
        assert replies[3]["error"] == "internal error (RuntimeError)"  # no exception text
        assert replies[4]["error"] == "not now"
        with ControlClient(server.path) as client, pytest.raises(ControlError, match="not now"):
            client.call("refusing")


def test_answers_longer_than_a_request_line_are_read(sock_dir: Path) -> None:
    """The 64 KiB line limit is for requests. Answers were held to it too: `vfido ctl log`
    after 30 traced registrations, `ctl credentials list` at 200 credentials, failed with
    "request line too long", and the client then said "the key closed the control
    connection" for every call (outside review)."""
    big = "x" * (3 * 1024 * 1024)
    with serve(sock_dir / "k.sock") as server:
        server.register("big", lambda _args: {"text": big})
        with ControlClient(server.path) as client:
            assert client.call("big") == {"text": big}
            assert client.call("status") == {"name": "k"}  # the stream is in step
        with ControlClient(server.path) as client:
            client._lines = control_server._read_lines(client._sock, 1024, "the key's answer")
            with pytest.raises(ControlError, match="the key's answer longer than 1024 bytes"):
                client.call("big")
            with pytest.raises(ControlError, match=r"closed after an error .*: connect again"):
                client.call("status")
        # A raw client's request over the limit gets one line saying so.
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(server.path))
            raw.sendall(b"y" * (70 * 1024))
            reply = json.loads(raw.makefile("rb").readline())
            assert reply == {"ok": False, "error": "request longer than 65536 bytes"}


def test_idle_connections_make_room_for_a_new_one(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 idle connections (leaked controllers) locked `vfido approve` and `status` out for
    a minute (outside review); a new one now takes the place of the least recently active
    connection idle for EVICT_AFTER. Connections in a command, or just connected, keep
    theirs: when all do, the new one is refused."""
    monkeypatch.setattr(control_server, "EVICT_AFTER", 1000.0)  # all "just connected"
    release = threading.Event()
    with serve(sock_dir / "k.sock") as server:
        server.register("hold", lambda _args: {"held": release.wait(30)})
        idle = []
        for _ in range(control_server.MAX_CONNECTIONS):
            raw = socket.socket(socket.AF_UNIX)
            raw.connect(str(server.path))
            idle.append(raw)
        try:
            # Refused in one line, whether the refusal came before the request was sent
            # (the client reads it after a broken pipe) or not.
            with pytest.raises(ControlError, match="too many control connections"):
                ControlClient(server.path).call("status")  # all just connected: they stay
            monkeypatch.setattr(control_server, "EVICT_AFTER", 0.0)
            with ControlClient(server.path) as client:
                assert client.call("status") == {"name": "k"}
            assert idle[0].recv(1) == b""  # the oldest idle one was let go
            holders = [ControlClient(server.path) for _ in range(control_server.MAX_CONNECTIONS)]
            threads = [threading.Thread(target=h.call, args=("hold",)) for h in holders]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(server.connections) < len(holders) or not server.connections.all_busy():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(ControlError, match="too many control connections"):
                ControlClient(server.path).call("status")
            release.set()
            for thread in threads:
                thread.join(30)
            for holder in holders:
                holder.close()
        finally:
            release.set()
            for raw in idle:
                raw.close()


def test_a_connection_whose_place_was_taken_runs_no_command(sock_dir: Path) -> None:
    """A connection evicted between reading its command and starting it ran the command
    and lost the answer (a second review: 30 of 200 tries); it now runs nothing."""
    ran = []
    with serve(sock_dir / "k.sock") as server:
        server.register("mark", lambda _args: ran.append(1) or {})
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(server.path))
        deadline = time.monotonic() + 30
        while not len(server.connections):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (conn,) = server.connections._connections
        server.connections.forget(conn)  # as admit() does to the least recently active
        raw.sendall(b'{"cmd": "mark"}\n')
        assert raw.makefile("rb").readline() == b""  # no answer: and the command not run
        raw.close()
        assert ran == []


def test_a_request_line_read_whole_is_held_to_the_limit_too(sock_dir: Path) -> None:
    with serve(sock_dir / "k.sock") as server, socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(server.path))
        raw.sendall(b'{"cmd": "status", "x": "' + b"y" * (120 * 1024) + b'"}\n')
        reply = json.loads(raw.makefile("rb").readline())
        assert reply == {"ok": False, "error": "request longer than 65536 bytes"}


def test_after_a_timeout_the_client_says_so_not_that_the_key_hung_up(sock_dir: Path) -> None:
    release = threading.Event()
    with serve(sock_dir / "k.sock") as server:
        server.register("slow", lambda _args: {"done": release.wait(5)})
        with ControlClient(server.path) as client:
            with pytest.raises(ControlError, match="did not answer 'slow' in time"):
                client.call("slow", timeout=0.2)
            with pytest.raises(ControlError, match="in time: connect again"):
                client.call("status")
        release.set()


def test_json_nested_too_deep_is_one_error_answer(sock_dir: Path) -> None:
    """`[[[[...` within the line limit made json raise RecursionError, which escaped as a
    traceback on `vfido run`'s stderr; it is an error answer, and the server goes on."""
    with serve(sock_dir / "k.sock") as server, socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(server.path))
        raw.sendall(b"[" * 60_000 + b"\n")
        reply = json.loads(raw.makefile("rb").readline())
        assert reply == {"ok": False, "error": "not a JSON object"}
        with ControlClient(server.path) as client:
            assert client.call("status") == {"name": "k"}
            # `vfido ctl call` passes the user's names: timeout and self are arguments too
            # (the key refuses them: its status takes none)
            with pytest.raises(ControlError, match="arguments 'self', 'timeout' to status"):
                client.request("status", {"timeout": "x", "self": 1})
            with pytest.raises(ControlError, match='"cmd" is the command itself'):
                client.request("status", {"cmd": "other"})
            # the key hangs up on a line over its limit: the client says so instead
            with pytest.raises(ControlError, match="the request is longer than"):
                client.request("status", {"x": "y" * 70_000})
            assert client.call("status") == {"name": "k"}


def test_overlong_line_closes_the_connection(sock_dir: Path) -> None:
    with serve(sock_dir / "k.sock") as server, socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(server.path))
        with pytest.raises(OSError):
            for _ in range(100):
                raw.sendall(b"x" * 4096)  # never a newline
        # the server keeps serving others
        with ControlClient(server.path) as client:
            assert client.call("status") == {"name": "k"}


def test_stale_socket_is_replaced_live_one_is_not(sock_dir: Path) -> None:
    path = sock_dir / "k.sock"
    sock_dir.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a crashed key leaves its socket file behind
    with serve(path):
        with pytest.raises(ControlError, match="another vfido key is running"):
            serve(path)
        assert running_keys(sock_dir) == [path]


def test_a_file_at_the_socket_path_is_never_replaced(sock_dir: Path) -> None:
    """`--control-socket` naming a file by mistake (the keystore's database, a document, a
    symlink to one): the key refuses to start and the file is left as it was."""
    sock_dir.mkdir(parents=True, mode=0o700)
    precious = sock_dir / "vfido.db"
    precious.write_bytes(b"a keystore")
    link = sock_dir / "link.sock"
    link.symlink_to(precious)
    for path in (precious, link):
        with pytest.raises(ControlError, match=r"exists and is not a socket: remove it"):
            serve(path)
    assert precious.read_bytes() == b"a keystore"
    assert link.is_symlink()


def test_a_live_socket_of_the_other_kind_is_never_replaced(sock_dir: Path) -> None:
    """`--control-socket` naming a running key's CTAPHID socket (SOCK_SEQPACKET), or that key
    naming this one's control socket as its `--unix-socket`: the probe of one socket type was
    refused with EPROTOTYPE, taken for a stale socket, and the live one was unlinked."""
    from vfido.transports.unix import UnixTransport, UnixTransportError

    sock_dir.mkdir(parents=True, mode=0o700)
    ctaphid = sock_dir / "other.ctaphid"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    live.bind(str(ctaphid))
    live.listen(1)
    try:
        with pytest.raises(ControlError, match="another vfido key is running"):
            serve(ctaphid)
        assert ctaphid.exists()
    finally:
        live.close()
    server = serve(sock_dir / "k.sock")
    try:
        with pytest.raises(UnixTransportError, match="another key is serving"):
            UnixTransport(_NoHandler(), server.path)
        with ControlClient(server.path) as client:
            assert client.call("status") == {"name": "k"}
    finally:
        server.stop()


class _NoHandler:
    def handle_cbor(self, request: bytes, transaction: object) -> bytes:
        return b"\x01"

    def handle_msg(self, apdu: bytes, transaction: object) -> bytes:
        return b"\x6d\x00"

    def wink(self) -> None: ...

    def power_cycle(self) -> None: ...


def test_other_users_are_refused(sock_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")
    with serve(sock_dir / "k.sock") as server:
        server.path.chmod(0o666)  # even if the file mode let them in
        sock_dir.chmod(0o755)
        sock_dir.parent.chmod(0o755)
        tmp = sock_dir.parent
        while tmp != tmp.parent and tmp != Path("/tmp"):  # let uid 65534 reach the socket
            tmp.chmod(tmp.stat().st_mode | 0o005)
            tmp = tmp.parent

        def attempt() -> str:
            # A raw connection: vfido's own client would refuse this directory first
            # (tests/app/test_security_control.py); the server must refuse on its own.
            with socket.socket(socket.AF_UNIX) as raw:
                raw.settimeout(10)
                raw.connect(str(server.path))
                # The server may refuse (and hang up) before the request is written: the
                # refusal is still there to read.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    raw.sendall(b'{"cmd": "status"}\n')
                answer = json.loads(raw.makefile("rb").readline())
            return str(answer.get("error", "accepted"))

        assert as_other_user(attempt) == "permission denied"


def test_client_errors_are_one_line(sock_dir: Path) -> None:
    with pytest.raises(NotRunningError, match="vfido run"):
        ControlClient(sock_dir / "none.sock")
    with pytest.raises(NotRunningError, match="no vfido key is running"):
        find_key(directory=sock_dir)


def test_find_key_picks_the_only_one_or_the_one_waiting(sock_dir: Path) -> None:
    quiet, waiting = PresenceBroker(), PresenceBroker()
    with serve(sock_dir / "a.sock", quiet), serve(sock_dir / "b.sock", waiting):
        with pytest.raises(ControlError, match="several vfido keys"):
            find_key(directory=sock_dir)
        asking = Asking(waiting)
        waiting.wait_pending(30)
        assert find_key(directory=sock_dir, prefer_pending=True) == sock_dir / "b.sock"
        with ControlClient(sock_dir / "b.sock") as client:
            client.call("approve")
        assert asking.result() is PresenceResult.GRANTED


# --- the broker through the socket ------------------------------------------------------------


def test_approve_and_deny_through_the_socket(sock_dir: Path) -> None:
    broker = PresenceBroker()
    with serve(sock_dir / "k.sock", broker) as server, ControlClient(server.path) as client:
        assert client.call("pending") == {"pending": []}
        with pytest.raises(ControlError, match="no request is waiting"):
            client.call("approve")

        asking = Asking(broker, SIGN_IN)
        (pending,) = client.call("pending", wait=30)["pending"]
        assert pending["rp_id"] == "example.com" and pending["action"] == "sign in"
        assert "Sign in to example.com" in pending["question"]
        with pytest.raises(ControlError, match="no pending request 999"):
            client.call("approve", id=999)
        answer = client.call("approve", id=pending["id"])
        assert answer["granted"] is True and answer["request"]["id"] == pending["id"]
        assert asking.result() is PresenceResult.GRANTED

        asking = Asking(broker, REGISTER)
        answer = client.call("deny", wait=30)  # waits for the request to arrive
        assert answer["request"]["action"] == "register"
        assert asking.result() is PresenceResult.DENIED
        with pytest.raises(ControlError, match="wait must be"):
            client.call("deny", wait=-1)
        with pytest.raises(ControlError, match="id must be"):
            client.call("deny", id="1")
        with pytest.raises(ControlError, match="id must be"):
            client.call("approve", id=True)  # a JSON true is not request 1
        with pytest.raises(ControlError, match="wait must be"):
            client.call("pending", wait=control_server.MAX_WAIT + 1)  # never a hung connection


def test_first_answer_wins() -> None:
    broker = PresenceBroker([AutoFrontEnd(delay=0.0)])
    assert Asking(broker).result() is PresenceResult.GRANTED
    broker = PresenceBroker([DenyFrontEnd(), AutoFrontEnd(delay=60.0)])
    asking = Asking(broker)
    assert asking.result() is PresenceResult.DENIED
    with pytest.raises(LookupError):
        broker.answer(True, None, "late")


def test_auto_delay_can_be_overruled_by_deny() -> None:
    broker = PresenceBroker([AutoFrontEnd(delay=60.0)], mode="auto")
    asking = Asking(broker)
    (pending,) = broker.wait_pending(30)
    broker.answer(False, pending.id, "control socket")
    assert asking.result() is PresenceResult.DENIED
    assert broker.pending() == []


def test_auto_approves_after_its_delay_which_must_be_shorter_than_the_timeout() -> None:
    """--presence-delay: "wait this long before approving" (a lower bound only: never a timed
    upper bound in a test), and README: "the delay 0 to 86400, shorter than the timeout" (a
    delay equal to it would time every request out)."""
    from vfido.presence import PresenceModeError, broker_for

    broker = broker_for("auto", 0.3, 30.0)
    started = time.monotonic()
    assert Asking(broker).result() is PresenceResult.GRANTED
    assert time.monotonic() - started >= 0.3
    with pytest.raises(PresenceModeError, match="not shorter than the presence timeout"):
        broker_for("auto", 30.0, 30.0)


def test_timeout_and_host_cancel() -> None:
    broker = PresenceBroker()
    assert Asking(broker, timeout=0.2).result() is PresenceResult.TIMEOUT
    asking = Asking(broker)
    broker.wait_pending(30)
    asking.context.cancelled.set()  # CTAPHID_CANCEL
    assert asking.result() is PresenceResult.CANCELLED
    assert broker.pending() == []


def test_a_cancel_before_the_broker_acts_wins_over_an_answer_already_given() -> None:
    """The other order, in the request's own record (``PendingPresence.finish``, the half of
    broker.py's "A CANCEL wins over an answer the broker has not acted on yet", CTAP 2.1
    11.2.9.1.5, that decides what stands): the user approved, then the host cancelled before
    the broker acted. The request ends cancelled, and says the host ended it (a session 20
    mutation sampling: only an answer after the cancel was tested). The broker's own wait
    loop, which calls finish(CANCELLED) when it sees the cancel, is not pinned here."""
    from tests.presence_helpers import SIGN_IN

    pending = PendingPresence(1, SIGN_IN, 30.0)
    assert pending.answer(True, "control socket")
    assert pending.finish(PresenceResult.CANCELLED) is PresenceResult.CANCELLED
    assert (pending.result, pending.source) == (PresenceResult.CANCELLED, "host")
    # Any other ending leaves the first answer standing.
    pending = PendingPresence(2, SIGN_IN, 30.0)
    assert pending.answer(False, "control socket")
    assert pending.finish(PresenceResult.TIMEOUT) is PresenceResult.DENIED
    assert pending.source == "control socket"


def test_an_answer_after_the_hosts_cancel_is_refused() -> None:
    """CTAP 2.1 11.2.9.1.5: a CTAPHID_CANCEL cancels the outstanding request. An approval
    that came after it, before the broker's next look at the cancel flag (50 ms), was
    taken: the cancelled request was signed and its credential stored (outside review,
    19 of 20 tries; `--presence auto --presence-delay` the same, 20 of 20: every front end
    answers through ``PendingPresence.answer``). The transaction's cancel now wakes the
    broker, and the answer is refused whenever it comes."""
    from vfido.transports.runner import HidTransaction

    for _ in range(20):
        broker = PresenceBroker()  # manual: `vfido approve` answers
        transaction = HidTransaction(0x01020304, 1)
        asking = Asking(broker, context=transaction)  # type: ignore[arg-type]
        (pending,) = broker.wait_pending(30)
        transaction.cancel()
        # The broker may have ended the request already ("no request is waiting") or not
        # ("cancelled by the host"): either way the approval is refused.
        with pytest.raises(LookupError, match=r"cancelled by the host|no request is waiting"):
            broker.answer(True, None, "control socket")
        assert not pending.answer(True, "control socket") and pending.cancelled
        assert asking.result() is PresenceResult.CANCELLED
    # A context without on_cancel: the broker looks every 50 ms; the flag is read at the
    # answer, so an approval in between is refused, with the reason.
    broker = PresenceBroker()
    asking = Asking(broker)
    (pending,) = broker.wait_pending(30)
    asking.context.cancelled.set()
    assert not pending.answer(True, "control socket") and pending.cancelled
    assert asking.result() is PresenceResult.CANCELLED
    # The reason `vfido approve` gives, while the request is still published.
    broker = PresenceBroker()
    pending = PendingPresence(1, SIGN_IN, 30.0, cancelled=lambda: True)
    broker._pending[pending.id] = pending
    with pytest.raises(LookupError, match="request 1 was cancelled by the host"):
        broker.answer(True, None, "control socket")


def test_two_pending_requests_need_an_id() -> None:
    broker = PresenceBroker()
    first, second = Asking(broker, SIGN_IN), Asking(broker, REGISTER)
    pendings: list[object] = []
    while len(pendings) < 2:
        pendings = list(broker.wait_pending(30))
        threading.Event().wait(0.01)
    with pytest.raises(LookupError, match="choose one with --id"):
        broker.answer(True, None, "test")
    ids = sorted(p.id for p in broker.pending())
    broker.answer(True, ids[0], "test")
    broker.answer(False, ids[1], "test")
    assert {first.result(), second.result()} == {PresenceResult.GRANTED, PresenceResult.DENIED}


# --- `vfido run` + `vfido approve` / `deny` / `status` as processes ------------------------------


def _register(service: Service, rp: RelyingParty) -> RegistrationResponse:
    """A registration over UDP (in a thread while ``vfido approve``/``deny`` answers)."""
    with service.client(rp.origin) as client:
        return register(client, rp)


def _in_thread(fn: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def target() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.slow
def test_manual_presence_answered_by_vfido_approve_and_deny(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    rp = RelyingParty(attestation="none")
    with udp_service(["--ephemeral", "--presence", "manual"]) as service:
        assert any("control socket" in line for line in service.stderr_lines)
        status = vfido(["status"])
        assert status.returncode == 0, status.stderr
        assert "presence:      manual" in status.stdout and "pending:       none" in status.stdout
        raw = json.loads(vfido(["status", "--json"]).stdout)
        assert raw["transport"] == "udp" and raw["udp"]["port"] == service.port

        nothing = vfido(["approve"])
        assert nothing.returncode == 1 and nothing.stderr.count("\n") == 1
        assert "no request is waiting" in nothing.stderr and "--wait" in nothing.stderr

        thread, out = _in_thread(lambda: _register(service, rp))
        approved = vfido(["approve", "--wait", "60"])
        assert approved.returncode == 0, (approved.stderr, out, service.stderr_lines)
        assert "approved request" in approved.stdout and "example.com" in approved.stdout
        thread.join(60)
        assert isinstance(out[0], RegistrationResponse), out

        other = RelyingParty(attestation="none")  # nothing to exclude
        thread, out = _in_thread(lambda: _register(service, other))
        denied = vfido(["deny", "--wait", "60", "--name", f"udp-{service.port}"])
        assert denied.returncode == 0, (denied.stderr, out, service.stderr_lines)
        thread.join(60)
        assert isinstance(out[0], ClientError), out
        cause = out[0].cause
        assert isinstance(cause, CtapError) and cause.code == CtapError.ERR.OPERATION_DENIED


@pytest.mark.slow
def test_unanswered_request_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    rp = RelyingParty(attestation="none")
    args = ["--ephemeral", "--presence", "manual", "--presence-timeout", "1"]
    with udp_service(args) as service:
        with pytest.raises(ClientError) as info:
            _register(service, rp)
        cause = info.value.cause
        assert isinstance(cause, CtapError) and cause.code == CtapError.ERR.USER_ACTION_TIMEOUT


@pytest.mark.slow
def test_no_key_running_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for command in (["approve"], ["deny"], ["status"]):
        result = vfido(command)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "no vfido key is running" in result.stderr


@pytest.mark.slow
def test_same_name_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with udp_service(["--ephemeral", "--name", "mykey"]):
        with (
            pytest.raises(RuntimeError, match="another vfido key is running"),
            udp_service(["--ephemeral", "--name", "mykey"]),
        ):
            pass
        assert vfido(["status", "--name", "mykey"]).returncode == 0


def test_a_missing_runtime_dir_is_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_RUNTIME_DIR naming a directory that does not exist (or another user's) is not
    used: vfido made it with all its parents, 0777 minus the umask (a newcomer trial saw
    /nonexistent/x made as root). The XDG spec has the session make it, owned by the user."""
    from vfido.control import server

    monkeypatch.setattr(server, "SHARED_TMP", tmp_path / "shared")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing" / "run"))
    assert server.socket_dir() == tmp_path / "shared" / f"vfido-{os.getuid()}"
    assert not (tmp_path / "missing").exists()
    (tmp_path / "missing" / "run").mkdir(parents=True)
    assert server.socket_dir() == tmp_path / "missing" / "run" / "vfido"
    if os.geteuid() == 0:  # "(or another user's)": one owned by someone else is not used
        os.chown(tmp_path / "missing" / "run", 65534, 65534)
        assert server.socket_dir() == tmp_path / "shared" / f"vfido-{os.getuid()}"


def test_sockets_left_by_killed_keys_are_named_as_such(tmp_path: Path) -> None:
    """`vfido status` with the sockets of SIGKILLed keys said "no control socket in DIR"
    while the files were there (a newcomer trial)."""
    import socket as sockets

    from vfido.control.client import NotRunningError, find_key

    for name in ("a", "b"):  # bound then closed without unlink: what a killed key leaves
        with sockets.socket(sockets.AF_UNIX) as s:
            s.bind(str(tmp_path / f"{name}.sock"))
    with pytest.raises(NotRunningError, match=r"2 control socket\(s\) in .* no key answers"):
        find_key(directory=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotRunningError, match="no control socket in"):
        find_key(directory=empty)


def test_a_command_registered_without_a_declaration_takes_any_argument(tmp_path: Path) -> None:
    """Code that registers a command of its own without ``accepts`` (as before declarations
    existed) keeps getting its arguments; a declared command refuses others (a session 16
    diff review: the default refused every argument)."""
    server = ControlServer(tmp_path / "run" / "key.sock")
    server.register("echo", lambda args: {"got": args})
    server.register("strict", lambda args: {"got": args}, accepts=("text",))
    with server, ControlClient(server.path) as ctl:
        assert ctl.call("echo", text="hi", n=1) == {"got": {"text": "hi", "n": 1}}
        assert ctl.call("strict", text="hi") == {"got": {"text": "hi"}}
        with pytest.raises(ControlError, match="unknown argument 'n' to strict"):
            ctl.call("strict", text="hi", n=1)
