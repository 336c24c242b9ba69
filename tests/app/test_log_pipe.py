"""`vfido run` never stalls on its own log (issue #16).

A harness that reads the ready line and then stops reading stderr leaves a pipe that fills
up (64 KiB on Linux). With ``-v`` every request logs lines; the key must keep answering,
dropping (and later counting) the lines the pipe cannot take.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from fido2.ctap2 import Ctap2
from fido2.hid import CtapHidDevice

from tests.service_helpers import env
from vfido.logsink import NonBlockingHandler
from vfido.transports.udp import UdpConnection, free_ports

PINGS = 6000  # each logs a DEBUG line of ~75 bytes: several times the pipe and the queue


def test_vfido_run_keeps_serving_when_nobody_reads_stderr(tmp_path: Path) -> None:
    port, peer = free_ports(2)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "vfido", "-v", "run", "--transport", "udp", "--ephemeral"),
            *("--presence", "auto", "--udp-port", str(port), "--udp-peer-port", str(peer)),
            *("--control-socket", str(tmp_path / "key.sock")),
        ],
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr
    try:
        for line in stderr:  # the ready line; then nobody reads stderr any more
            if b"listening on udp" in line:
                break
        connection = UdpConnection(port, peer, timeout=20.0)
        device = CtapHidDevice(connection.descriptor, connection)
        for i in range(PINGS):
            data = bytes([i & 0xFF]) * (i % 40)
            assert device.ping(data) == data
        ctap = Ctap2(device)
        made = ctap.make_credential(
            b"\x01" * 32,
            {"id": "example.com", "name": "Example"},
            {"id": b"user", "name": "user"},
            [{"type": "public-key", "alg": -7}],
        )
        assert made.auth_data.credential_data is not None
        connection.close()

        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(stderr.read()), daemon=True)
        reader.start()  # a reader again: the key reports what it had to drop
        process.terminate()
        assert process.wait(timeout=60) == 0
        reader.join(timeout=60)
        assert b"log lines dropped" in b"".join(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()


def test_handler_drops_and_counts_when_the_sink_is_stuck() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, True)
    with os.fdopen(write_fd, "w") as sink:
        handler = NonBlockingHandler(sink, capacity=4)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger("tests.log_pipe.stuck")
        log.propagate = False
        log.addHandler(handler)
        try:
            for i in range(20000):  # far more than the pipe + the queue hold
                log.warning("line %d %s", i, "x" * 60)
            assert handler.dropped > 0
        finally:
            log.removeHandler(handler)
            drained = io.BytesIO()
            os.set_blocking(read_fd, False)
            reader_done = threading.Event()

            def drain() -> None:
                while not reader_done.is_set():
                    try:
                        chunk = os.read(read_fd, 65536)
                    except BlockingIOError:
                        reader_done.wait(0.01)
                        continue
                    if not chunk:
                        return
                    drained.write(chunk)
                    if b"log lines dropped" in drained.getvalue():
                        return

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            log.addHandler(handler)
            log.warning("after")  # the first line written after drops carries the count
            log.removeHandler(handler)
            reader.join(timeout=60)
            reader_done.set()
            handler.close()
            os.close(read_fd)
        assert b"log lines dropped" in drained.getvalue()
