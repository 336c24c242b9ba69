"""Run `vfido` as a real subprocess (the service and the CLI) for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fido2.client import DefaultClientDataCollector, Fido2Client

from tests.rp import ORIGIN
from vfido.transport_choice import UDP_INSECURE_FLAG
from vfido.transports.udp import free_ports, open_udp_device

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"


def env(**extra: str) -> dict[str, str]:
    result = dict(os.environ)
    result["PYTHONPATH"] = str(ROOT) + os.pathsep + result.get("PYTHONPATH", "")
    result.update(extra)
    return result


def fresh_python(code: str) -> Any:
    """Run ``code`` (dedented) in a new interpreter with the checkout on its path; it
    prints one JSON value, returned decoded (for what a process imports or loads)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def vfido(
    args: Sequence[str],
    *,
    passphrase: str | None = PASSPHRASE,
    cwd: Path | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion (in ``cwd``, if given)."""
    e = env(**extra_env)
    if passphrase is not None:
        e["VFIDO_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "vfido", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=cwd,
    )


@dataclass
class Service:
    process: subprocess.Popen[str]
    port: int
    peer_port: int
    stderr_lines: list[str]
    _drain: threading.Thread

    @contextmanager
    def client(self, origin: str = ORIGIN) -> Iterator[Fido2Client]:
        """A python-fido2 client for ``origin`` talking UDP to this service (its device is
        closed afterwards)."""
        device = open_udp_device(port=self.port, peer_port=self.peer_port)
        try:
            yield Fido2Client(device, DefaultClientDataCollector(origin))
        finally:
            device.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._drain.join(timeout=5)
        return code


@contextmanager
def udp_service(
    args: Sequence[str],
    *,
    passphrase: str | None = PASSPHRASE,
    ready_timeout: float = 60.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Service]:
    """Start `vfido run --transport udp` on free ports and wait for its ready line.

    A ``--keystore`` is served with ``--udp-insecure-any-local-user`` (every local user can
    use it: fine for a test's throw-away keystore; the tests of that flag pass it themselves).
    """
    port, peer_port = free_ports(2)
    if "--keystore" in args and UDP_INSECURE_FLAG not in args:
        args = [*args, UDP_INSECURE_FLAG]
    e = env(**(extra_env or {}))
    if passphrase is not None:
        e["VFIDO_PASSPHRASE"] = passphrase
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vfido",
            "run",
            "--transport",
            "udp",
            "--udp-port",
            str(port),
            "--udp-peer-port",
            str(peer_port),
            *args,
        ],
        env=e,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading so the service never blocks on a full pipe
        # One reader from the start: select() on a buffered text stream misses
        # lines that arrived together with an earlier one.
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if "listening on udp" in line:
                ready.set()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    deadline = time.monotonic() + ready_timeout
    while not ready.wait(0.05):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait()
            drainer.join(timeout=5)
            raise RuntimeError("vfido run did not start:\n" + "\n".join(lines))
    service = Service(process, port, peer_port, lines, drainer)
    try:
        yield service
    finally:
        service.stop()
