"""The `vfido` command line (console script ``vfido = "vfido.cli:main"``).

:mod:`vfido.cli.main` builds the parser from the command groups (:mod:`vfido.cli.keystore`,
:mod:`vfido.cli.run`, :mod:`vfido.cli.ctl`...); :mod:`vfido.cli.common` holds what they share.
This package's own module imports nothing of them: :func:`main` loads them itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vfido ARGV`. Ctrl-C while the command's modules load (the first 0.1 s or so)
    ends it quietly with 130, as it does later: Python's KeyboardInterrupt landed inside an
    import and printed a traceback (or a RuntimeError from a half-made class)."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main's
        from vfido.cli.main import main as run
    else:
        previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
        try:
            from vfido.cli.main import main as run
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    return run(argv)


def _interrupted_while_loading(signum: int, frame: FrameType | None) -> None:
    os._exit(130)  # nothing is open or written yet


def build_parser() -> argparse.ArgumentParser:
    """The `vfido` argument parser (:func:`vfido.cli.main.build_parser`)."""
    from vfido.cli.main import build_parser as build

    return build()
