"""User presence: how the key asks its user, and who answers.

* :mod:`~vfido.presence.broker`: :class:`PresenceBroker`, the key's
  :class:`vfido.authenticator.env.Presence`: publishes pending requests (the control socket
  lists and answers them) and hands them to front ends; :func:`broker_for` builds it for a mode.
* :mod:`~vfido.presence.modes`: the one registry of modes (:data:`MODES`: name -> front ends
  at start and at run time, UV behaviour, toolkit use); every list of mode names derives from it.
* :mod:`~vfido.presence.pending`: a pending request, the question shown, the
  :class:`~vfido.presence.pending.FrontEnd` protocol and the front ends' worker threads.
* Front ends: :mod:`~vfido.presence.auto` (approve / refuse, also as bare ``Presence``
  objects), :mod:`~vfido.presence.terminal` (``prompt``), :mod:`~vfido.presence.desktop`
  (``notify``) over :mod:`~vfido.presence.dbus`.

Imports point one way: broker -> modes, pending; front ends -> pending; modes imports a
front end only when its mode is used.
"""

from __future__ import annotations

from vfido.presence.auto import (
    AutoFrontEnd,
    AutoPresence,
    DenyFrontEnd,
    DenyPresence,
    DenyUvPresence,
    describe,
)
from vfido.presence.broker import PresenceBroker, broker_for
from vfido.presence.modes import (
    MODES,
    RUN_MODES,
    RUNTIME_MODES,
    TOOLKIT_MODES,
    PresenceMode,
    PresenceModeError,
    front_ends_for,
    mode_spec,
    presence_help,
)
from vfido.presence.pending import FrontEnd, PendingPresence, clean, question

__all__ = [
    "MODES",
    "RUNTIME_MODES",
    "RUN_MODES",
    "TOOLKIT_MODES",
    "AutoFrontEnd",
    "AutoPresence",
    "DenyFrontEnd",
    "DenyPresence",
    "DenyUvPresence",
    "FrontEnd",
    "PendingPresence",
    "PresenceBroker",
    "PresenceMode",
    "PresenceModeError",
    "broker_for",
    "clean",
    "describe",
    "front_ends_for",
    "mode_spec",
    "presence_help",
    "question",
]
