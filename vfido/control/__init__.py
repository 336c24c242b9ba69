"""The control socket of a running key (``vfido ctl``, ``vfido approve``, the dashboard).

* :mod:`~vfido.control.server`: :class:`ControlServer` (JSON lines on a private Unix socket),
  its errors and where sockets live.
* :mod:`~vfido.control.commands`: every command, registered in one place
  (:func:`~vfido.control.commands.register_commands`) and described once.
* :mod:`~vfido.control.client`: :class:`ControlClient` (one connection), :func:`find_key`,
  and :class:`KeyController`, the Python API over every command.
"""

from __future__ import annotations

from vfido.control.client import (
    ControlClient,
    KeyController,
    _check_client_dir,
    find_key,
    running_keys,
)
from vfido.control.server import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_LINE,
    MAX_WAIT,
    CommandError,
    ControlError,
    ControlServer,
    Handler,
    NotRunningError,
    _private_dir,
    socket_dir,
    socket_path,
)

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_LINE",
    "MAX_WAIT",
    "CommandError",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "Handler",
    "KeyController",
    "NotRunningError",
    "_check_client_dir",
    "_private_dir",
    "find_key",
    "running_keys",
    "socket_dir",
    "socket_path",
]
