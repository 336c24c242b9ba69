"""``vfido run`` as a subprocess for tests that want the key in another process
(:meth:`vfido.testing.virtual_key.VirtualKey.service`): UDP, a Unix socket or UHID."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.hid import CtapHidDevice

from vfido.authenticator.behaviours import RawValue
from vfido.testing.common import (
    DEFAULT_ORIGIN,
    Credential,
    VirtualKeyError,
    _serials,
    open_hidraw,
)
from vfido.transport_choice import UDP_INSECURE_FLAG
from vfido.transport_kinds import RUN_KINDS
from vfido.transports.udp import free_ports

if TYPE_CHECKING:
    from vfido.control.client import KeyController


#: The folder this vfido is imported from (the checkout, or site-packages): the `vfido run`
#: subprocess gets it first on its PYTHONPATH.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


#: The ``vfido run`` processes started here and not stopped yet: their folders, and the
#: process that started each (a forked child exiting must not stop its parent's).
_RUNNING: dict[subprocess.Popen[str], tuple[Path, int]] = {}


@atexit.register
def _stop_left_running() -> None:
    """At exit, stop the services a test started and never stopped (a ``start()`` without
    ``with``, a test that failed before its ``stop()``): they would run on, orphaned, on the
    CI machine. A process killed outright (SIGKILL) runs no exit handler."""
    for process, (folder, started_by) in list(_RUNNING.items()):
        if started_by != os.getpid():
            continue
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)
        _RUNNING.pop(process, None)


class ServiceKey:
    """A ``vfido run`` subprocess (see :meth:`VirtualKey.service`); stopped by ``stop()``,
    at the end of ``with``, or at the latest when this interpreter exits."""

    def __init__(
        self,
        *,
        transport: str,
        keystore: str | os.PathLike[str] | None,
        passphrase: str | None,
        presence: str,
        uv: bool,
        attestation: str | None,
        zero_counter: bool,
        serial: str | None,
        behaviours: Mapping[str, RawValue] | None,
        extra_args: Sequence[str],
        ready_timeout: float,
        mldsa: bool = False,
    ) -> None:
        if transport not in RUN_KINDS:
            raise ValueError(f"transport must be one of {', '.join(RUN_KINDS)}")
        if keystore is not None and passphrase is None:
            raise ValueError("a keystore directory needs its passphrase")
        if transport == "udp" and keystore is not None and UDP_INSECURE_FLAG not in extra_args:
            raise ValueError(
                "UDP serves the key to every local user: serve a keystore with "
                f"transport='unix' (or pass extra_args=['{UDP_INSECURE_FLAG}'])"
            )
        self.transport = transport
        self.serial = serial or f"vfido-svc-{os.getpid()}-{next(_serials)}"
        ports = free_ports(2) if transport == "udp" else [None, None]
        self.udp_port: int | None = ports[0]
        self.udp_peer_port: int | None = ports[1]
        self._tmp = Path(tempfile.mkdtemp(prefix="vfido-service-"))
        #: The key's control socket (``vfido status --socket PATH``, ``vfido approve ...``).
        self.control_socket = self._tmp / "control.sock"
        #: The Unix socket of a ``transport="unix"`` service (None otherwise).
        self.unix_socket = self._tmp / "key.ctaphid" if transport == "unix" else None
        args = ["run", "--transport", transport, "--presence", presence]
        args += ["--control-socket", str(self.control_socket)]
        args += ["--keystore", os.fspath(keystore)] if keystore is not None else ["--ephemeral"]
        if transport == "udp":
            args += ["--udp-port", str(self.udp_port), "--udp-peer-port", str(self.udp_peer_port)]
        elif transport == "unix":
            args += ["--unix-socket", str(self.unix_socket)]
        else:
            args += ["--serial", self.serial]
        if uv:
            args.append("--uv")
        if attestation is not None:
            args += ["--attestation", attestation]
        if zero_counter:
            args.append("--zero-counter")
        if mldsa:
            args.append("--mldsa")
        for behaviour, value in (behaviours or {}).items():
            if value is None or value is True:
                args += ["--behaviour", behaviour]
            elif value is not False:
                args += ["--behaviour", f"{behaviour}={value}"]
        self.argv = [sys.executable, "-m", "vfido", "-v", *args, *extra_args]
        self._passphrase = passphrase
        self._ready_timeout = ready_timeout
        self.process: subprocess.Popen[str] | None = None
        #: stderr of the service, line by line (it logs each CTAP command with ``-v``).
        self.log: list[str] = []
        self._drain: threading.Thread | None = None
        self._ready = threading.Event()
        self._hidraw: str | None = None
        self._devices: list[CtapHidDevice] = []
        self._device: CtapHidDevice | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"ServiceKey({self.transport}, pid={pid})"

    def __enter__(self) -> ServiceKey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServiceKey:
        env = dict(os.environ)
        # The subprocess imports this same vfido, installed or not.
        root = str(IMPORT_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        if self._passphrase is not None:
            env["VFIDO_PASSPHRASE"] = self._passphrase
            self._passphrase = None
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _RUNNING[self.process] = (self._tmp, os.getpid())
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + self._ready_timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                tail = "\n".join(self.log[-20:])
                raise VirtualKeyError(f"vfido run did not start:\n{tail}")
        if self.transport == "uhid" and self._hidraw is None:
            self.stop()
            raise VirtualKeyError("vfido run made no hidraw node:\n" + "\n".join(self.log[-20:]))
        return self

    def _read_log(self) -> None:
        # One reader from the start, so the service never blocks on a full pipe.
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.rstrip("\n")
            self.log.append(line)
            if line.startswith(("vfido: listening on udp", "vfido: listening on unix")):
                self._ready.set()
            if line.startswith("hidraw: "):  # "unknown" when the kernel made no node
                match = re.match(r"hidraw: (/dev/hidraw\d+)", line)
                self._hidraw = match.group(1) if match else None
                self._ready.set()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the service; returns its exit status."""
        devices, self._devices, self._device = self._devices, [], None
        for device in devices:
            device.close()
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            try:
                code = self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            if self._drain is not None:
                self._drain.join(timeout=5)
            _RUNNING.pop(self.process, None)
        shutil.rmtree(self._tmp, ignore_errors=True)
        return code

    @property
    def hidraw_path(self) -> str | None:
        """``/dev/hidrawN`` of a UHID service (None over UDP)."""
        return self._hidraw

    def open_device(self) -> CtapHidDevice:
        """A new python-fido2 device on the service (closed when it stops)."""
        if self.transport == "udp":
            from vfido.transports.udp import open_udp_device

            assert self.udp_port is not None and self.udp_peer_port is not None
            device = open_udp_device(self.udp_port, self.udp_peer_port)
        elif self.unix_socket is not None:
            from vfido.transports.unix import open_unix_device

            device = open_unix_device(self.unix_socket)
        else:
            if self._hidraw is None:
                raise VirtualKeyError("the service reported no hidraw node")
            device = open_hidraw(self._hidraw)
        self._devices.append(device)
        return device

    @property
    def device(self) -> CtapHidDevice:
        """A python-fido2 device on the service (opened once)."""
        if self._device is None:
            self._device = self.open_device()
        return self._device

    def client(
        self, origin: str = DEFAULT_ORIGIN, *, user_interaction: UserInteraction | None = None
    ) -> Fido2Client:
        """A python-fido2 client for ``origin`` on :attr:`device`."""
        return Fido2Client(
            self.device,
            client_data_collector=DefaultClientDataCollector(origin),
            user_interaction=user_interaction or UserInteraction(),
        )

    def control(self, command: str, **args: Any) -> dict[str, Any]:
        """One call on the service's control socket (``status``, ``approve``...)."""
        from vfido.control import ControlClient

        with ControlClient(self.control_socket) as client:
            return client.call(command, **args)

    def controller(self) -> KeyController:
        """A :class:`vfido.control.KeyController` on the service (close it after use)."""
        from vfido.control.client import KeyController

        return KeyController(self.control_socket)

    def credentials(self) -> list[Credential]:
        """The discoverable credentials the service holds, oldest first."""
        items = self.control("credentials", public_key=True)["credentials"]
        return sorted(
            (Credential.from_control(item) for item in items),
            key=lambda c: (c.created, c.credential_id),
        )

    def approve(self, wait: float = 10.0) -> dict[str, Any]:
        """Approve the pending request (``presence="manual"``)."""
        return self.control("approve", wait=wait, timeout=wait + 10)

    def deny(self, wait: float = 10.0) -> dict[str, Any]:
        """Deny the pending request (``presence="manual"``)."""
        return self.control("deny", wait=wait, timeout=wait + 10)
