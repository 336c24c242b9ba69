"""The `vfido` console script and ``python -m vfido``: :func:`vfido.cli.main`, with Ctrl-C
during start-up ending as quietly as later.

This module imports nothing of vfido's: the command's modules load inside :func:`main`,
where Ctrl-C (Python's KeyboardInterrupt landing inside an import printed a traceback, or a
RuntimeError from a half-made class) exits with 130 and nothing printed.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType


def main() -> int:
    """Run `vfido` with the process's arguments."""
    # Only where Ctrl-C would raise KeyboardInterrupt: a script that ignores SIGINT
    # (`vfido run &`) or a program with its own handler keeps it.
    quiet = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if quiet:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from vfido.cli import main as run
    finally:
        if quiet:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return run()


def _interrupted_while_loading(signum: int, frame: FrameType | None) -> None:
    os._exit(130)  # nothing is open or written yet
