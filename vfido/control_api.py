# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
"""Moved to :mod:`vfido.control.commands`."""

from vfido.control.commands import *  # noqa: F403
from vfido.control.commands import KeyParts as KeyParts
from vfido.control.commands import _algorithm as _algorithm
from vfido.control.commands import _b64_arg as _b64_arg
from vfido.control.commands import _bool_arg as _bool_arg
from vfido.control.commands import _int_arg as _int_arg
from vfido.control.commands import _json_value as _json_value
from vfido.control.commands import _public as _public
from vfido.control.commands import _str_arg as _str_arg
from vfido.control.commands import add_key_commands as add_key_commands
from vfido.control.commands import add_webauthn_commands as add_webauthn_commands
from vfido.control.commands import describe_record as describe_record
