"""`vfido run` that times its own request path, for benchmarks under a browser (issue #16).

    WRAP_OUT=times.json python3 bench/timed_key.py vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process after wrapping three methods:
``Authenticator.handle_cbor`` (one CTAP command), ``UhidTransport._dispatch`` (one UHID event
read) and ``UhidTransport._send_report`` (one report written). Each call is recorded with its
wall time (``time.perf_counter``) and the CPU time of its thread (``time.thread_time``);
when the key stops (SIGTERM ends `vfido run` normally) the records go to ``$WRAP_OUT`` as
JSON ``{"rec": [[what, first byte hex, start, wall s, cpu s, thread], ...], "cpu": [user,
system]}``. Wall much above CPU means the key waited for a processor (another process ran).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

from vfido.authenticator.device import Authenticator  # noqa: E402
from vfido.transports.uhid import UhidTransport  # noqa: E402

Record = tuple[str, str, float, float, float, str]
RECORDS: list[Record] = []


def timed(cls: type[Any], name: str, what: str) -> None:
    """Replace ``cls.name`` with a wrapper that appends a :data:`Record` per call."""
    original: Callable[..., Any] = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            first = args[0][:1].hex() if args and isinstance(args[0], bytes | bytearray) else ""
            RECORDS.append(
                (
                    what,
                    first,
                    wall,
                    time.perf_counter() - wall,
                    time.thread_time() - cpu,
                    threading.current_thread().name,
                )
            )

    setattr(cls, name, wrapper)


def dump(path: str) -> None:
    Path(path).write_text(json.dumps({"rec": RECORDS, "cpu": list(os.times()[:2])}))


if __name__ == "__main__":
    from vfido.cli import main

    timed(Authenticator, "handle_cbor", "handler")
    timed(UhidTransport, "_dispatch", "dispatch")
    timed(UhidTransport, "_send_report", "send")
    atexit.register(dump, os.environ["WRAP_OUT"])
    sys.exit(main(["run", *sys.argv[1:]]))
