"""The pytest plugin's entry point (``vfido.pytest_plugin``, named like its module so that
``-p vfido.pytest_plugin`` or ``pytest_plugins = ["vfido.pytest_plugin"]`` next to the
installed entry point load it once). The fixtures are :mod:`vfido.testing.pytest_plugin`'s."""

from vfido.testing.pytest_plugin import (
    pytest_configure,
    vfido_hid_key,
    vfido_key,
    vfido_key_factory,
    vfido_lint_key,
)

__all__ = [
    "pytest_configure",
    "vfido_hid_key",
    "vfido_key",
    "vfido_key_factory",
    "vfido_lint_key",
]
