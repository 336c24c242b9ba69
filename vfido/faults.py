"""Fault injection for crash-consistency tests: die at a precise point.

Enabled only through the environment variable ``VFIDO_FAULTS`` (never by a
command-line flag, so a user cannot switch it on by accident). The value is a
comma-separated list of ``kill-after:<what>`` rules; ``<what>`` names a keystore
method (``increment_counter``, ``put_credential``, ``delete_credential``,
``put_state``...) or ``put_state=<key>`` for writes of one state key. The
process SIGKILLs itself right after the matching write has committed and
before the authenticator can send its reply: the worst moment for a client,
which never learns the outcome.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any

ENV = "VFIDO_FAULTS"


def parse(spec: str) -> set[str]:
    rules = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.startswith("kill-after:"):
            raise ValueError(f"{ENV}: unknown rule {item!r}")
        rules.add(item.removeprefix("kill-after:"))
    return rules


class KillingStore:
    """Wraps a keystore; SIGKILLs the process after the writes named by the rules."""

    def __init__(self, store: Any, rules: set[str]) -> None:
        self._store = store
        self._rules = rules

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in self._rules or not callable(attribute):
            return attribute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            self._die()
            return result

        return wrapped

    def put_state(self, updates: Mapping[str, bytes | None]) -> None:
        self._store.put_state(updates)
        if "put_state" in self._rules or any(f"put_state={k}" in self._rules for k in updates):
            self._die()

    def __enter__(self) -> KillingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._store.close()


def wrap(store: Any) -> Any:
    """``store`` itself, or a :class:`KillingStore` when ``VFIDO_FAULTS`` asks for one."""
    spec = os.environ.get(ENV, "")
    return KillingStore(store, parse(spec)) if spec else store
