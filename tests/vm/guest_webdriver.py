"""Guest check ``webdriver_selenium``: a Selenium test written for Chromium's built-in virtual
authenticator (tests/vm/selenium_suite_for_guest.py) passes unmodified through
``vfido webdriver``, and the real key over UHID served its ceremonies.

Run INSIDE the guest by guest_checks.py. Steps: systemd-udevd (the keys are plugged in after
Chromium started, and Chromium learns of new HID devices from udev), a page server on
localhost, chromedriver (Debian's ``chromium-driver``) on a free port; the test once straight
against chromedriver (the in-browser fake: proves the test is such a test), then through
``vfido -v webdriver --upstream chromedriver`` (keys over UHID). From the intermediary's log:
each CTAP command the key answered (``command MAKE_CREDENTIAL -> OK``...).
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
UDEVD = Path("/lib/systemd/systemd-udevd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


def start_udevd(log: Callable[..., None]) -> None:
    """systemd-udevd in the chroot (as guest_udev.py does), unless one runs already."""
    env = dict(os.environ, SYSTEMD_IGNORE_CHROOT="1")
    ping = subprocess.run(
        ["udevadm", "control", "--ping", "--timeout=2"], env=env, capture_output=True
    )
    if ping.returncode == 0:
        return
    if not UDEVD.exists():
        raise RuntimeError("systemd-udevd not installed (apt-get install udev)")
    subprocess.run([str(UDEVD), "--daemon"], env=env, check=True, capture_output=True)
    subprocess.run(["udevadm", "trigger", "--action=add"], env=env, capture_output=True)
    subprocess.run(["udevadm", "settle", "--timeout=30"], env=env, capture_output=True)
    log("webdriver: systemd-udevd started")


def page_server() -> tuple[http.server.ThreadingHTTPServer, int]:
    class Page(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = b"<!doctype html><title>vfido webdriver check</title><p>ready</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def run_test(
    python: str, checkout: Path, out: Path, label: str, driver_url: str, page_url: str
) -> tuple[int, str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(checkout),
        WEBDRIVER_URL=driver_url,
        PAGE_URL=page_url,
        CHROMIUM=shutil.which("chromium") or "/usr/bin/chromium",
    )
    cmd = [
        python,
        "-m",
        "pytest",
        str(HERE / "selenium_suite_for_guest.py"),
        "-p",
        "no:cacheprovider",
        "-rA",
        "-o",
        "timeout=480",
        f"--basetemp={out / ('webdriver-' + label)}",
    ]
    for attempt in (1, 2):
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, timeout=540)
        output = (proc.stdout + proc.stderr).decode(errors="replace")
        # On a loaded host the emulated CPU can be too slow for Chromium to answer
        # chromedriver within its 60 s: the session is not created; a fresh start may work.
        if proc.returncode == 0 or "SessionNotCreated" not in output or attempt == 2:
            break
        (out / f"webdriver-{label}-pytest-attempt1.log").write_text(output)
    (out / f"webdriver-{label}-pytest.log").write_text(output)
    lines = [line for line in output.splitlines() if line.strip()]
    return proc.returncode, (lines[-1].strip("= ") if lines else "") + "\n" + output[-3000:]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def webdriver_selenium(
    data: dict[str, Any],
    checkout: Path,
    python: str,
    out: Path,
    log: Callable[..., None],
) -> str:
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        raise RuntimeError("chromedriver not installed (apt-get install chromium-driver)")
    start_udevd(log)
    server, page_port = page_server()
    page_url = f"http://localhost:{page_port}/"
    driver_port, proxy_port = free_port(), free_port()
    driver_log = (out / "chromedriver.log").open("wb")
    proxy_log_path = out / "vfido-webdriver.log"
    proxy_log = proxy_log_path.open("wb")
    chromedriver_proc = subprocess.Popen(
        [
            chromedriver,
            f"--port={driver_port}",
            "--verbose",
            "--enable-chrome-logs",
            f"--log-path={out / 'chromedriver-verbose.log'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=driver_log,
        stderr=driver_log,
    )
    proxy = subprocess.Popen(
        [
            python,
            "-m",
            "vfido",
            "-v",
            "webdriver",
            "--upstream",
            f"http://127.0.0.1:{driver_port}",
            "--port",
            str(proxy_port),
        ],
        cwd=checkout,
        env=dict(os.environ, PYTHONPATH=str(checkout)),
        stdin=subprocess.DEVNULL,
        stdout=proxy_log,
        stderr=proxy_log,
    )
    try:
        wait_port(driver_port, 60, chromedriver_proc, "chromedriver")
        wait_port(proxy_port, 120, proxy, "vfido webdriver")
        t0 = time.monotonic()
        code, detail = run_test(
            python, checkout, out, "builtin", f"http://127.0.0.1:{driver_port}", page_url
        )
        data["builtin"] = {"returncode": code, "seconds": time.monotonic() - t0}
        data["builtin_summary"] = detail.splitlines()[0]
        log("webdriver: built-in virtual authenticator:", data["builtin_summary"])
        t0 = time.monotonic()
        code, detail = run_test(
            python, checkout, out, "vfido", f"http://127.0.0.1:{proxy_port}", page_url
        )
        data["vfido"] = {"returncode": code, "seconds": time.monotonic() - t0}
        data["vfido_summary"] = detail.splitlines()[0]
        log("webdriver: through vfido webdriver:", data["vfido_summary"])
    finally:
        stop(proxy)
        stop(chromedriver_proc)
        server.shutdown()
        driver_log.close()
        proxy_log.close()
    key_log = proxy_log_path.read_text(errors="replace").splitlines()
    served = [m.group(1) for line in key_log if (m := re.search(r"command (\w+) -> OK", line))]
    data["served"] = served
    data["key_log"] = [
        line for line in key_log if re.search(r"command |webdriver:|hidraw|uhid", line)
    ][-80:]
    if data["builtin"]["returncode"] != 0:
        raise RuntimeError(f"the test fails with the built-in authenticator: {detail[-2000:]}")
    if data["vfido"]["returncode"] != 0:
        raise RuntimeError(f"the test fails through vfido webdriver: {detail[-3000:]}")
    return (
        f"built-in: {data['builtin_summary']}; vfido: {data['vfido_summary']}; "
        f"key served {served.count('MAKE_CREDENTIAL')} makeCredential, "
        f"{served.count('GET_ASSERTION')} getAssertion"
    )
