# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.presence.desktop`."""

from vfido.presence.desktop import *  # noqa: F403
from vfido.presence.desktop import CLOSED_DISMISSED as CLOSED_DISMISSED
from vfido.presence.desktop import NOTIFICATIONS as NOTIFICATIONS
from vfido.presence.desktop import NOTIFICATIONS_PATH as NOTIFICATIONS_PATH
from vfido.presence.desktop import POLL as POLL
from vfido.presence.desktop import URGENCY_CRITICAL as URGENCY_CRITICAL
from vfido.presence.desktop import DesktopNotifier as DesktopNotifier
from vfido.presence.desktop import _Session as _Session
