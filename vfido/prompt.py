# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.presence.terminal`."""

from vfido.presence.terminal import *  # noqa: F403
from vfido.presence.terminal import POLL as POLL
from vfido.presence.terminal import TTY as TTY
from vfido.presence.terminal import TerminalPrompt as TerminalPrompt
from vfido.presence.terminal import _ended as _ended
from vfido.presence.terminal import _split_line as _split_line
from vfido.presence.terminal import _write as _write
from vfido.presence.terminal import open_tty as open_tty
from vfido.presence.terminal import terminal_available as terminal_available
