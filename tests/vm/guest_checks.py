"""Checks run INSIDE the vfido test guest (real kernel with UHID), as root, in a chroot of the host.

Started by tests/vm/init.sh with the host's Python and ``PYTHONPATH`` = the checkout. Each
check records ``{"ok": bool, "detail": str, "data": {...}, "seconds": float}`` under its name
in ``$VFIDO_OUT/results.json`` (rewritten after every check, so a crash leaves partial
results). The pytest side (tests/vm/test_uhid_vm.py) asserts on them, one test per check.

``VFIDO_CHECKS`` (comma-separated names) limits which checks run; empty = all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OUT = Path(os.environ.get("VFIDO_OUT", "/tmp/vfido-out"))
CHECKOUT = Path(os.environ.get("VFIDO_CHECKOUT", str(Path(__file__).resolve().parents[2])))
PYTHON = os.environ.get("VFIDO_PYTHON", sys.executable)
SELECTED = {c for c in os.environ.get("VFIDO_CHECKS", "").split(",") if c}
HERE = Path(__file__).resolve().parent

RESULTS: dict[str, Any] = {"checks": {}, "info": {}}
CHECKS: list[tuple[str, Callable[[dict[str, Any]], str]]] = []


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def save() -> None:
    tmp = OUT / "results.json.part"
    tmp.write_text(json.dumps(RESULTS, indent=1, default=str))
    tmp.replace(OUT / "results.json")


def log(*args: object) -> None:
    print(f"[{uptime():8.2f}]", *args, flush=True)


def check(
    name: str,
) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    def register(fn: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        CHECKS.append((name, fn))
        return fn

    return register


def run_checks() -> None:
    for name, fn in CHECKS:
        if SELECTED and name not in SELECTED:
            continue
        data: dict[str, Any] = {}
        log(f"=== {name}")
        start = time.monotonic()
        try:
            detail = fn(data)
            ok = True
        except Exception as exc:
            ok = False
            detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        seconds = time.monotonic() - start
        RESULTS["checks"][name] = {"ok": ok, "detail": detail, "data": data, "seconds": seconds}
        log(f"=== {name}: {'OK' if ok else 'FAILED'} ({seconds:.1f}s) {detail[:2000]}")
        save()


def sh(cmd: list[str], *, input: bytes | None = None, timeout: float = 60, **kw: Any) -> str:
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False, **kw)
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {out[-1500:]} {err[-1500:]}")
    return out + err


# ---------------------------------------------------------------------------------------------
# Keys: an in-process UhidTransport with a trivial handler, and `vfido run` subprocesses.


class EchoHandler:
    """A trivial CtapHandler: CBOR answers status 0 + the request, MSG answers 9000."""

    def handle_cbor(self, request: bytes, transaction: Any) -> bytes:
        return b"\x00" + request

    def handle_msg(self, apdu: bytes, transaction: Any) -> bytes:
        return b"\x90\x00"

    def wink(self) -> None:
        pass

    def power_cycle(self) -> None:
        pass


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def find_fido2_device(serial: str) -> Any:
    from fido2.hid import CtapHidDevice

    for dev in CtapHidDevice.list_devices():
        if dev.descriptor.serial_number == serial:
            return dev
    return None


class VfidoProcess:
    """`python3 -m vfido run --transport uhid --ephemeral --presence auto --serial S`."""

    def __init__(self, serial: str, extra: list[str] | None = None) -> None:
        self.serial = serial
        self.cmd = [
            PYTHON,
            "-m",
            "vfido",
            "run",
            "--transport",
            "uhid",
            "--ephemeral",
            "--presence",
            "auto",
            "--serial",
            serial,
            *(extra or []),
        ]
        self.stderr_path = OUT / f"vfido-{serial}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.hidraw: str | None = None

    def start(self, timeout: float = 60.0) -> str:
        err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=CHECKOUT, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        err.close()

        def ready() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vfido exited {self.proc.returncode}: {self.stderr_path.read_text()[-3000:]}"
                )
            m = re.search(r"hidraw: (/dev/hidraw\d+)", self.stderr_path.read_text(errors="replace"))
            return m.group(1) if m else None

        self.hidraw = wait_for(ready, timeout, f"vfido run {self.serial}")
        log(f"vfido {self.serial} at {self.hidraw}")
        return self.hidraw

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def vfido_key(serial: str) -> Iterator[VfidoProcess]:
    key = VfidoProcess(serial)
    try:
        key.start()
        yield key
    finally:
        key.stop()


def vfido_available() -> bool:
    return (CHECKOUT / "vfido" / "cli.py").exists()


# ---------------------------------------------------------------------------------------------
# Checks


@check("kernel_uhid")
def kernel_uhid(data: dict[str, Any]) -> str:
    data["uname"] = os.uname().release
    data["boot_seconds"] = RESULTS["info"].get("boot_seconds")
    if not Path("/dev/uhid").exists():
        raise RuntimeError("/dev/uhid missing in the guest")
    return f"kernel {data['uname']}, /dev/uhid present"


@check("uhid_create_raw")
def uhid_create_raw(data: dict[str, Any]) -> str:
    """UHID_CREATE2 by hand with transports.uhid's encoders: hidraw appears, tools list it."""
    from transports import uhid

    serial = "vfido-raw-1"
    fd = os.open("/dev/uhid", os.O_RDWR)
    try:
        os.write(
            fd,
            uhid.encode_create2(
                name="vfido raw probe",
                phys="vfido/raw",
                uniq=serial,
                vendor_id=0x1209,
                product_id=0x0001,
            ),
        )
        path = wait_for(lambda: uhid.find_hidraw(serial), 10, "hidraw node")
        data["hidraw"] = path
        listing = sh(["fido2-token", "-L"])
        data["fido2_token_L"] = listing
        if path not in listing:
            raise RuntimeError(f"fido2-token -L does not list {path}: {listing}")
        from fido2.hid.linux import get_descriptor

        desc = get_descriptor(path)
        data["descriptor"] = repr(desc)
        if (desc.vid, desc.pid, desc.serial_number) != (0x1209, 0x0001, serial):
            raise RuntimeError(f"unexpected descriptor {desc}")
        if (desc.report_size_in, desc.report_size_out) != (64, 64):
            raise RuntimeError(f"unexpected report sizes {desc}")
    finally:
        os.write(fd, uhid._event(uhid.UhidEventType.DESTROY))
        os.close(fd)
    wait_for(lambda: uhid.find_hidraw(serial) is None, 10, "hidraw node removal")
    return f"{path} listed by fido2-token -L and python-fido2; removed after UHID_DESTROY"


@check("uhid_transport_echo")
def uhid_transport_echo(data: dict[str, Any]) -> str:
    """UhidTransport + HidRunner with an echo handler, driven by python-fido2 via hidraw."""
    from fido2.hid import CTAPHID

    from transports.uhid import UhidTransport

    serial = "vfido-echo-1"
    transport = UhidTransport(EchoHandler(), serial=serial)
    transport.start()
    try:
        path = wait_for(transport.hidraw_path, 10, "hidraw node")
        data["hidraw"] = path
        dev = wait_for(lambda: find_fido2_device(serial), 10, "python-fido2 device")
        data["capabilities"] = dev.capabilities
        data["version"] = list(dev.device_version)
        payload = bytes(range(256)) * 4  # multi-packet
        if dev.ping(payload) != payload:
            raise RuntimeError("PING echo mismatch")
        cbor = bytes([0x04]) + b"x" * 300
        reply = dev.call(CTAPHID.CBOR, cbor)
        if reply != b"\x00" + cbor:
            raise RuntimeError(f"CBOR echo mismatch: {reply[:20].hex()}")
        dev.close()
        listing = sh(["fido2-token", "-L"])
        data["fido2_token_L"] = listing
        if path not in listing:
            raise RuntimeError(f"fido2-token -L does not list {path}")
    finally:
        transport.stop()
    wait_for(lambda: transport.hidraw_path() is None, 10, "hidraw removal")
    return f"INIT + 1 KiB PING + CBOR echo via {path}"


# @@MORE-CHECKS@@


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS["info"]["boot_seconds"] = uptime()
    RESULTS["info"]["python"] = sys.version
    RESULTS["info"]["vfido_cli"] = vfido_available()
    save()
    log("guest checks start", sys.executable, CHECKOUT)
    run_checks()
    RESULTS["info"]["total_guest_seconds"] = uptime()
    RESULTS["info"]["complete"] = True
    save()
    log("guest checks done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
