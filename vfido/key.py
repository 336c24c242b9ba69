"""The one place a vfido key is assembled: keystore + presence + config -> authenticator ->
transport (+ its control socket).

``vfido run`` (:func:`vfido.service.run`), :class:`vfido.api.VirtualKey` and
``bench/keyserver.py`` build their keys with :func:`build_key`; the transport comes from the
registry :data:`vfido.transport_kinds.TRANSPORT_KINDS` (one module per kind). Commands that
only need the key's authenticator for a moment (``vfido pin``, ``vfido metadata``,
``vfido info``) use :func:`offline_authenticator` / :func:`get_info`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2

from vfido import __version__
from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import NullContext, Presence
from vfido.keystore.store import KeyStore
from vfido.transport_kinds import (
    RUN_KINDS,
    TOOLKIT_KINDS,
    TRANSPORT_KINDS,
    Transport,
    TransportKind,
    TransportOptions,
    Wiring,
    default_serial,
    transport_kind,
)

if TYPE_CHECKING:
    from vfido.control.commands import KeyParts
    from vfido.control.server import ControlServer
    from vfido.lint import Linter
    from vfido.reproducible import SeededEnvironment
    from vfido.trace import TraceRecorder
    from vfido.transports.handler import CtapHandler
    from vfido.virtual_authenticator import AuthenticatorOptions

__all__ = [
    "RUN_KINDS",
    "TOOLKIT_KINDS",
    "TRANSPORT_KINDS",
    "Key",
    "Transport",
    "TransportKind",
    "TransportOptions",
    "build_key",
    "default_serial",
    "get_info",
    "key_status",
    "offline_authenticator",
    "transport_kind",
]


def key_status(
    options: TransportOptions,
    transport: Transport,
    presence: Presence,
    info: Mapping[str, Any],
    behaviours: Behaviours | None = None,
) -> dict[str, Any]:
    """The control socket's ``status`` answer: the process, ``info`` (name, keystore,
    presence_timeout), the transport's own fields, the presence mode and pending requests."""
    from vfido.presence.broker import PresenceBroker

    result: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "transport": options.kind,
        **info,
        **transport_kind(options.kind).status(options, transport),
    }
    if isinstance(presence, PresenceBroker):
        result["presence"] = presence.mode
        result["presence_delay"] = presence.delay
        result["pending"] = [p.describe() for p in presence.pending()]
    if behaviours is not None:
        result["behaviours"] = behaviours.active()
    return result


class Key:
    """One assembled key: its keystore, presence, config, authenticator and (not yet
    started) transport. The owner starts and stops it and closes the store."""

    def __init__(
        self,
        store: KeyStore,
        presence: Presence,
        config: Config,
        options: TransportOptions,
        *,
        behaviours: Behaviours | None = None,
        trace: TraceRecorder | None = None,
        info: Mapping[str, Any] | None = None,
        webauthn_options: AuthenticatorOptions | None = None,
        seeded: SeededEnvironment | None = None,
        linter: Linter | None = None,
    ) -> None:
        self.kind = transport_kind(options.kind)
        self.store = store
        self.presence = presence
        from vfido.presence import PresenceBroker

        if isinstance(presence, PresenceBroker):
            # The key's presence timeout, which a delay set later over the control socket
            # must stay below (presence.modes.check_delay): the config's, whoever built it.
            presence.timeout = config.presence_timeout
        self.config = config
        self.options = options
        self.trace = trace
        #: ``status`` fields of the application (name, keystore, presence_timeout).
        self.info = dict(info or {})
        self.webauthn_options = webauthn_options
        #: A reproducible key's randomness and clock (``--deterministic``), else None.
        self.seeded = seeded
        #: The relying-party lint watching every request (``--lint``), else None.
        self.linter = linter
        if seeded is None:
            self.device = Authenticator(store, presence, config, behaviours=behaviours)
        else:
            from vfido.reproducible import WARNING, build

            self.info["deterministic"] = WARNING
            self.device = build(
                seeded,
                lambda: Authenticator(
                    store, presence, config, clock=seeded, behaviours=behaviours, entropy=seeded
                ),
            )
        handler: CtapHandler = self.device if linter is None else linter.wrap(self.device)
        if trace is None:
            self.transport = self.kind.open(Wiring(options, handler, store))
        else:
            wiring = Wiring(options, trace.wrap(handler), store, trace.packet)
            self.transport = self.kind.open(wiring)
        from vfido.control.commands import KeyParts

        #: What the control commands (and the WebDriver model) act on.
        self.parts: KeyParts = KeyParts(
            self.device, store, presence, self.transport, None, webauthn_options
        )

    def __repr__(self) -> str:
        return f"Key({self.options.kind})"

    def status(self) -> dict[str, Any]:
        """The control socket's ``status`` answer."""
        return key_status(
            self.options, self.transport, self.presence, self.info, self.device.behaviours
        )

    def announcement(self) -> str:
        """The line that says where the started key is (``vfido run`` prints it last)."""
        return self.kind.announcement(self.options, self.transport)

    def control_name(self) -> str:
        """The default name of the key's control socket."""
        return self.kind.control_name(self.options, self.store)

    def control_server(self, path: Path) -> ControlServer:
        """The key's control socket at ``path`` with every command registered (not started)."""
        from vfido.control.commands import register_commands
        from vfido.control.server import ControlServer

        server = ControlServer(path)
        register_commands(server, self.parts, self.status, self.trace, self.linter)
        return server

    def start(self) -> None:
        self.transport.start()

    def failure(self) -> str | None:
        """Why the started key stopped being served by itself (see ``Transport.failure``)."""
        return self.transport.failure

    def stop(self) -> None:
        self.transport.stop()


#: Assemble a key: ``build_key(store, presence, config, options, behaviours=..., trace=...,
#: info=..., webauthn_options=...)`` (see :class:`Key`; ValueError for an unknown transport).
build_key = Key


def offline_authenticator(store: KeyStore, config: Config | None = None) -> Authenticator:
    """The key's authenticator with no transport and a user who refuses every request:
    for commands that drive CTAP on a keystore that no key serves (``vfido pin``,
    ``vfido metadata``, ``vfido info``)."""
    from vfido.presence.auto import DenyPresence

    return Authenticator(store, DenyPresence(), config or Config())


def get_info(store: KeyStore, config: Config | None = None) -> dict[int, Any]:
    """The key's authenticatorGetInfo answer (from :func:`offline_authenticator`)."""
    response = offline_authenticator(store, config).handle_cbor(b"\x04", NullContext())
    if not response or response[0] != 0:
        raise RuntimeError("the key did not answer getInfo")
    info = cbor2.loads(response[1:])
    if not isinstance(info, dict):
        raise RuntimeError("malformed getInfo answer")
    return info
