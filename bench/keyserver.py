"""Serve N independent keys over UDP from one process, each wired as `vfido run` wires one
(for the 32-keys-in-one-process benchmark).

    python3 bench/keyserver.py [--control-dir DIR] PORT:PEER_PORT [PORT:PEER_PORT ...]

Each key is built from `vfido run --transport udp --ephemeral --presence auto --udp-port PORT
--udp-peer-port PEER_PORT` parsed by vfido's own command line: the same presence broker
(``vfido.cli.run.presence_broker``), Config (``vfido.cli.run.config``), keystore wrapper
(``vfido.testing.faults.wrap``), the key assembled by ``vfido.key.build_key`` (transport,
control socket with every command, the one ``status``) and logging (vfido's non-blocking stderr
handler at INFO, the authenticator and transports at WARNING). Only the process is shared (and
with it, since session 10, the one thread that reads every UDP key's socket, as in any process
serving several keys): one `vfido run` serves one key and owns the signal handlers, so this
runs the per-key part of ``vfido.service.run`` once per key. Prints ``ready`` on stdout once
every socket is bound; exits on SIGTERM/SIGINT or stdin EOF.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

from vfido import logsink  # noqa: E402
from vfido.cli import build_parser  # noqa: E402
from vfido.cli.common import open_store  # noqa: E402
from vfido.cli.run import config, presence_broker  # noqa: E402
from vfido.control import ControlServer  # noqa: E402
from vfido.key import Key, TransportOptions, build_key  # noqa: E402
from vfido.testing import faults  # noqa: E402


def serve_key(port: int, peer: int, control_dir: Path) -> tuple[Key, ControlServer]:
    args = build_parser().parse_args(
        [
            *("run", "--transport", "udp", "--ephemeral", "--presence", "auto"),
            *("--udp-port", str(port), "--udp-peer-port", str(peer)),
        ]
    )
    store = faults.wrap(open_store(args))
    options = TransportOptions(kind="udp", udp_port=port, udp_peer_port=peer)
    key = build_key(
        store,
        presence_broker(args),
        config(args),
        options,
        info={"name": f"udp-{port}"},
    )
    control = key.control_server(control_dir / f"udp-{port}.sock")
    control.start()
    key.start()
    return key, control


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--control-dir", type=Path)
    parser.add_argument("keys", nargs="+", metavar="PORT:PEER_PORT")
    args = parser.parse_args(argv)
    logsink.install(sys.stderr, logging.INFO, "vfido: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("vfido.authenticator").setLevel(logging.WARNING)
    logging.getLogger("vfido.transports").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="vfido-keyserver-") as scratch:
        control_dir = args.control_dir or Path(scratch)
        served = []
        for spec in args.keys:
            port, peer = (int(p) for p in spec.split(":"))
            served.append(serve_key(port, peer, control_dir))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())

        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
        print("ready", flush=True)
        stop.wait()
        for key, control in served:
            key.stop()
            control.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
