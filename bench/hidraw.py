"""`vfido run --transport uhid` measured from outside over /dev/hidrawN (issue #16): the
same raw CTAPHID client and the same ratios as bench/entry.py's UDP rows, through the
kernel's UHID/hidraw path. Needs /dev/uhid, so it runs in the qemu guest of tests/vm:

    VFIDO_VM_CHECKS=bench_hidraw .venv/bin/python -m pytest tests/vm/test_bench_vm.py -m vm -s
    .venv/bin/python tests/vm/vmharness.py --checks bench_hidraw --out /tmp/vm-bench

(the guest check ``bench_hidraw`` calls :func:`run`; it is skipped unless named, so the
default vm suite does not pay for it). Where /dev/uhid exists, ``python3 bench/hidraw.py``
runs it directly.

Key-side cost = round trip - round trip of a CTAPHID_PING of about the same size, as a
ratio to the raw operation timed in alternating blocks with it (see bench/entry.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from entry import _ERROR, measure_key, raw_ops, read_response, stop  # noqa: E402

from vfido.transports.ctaphid import BROADCAST_CID, Command, encode_message  # noqa: E402

REPORT = 64
ERR_MSG_TIMEOUT = 0x05


class MessageTimeout(Exception):
    pass


class HidrawClient:
    """CTAPHID over a hidraw node: a write is the report-ID byte 0 + a 64-byte report, a read
    is one 64-byte report. The same interface as ``entry.RawClient``."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self.channel = BROADCAST_CID
        self._cid = b"\xff\xff\xff\xff"
        self.keepalives: list[tuple[float, int]] = []
        self.timeouts = 0

    def init(self) -> None:
        nonce = os.urandom(8)
        (report,) = encode_message(BROADCAST_CID, Command.INIT, nonce)
        os.write(self._fd, b"\0" + report)
        while True:
            data = os.read(self._fd, REPORT)
            if data[:4] == b"\xff\xff\xff\xff" and data[7:15] == nonce:
                self.channel = int.from_bytes(data[15:19], "big")
                self._cid = data[15:19]
                return

    def prepare(self, command: int, payload: bytes) -> list[bytes]:
        return [b"\0" + r for r in encode_message(self.channel, command, payload)]

    def call(self, reports: Sequence[bytes]) -> bytes:
        """One request; a CTAPHID_ERR_MSG_TIMEOUT (the emulated guest stalled for more than
        500 ms between two reports of the request) is counted and the request sent again."""
        while True:
            try:
                return self._call(reports)
            except MessageTimeout:
                self.timeouts += 1

    def _call(self, reports: Sequence[bytes]) -> bytes:
        fd = self._fd
        for report in reports:
            os.write(fd, report)
        command, data = read_response(
            functools.partial(os.read, fd, REPORT), self._cid, self.keepalives
        )
        if command == _ERROR and data[0] == ERR_MSG_TIMEOUT:
            raise MessageTimeout
        if command == _ERROR:
            raise RuntimeError(f"CTAPHID error 0x{data[0]:02x}")
        return data

    def cbor(self, payload: bytes) -> bytes:
        return self.call(self.prepare(Command.CBOR, payload))

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def vfido_uhid(workdir: Path, serial: str, timeout: float = 180.0) -> Iterator[str]:
    """`vfido run --transport uhid --ephemeral --presence auto` (default logging, as users
    run it); yields its hidraw node."""
    log = workdir / f"vfido-{serial}.log"
    argv = [sys.executable, "-m", "vfido", "run", "--transport", "uhid", "--ephemeral"]
    argv += ["--presence", "auto", "--serial", serial]
    argv += ["--control-socket", str(workdir / f"ctl-{serial}.sock")]
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=ROOT)
    try:
        end = time.monotonic() + timeout
        while True:
            found = re.search(r"hidraw: (/dev/hidraw\d+)", log.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"vfido run did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield found.group(1)
    finally:
        stop(proc)


def run(workdir: Path, blocks: int = 20) -> dict[str, Any]:
    """The getAssertion and makeCredential rows over hidraw (printed, and returned)."""
    out: dict[str, Any] = {"load": os.getloadavg()}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    raws = raw_ops(workdir)
    with vfido_uhid(workdir, "vfido-bench") as path:
        client = HidrawClient(path)
        try:
            client.init()
            rows = measure_key(client, raws, blocks, persistent=False)  # type: ignore[arg-type]
        finally:
            client.close()
    out["rows"] = [r.__dict__ for r in rows]
    out["message_timeouts"] = client.timeouts
    print(f"  requests resent after CTAPHID_ERR_MSG_TIMEOUT: {client.timeouts}", flush=True)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="vfido-hidraw-") as tmp:
        run(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 20)
