"""Whether this run is CI, and what a test does when something it needs is missing.

On a developer's machine a test whose prerequisite is missing (root, qemu, dbus-daemon,
Chromium) is skipped with the reason. In CI it fails: there a missing prerequisite is a
missing install step, and a skipped test would hide it. ``.ci/run`` sets ``CI``.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: Values of ``$CI`` that mean "not CI" (case-insensitive; unset is the same).
NOT_CI = frozenset({"", "0", "false", "no"})


def in_ci() -> bool:
    """``$CI`` is set to something other than empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in NOT_CI


def unavailable(reason: str, *, in_ci_because: str = "CI must run this test") -> NoReturn:
    """Skip the calling test because ``reason``; under CI, fail it instead."""
    if in_ci():
        pytest.fail(f"{reason}: {in_ci_because}", pytrace=False)
    pytest.skip(reason)
