# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.cli.pin`."""

from vfido.cli.pin import *  # noqa: F403
from vfido.cli.pin import (  # noqa: F401
    FILE_FLAGS,
    MAX_PIN_BYTES,
    NEW_PIN_ENV,
    PIN_ENV,
    PinCliError,
    _describe,
    _read_pin,
    _with_client_pin,
    check_new_pin,
    cmd_change,
    cmd_set,
    cmd_status,
    register,
)
