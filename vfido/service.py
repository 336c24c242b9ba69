"""Wiring: keystore -> authenticator -> transport, and the life cycle of `vfido run`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.config import Config, mldsa_status
from vfido.authenticator.env import Presence
from vfido.key import build_key
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.keystore.store import KeyStore
from vfido.transport_kinds import (
    Transport,
    TransportOptions,
    default_serial,
    transport_kind,
)

if TYPE_CHECKING:
    from vfido.control import ControlServer
    from vfido.lint import Linter
    from vfido.reproducible import SeededEnvironment
    from vfido.trace import TraceRecorder

__all__ = [
    "KeyStoppedServing",
    "Transport",
    "TransportOptions",
    "control_name",
    "default_serial",
    "keystore_default_dir",
    "run",
]

log = logging.getLogger(__name__)


class KeyStoppedServing(Exception):
    """The key's transport stopped serving by itself (its I/O failed): ``vfido run`` exits
    with an error, so a service manager restarts it (``Restart=on-failure``), rather than
    leaving a device or socket that nobody answers."""


def control_name(options: TransportOptions, store: KeyStore) -> str:
    """The default name of a key's control socket: its serial (uhid, unix) or ``udp-PORT``
    (``udp-any-PID`` for any free port)."""
    return transport_kind(options.kind).control_name(options, store)


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
    """Serve the key until SIGINT/SIGTERM (or ``stop`` is set), or until its transport fails
    (:class:`KeyStoppedServing`). Closes the store.

    ``notices``: lines for stderr once the key is served (a transport fallback, the risk a
    transport runs), so that a key that fails to start says only why it failed.

    With ``control_path``, also serve the control socket there (``status``, and for a
    :class:`PresenceBroker` ``pending``/``approve``/``deny``); ``info`` is added to
    ``status``. With ``trace``, every packet and request is recorded (and the control
    socket answers ``log``). The socket is bound before the transport starts, so a
    second key with the same name fails before creating a device. ``behaviours``: the
    scripted misbehaviour in force at start (the control socket's ``behaviours`` command
    changes it); every control command is listed in :mod:`vfido.control.commands`.
    ``seeded``: a reproducible key's randomness and clock (:mod:`vfido.reproducible`).
    ``linter``: the relying-party lint sees every request (``lint`` control command).
    """
    stop = stop or threading.Event()
    key = build_key(
        store,
        presence,
        config,
        options,
        behaviours=behaviours,
        trace=trace,
        info=info,
        seeded=seeded,
        linter=linter,
    )
    log.debug("post-quantum ML-DSA: %s", mldsa_status(config))
    control: ControlServer | None = None
    if control_path is not None:
        control = key.control_server(control_path)
        try:
            control.start()
        except BaseException:
            key.stop()  # a transport that binds when made (unix: its socket file) lets go
            store.close()
            raise

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No lock here, nor logging (which takes them): the handler runs on the main thread
        # between two bytecodes, which may hold any lock, stop's own included (Event.set
        # here hung a CI run now and then: its wait held the lock as the signal came).
        received.append(signum)

    # SIGHUP (its terminal closed, an ssh session dropped) stops the key as cleanly as
    # SIGTERM: the waiting request is cancelled and the control socket removed. Under
    # `nohup` (SIGHUP ignored) it stays ignored.
    stopping = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stopping.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in stopping}
    started = False
    failure: str | None = None
    try:
        key.start()
        started = True
        for line in notices:
            print(line, file=sys.stderr, flush=True)
        try:
            if control is not None:  # before the ready line: harnesses may use it at once
                print(f"vfido: control socket {control.path}", file=sys.stderr, flush=True)
            print(key.announcement(), file=sys.stderr, flush=True)
            while not received and not stop.wait(0.2):
                failure = key.failure()
                if failure is not None:
                    break
            if received:
                log.info("signal %d: stopping", received[0])
        finally:
            key.stop()
        if failure is not None:
            raise KeyStoppedServing(f"the key stopped serving: {failure}")
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
