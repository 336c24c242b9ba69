"""Fault injection for crash-consistency tests: die at a precise point.

Enabled only through the environment variable ``VFIDO_FAULTS`` (never by a
command-line flag, so a user cannot switch it on by accident). The value is a
comma-separated list of rules ``<when>:<what>[@<n>]``:

``<when>``
    ``kill-after``: SIGKILL right after the matching write has committed and
    before the authenticator can send its reply (the worst moment for a
    client, which never learns the outcome); ``kill-before-commit``: SIGKILL
    inside the write transaction, after its statements ran and before
    ``COMMIT`` (the write must then be wholly absent).
``<what>``
    a keystore write method (``increment_counter``, ``put_credential``,
    ``delete_credential``, ``update_user``, ``put_state``, ``reset``,
    ``change_passphrase``), ``put_state=<key>`` for writes of one state key, or
    ``*`` for any write.
``@<n>``
    fire on the n-th matching write of this process (default: the first).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ENV = "VFIDO_FAULTS"

WRITE_METHODS = frozenset(
    {
        "put_credential",
        "delete_credential",
        "update_user",
        "increment_counter",
        "put_state",
        "reset",
        "change_passphrase",
    }
)
_WHEN = ("kill-after", "kill-before-commit")


@dataclass
class Rule:
    when: str  # "kill-after" | "kill-before-commit"
    what: str  # method name, "put_state=<key>" or "*"
    nth: int = 1
    seen: int = 0

    def matches(self, method: str, state_keys: tuple[str, ...]) -> bool:
        if self.what in ("*", method):
            return True
        return method == "put_state" and any(self.what == f"put_state={k}" for k in state_keys)


def parse(spec: str) -> list[Rule]:
    rules = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        when, sep, what = item.partition(":")
        nth = 1
        if "@" in what:
            what, _, count = what.rpartition("@")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"{ENV}: bad count in {item!r}")
            nth = int(count)
        method = what.split("=", 1)[0]
        if not sep or when not in _WHEN or (what != "*" and method not in WRITE_METHODS):
            raise ValueError(f"{ENV}: unknown rule {item!r}")
        if "=" in what and method != "put_state":
            raise ValueError(f"{ENV}: unknown rule {item!r}")
        rules.append(Rule(when, what, nth))
    return rules


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingStore:
    """Wraps a keystore; SIGKILLs the process at the writes named by the rules."""

    def __init__(self, store: Any, rules: list[Rule], die: Callable[[], None] = _die) -> None:
        self._store = store
        self._rules = rules
        self._die = die

    def _fire(self, method: str, state_keys: tuple[str, ...]) -> tuple[bool, bool]:
        """(kill before commit, kill after commit) for this call; counts matches."""
        before = after = False
        for rule in self._rules:
            if rule.matches(method, state_keys):
                rule.seen += 1
                if rule.seen == rule.nth:
                    if rule.when == "kill-before-commit":
                        before = True
                    else:
                        after = True
        return before, after

    def _call(self, method: str, state_keys: tuple[str, ...], *args: Any, **kwargs: Any) -> Any:
        before, after = self._fire(method, state_keys)
        if before:
            self._store.before_commit = self._die
        try:
            result = getattr(self._store, method)(*args, **kwargs)
        finally:
            if before:
                self._store.before_commit = None
        if after:
            self._die()
        return result

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in WRITE_METHODS or not callable(attribute):
            return attribute

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, (), *args, **kwargs)

        return wrapped

    def put_state(self, updates: Mapping[str, bytes | None]) -> None:
        self._call("put_state", tuple(updates), updates)

    def __enter__(self) -> KillingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._store.close()


def wrap(store: Any) -> Any:
    """``store`` itself, or a :class:`KillingStore` when ``VFIDO_FAULTS`` asks for one."""
    spec = os.environ.get(ENV, "")
    return KillingStore(store, parse(spec)) if spec else store
