"""Act as another local user (uid/gid 65534, "nobody") in a test: the attacker on the same machine.

:func:`as_other_user` forks; the child drops to uid/gid 65534 (no supplementary groups) and
runs a function; its result or exception comes back through a pipe. No exec: the project's
interpreter may live where another user cannot read it (so may the standard library: what
the function imports lazily must be imported before, as ``encodings.idna`` is here for
``getaddrinfo``). A test should check *which* error the other user got, so that a failure
to import is never mistaken for the access check at work. Needs root: elsewhere the test is
skipped with the reason, except under CI (``$CI`` set), where it fails.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (the other user cannot import it lazily: see below)
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.ci import unavailable

OTHER_UID = 65534


def require_root() -> None:
    """Skip (or, under CI, fail) a test that must act as another user."""
    if os.geteuid() == 0:
        return
    unavailable("acting as another user (uid 65534) needs root")


@dataclass(frozen=True)
class Outcome:
    """What the function did as the other user: its result, or the exception it raised."""

    value: Any = None
    error: str | None = None  # "TypeName: message" of the exception, if any

    @property
    def ok(self) -> bool:
        return self.error is None


def as_other_user(function: Callable[[], Any], timeout: float = 60.0) -> Outcome:
    """Run ``function`` in a child process as uid/gid 65534 and report what happened."""
    require_root()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            try:
                outcome = Outcome(value=function())
            except BaseException as exc:
                outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
            try:
                data = pickle.dumps(outcome)
            except Exception:
                data = pickle.dumps(Outcome(value=repr(outcome.value), error=outcome.error))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the other user's process ran longer than {timeout} s")
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError("the other user's process died without an answer")
    outcome: Outcome = pickle.loads(b"".join(chunks))
    return outcome
