"""Logging that never stalls the key.

`vfido run` logs to stderr, and stderr may be a pipe whose reader has stopped reading (a
test harness that only wanted the ready line, a stuck journal). A plain
``logging.StreamHandler`` then blocks the thread that logs as soon as the pipe's buffer
(64 KiB on Linux) is full: the request path would freeze on a log line.

:class:`NonBlockingHandler` formats each record on the caller's thread (so the message is
what it was when logged). While the sink has room (``select`` says writable, nothing is
queued, the line fits in one atomic pipe write), the caller writes the line itself, so the
log keeps its order with what the process does next. Otherwise the line goes to a bounded
queue that one writer thread drains in order. When the queue is full the line is dropped
and counted; once the sink accepts lines again, the count is written. The caller never waits
for the sink. The writer writes to its own duplicate of the stream's file descriptor, so a write
stuck on the pipe holds no lock of ``sys.stderr`` (which the interpreter needs at exit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
import time
from typing import TextIO

#: Lines waiting for a slow sink before new ones are dropped.
CAPACITY = 2048
#: How long closing the handler (at exit) waits for queued lines to be written.
CLOSE_WAIT = 1.0
#: Longest line the caller writes itself: a pipe write of at most PIPE_BUF bytes into a
#: pipe that ``select`` calls writable does not block (POSIX: atomic; Linux: a free slot).
DIRECT_MAX = select.PIPE_BUF


class NonBlockingHandler(logging.Handler):
    """A stream handler whose :meth:`emit` never blocks on the stream."""

    def __init__(self, stream: TextIO, capacity: int = CAPACITY) -> None:
        super().__init__()
        self.stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._dropped = 0  # updated under self.lock (logging.Handler's own lock)
        self._reported = 0
        self._writer: threading.Thread | None = None
        self._closed = False
        self._write_lock = threading.Lock()  # one writer of the fd at a time (never waited for)
        self._count_lock = threading.Lock()  # held only to count, never during I/O
        self._queued = 0  # lines queued and not yet written
        self._fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
            self._fd = os.dup(stream.fileno())

    @property
    def dropped(self) -> int:
        """Lines dropped so far because the sink did not keep up."""
        return self._dropped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._write_now(line):
            return
        if self._writer is None:
            self._start()
        with self._count_lock:
            try:
                self._queue.put_nowait(line)
                self._queued += 1
            except queue.Full:
                self._dropped += 1

    def _write_now(self, line: str) -> bool:
        """Write ``line`` from the caller if that cannot block and keeps the order."""
        fd = self._fd
        if fd is None or self._queued or not self._write_lock.acquire(blocking=False):
            return False
        try:
            if self._queued:
                return False
            dropped = self._dropped
            data = self._with_drop_report(line).encode("utf-8", "backslashreplace")
            if len(data) > DIRECT_MAX or not select.select([], [fd], [], 0)[1]:
                return False
            os.write(fd, data)
            self._reported = dropped
            return True
        except (OSError, ValueError):
            return True  # a broken sink: nobody to tell, nothing to queue for
        finally:
            self._write_lock.release()

    def _with_drop_report(self, line: str) -> str:
        text = line + "\n"
        dropped = self._dropped
        if dropped != self._reported:
            text += (
                f"vfido: WARNING logging: {dropped - self._reported} log lines dropped "
                f"({dropped} in all): stderr was not being read\n"
            )
        return text

    def _start(self) -> None:
        with _START_LOCK:
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(target=self._write, name="vfido-log", daemon=True)
                self._writer.start()

    def _write(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            with self._write_lock:
                dropped = self._dropped
                text = self._with_drop_report(line)
                self._reported = dropped
                with contextlib.suppress(OSError, ValueError):  # a broken sink: nobody to tell
                    self._output(text)
            with self._count_lock:
                self._queued -= 1

    def _output(self, text: str) -> None:
        if self._fd is None:
            self.stream.write(text)
            self.stream.flush()
            return
        data = text.encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(self._fd, data) :]

    def flush(self) -> None:
        """Wait (at most :data:`CLOSE_WAIT` seconds) for queued lines to be written."""
        if self._writer is None:
            return
        deadline = time.monotonic() + CLOSE_WAIT
        while self._queued and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.flush()
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(queue.Full):  # else the writer is stuck (a daemon)
                self._queue.put_nowait(None)
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


_START_LOCK = threading.Lock()


def install(stream: TextIO, level: int, formatter: logging.Formatter) -> NonBlockingHandler | None:
    """``logging.basicConfig(stream=..., level=...)`` with ``formatter`` and a
    :class:`NonBlockingHandler`: like it, does nothing if the root logger already has a
    handler (a test's, an embedding program's)."""
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = NonBlockingHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
