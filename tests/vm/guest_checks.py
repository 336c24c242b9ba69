"""Checks run INSIDE the vfido test guest (real kernel with UHID), as root, in a chroot of the host.

Started by tests/vm/init.sh with the checkout's own venv interpreter (``.venv/bin/python``,
reached through the 9p share of the checkout) and ``PYTHONPATH`` = the checkout. Each
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
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import provenance
import trace_protocols

OUT = Path(os.environ.get("VFIDO_OUT", "/tmp/vfido-out"))
CHECKOUT = Path(os.environ.get("VFIDO_CHECKOUT", str(Path(__file__).resolve().parents[2])))
PYTHON = os.environ.get("VFIDO_PYTHON", sys.executable)
SELECTED = {c for c in os.environ.get("VFIDO_CHECKS", "").split(",") if c}
HERE = Path(__file__).resolve().parent
# How long a browser gets to finish the page (idle machine: Chromium ~30 s, Firefox ~50 s).
PAGE_TIMEOUT = float(os.environ.get("VFIDO_PAGE_TIMEOUT", "150"))

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
    return out


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


def open_hidraw(path: str | None) -> Any:
    """A python-fido2 device for one hidraw node (without touching the other keys)."""
    from fido2.hid import CtapHidDevice
    from fido2.hid.linux import get_descriptor, open_connection

    if path is None:
        raise RuntimeError("no hidraw path")
    descriptor = get_descriptor(path)
    return CtapHidDevice(descriptor, open_connection(descriptor))


class VfidoProcess:
    """`python3 -m vfido run --transport uhid --ephemeral --presence auto --serial S`."""

    def __init__(self, serial: str, extra: list[str] | None = None) -> None:
        self.serial = serial
        self.cmd = [
            PYTHON,
            "-m",
            "vfido",
            "-v",
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
        self.ready_seconds = 0.0
        self.launched = 0.0

    def start(self, timeout: float = 60.0) -> str:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=CHECKOUT, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        err.close()
        self.launched = time.monotonic()

    def wait_ready(self, timeout: float = 60.0) -> str:
        def ready() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vfido exited {self.proc.returncode}: {self.stderr_path.read_text()[-3000:]}"
                )
            m = re.search(r"hidraw: (/dev/hidraw\d+)", self.stderr_path.read_text(errors="replace"))
            return m.group(1) if m else None

        self.hidraw = wait_for(ready, timeout, f"vfido run {self.serial}")
        self.ready_seconds = time.monotonic() - self.launched
        RESULTS["info"].setdefault("vfido_ready_seconds", []).append(round(self.ready_seconds, 2))
        log(f"vfido {self.serial} at {self.hidraw} after {self.ready_seconds:.1f} s")
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
def vfido_key(
    serial: str, extra: list[str] | None = None, ready_timeout: float = 60.0
) -> Iterator[VfidoProcess]:
    key = VfidoProcess(serial, extra)
    try:
        key.start(ready_timeout)
        yield key
    finally:
        key.stop()


_SHARED: dict[str, VfidoProcess] = {}


@contextmanager
def shared_vfido_key() -> Iterator[VfidoProcess]:
    """One `vfido run` reused by several checks (start-up costs ~20 s in the guest).

    Each check uses its own RP ids, so their credentials do not meet. Stopped at the end.
    """
    key = _SHARED.get("key")
    if key is None or key.proc is None or key.proc.poll() is not None:
        key = VfidoProcess("vfido-vm-shared")
        key.start()
        _SHARED["key"] = key
    yield key


def stop_shared_key() -> None:
    key = _SHARED.pop("key", None)
    if key is not None:
        key.stop()


def vfido_available() -> bool:
    return (CHECKOUT / "vfido" / "__main__.py").exists()  # `python -m vfido`


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
    from vfido.transports import uhid

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

    from vfido.transports.uhid import UhidTransport

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


def require_vfido() -> None:
    if not vfido_available():
        raise RuntimeError("vfido/__main__.py missing in this checkout")


@check("vfido_python_fido2")
def vfido_python_fido2(data: dict[str, Any]) -> str:
    """`vfido run --transport uhid`: WebAuthn via Fido2Client + Fido2Server, and CTAP1/U2F."""
    require_vfido()
    import hashlib

    from fido2.client import DefaultClientDataCollector, Fido2Client
    from fido2.ctap1 import Ctap1
    from fido2.server import Fido2Server
    from fido2.webauthn import (
        PublicKeyCredentialRpEntity,
        PublicKeyCredentialUserEntity,
        UserVerificationRequirement,
    )

    with shared_vfido_key() as key:
        dev = wait_for(lambda: find_fido2_device(key.serial), 10, "python-fido2 device")
        data["hidraw"] = key.hidraw
        data["capabilities"] = dev.capabilities
        client = Fido2Client(dev, DefaultClientDataCollector("https://example.com"))
        data["info_versions"] = list(client.info.versions)
        server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
        user = PublicKeyCredentialUserEntity(id=b"user-1", name="alice")
        options, state = server.register_begin(
            user, user_verification=UserVerificationRequirement.DISCOURAGED
        )
        t0 = time.monotonic()
        reg = client.make_credential(options.public_key)
        auth_data = server.register_complete(state, reg)
        data["make_credential_s"] = time.monotonic() - t0
        assert auth_data.credential_data is not None
        creds = [auth_data.credential_data]
        options, state = server.authenticate_begin(
            creds, user_verification=UserVerificationRequirement.DISCOURAGED
        )
        t0 = time.monotonic()
        selection = client.get_assertion(options.public_key)
        server.authenticate_complete(state, creds, selection.get_response(0))
        data["get_assertion_s"] = time.monotonic() - t0

        # CTAP1 / U2F over the same hidraw node.
        ctap1 = Ctap1(dev)
        data["u2f_version"] = ctap1.get_version()
        app = hashlib.sha256(b"https://u2f.example.com").digest()
        chal = hashlib.sha256(b"challenge").digest()
        registration = ctap1.register(chal, app)
        registration.verify(app, chal)
        signature = ctap1.authenticate(chal, app, registration.key_handle)
        signature.verify(app, chal, registration.public_key)
        data["u2f_counter"] = signature.counter
        dev.close()
    return "Fido2Client register+authenticate verified by Fido2Server; U2F register+authenticate"


def fido2_tools_round(device: str, alg: str, resident: bool, data: dict[str, Any]) -> None:
    import hashlib

    cdh = base64.b64encode(hashlib.sha256(os.urandom(16)).digest()).decode()
    user_id = base64.b64encode(os.urandom(16)).decode()
    rp = f"{alg}.fido2-tools.example.com"
    cred_in = f"{cdh}\n{rp}\nuser-{alg}\n{user_id}\n".encode()
    make = ["fido2-cred", "-M", *(["-r"] if resident else []), device, alg]
    label = f"{alg}_{'rk' if resident else 'nonrk'}"
    made = sh(make, input=cred_in)
    data[f"{label}_made"] = made
    verified = sh(["fido2-cred", "-V", alg], input=made.encode())
    data[f"{label}_verified"] = verified
    lines = verified.splitlines()
    if len(lines) < 2:
        raise RuntimeError(f"fido2-cred -V printed {verified!r}")
    cred_id, pubkey = lines[0], "\n".join(lines[1:]) + "\n"
    pk_path = OUT / f"pk-{alg}-{int(resident)}.pem"
    pk_path.write_text(pubkey)
    cdh2 = base64.b64encode(hashlib.sha256(os.urandom(16)).digest()).decode()
    if resident:
        assert_in = f"{cdh2}\n{rp}\n".encode()
        get = ["fido2-assert", "-G", "-r", device]
    else:
        assert_in = f"{cdh2}\n{rp}\n{cred_id}\n".encode()
        get = ["fido2-assert", "-G", device]
    assertion = sh(get, input=assert_in)
    data[f"{label}_assertion"] = assertion
    if resident:
        # -r prints 5 lines per resident credential of the RP (the 5th is the user id).
        lines = assertion.strip().splitlines()
        blocks = [lines[i : i + 5] for i in range(0, len(lines), 5)]
        ours = [b for b in blocks if len(b) == 5 and b[4] == user_id]
        if len(ours) != 1:
            raise RuntimeError(f"fido2-assert -G -r: no assertion for our user in {assertion!r}")
        assertion = "\n".join(ours[0][:4]) + "\n"
    sh(["fido2-assert", "-V", str(pk_path), alg], input=assertion.encode())
    data[label] = "ok"


@check("vfido_fido2_tools")
def vfido_fido2_tools(data: dict[str, Any]) -> str:
    """libfido2's tools: -L, -I, make/verify credential and get/verify assertion."""
    require_vfido()
    with shared_vfido_key() as key:
        assert key.hidraw is not None
        listing = sh(["fido2-token", "-L"])
        data["list"] = listing
        if key.hidraw not in listing:
            raise RuntimeError(f"fido2-token -L does not list {key.hidraw}")
        info = sh(["fido2-token", "-I", key.hidraw])
        data["info"] = info
        if "FIDO_2_0" not in info:
            raise RuntimeError("fido2-token -I: no FIDO_2_0 version")
        failures = []
        for alg in ("es256", "eddsa"):
            for resident in (False, True):
                try:
                    fido2_tools_round(key.hidraw, alg, resident, data)
                except Exception as exc:
                    failures.append(f"{alg} rk={resident}: {exc}")
        if failures:
            raise RuntimeError("; ".join(failures))
    return "fido2-token -L/-I, fido2-cred -M|-V and fido2-assert -G|-V for es256/eddsa, rk/non-rk"


@check("vfido_two_keys")
def vfido_two_keys(data: dict[str, Any]) -> str:
    """Two `vfido run` keys at once, each found by serial and used via python-fido2."""
    require_vfido()
    from fido2.ctap2 import Ctap2

    k1, k2 = VfidoProcess("vfido-vm-k1"), VfidoProcess("vfido-vm-k2")
    try:
        k1.launch()  # both start at once: start-up is slow in the emulated guest
        k2.launch()
        k1.wait_ready()
        k2.wait_ready()
        data["hidraw"] = [k1.hidraw, k2.hidraw]
        if k1.hidraw == k2.hidraw:
            raise RuntimeError("both keys report the same hidraw node")
        aaguids = []
        for key in (k1, k2):
            dev = wait_for(lambda key=key: find_fido2_device(key.serial), 10, key.serial)
            if dev.descriptor.path != key.hidraw:
                raise RuntimeError(f"{key.serial}: {dev.descriptor.path} != {key.hidraw}")
            aaguids.append(bytes(Ctap2(dev).get_info().aaguid).hex())
            if dev.ping(b"hello " + key.serial.encode()) != b"hello " + key.serial.encode():
                raise RuntimeError("ping mismatch")
            dev.close()
        data["aaguids"] = aaguids
        if aaguids[0] == aaguids[1]:
            raise RuntimeError("two ephemeral keys share an AAGUID")
        # A credential made on key 1 works on key 1 and is unknown to key 2.
        from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client
        from fido2.server import Fido2Server
        from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

        # Open by path, one handle at a time: hidraw gives every open handle of a node every
        # report, so a stale handle would read another handle's INIT reply ("Wrong channel").
        server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
        dev1 = open_hidraw(k1.hidraw)
        clients = [Fido2Client(dev1, DefaultClientDataCollector("https://example.com"))]
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=b"u2", name="bob"), user_verification="discouraged"
        )
        auth_data = server.register_complete(state, clients[0].make_credential(options.public_key))
        assert auth_data.credential_data is not None
        creds = [auth_data.credential_data]
        options, state = server.authenticate_begin(creds, user_verification="discouraged")
        server.authenticate_complete(
            state, creds, clients[0].get_assertion(options.public_key).get_response(0)
        )
        dev1.close()
        dev2 = open_hidraw(k2.hidraw)
        clients.append(Fido2Client(dev2, DefaultClientDataCollector("https://example.com")))
        try:
            clients[1].get_assertion(options.public_key)
        except ClientError as exc:
            data["other_key_error"] = str(exc.code)
        else:
            raise RuntimeError("key 2 answered for a credential made on key 1")
        finally:
            dev2.close()
    finally:
        k1.stop()
        k2.stop()
    return f"two keys at {data['hidraw']}"


# --- libfido2's tools and OpenSSH against three key configurations (tests/vm/guest_tools.py) ---


@check("tools_matrix")
def tools_matrix(data: dict[str, Any]) -> str:
    require_vfido()
    import guest_tools

    stop_shared_key()  # the tools' device listing should show the matrix's keys only
    return guest_tools.tools_matrix(data, VfidoProcess, log)


# --- browsers ----------------------------------------------------------------------------------


class PageServer:
    """Serves webauthn.html on http://localhost:PORT/ and collects POSTed results."""

    def __init__(self, name: str) -> None:
        import http.server

        page = (HERE / "webauthn.html").read_bytes()
        owner = self
        self.results: dict[str, Any] | None = None
        self.updated = threading.Event()
        self.requested = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requested.set()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                owner.results = json.loads(body)
                (OUT / f"{name}-page.json").write_bytes(body)
                owner.updated.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                with (OUT / f"{name}-server.log").open("a") as server_log:
                    server_log.write(f"[{uptime():8.2f}] {format % args}\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_done(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.results is not None and self.results.get("done"):
                return self.results
            self.updated.wait(1.0)
            self.updated.clear()
        return self.results

    def close(self) -> None:
        self.httpd.shutdown()


def bring_up_loopback() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def run_browser(
    data: dict[str, Any],
    name: str,
    argv_for: Callable[[str], list[str]],
    extra_env: dict[str, str] | None = None,
    page_timeout: float = PAGE_TIMEOUT,
    start_timeout: float = 90.0,
    attempts: int = 2,
    query: str = "",
    key_args: list[str] | None = None,
    uv: bool = True,
    key_timeout: float = 60.0,
) -> str:
    require_vfido()
    bring_up_loopback()
    server = PageServer(name)
    url = f"http://localhost:{server.port}/?browser={name}{query}"
    # Each browser gets its own default key, with built-in user verification (`--uv`) where
    # the browser wants a PIN or UV before it makes a discoverable credential (Chromium): with
    # `uv` in getInfo it verifies through the key instead of showing a PIN dialog.
    # The key traces every request (`--trace`): the host tests read from the trace which
    # protocol served each ceremony (CTAP2, never a silent fall-back to U2F; trace_protocols).
    # A browser sends each request to every security key it sees: only this one may exist.
    stop_shared_key()
    trace_path = OUT / f"trace-{name}.jsonl"
    trace_path.unlink(missing_ok=True)
    args = [*(["--uv"] if uv else []), "--trace", str(trace_path), *(key_args or [])]
    data["key_args"] = args
    data["trace"] = trace_path.name
    keys = vfido_key(f"vfido-vm-{name}", args, key_timeout)
    with keys as key:
        data["hidraw"] = key.hidraw
        log_path = OUT / f"{name}.log"
        clean_env = {
            k: os.environ[k] for k in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR") if k in os.environ
        }
        clean_env.update(extra_env or {})
        results = None
        data["attempts"] = 0
        try:
            with log_path.open("wb") as blog:
                for attempt in range(1, attempts + 1):
                    data["attempts"] = attempt
                    t0 = time.monotonic()
                    proc = subprocess.Popen(
                        argv_for(url),
                        env=clean_env,
                        stdin=subprocess.DEVNULL,
                        stdout=blog,
                        stderr=blog,
                        start_new_session=True,
                    )
                    try:
                        # On a loaded host the emulated CPU can be too slow for the browser's
                        # child processes (they give up after 15 s): then the page is never
                        # requested, and a fresh start usually works.
                        if server.requested.wait(start_timeout) or attempt == attempts:
                            data["page_requested_after"] = time.monotonic() - t0
                            results = server.wait_done(page_timeout)
                            break
                        log(f"{name}: page not requested in {start_timeout:.0f} s, restarting")
                    finally:
                        data["browser_seconds"] = time.monotonic() - t0
                        stop_process_group(proc)
        finally:
            server.close()
    data["page"] = results
    if trace_path.exists():
        data["protocols"] = trace_protocols.protocol_counts(trace_protocols.read_trace(trace_path))
    key_log = key.stderr_path.read_text(errors="replace").splitlines()
    data["key_log"] = [
        line for line in key_log if re.search(r"CREDENTIAL|ASSERTION|GET_INFO|credential", line)
    ][-80:]
    if results is None:
        server_log = OUT / f"{name}-server.log"
        requests = (
            server_log.read_text() if server_log.exists() else "(the page was never requested)"
        )
        browser_log = "\n".join(
            line for line in log_path.read_text(errors="replace").splitlines() if "dbus" not in line
        )
        raise RuntimeError(
            f"{name} posted no results ({data['attempts']} start(s)); server: {requests[-1000:]}; "
            f"browser log tail: {browser_log[-2500:]}"
        )
    summary = ", ".join(
        f"{s['name']}={'ok' if s['ok'] else s['error']['name']}" for s in results["scenarios"]
    )
    if not results.get("done"):
        raise RuntimeError(f"{name} did not finish the page: {summary}")
    return summary


def chromium_argv(url: str) -> list[str]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir="/tmp"))
    return [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        # The network service in the browser process: on a loaded host its utility process
        # gave up starting and crashed in a loop, and the page was never requested.
        "--enable-features=NetworkServiceInProcess2",
        f"--user-data-dir={profile}",
        url,
    ]


def firefox_argv(url: str) -> list[str]:
    profile = Path("/tmp/firefox-profile")
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text(
        'user_pref("security.webauth.webauthn_enable_usbtoken", true);\n'
        'user_pref("security.webauth.webauthn_enable_softtoken", false);\n'
        'user_pref("browser.shell.checkDefaultBrowser", false);\n'
        'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
        'user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);\n'
        'user_pref("app.update.enabled", false);\n'
        'user_pref("browser.aboutwelcome.enabled", false);\n'
        'user_pref("browser.startup.homepage_override.mstone", "ignore");\n'
        'user_pref("startup.homepage_welcome_url", "");\n'
        'user_pref("network.connectivity-service.enabled", false);\n'
        'user_pref("network.captive-portal-service.enabled", false);\n'
        'user_pref("browser.safebrowsing.update.enabled", false);\n'
        'user_pref("extensions.update.enabled", false);\n'
        'user_pref("security.sandbox.content.level", 0);\n'
    )
    return ["firefox-esr", "--headless", "--no-remote", "--profile", str(profile), url]


@check("chromium_webauthn")
def chromium_webauthn(data: dict[str, Any]) -> str:
    # 12-15 ceremonies; at load average 30 a single one took up to 30 s.
    return run_browser(data, "chromium", chromium_argv, page_timeout=300)


# The guest kernel refuses Firefox's user-namespace sandbox (clone EPERM in the chroot).
FIREFOX_SANDBOX_OFF = {
    "MOZ_HEADLESS": "1",
    "MOZ_DISABLE_CONTENT_SANDBOX": "1",
    "MOZ_DISABLE_GMP_SANDBOX": "1",
    "MOZ_DISABLE_RDD_SANDBOX": "1",
    "MOZ_DISABLE_SOCKET_PROCESS_SANDBOX": "1",
    "MOZ_DISABLE_UTILITY_SANDBOX": "1",
}


@check("firefox_webauthn")
def firefox_webauthn(data: dict[str, Any]) -> str:
    # The default key, without --uv: Firefox makes discoverable credentials without UV.
    return run_browser(
        data,
        "firefox",
        firefox_argv,
        FIREFOX_SANDBOX_OFF,
        page_timeout=240,  # 12 ceremonies, 3-30 s each on a loaded host
        start_timeout=200,
        attempts=1,
        uv=False,
    )


# --- post-quantum credentials in the browsers (webauthn.html?mode=mldsa) -----------------------
# Separate checks (not more scenarios on the main page) so that a browser that stalls on an
# algorithm it does not know cannot cost the main browser checks their page timeout.


def ctap_summary(trace_path: Path) -> list[dict[str, Any]]:
    """What the browser asked the key and what it answered, from a `vfido run --trace` file:
    per CTAP response, the request's algorithms, the status, the size and how long its
    reports took to go out (first to last packet, pacing included)."""
    if not trace_path.exists():
        return []
    events = [json.loads(line) for line in trace_path.read_text().splitlines() if line.strip()]
    summary: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if event.get("type") != "response" or event.get("proto") != "CBOR":
            continue
        out: list[float] = []
        for later in events[i + 1 :]:
            if later.get("type") != "packet" or later.get("dir") != "out":
                break
            if later.get("cmd") != "KEEPALIVE":
                out.append(later["t"])
        params = event.get("params") or {}
        summary.append(
            {
                "command": event.get("command"),
                "algs": [p.get("alg") for p in params.get("pubKeyCredParams", [])],
                "status": event.get("status"),
                "bytes": event.get("bytes"),
                "seconds": event.get("duration"),
                "reports": len(out),
                "send_ms": round((out[-1] - out[0]) * 1000, 1) if len(out) > 1 else 0.0,
            }
        )
    return summary


def run_mldsa_browser(
    data: dict[str, Any], name: str, argv_for: Callable[[str], list[str]], **kw: Any
) -> str:
    # ML-DSA is opt-in (`--mldsa`): a key that lists it in getInfo is what these checks try.
    try:
        return run_browser(data, name, argv_for, query="&mode=mldsa", key_args=["--mldsa"], **kw)
    finally:
        data["ctap"] = ctap_summary(OUT / f"trace-{name}.jsonl")


@check("chromium_mldsa")
def chromium_mldsa(data: dict[str, Any]) -> str:
    # Up to 10 create()/get() calls of 30 s at most each; ~60-140 s when all goes well.
    return run_mldsa_browser(data, "chromium-mldsa", chromium_argv, page_timeout=300)


@check("firefox_mldsa")
def firefox_mldsa(data: dict[str, Any]) -> str:
    return run_mldsa_browser(
        data,
        "firefox-mldsa",
        firefox_argv,
        extra_env=FIREFOX_SANDBOX_OFF,
        page_timeout=150,
        start_timeout=200,
        attempts=1,
    )


#: The personas (vfido/personas/*.toml, issue #19) headless Chromium is tried against.
PERSONAS = ("u2f", "ctap20", "ctap21pre", "ctap21")


@check("chromium_personas")
def chromium_personas(data: dict[str, Any]) -> str:
    """Headless Chromium registers and signs in (webauthn.html?mode=persona: ES256 create() and
    get()) against `vfido run --persona NAME --trace ...` for each persona, one browser start
    per key (no udev in the guest: a browser sees the keys that exist when it starts). The
    host test reads from each trace which protocol served each ceremony.

    On a loaded host Chromium can give up on a key whose first getInfo took longer than its
    3 s HID timeout, for the rest of its run: a persona whose create() or get() failed gets
    one more key and browser. ``VFIDO_VM_CHECKS=chromium_personas,persona:NAME`` tries only
    the personas named (by hand; the other personas' tests then fail)."""
    chosen = [c.split(":", 1)[1] for c in SELECTED if c.startswith("persona:")]
    failed = []
    for persona in [p for p in PERSONAS if not chosen or p in chosen]:
        for attempt in (1, 2):
            entry: dict[str, Any] = {"attempt": attempt}
            data[persona] = entry
            try:
                entry["summary"] = run_browser(
                    entry,
                    f"chromium-persona-{persona}",
                    chromium_argv,
                    page_timeout=150,
                    query="&mode=persona",
                    key_args=["--persona", persona],
                    uv=False,
                    key_timeout=150,  # `vfido run` took 56-76 s to start at load average 20
                )
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:3000]
            scenarios = {s["name"]: s for s in (entry.get("page") or {}).get("scenarios", [])}
            if all(scenarios.get(n, {}).get("ok") for n in ("create_es256", "get_es256")):
                break
        else:
            failed.append(persona)
    if failed:
        raise RuntimeError(f"Chromium failed against {', '.join(failed)}: {data}"[:6000])
    return "; ".join(f"{p}: {e.get('summary')} {e.get('protocols')}" for p, e in data.items())


@check("example_chromium_pytest")
def example_chromium_pytest(data: dict[str, Any]) -> str:
    """examples/flask_rp/test_chromium.py as a user runs it: its own pytest session, the
    plugin's ``vfido_hid_key`` (an in-process UHID key), the Flask RP and headless Chromium
    driven over its DevTools pipe. VFIDO_REQUIRE_UHID makes a missing /dev/uhid a failure."""
    return run_example_pytest(data, "example-chromium", ["test_chromium.py"])


def run_example_pytest(
    data: dict[str, Any], label: str, files: list[str], timeout: float = 600
) -> str:
    """examples/flask_rp tests in their own pytest session, as a user runs them."""
    require_vfido()
    bring_up_loopback()
    stop_shared_key()  # a browser talks to every key it sees: only the test's key may exist
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT), VFIDO_REQUIRE_UHID="1")
    cmd = [
        PYTHON,
        "-m",
        "pytest",
        *(str(CHECKOUT / "examples" / "flask_rp" / name) for name in files),
        "-p",
        "no:cacheprovider",
        "-rA",
        "-o",
        f"timeout={timeout:.0f}",
        "--log-level=DEBUG",  # a failure shows the key's CTAPHID / CTAP log lines
        f"--basetemp={OUT / label}",
    ]
    proc = subprocess.run(
        cmd, cwd=CHECKOUT, env=env, capture_output=True, timeout=timeout * len(files) + 60
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    (OUT / f"{label}-pytest.log").write_text(output)
    # What each test printed: "selenium: create() <- CBOR makeCredential, get() <- ...".
    data["served"] = re.findall(r"^(\w+): create\(\) <- (.+), get\(\) <- (.+)$", output, re.M)
    lines = [line for line in output.splitlines() if line.strip()]
    data["returncode"] = proc.returncode
    data["summary"] = lines[-1].strip("= ") if lines else ""
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exited {proc.returncode}: {output[-3000:]}")
    return data["summary"]


@check("example_browsers_pytest")
def example_browsers_pytest(data: dict[str, Any]) -> str:
    """examples/flask_rp/test_selenium.py and test_playwright.py: Selenium (chromedriver) and
    Playwright (on the system Chromium) against `vfido run --transport uhid --trace`; each
    test reads from the key's trace that CTAP2 served its create() and get()."""
    # Each test starts a key and a browser: at host load ~20 Chromium took 6 min to ask for the
    # page (first run, 2026-12-04), hence 900 s per test.
    files = ["test_selenium.py", "test_playwright.py"]
    return run_example_pytest(data, "example-browsers", files, timeout=900)


# --- udev: an unprivileged user gets the key through the project's rules -----------------------


@check("udev_rules")
def udev_rules(data: dict[str, Any]) -> str:
    """udev/70-vfido.rules with systemd-udevd: see tests/vm/guest_udev.py."""
    require_vfido()
    import guest_udev

    stop_shared_key()  # only the key started by the check, after udevd, should exist
    return guest_udev.udev_rules(data, CHECKOUT, VfidoProcess, log)


# --- WebDriver: a Selenium virtual-authenticator test through `vfido webdriver` ----------------


@check("webdriver_selenium")
def webdriver_selenium(data: dict[str, Any]) -> str:
    """tests/vm/guest_webdriver.py: the same Selenium test against Chromium's built-in
    virtual authenticator and through `vfido webdriver` (a real key over UHID)."""
    require_vfido()
    bring_up_loopback()
    stop_shared_key()  # Chromium sends each request to every key: only the test's may exist
    import guest_webdriver

    return guest_webdriver.webdriver_selenium(data, CHECKOUT, PYTHON, OUT, log)


# --- #16 benchmark over hidraw: opt-in (named in VFIDO_CHECKS), never in the default run -----


@check("bench_hidraw")
def bench_hidraw(data: dict[str, Any]) -> str:
    """bench/hidraw.py: `vfido run --transport uhid` key-side cost over /dev/hidrawN as a
    ratio to the raw operation timed in this guest (see tests/vm/test_bench_vm.py)."""
    if "bench_hidraw" not in SELECTED:
        return "skipped: opt-in (VFIDO_VM_CHECKS=bench_hidraw)"
    require_vfido()
    stop_shared_key()  # nothing else runs while it measures
    sys.path.insert(0, str(CHECKOUT / "bench"))
    import hidraw

    with tempfile.TemporaryDirectory(prefix="vfido-bench-") as tmp:
        data.update(hidraw.run(Path(tmp), 20))
    return "; ".join(
        f"{row['name']}: {row['ratio']:.2f}x ({row['ratio_p10']:.2f}-{row['ratio_p90']:.2f})"
        for row in data["rows"]
    )


@check("bench_cold")
def bench_cold(data: dict[str, Any]) -> str:
    """bench/cold.py: the key's requests and raw operations warm and after a pause, in this
    guest (see tests/vm/test_bench_vm.py)."""
    if "bench_cold" not in SELECTED:
        return "skipped: opt-in (VFIDO_VM_CHECKS=bench_cold)"
    require_vfido()
    stop_shared_key()  # nothing else runs while it measures
    sys.path.insert(0, str(CHECKOUT / "bench"))
    import cold

    data.update(cold.run())
    return "; ".join(
        f"{row['name']}: {row['warm']['us']:.0f} us warm, x{row['after sleep / warm']:.1f} "
        f"after sleep, x{row['after spin / warm']:.1f} after spin"
        for row in data["rows"]
    )


@check("bench_chromium")
def bench_chromium(data: dict[str, Any]) -> str:
    """bench/chromium.py: headless Chromium create()/get() through `vfido run --transport
    uhid` vs the floor key bench/floorkey.py, alternating blocks (tests/vm/test_bench_vm.py)."""
    if "bench_chromium" not in SELECTED:
        return "skipped: opt-in (VFIDO_VM_CHECKS=bench_chromium)"
    require_vfido()
    bring_up_loopback()
    stop_shared_key()  # Chromium sends each request to every key: one key at a time
    sys.path.insert(0, str(CHECKOUT / "bench"))
    import chromium

    # `VFIDO_VM_CHECKS=bench_chromium,bench_rounds:2` for a shorter run (by hand).
    rounds = [int(c.split(":", 1)[1]) for c in SELECTED if c.startswith("bench_rounds:")]
    # `bench_keys:floor+vfido+vfido_untraced` adds `vfido run` without --trace (by hand);
    # `bench_keys:floor+floor_sized+vfido` the floor key with vfido's shapes (rows against both);
    # `bench_keys:floor+floor_sized+vfido_cached+vfido_untraced` also vfido's process with an
    # authenticator that answers from memory (the authenticator's share under the browser);
    # `bench_keys:floor_sized+floor_sized_niced+vfido_untraced+vfido_niced` the keys at nice -10.
    keys = [tuple(c.split(":", 1)[1].split("+")) for c in SELECTED if c.startswith("bench_keys:")]
    chosen = (keys or [("floor", "vfido")])[0]
    # `bench_base:DIR` (a checkout inside this one, e.g. `git archive OLD | tar -x -C DIR`)
    # is the tree of the key `vfido_base`: `bench_keys:floor+vfido_untraced+vfido_base`.
    bases = [CHECKOUT / c.split(":", 1)[1] for c in SELECTED if c.startswith("bench_base:")]
    # `bench_base_python:PATH` runs `vfido_base` under another interpreter (a venv's python
    # the guest sees at PATH): `bench_base:.` with it compares two builds of one checkout.
    pythons = [c.split(":", 1)[1] for c in SELECTED if c.startswith("bench_base_python:")]
    # `bench_uv`: discoverable credentials with userVerification "required" against
    # `vfido run --uv` (keys that verify a user only: bench_keys:vfido_untraced+vfido_base).
    data.update(
        chromium.run(
            OUT,
            chromium_argv,
            log,
            (rounds or [6])[0],
            python=PYTHON,
            keys=chosen,
            base_tree=(bases or [None])[0],
            base_python=(pythons or [None])[0],
            uv="bench_uv" in SELECTED,
        )
    )
    return "; ".join(
        f"{row['name']}: {row['key']}/{row['reference']} {row['ratio']:.3f} "
        f"({row['ratio_p10']:.3f}-{row['ratio_p90']:.3f})"
        for row in data["rows"]
    )


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ.get("HOME", "/tmp/home"))
    home.mkdir(parents=True, exist_ok=True)
    runtime = Path("/tmp/xdg-runtime")
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    RESULTS["info"]["boot_seconds"] = uptime()
    RESULTS["info"]["python"] = sys.version
    RESULTS["info"]["vfido_cli"] = vfido_available()
    # Where this interpreter and its packages come from: the harness fails every test unless
    # all of them are the checkout's (its .venv included), see provenance.py (issue #13).
    origins = provenance.import_origins()
    RESULTS["info"]["imports"] = origins
    save()
    log("guest checks start", sys.executable, CHECKOUT)
    log("python", origins["executable"], "prefix", origins["prefix"])
    for name, where in origins["modules"].items():
        log(f"import {name} from {where}")
    wrong = provenance.problems(origins, CHECKOUT)
    if wrong:
        log("NOT the checkout's virtual environment, no checks run:", *wrong)
    else:
        try:
            run_checks()
        finally:
            stop_shared_key()
    RESULTS["info"]["total_guest_seconds"] = uptime()
    RESULTS["info"]["complete"] = True
    save()
    log("guest checks done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
