# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.presence.dbus`."""

from vfido.presence.dbus import *  # noqa: F403
from vfido.presence.dbus import _ALIGN as _ALIGN
from vfido.presence.dbus import _FIELDS as _FIELDS
from vfido.presence.dbus import _FIXED as _FIXED
from vfido.presence.dbus import _authenticate as _authenticate
from vfido.presence.dbus import _Call as _Call
from vfido.presence.dbus import _message_length as _message_length
from vfido.presence.dbus import _Reader as _Reader
from vfido.presence.dbus import _readline as _readline
from vfido.presence.dbus import _socket_address as _socket_address
from vfido.presence.dbus import _type_end as _type_end
from vfido.presence.dbus import _Writer as _Writer
