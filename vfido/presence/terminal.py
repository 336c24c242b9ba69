"""Terminal presence front end (``vfido run --presence prompt``).

Asks on the controlling terminal (``/dev/tty``), not on stdin/stdout, so it works with the
service's output redirected. Answers: ``y``/``yes`` approve, ``n``/``no`` or an empty line
deny; anything else asks again. Input typed before the question appears is discarded, so a
stray ``y`` cannot approve a request the user has not seen. The question is withdrawn when
the request ends some other way (``vfido approve``/``deny``, timeout, host cancel).

A service running in the background of its terminal (``vfido run &``) must not read the
terminal (the kernel would stop it with SIGTTIN): it then leaves the request to the control
socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import termios
import threading

from vfido.presence.pending import PendingPresence, question

log = logging.getLogger("vfido.prompt")  # the name `vfido run` has always logged under

TTY = "/dev/tty"
POLL = 0.1


def open_tty(path: str = TTY) -> int | None:
    """A file descriptor on the terminal if we may read it now (foreground), else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        foreground = os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        foreground = path != TTY  # a terminal that is not our controlling one (tests)
    if not foreground:
        os.close(fd)
        return None
    return fd


def terminal_available(path: str = TTY) -> bool:
    fd = open_tty(path)
    if fd is None:
        return False
    os.close(fd)
    return True


class TerminalPrompt:
    """Asks ``Sign in to example.com? [y/N]`` on the terminal."""

    name = "terminal"

    def __init__(self, path: str = TTY) -> None:
        self.path = path
        self._lock = threading.Lock()  # one question on the terminal at a time

    def available(self) -> bool:
        return terminal_available(self.path)

    def ask(self, pending: PendingPresence) -> None:
        while not self._lock.acquire(timeout=POLL):
            if pending.done:
                return
        try:
            fd = open_tty(self.path)
            if fd is None:
                log.warning(
                    "presence: no terminal to ask on: answer request %d with "
                    "`vfido approve` or `vfido deny`",
                    pending.id,
                )
                return
            try:
                self._converse(fd, pending)
            finally:
                os.close(fd)
        finally:
            self._lock.release()

    def _converse(self, fd: int, pending: PendingPresence) -> None:
        with contextlib.suppress(termios.error):
            termios.tcflush(fd, termios.TCIFLUSH)  # no answers typed before the question
        seconds = round(pending.remaining())
        _write(
            fd,
            f"\a\nvfido: {question(pending.request)}\n"
            f"vfido: [y/N] ({seconds} s; or `vfido approve` / `vfido deny`) ",
        )
        buffer = b""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if pending.done or pending.result is not None:
                _write(fd, f"\nvfido: {_ended(pending)}\n")
                return
            if not poller.poll(int(POLL * 1000)):
                continue
            try:
                chunk = os.read(fd, 256)
            except OSError:
                return
            if not chunk:  # Ctrl-D, or the terminal hung up: no, as an empty answer is,
                # whatever was typed without Enter (a half-typed "y" is no approval)
                if pending.answer(False, "terminal"):
                    _write(fd, "\nvfido: denied (end of input)\n")
                return
            buffer += chunk
            while b"\n" in buffer or b"\r" in buffer:
                line, buffer = _split_line(buffer)
                reply = line.decode("utf-8", "replace").strip().lower()
                if reply in ("y", "yes"):
                    granted = True
                elif reply in ("", "n", "no"):
                    granted = False
                else:
                    _write(fd, "vfido: answer y or n: ")
                    continue
                if pending.answer(granted, "terminal"):
                    _write(fd, f"vfido: {'approved' if granted else 'denied'}\n")
                else:
                    _write(fd, f"vfido: {_ended(pending)}\n")
                return


def _split_line(buffer: bytes) -> tuple[bytes, bytes]:
    cut = min(i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0)
    return buffer[:cut], buffer[cut + 1 :]


def _ended(pending: PendingPresence) -> str:
    result = pending.result
    source = pending.source or "elsewhere"
    if result is None:
        return "the request ended"
    if source == "timeout":
        return "no answer in time: denied"
    if source == "host":
        return f"the request was {result.value} by the host"
    return f"{result.value} by {source}"


def _write(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", "replace"))
