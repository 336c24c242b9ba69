"""`vfido run` with a stopwatch at each hand-off of a request (for bench/entry.py ``hops``).

    python3 bench/hops.py OUT.json vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process after wrapping, without changing
them, the functions a request passes through: the transport's ``_handle`` of each datagram,
the runner's ``_call_handler`` (entry: the thread that answers has the request; exit: the
handler answered) and the runner's send of the response's last report.
At exit it writes, per request, the time from the datagram that completed the request to
each later point (microseconds) to OUT.json.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

import vfido.transports.udp as udp  # noqa: E402
from vfido.transports.runner import HidRunner  # noqa: E402

clock = time.perf_counter
marks: dict[str, float] = {}
rows: list[dict[str, float]] = []

_handle = udp.UdpTransport._handle


def timed_handle(self: udp.UdpTransport, datagram: bytes, source: Any = None) -> Any:
    marks["datagram"] = clock()
    job = _handle(self, datagram, source)  # a job to run (inline requests) or None
    marks["fed"] = clock()
    return job


udp.UdpTransport._handle = timed_handle  # type: ignore[method-assign]

_call = HidRunner._call_handler


def timed_call(self: HidRunner, request: Any, transaction: Any) -> bytes:
    start = clock()
    got = dict(marks)
    answer = _call(self, request, transaction)
    end = clock()
    pending.append((got, start, end))
    return answer


HidRunner._call_handler = timed_call  # type: ignore[method-assign]
pending: list[tuple[dict[str, float], float, float]] = []

_send = HidRunner._send


def timed_send(self: HidRunner, reports: Any) -> None:
    _send(self, reports)
    if pending and len(reports) > 0 and reports[0][4] != 0xBB:  # not a keepalive
        got, start, end = pending.pop()
        sent = clock()
        base = got.get("datagram", start)
        rows.append(
            {
                "datagram_to_handler": (start - base) * 1e6,
                "handler": (end - start) * 1e6,
                "handler_to_sent": (sent - end) * 1e6,
                "datagram_to_sent": (sent - base) * 1e6,
            }
        )


HidRunner._send = timed_send  # type: ignore[method-assign]


def dump() -> None:
    Path(sys.argv[1]).write_text(json.dumps(rows))


if __name__ == "__main__":
    atexit.register(dump)
    from vfido.cli import main

    sys.exit(main(["run", *sys.argv[2:]]))
