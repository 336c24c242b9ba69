"""The runner's own cost of a CBOR request beside a PING's (issue #16, a breakdown).

    python3 bench/runner_path.py [--n 20000] [--rounds 3]

In-process, warm, one thread: ``HidRunner(inline_requests=True)`` (as `vfido run`'s UDP
transport drives it) fed the three reports of ``entry.py``'s getAssertion request, whose
handler returns a fixed 205-byte answer at once, against a PING of the size ``entry.py``
subtracts (the average of request and response). What the runner adds to a CBOR request
(its transaction, the job, the handler call, one more response report) beyond the framing a
PING pays too: the part of the ``transport`` rows' cached answer that is not the socket.
Medians of ``n`` round trips per round, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import get_assertion_request  # noqa: E402

from vfido.authenticator.env import RequestContext  # noqa: E402
from vfido.transports.ctaphid import BROADCAST_CID, Command, encode_message  # noqa: E402
from vfido.transports.runner import HidRunner  # noqa: E402

ANSWER = b"\x00" + bytes(204)


class FixedAnswer:
    """A handler that answers every CBOR request with :data:`ANSWER`."""

    def handle_cbor(self, payload: bytes, transaction: RequestContext) -> bytes:
        return ANSWER

    def handle_msg(self, payload: bytes, transaction: RequestContext) -> bytes:
        return b"\x90\x00"

    def wink(self) -> None:
        pass

    def power_cycle(self) -> None:
        pass


def run(n: int, rounds: int) -> list[tuple[float, float]]:
    sent: list[bytes] = []
    runner = HidRunner(FixedAnswer(), sent.append, inline_requests=True)
    try:
        runner.feed(encode_message(BROADCAST_CID, Command.INIT, os.urandom(8))[0])
        channel = int.from_bytes(sent[-1][15:19], "big")
        request = get_assertion_request(os.urandom(32), os.urandom(70))
        cbor = encode_message(channel, Command.CBOR, request)
        ping = encode_message(channel, Command.PING, bytes((len(request) + len(ANSWER)) // 2))

        def median_us(reports: Sequence[bytes]) -> float:
            times = []
            for _ in range(n):
                start = time.perf_counter()
                for report in reports:
                    job = runner.feed(report)
                    if job is not None:
                        job()
                times.append(time.perf_counter() - start)
                if len(sent) < 3:  # the answer's reports (205 bytes: four; the PING's 173: three)
                    raise RuntimeError(f"the runner answered with {len(sent)} reports")
                sent.clear()
            return statistics.median(times) * 1e6

        return [(median_us(cbor), median_us(ping)) for _ in range(rounds)]
    finally:
        runner.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    for cbor_us, ping_us in run(options.n, options.rounds):
        print(
            f"CBOR request {cbor_us:6.2f} us, PING {ping_us:6.2f} us, difference "
            f"{cbor_us - ping_us:5.2f} us"
        )
