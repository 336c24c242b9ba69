"""Presence front ends for a person: the terminal prompt (on a real pseudo-terminal) and the
desktop notification (over a real dbus-daemon, with a notification server written with
vfido.presence.dbus), plus the D-Bus wire format."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ci import unavailable
from tests.presence_helpers import REGISTER, SIGN_IN, Asking, wait_workers_idle
from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult
from vfido.presence import DenyFrontEnd, FrontEnd, PresenceBroker, clean, question
from vfido.presence.dbus import (
    BUS_NAME,
    BUS_PATH,
    Connection,
    DBusError,
    Message,
    MessageType,
    Variant,
    decode_message,
    encode_message,
    marshal,
    split_signature,
    unmarshal,
)
from vfido.presence.desktop import NOTIFICATIONS, NOTIFICATIONS_PATH, DesktopNotifier
from vfido.presence.terminal import TerminalPrompt

# --- texts --------------------------------------------------------------------------------------


def test_question_says_which_site_and_what() -> None:
    assert question(SIGN_IN) == "Sign in to example.com with this security key (as alice)?"
    assert question(REGISTER).startswith("Register this security key with example.org")
    u2f = question(PresenceRequest(PresenceKind.REGISTER))
    assert "U2F" in u2f
    assert "erased" in question(PresenceRequest(PresenceKind.RESET))
    for kind in PresenceKind:
        assert question(PresenceRequest(kind, "rp.example"))


def test_names_from_the_web_cannot_drive_the_terminal() -> None:
    evil = PresenceRequest(PresenceKind.AUTHENTICATE, "example.com", "\x1b[2J\x1b]0;x\x07bob\u202e")
    text = question(evil)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "bob" in text
    assert len(clean("a" * 500)) == 64


# --- terminal prompt on a pseudo-terminal -------------------------------------------------------


@dataclass
class Terminal:
    """The user's side of a pty whose other end the prompt opens as its terminal."""

    master: int
    path: str
    seen: bytes = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never shown; terminal shows {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                self.seen += os.read(self.master, 4096)
        return self.seen.decode(errors="replace")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        yield Terminal(master, path)
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("y\n", PresenceResult.GRANTED),
        ("yes\r", PresenceResult.GRANTED),
        ("n\n", PresenceResult.DENIED),
        ("\n", PresenceResult.DENIED),
    ],
)
def test_terminal_answers(terminal: Terminal, answer: str, expected: PresenceResult) -> None:
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    asking = Asking(broker, SIGN_IN)
    shown = terminal.expect("[y/N]")
    assert "Sign in to example.com with this security key (as alice)?" in shown
    terminal.type(answer)
    assert asking.result() is expected
    terminal.expect("approved" if expected is PresenceResult.GRANTED else "denied")


def test_terminal_asks_again_on_nonsense(terminal: Terminal) -> None:
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    asking = Asking(broker, REGISTER)
    terminal.expect("[y/N]")
    terminal.type("maybe\n")
    terminal.expect("answer y or n")
    terminal.type("y\n")
    assert asking.result() is PresenceResult.GRANTED


def test_typed_ahead_answer_does_not_count(terminal: Terminal) -> None:
    terminal.type("y\n")  # typed before any question was asked
    terminal.expect("y")  # (echoed)
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    asking = Asking(broker, SIGN_IN)
    terminal.expect("[y/N]")
    terminal.type("n\n")
    assert asking.result() is PresenceResult.DENIED


def test_terminal_question_withdrawn_when_answered_elsewhere(terminal: Terminal) -> None:
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    asking = Asking(broker, SIGN_IN)
    terminal.expect("[y/N]")
    (pending,) = broker.pending()
    broker.answer(True, pending.id, "control socket")
    assert asking.result() is PresenceResult.GRANTED
    terminal.expect("granted by control socket")


def test_ctrl_d_at_the_question_is_no(terminal: Terminal) -> None:
    """Ctrl-D (end of input) answers no, as an empty line does, and says so. Before, the
    prompt stopped reading without a word: a later "y" was never read and the request
    timed out. The next question is asked and answered as usual."""
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    asking = Asking(broker, SIGN_IN)
    terminal.expect("[y/N]")
    terminal.type("\x04")
    assert asking.result() is PresenceResult.DENIED
    terminal.expect("denied (end of input)")
    again = Asking(broker, REGISTER)
    terminal.seen = b""
    terminal.expect("[y/N]")
    terminal.type("y\n")
    assert again.result() is PresenceResult.GRANTED
    third = Asking(broker, SIGN_IN)
    terminal.seen = b""
    terminal.expect("[y/N]")
    terminal.type("y\x04\x04")  # "y" without Enter, then end of input: no approval
    assert third.result() is PresenceResult.DENIED


def test_terminal_timeout_is_a_refusal(terminal: Terminal) -> None:
    broker = PresenceBroker([TerminalPrompt(terminal.path)], mode="prompt")
    assert Asking(broker, SIGN_IN, timeout=0.5).result() is PresenceResult.TIMEOUT
    terminal.expect("no answer in time: denied")


def test_a_request_nobody_answered_says_so_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """A request is announced in the log (manual mode: "answer with vfido approve..."); its
    end was not, when nobody answered: the user saw the request, then nothing."""
    broker = PresenceBroker([], mode="manual")
    with caplog.at_level("INFO", logger="vfido.broker"):
        assert Asking(broker, SIGN_IN, timeout=0.3).result() is PresenceResult.TIMEOUT
    assert "presence: request 1: no answer in 0 s: refused" in caplog.messages


def test_no_terminal_leaves_the_control_socket(tmp_path: Path) -> None:
    prompt = TerminalPrompt(str(tmp_path / "no-such-tty"))
    assert not prompt.available()
    broker = PresenceBroker([prompt], mode="prompt")
    asking = Asking(broker, SIGN_IN)
    (pending,) = broker.wait_pending(30)
    broker.answer(False, pending.id, "control socket")
    assert asking.result() is PresenceResult.DENIED


# --- D-Bus wire format ----------------------------------------------------------------------------


def test_signatures() -> None:
    assert split_signature("susssasa{sv}i") == ["s", "u", "s", "s", "s", "as", "a{sv}", "i"]
    assert split_signature("a(yv)(ii)") == ["a(yv)", "(ii)"]
    for bad in ("a", "(i", "a{s", "z"):
        with pytest.raises(ValueError):
            split_signature(bad)


def test_marshal_round_trip() -> None:
    values = [
        7,
        True,
        -2,
        0xFFFF,
        -(2**31),
        2**32 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        "h\u00e9llo",
        "/a/b",
        "a{sv}",
        ["x", "", "yz"],
        {"urgency": Variant("y", 2), "body": Variant("s", "t"), "n": Variant("ai", [1, 2])},
        (1, "s", [(2, "t")]),
        b"\x00\x01\xff",
        [],
    ]
    signature = "ybnqiuxtdsogasa{sv}(isa(us))ayai"
    data = marshal(signature, values)
    assert unmarshal(signature, data) == values


def test_known_encoding() -> None:
    # "as" with one string, then a byte: length 4 + (len 2 "ab" NUL) ...
    assert marshal("asy", [["ab"], 9]) == bytes.fromhex(
        "07000000 02000000 616200 09".replace(" ", "")
    )
    # a struct is 8-aligned, an empty array still aligns its first element
    assert marshal("y(y)", [1, (2,)]) == bytes([1, 0, 0, 0, 0, 0, 0, 0, 2])
    assert marshal("yat", [1, []]) == bytes([1, 0, 0, 0, 0, 0, 0, 0])


def test_message_round_trip_and_big_endian() -> None:
    msg = Message(
        MessageType.METHOD_CALL,
        serial=5,
        path=NOTIFICATIONS_PATH,
        interface=NOTIFICATIONS,
        member="Notify",
        destination=NOTIFICATIONS,
        signature="su",
        body=["x", 3],
    )
    back = decode_message(encode_message(msg))
    assert (back.member, back.path, back.serial, back.body) == ("Notify", msg.path, 5, ["x", 3])
    # a big-endian signal, as another implementation might send it
    body = b"\x00\x00\x00\x07"  # u 7
    header_fields = (
        b"\x03\x01s\x00" + b"\x00\x00\x00\x03" + b"Sig\x00"  # MEMBER "Sig"
        + b"\x00" * 4  # the next struct is 8-aligned
        + b"\x08\x01g\x00" + b"\x01u\x00"  # SIGNATURE "u"
    )  # fmt: skip
    head = b"B\x04\x00\x01" + len(body).to_bytes(4, "big") + (9).to_bytes(4, "big")
    head += len(header_fields).to_bytes(4, "big") + header_fields
    head += b"\0" * (-len(head) % 8)
    decoded = decode_message(head + body)
    assert decoded.type is MessageType.SIGNAL and decoded.member == "Sig"
    assert decoded.body == [7] and decoded.serial == 9


# --- a real session bus ---------------------------------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """The address of a private dbus-daemon (apt package: dbus-daemon)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        # ./run-tests installs it as root (CI): there a missing one is a missing install step.
        unavailable(
            "dbus-daemon is not installed (tests/vm/install-deps.sh installs it)",
            in_ci_because="the desktop notification tests need it in CI",
        )
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(path=tmp_path / "bus"))
    process = subprocess.Popen(
        [daemon, f"--config-file={config}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        assert address.startswith("unix:"), address
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class NotificationServer:
    """A desktop notification server on the test bus, written with vfido.presence.dbus."""

    conn: Connection
    capabilities: list[str]
    notified: queue.Queue[list[Any]] = field(default_factory=queue.Queue)
    closed: queue.Queue[int] = field(default_factory=queue.Queue)
    next_id: int = 41

    def handle(self, msg: Message) -> None:
        if msg.type is not MessageType.METHOD_CALL or msg.interface != NOTIFICATIONS:
            return
        if msg.member == "GetCapabilities":
            self.conn.reply(msg, "as", [self.capabilities])
        elif msg.member == "Notify":
            self.next_id += 1
            self.conn.reply(msg, "u", [self.next_id])
            self.notified.put([self.next_id, *msg.body])
        elif msg.member == "CloseNotification":
            self.conn.reply(msg)
            self.closed.put(msg.body[0])
            self.signal("NotificationClosed", "uu", [msg.body[0], 3])
        else:
            self.conn.reply_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "no")

    def signal(self, member: str, signature: str, body: list[Any]) -> None:
        self.conn.emit(NOTIFICATIONS_PATH, NOTIFICATIONS, member, signature, body)

    def next_notification(self) -> list[Any]:
        return self.notified.get(timeout=30)


@contextlib.contextmanager
def notification_server(address: str, capabilities: list[str]) -> Iterator[NotificationServer]:
    with Connection.open(address) as conn:
        server = NotificationServer(conn, capabilities)
        conn.add_handler(server.handle)
        (reply,) = conn.call(BUS_NAME, BUS_PATH, BUS_NAME, "RequestName", "su", [NOTIFICATIONS, 4])
        assert reply == 1  # primary owner
        yield server


CAPS = ["actions", "body", "body-markup"]


@contextlib.contextmanager
def notifying(
    bus: str, capabilities: list[str] = CAPS, fallback: FrontEnd | None = None
) -> Iterator[tuple[NotificationServer, DesktopNotifier, PresenceBroker]]:
    """A notification server with ``capabilities`` on ``bus``, and a ``notify``-mode broker
    whose one front end is a DesktopNotifier (with ``fallback``) showing on it; the notifier
    is closed afterwards. (server, notifier, broker)."""
    with notification_server(bus, capabilities) as server:
        notifier = DesktopNotifier(bus, fallback=fallback)
        try:
            yield server, notifier, PresenceBroker([notifier], mode="notify")
        finally:
            notifier.close()


def test_bus_basics(bus: str) -> None:
    with Connection.open(bus) as conn:
        assert conn.unique_name.startswith(":")
        (names,) = conn.call(BUS_NAME, BUS_PATH, BUS_NAME, "ListNames")
        assert conn.unique_name in names
        with pytest.raises(DBusError) as info:
            conn.call("org.example.Nobody", "/", "org.example.X", "Y")
        assert info.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"


@pytest.mark.parametrize(("action", "expected"), [("allow", True), ("deny", False)])
def test_notification_buttons(bus: str, action: str, expected: bool) -> None:
    with notifying(bus) as (server, _, broker):
        asking = Asking(broker, SIGN_IN, timeout=60)
        nid, app, replaces, _icon, summary, body, actions, hints, expire = (
            server.next_notification()
        )
        assert (app, replaces) == ("vfido", 0)
        assert "Sign in to example.com" in summary and "alice" in summary
        assert "vfido approve" in body
        assert actions == ["allow", "Allow", "deny", "Deny"]
        assert hints["urgency"] == Variant("y", 2)
        assert 0 < expire <= 60_000
        server.signal("ActionInvoked", "us", [nid, action])
        result = asking.result()
        assert result is (PresenceResult.GRANTED if expected else PresenceResult.DENIED)
        assert server.closed.get(timeout=30) == nid  # withdrawn once answered


def test_notification_withdrawn_when_answered_elsewhere(bus: str) -> None:
    with notifying(bus) as (server, _, broker):
        asking = Asking(broker, REGISTER, timeout=60)
        nid = server.next_notification()[0]
        (pending,) = broker.pending()
        broker.answer(True, pending.id, "control socket")
        assert asking.result() is PresenceResult.GRANTED
        assert server.closed.get(timeout=30) == nid


def test_dismissing_the_notification_is_a_refusal(bus: str) -> None:
    with notifying(bus) as (server, _, broker):
        asking = Asking(broker, SIGN_IN, timeout=60)
        nid = server.next_notification()[0]
        server.signal("NotificationClosed", "uu", [nid, 2])
        assert asking.result() is PresenceResult.DENIED


def test_a_bus_another_user_serves_is_refused_before_anything_is_sent() -> None:
    """Whoever serves the session bus sees every prompt (site, user name) and answers for
    the notification server. A bus address names a socket (an abstract name, a path in
    /tmp) another user can take once the session's own bus is gone; the D-Bus client
    checked nothing, so a fake bus of uid 65534 approved a registration (a security
    review). Now the bus must be served by this user or root, as the control socket is."""
    import socket

    from tests.other_user import OTHER_UID, require_root

    require_root()
    name = f"vfido-test-foreign-bus-{os.getpid()}"
    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user's "bus": listens, records what a client sends first
        try:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
                server.bind(b"\0" + name.encode())
                server.listen(1)
                os.write(ready_w, b"1")
                server.settimeout(20)
                conn, _ = server.accept()
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    os.write(got_w, conn.recv(64) or b"<closed>")
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(got_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        with pytest.raises(DBusError, match=r"served by another user \(uid 65534\): refusing"):
            Connection.open(f"unix:abstract={name}", timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
        sent = os.read(got_r, 64)
        os.close(ready_r)
        os.close(got_r)
    assert sent == b"<closed>"  # not even the authentication's NUL byte reached it
    assert os.waitstatus_to_exitcode(status) == 0


def test_only_the_notification_server_can_answer(bus: str) -> None:
    with notifying(bus) as (server, notifier, broker), Connection.open(bus) as intruder:
        asking = Asking(broker, SIGN_IN, timeout=60)
        nid = server.next_notification()[0]
        intruder.emit(NOTIFICATIONS_PATH, NOTIFICATIONS, "ActionInvoked", "us", [nid, "allow"])
        ours = notifier._session.conn.unique_name  # type: ignore[union-attr]
        intruder.emit(  # unicast: the bus delivers it whatever our match rules say
            NOTIFICATIONS_PATH, NOTIFICATIONS, "ActionInvoked", "us", [nid, "allow"], ours
        )
        intruder.call(BUS_NAME, BUS_PATH, BUS_NAME, "GetId")  # both signals are out
        server.signal("ActionInvoked", "us", [nid + 1000, "allow"])  # another notification
        # Ordering on the bus: our own later signal arrives after the ignored ones.
        server.signal("ActionInvoked", "us", [nid, "deny"])
        assert asking.result() is PresenceResult.DENIED


def test_markup_is_escaped(bus: str) -> None:
    request = PresenceRequest(PresenceKind.AUTHENTICATE, "example.com", "<b>bob</b>")
    with notifying(bus) as (server, _, broker):
        asking = Asking(broker, request, timeout=60)
        _nid, _app, _r, _i, _summary, body, *_ = server.next_notification()
        assert "<" not in body  # the body is markup; the summary is plain text
        broker.answer(False, broker.pending()[0].id, "test")
        assert asking.result() is PresenceResult.DENIED


def test_server_without_buttons_informs_and_falls_back(bus: str) -> None:
    with notifying(bus, ["body"], fallback=DenyFrontEnd()) as (server, _, broker):
        asking = Asking(broker, SIGN_IN, timeout=60)
        assert asking.result() is PresenceResult.DENIED  # the fallback answered
        _nid, _app, _r, _i, _summary, body, actions, *_ = server.next_notification()
        assert actions == [] and "vfido approve" in body


def test_no_notification_server_falls_back(bus: str, tmp_path: Path) -> None:
    notifier = DesktopNotifier(bus, fallback=DenyFrontEnd())  # bus, but nobody owns the name
    assert not notifier.available()
    broker = PresenceBroker([notifier], mode="notify")
    assert Asking(broker, SIGN_IN, timeout=60).result() is PresenceResult.DENIED
    no_bus = DesktopNotifier(f"unix:path={tmp_path / 'nothing'}", fallback=DenyFrontEnd())
    assert not no_bus.available()
    broker = PresenceBroker([no_bus], mode="notify")
    assert Asking(broker, SIGN_IN, timeout=60).result() is PresenceResult.DENIED


def test_notification_with_terminal_fallback(bus: str, terminal: Terminal) -> None:
    """`--presence notify` in a terminal without a desktop: the terminal asks."""
    notifier = DesktopNotifier(bus, fallback=TerminalPrompt(terminal.path))
    broker = PresenceBroker([notifier], mode="notify")
    asking = Asking(broker, REGISTER, timeout=60)
    terminal.expect("[y/N]")
    terminal.type("y\n")
    assert asking.result() is PresenceResult.GRANTED


def test_reconnects_after_the_bus_connection_drops(bus: str) -> None:
    with notification_server(bus, CAPS) as server:
        notifier = DesktopNotifier(bus)
        assert notifier.available()
        notifier._session.conn.close()  # type: ignore[union-attr]
        broker = PresenceBroker([notifier], mode="notify")
        asking = Asking(broker, SIGN_IN, timeout=60)
        nid = server.next_notification()[0]
        server.signal("ActionInvoked", "us", [nid, "allow"])
        assert asking.result() is PresenceResult.GRANTED
        notifier.close()


def test_threads_do_not_pile_up(bus: str) -> None:
    """Answered requests leave no front end threads behind: the notifier runs on the
    front ends' long-lived workers, the same ones request after request."""

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "presence-front-end"}

    with notifying(bus) as (server, _, broker):
        seen: list[set[threading.Thread]] = []
        for _ in range(4):
            asking = Asking(broker, SIGN_IN, timeout=60)
            nid = server.next_notification()[0]
            server.signal("ActionInvoked", "us", [nid, "allow"])
            assert asking.result() is PresenceResult.GRANTED
            wait_workers_idle()
            seen.append(workers())
        assert seen[0] and seen[1] == seen[2] == seen[3]


# --- `vfido run --presence prompt` on its own controlling terminal -------------------------------


@pytest.mark.slow
def test_vfido_run_prompt_on_its_terminal(tmp_path: Path) -> None:
    """The service asks on /dev/tty (a pty it controls); the user types y, the site registers."""
    import pty
    import sys

    from fido2.client import DefaultClientDataCollector, Fido2Client
    from fido2.webauthn import UserVerificationRequirement

    from tests.rp import RelyingParty, challenge_of, random_user
    from tests.service_helpers import env
    from vfido.transports.udp import free_ports, open_udp_device

    port, peer_port = free_ports(2)
    pid, master = pty.fork()
    if pid == 0:  # child: its own session, the pty is its controlling terminal
        os.execvpe(
            sys.executable,
            [
                sys.executable,
                "-m",
                "vfido",
                "run",
                "--ephemeral",
                "--transport",
                "udp",
                "--presence",
                "prompt",
                "--udp-port",
                str(port),
                "--udp-peer-port",
                str(peer_port),
            ],
            env(XDG_RUNTIME_DIR=str(tmp_path)),
        )
    terminal = Terminal(master, "")
    try:
        terminal.expect("listening on udp", timeout=60)
        rp = RelyingParty(attestation="none")
        user_id, name = random_user()
        options, state = rp.begin_registration(
            user_id, name, user_verification=UserVerificationRequirement.DISCOURAGED
        )
        result: list[Any] = []

        def register() -> None:
            device = open_udp_device(port=port, peer_port=peer_port)
            try:
                client = Fido2Client(device, DefaultClientDataCollector(rp.origin))
                result.append(client.make_credential(options.public_key))
            except Exception as exc:
                result.append(exc)
            finally:
                device.close()

        thread = threading.Thread(target=register, daemon=True)
        thread.start()
        shown = terminal.expect("[y/N]", timeout=60)
        assert "Register this security key with example.com" in shown
        terminal.type("y\n")
        thread.join(60)
        assert result and not isinstance(result[0], Exception), result
        rp.complete_registration(state, result[0], challenge_of(options))
    finally:
        os.kill(pid, 15)
        os.waitpid(pid, 0)
        os.close(master)
