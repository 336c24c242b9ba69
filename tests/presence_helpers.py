"""Helpers for the presence front end and control socket tests."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from vfido.authenticator.env import PresenceKind, PresenceRequest, PresenceResult
from vfido.presence import PresenceBroker
from vfido.presence import pending as broker_module


class Context:
    """A request context the test can cancel (what the transport's transaction does)."""

    channel = 1

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.keepalives: list[int] = []

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        return self.cancelled.wait(timeout)

    def set_keepalive(self, status: int) -> None:
        self.keepalives.append(status)


SIGN_IN = PresenceRequest(PresenceKind.AUTHENTICATE, "example.com", "alice")
REGISTER = PresenceRequest(PresenceKind.REGISTER, "example.org", "bob")


class Asking:
    """``broker.request_presence`` running on a thread; ``result()`` joins it."""

    def __init__(
        self,
        broker: PresenceBroker,
        request: PresenceRequest = SIGN_IN,
        timeout: float = 30.0,
        context: Context | None = None,
    ) -> None:
        self.context = context or Context()
        self._result: list[PresenceResult] = []
        self._thread = threading.Thread(
            target=lambda: self._result.append(
                broker.request_presence(request, self.context, timeout)
            ),
            daemon=True,
        )
        self._thread.start()

    def result(self, timeout: float = 60.0) -> PresenceResult:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "request_presence did not return"
        return self._result[0]


def as_other_user(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child as uid/gid 65534 (nobody) when we are root, else directly;
    returns its result (pickled through a pipe) or raises AssertionError with its exception."""
    if os.geteuid() != 0:
        return fn()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = b"ok:" + pickle.dumps(fn())
        except BaseException as exc:
            data = f"error:{type(exc).__name__}: {exc}".encode()
            code = 1
        finally:
            os.write(write_fd, data)
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data.startswith(b"ok:"):
        raise AssertionError(data.decode(errors="replace"))
    return pickle.loads(data[3:])


class ScriptedUser:
    """A user scripted by a test, answering through the service's real :class:`PresenceBroker`.

    ``presence`` is what the authenticator is given; ``approve()``/``deny()`` answer the one
    pending request the way ``vfido approve``/``vfido deny`` do.
    """

    def __init__(self) -> None:
        self.presence = PresenceBroker(mode="manual")

    @property
    def pending(self) -> PresenceRequest | None:
        pendings = self.presence.pending()
        return pendings[0].request if pendings else None

    def wait_pending(self, timeout: float) -> PresenceRequest | None:
        pendings = self.presence.wait_pending(timeout)
        return pendings[0].request if pendings else None

    def _answer(self, granted: bool) -> bool:
        try:
            self.presence.answer(granted, None, "test")
        except LookupError:
            return False
        return True

    def approve(self) -> bool:
        return self._answer(True)

    def deny(self) -> bool:
        return self._answer(False)


def wait_workers_idle(timeout: float = 30.0) -> None:
    """Until every presence front end worker has finished its job (a front end may still be
    withdrawing its prompt when the request returns)."""
    deadline = time.monotonic() + timeout
    while broker_module._WORKERS.busy:
        assert time.monotonic() < deadline, "front end workers still busy"
        time.sleep(0.01)
