"""The `vfido` command line (console script ``vfido = "vfido.cli:main"``).

:mod:`vfido.cli.main` builds the parser from the command groups (:mod:`vfido.cli.keystore`,
:mod:`vfido.cli.run`, :mod:`vfido.cli.ctl`...); :mod:`vfido.cli.common` holds what they share.
"""

# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
# (`vfido.cli` was one module; these were its names that other modules, tests and bench/ use.)
from vfido.cli.common import CliError, add_running_key_args, running_key
from vfido.cli.common import add_keystore_args as _add_keystore_args
from vfido.cli.common import keystore_dir as _keystore_dir
from vfido.cli.common import open_store as _open_store
from vfido.cli.main import build_parser, main
from vfido.cli.run import PRESENCE_MODES
from vfido.cli.run import config as _config
from vfido.cli.run import presence_broker as _presence

__all__ = [
    "PRESENCE_MODES",
    "CliError",
    "_add_keystore_args",
    "_config",
    "_keystore_dir",
    "_open_store",
    "_presence",
    "add_running_key_args",
    "build_parser",
    "main",
    "running_key",
]
