"""The registry of presence modes: ``--presence MODE``, ``VirtualKey(presence=MODE)``, the
control socket's ``presence`` command and the dashboard all derive their choices from
:data:`MODES`.

A mode says which front ends ask the user when the key starts in it (:attr:`PresenceMode.
at_start`) and when the control socket switches to it (:attr:`PresenceMode.at_run_time`; None:
only at start), whether built-in user verification always fails, and whether a key run from
Python can use it. Adding a front end = its module in :mod:`vfido.presence` + one line in
:data:`MODES` (front-end modules are imported only when their mode is used).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vfido.presence.pending import FrontEnd

log = logging.getLogger("vfido")  # `vfido run`'s own warnings


class PresenceModeError(ValueError):
    """A presence mode that is unknown, or cannot be used here; one line saying what to do."""


FrontEnds = Callable[[float], "tuple[FrontEnd, ...]"]


@dataclass(frozen=True)
class PresenceMode:
    name: str
    #: For ``vfido run --help``: what the mode does ("" when the name says it).
    help: str
    #: The front ends when the key starts in this mode (the argument: ``--presence-delay``).
    at_start: FrontEnds
    #: The front ends when the control socket switches to it; None: only at start.
    at_run_time: FrontEnds | None
    #: Built-in user verification always fails (presence is still asked).
    uv_fails: bool = False
    #: A key run from Python (:class:`vfido.api.VirtualKey`) can use it.
    toolkit: bool = False
    #: Its approval can wait a delay (``--presence-delay``); in other modes a delay is an error.
    delayed: bool = False


def _auto(delay: float) -> tuple[FrontEnd, ...]:
    from vfido.presence.auto import AutoFrontEnd

    return (AutoFrontEnd(delay),)


def _deny(delay: float) -> tuple[FrontEnd, ...]:
    from vfido.presence.auto import DenyFrontEnd

    return (DenyFrontEnd(),)


def _manual(delay: float) -> tuple[FrontEnd, ...]:
    return ()  # only the control socket answers


def _prompt(delay: float) -> tuple[FrontEnd, ...]:
    from vfido.presence.terminal import TerminalPrompt, terminal_available

    if not terminal_available():
        raise PresenceModeError(
            "--presence prompt needs a terminal in the foreground: use --presence notify "
            "(desktop) or --presence manual (`vfido approve` / `vfido deny`)"
        )
    return (TerminalPrompt(),)


def _notify_at_start(delay: float) -> tuple[FrontEnd, ...]:
    from vfido.presence.desktop import DesktopNotifier
    from vfido.presence.terminal import TerminalPrompt, terminal_available

    fallback = TerminalPrompt() if terminal_available() else None
    notifier = DesktopNotifier(fallback=fallback)
    if not notifier.available():
        where = "on the terminal" if fallback else "with `vfido approve` / `vfido deny`"
        log.warning("no desktop notification service on the session bus: asking %s", where)
    return (notifier,)


def _notify(delay: float) -> tuple[FrontEnd, ...]:
    from vfido.presence.desktop import DesktopNotifier

    # no terminal fallback at run time: the key's terminal may be gone; the socket answers
    return (DesktopNotifier(fallback=None),)


#: Every presence mode, in the order ``vfido run --help`` lists them.
MODES: Final[dict[str, PresenceMode]] = {
    mode.name: mode
    for mode in (
        PresenceMode("auto", "approve everything", _auto, _auto, toolkit=True, delayed=True),
        PresenceMode("deny", "", _deny, _deny, toolkit=True),
        PresenceMode(
            "deny-uv",
            "approve presence, fail built-in UV",
            _auto,
            _auto,
            uv_fails=True,
            toolkit=True,
            delayed=True,
        ),
        PresenceMode("prompt", "terminal", _prompt, None),
        PresenceMode("notify", "desktop notification, else terminal", _notify_at_start, _notify),
        PresenceMode("manual", "only `vfido approve`/`deny`", _manual, _manual, toolkit=True),
    )
}
#: ``vfido run --presence``.
RUN_MODES: Final = tuple(MODES)
#: What the control socket (``vfido ctl presence MODE``, the dashboard) can switch to, in
#: alphabetical order (as the control socket's ``presence`` answer has always listed them).
RUNTIME_MODES: Final = tuple(sorted(name for name, mode in MODES.items() if mode.at_run_time))
#: ``VirtualKey(presence=...)`` (the interactive modes make no sense in a test).
TOOLKIT_MODES: Final = tuple(name for name, mode in MODES.items() if mode.toolkit)
#: The modes whose approval can wait a delay.
DELAYED_MODES: Final = tuple(name for name, mode in MODES.items() if mode.delayed)


def mode_spec(name: str) -> PresenceMode:
    """The mode ``name``. Raises :class:`PresenceModeError`."""
    try:
        return MODES[name]
    except KeyError:
        raise PresenceModeError(
            f"presence must be one of {', '.join(RUN_MODES)}, not {name!r}"
        ) from None


#: The longest approval delay (a day; 1e300 s overflowed the clock and broke every request).
MAX_DELAY: Final = 86400.0


def front_ends_for(
    mode: str, delay: float = 0.0, timeout: float | None = None
) -> tuple[tuple[FrontEnd, ...], bool]:
    """(front ends, uv_fails) when the control socket switches to ``mode``. Raises
    ValueError (:class:`PresenceModeError`).

    ``notify`` uses desktop notifications without a terminal fallback (the control socket
    can still answer); ``prompt`` needs the terminal of ``vfido run`` and is only available
    as the mode the key started with.
    """
    spec = MODES.get(mode)
    if spec is None or spec.at_run_time is None:
        raise PresenceModeError(
            f"presence mode must be one of {', '.join(RUNTIME_MODES)} at run time"
        )
    check_delay(spec, delay, timeout)
    return spec.at_run_time(delay), spec.uv_fails


def check_delay(spec: PresenceMode, delay: float, timeout: float | None = None) -> None:
    """A presence delay is 0-:data:`MAX_DELAY` seconds, only for a mode that waits one (a
    delay given to ``manual`` was dropped without a word), and shorter than the key's
    presence ``timeout`` (an approval that always comes after it: every request failed).
    Raises :class:`PresenceModeError`."""
    if not 0 <= delay <= MAX_DELAY:  # nan fails every comparison
        raise PresenceModeError(f"delay must be a number of seconds from 0 to {MAX_DELAY:.0f}")
    if delay and not spec.delayed:
        raise PresenceModeError(
            f"a delay goes with presence mode {' or '.join(DELAYED_MODES)}, not {spec.name}"
        )
    if delay and timeout is not None and delay >= timeout:
        raise PresenceModeError(
            f"a presence delay of {delay:g} s is not shorter than the presence timeout "
            f"({timeout:g} s): every request would time out"
        )


def presence_help() -> str:
    """The help of ``vfido run --presence``."""
    described = (f"{name} ({mode.help})" if mode.help else name for name, mode in MODES.items())
    return "how user presence is asked: " + ", ".join(described)


def describe_mode(status: dict[str, object]) -> str:
    """A key's presence as `vfido status` and the dashboard show it, from its status answer:
    the mode, its delay while there is one, and the timeout (``auto (delay 2.0 s, timeout
    30.0 s)``)."""
    delay = status.get("presence_delay")
    waits = f"delay {delay} s, " if delay else ""
    return f"{status.get('presence')} ({waits}timeout {status.get('presence_timeout')} s)"
