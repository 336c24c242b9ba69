"""Serve N independent vfido keys over UDP from one process (for the UDP and 32-key benchmarks).

    python3 bench/keyserver.py PORT:PEER_PORT [PORT:PEER_PORT ...]

Each key is what ``vfido run --ephemeral --attestation none`` serves: an Authenticator on an
in-memory keystore behind a UdpTransport (its own HidRunner), auto-approving presence.
Prints ``ready`` on stdout once every socket is bound; exits on SIGTERM/SIGINT or stdin EOF.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authenticator.config import Config  # noqa: E402
from authenticator.device import Authenticator  # noqa: E402
from keystore.sqlite_store import SqliteKeyStore  # noqa: E402
from transports.udp import UdpTransport  # noqa: E402
from vfido.presence import AutoPresence  # noqa: E402


def main(argv: list[str]) -> None:
    transports = []
    for spec in argv:
        port, peer = (int(p) for p in spec.split(":"))
        handler = Authenticator(
            SqliteKeyStore.ephemeral(), AutoPresence(), Config(attestation="none")
        )
        transport = UdpTransport(handler, port=port, peer_port=peer)
        transport.start()
        transports.append(transport)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    stop.wait()
    for transport in transports:
        transport.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
