"""Wiring: keystore -> authenticator -> transport, and the life cycle of `vfido run`."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from vfido import __version__
from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.config import Config, mldsa_status
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import Presence
from vfido.broker import PresenceBroker
from vfido.control import ControlServer, add_presence_commands
from vfido.control_api import KeyParts, add_key_commands, add_lint_commands
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.lint import Linter
from vfido.reproducible import SeededEnvironment, build
from vfido.trace import TraceRecorder, add_trace_commands
from vfido.transports.handler import CtapHandler

log = logging.getLogger(__name__)


class Transport(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class TransportOptions:
    kind: str = "udp"  # one of vfido.transport_choice.KINDS
    udp_host: str = "127.0.0.1"
    udp_port: int = 8111
    udp_peer_port: int = 7112
    serial: str | None = None
    name: str = "vfido virtual FIDO2 key"
    unix_socket: str | None = None  # kind "unix": the socket's path (its directory private)


def default_serial(store: SqliteKeyStore) -> str:
    """A printable-ASCII serial derived from the AAGUID (stable per keystore)."""
    return "vfido-" + store.identity().aaguid.hex()[:12]


def make_transport(
    options: TransportOptions,
    device: CtapHandler,
    store: SqliteKeyStore,
    packet_observer: Callable[[str, bytes], None] | None = None,
) -> Transport:
    if options.kind == "udp":
        from vfido.transports.udp import UdpTransport

        udp = UdpTransport(
            device,
            host=options.udp_host,
            port=options.udp_port,
            peer_host=options.udp_host,
            peer_port=options.udp_peer_port,
        )
        udp.runner.packet_observer = packet_observer
        return udp
    if options.kind == "uhid":
        from vfido.transports.uhid import UhidTransport

        return UhidTransport(
            device,
            name=options.name,
            serial=options.serial or default_serial(store),
            packet_observer=packet_observer,
        )
    if options.kind == "unix":
        from vfido.transport_choice import prepare_unix_socket_dir
        from vfido.transports.unix import UnixTransport

        if options.unix_socket is None:
            raise ValueError("the unix transport needs unix_socket")
        path = Path(options.unix_socket)
        prepare_unix_socket_dir(path)
        unix = UnixTransport(device, path)
        unix.runner.packet_observer = packet_observer
        return unix
    raise ValueError(f"unknown transport {options.kind!r}")


def control_name(options: TransportOptions, store: SqliteKeyStore) -> str:
    """The default name of a key's control socket: its serial (uhid, unix) or ``udp-PORT``."""
    if options.kind in ("uhid", "unix"):
        return options.serial or default_serial(store)
    return f"udp-{options.udp_port}"


def status(
    options: TransportOptions,
    transport: Transport | None,
    presence: Presence,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """The control socket's ``status`` answer."""
    result: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "transport": options.kind,
        **info,
    }
    if options.kind == "uhid":
        hidraw_path = getattr(transport, "hidraw_path", None)
        result["serial"] = getattr(transport, "serial", options.serial)
        result["hidraw"] = hidraw_path() if hidraw_path is not None else None
    elif options.kind == "unix":
        result["unix_socket"] = str(getattr(transport, "path", options.unix_socket))
    else:
        result["udp"] = {
            "host": options.udp_host,
            "port": getattr(transport, "port", options.udp_port),
            "peer_port": options.udp_peer_port,
        }
    if isinstance(presence, PresenceBroker):
        result["presence"] = presence.mode
        result["pending"] = [p.describe() for p in presence.pending()]
    return result


def announce(options: TransportOptions, transport: Transport) -> None:
    """Tell the user (and test harnesses) where the key is: one line on stderr."""
    if options.kind == "udp":
        port = getattr(transport, "port", options.udp_port)
        print(
            f"vfido: listening on udp {options.udp_host}:{port}, replies to port "
            f"{options.udp_peer_port}",
            file=sys.stderr,
            flush=True,
        )
    elif options.kind == "unix":
        where = getattr(transport, "path", options.unix_socket)
        print(f"vfido: listening on unix {where}", file=sys.stderr, flush=True)
    else:
        path = None
        hidraw_path = getattr(transport, "hidraw_path", None)
        if hidraw_path is not None:
            for _ in range(50):  # the kernel creates the node asynchronously
                path = hidraw_path()
                if path:
                    break
                threading.Event().wait(0.1)
        print(f"hidraw: {path or 'unknown'}", file=sys.stderr, flush=True)


def run(
    store: SqliteKeyStore,
    presence: Presence,
    config: Config,
    options: TransportOptions,
    stop: threading.Event | None = None,
    *,
    control_path: Path | None = None,
    info: Mapping[str, Any] | None = None,
    trace: TraceRecorder | None = None,
    behaviours: Behaviours | None = None,
    notices: Sequence[str] = (),
    seeded: SeededEnvironment | None = None,
    linter: Linter | None = None,
) -> None:
    """Serve the key until SIGINT/SIGTERM (or ``stop`` is set). Closes the store.

    ``notices``: lines for stderr once the key is served (a transport fallback, the risk a
    transport runs), so that a key that fails to start says only why it failed.

    With ``control_path``, also serve the control socket there (``status``, and for a
    :class:`PresenceBroker` ``pending``/``approve``/``deny``); ``info`` is added to
    ``status``. With ``trace``, every packet and request is recorded (and the control
    socket answers ``log``). The socket is bound before the transport starts, so a
    second key with the same name fails before creating a device. ``behaviours``: the
    scripted misbehaviour in force at start (the control socket's ``behaviours`` command
    changes it); every control command is listed in :mod:`vfido.control_api`.
    ``seeded``: a reproducible key's randomness and clock (:mod:`vfido.reproducible`).
    ``linter``: the relying-party lint sees every request (``lint`` control command).
    """
    stop = stop or threading.Event()
    if seeded is None:
        device = Authenticator(store, presence, config, behaviours=behaviours)
    else:
        device = build(
            seeded,
            lambda: Authenticator(
                store, presence, config, clock=seeded, behaviours=behaviours, entropy=seeded
            ),
        )
    log.debug("post-quantum ML-DSA: %s", mldsa_status(config))
    ctap_handler: CtapHandler = device if linter is None else linter.wrap(device)
    if trace is None:
        transport = make_transport(options, ctap_handler, store)
    else:
        transport = make_transport(options, trace.wrap(ctap_handler), store, trace.packet)
    control: ControlServer | None = None
    if control_path is not None:
        control = ControlServer(control_path)
        extra = dict(info or {})
        control.register(
            "status",
            lambda _args: {
                **status(options, transport, presence, extra),
                "behaviours": device.behaviours.active(),
            },
        )
        if isinstance(presence, PresenceBroker):
            add_presence_commands(control, presence)
        add_key_commands(control, KeyParts(device, store, presence, transport))
        if trace is not None:
            add_trace_commands(control, trace)
        if linter is not None:
            add_lint_commands(control, linter)
        try:
            control.start()
        except BaseException:
            store.close()
            raise

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = False
    try:
        transport.start()
        started = True
        for line in notices:
            print(line, file=sys.stderr, flush=True)
        try:
            if control is not None:  # before the ready line: harnesses may use it at once
                print(f"vfido: control socket {control.path}", file=sys.stderr, flush=True)
            announce(options, transport)
            while not stop.wait(0.5):
                pass
        finally:
            transport.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if control is not None:
            control.stop()
        store.close()
        if started:
            log.info("stopped")


def keystore_default_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vfido"
