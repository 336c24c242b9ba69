"""The `vfido` command line (run by the console script ``vfido``, :mod:`vfido.entry`).

:mod:`vfido.cli.main` builds the parser from the command groups (:mod:`vfido.cli.keystore`,
:mod:`vfido.cli.run`, :mod:`vfido.cli.ctl`...); :mod:`vfido.cli.common` holds what they share.
"""

from vfido.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
