"""Build and boot the vfido test guest: a real Debian kernel with UHID under qemu (TCG).

The host kernel has no UHID, so the real HID path (``/dev/uhid`` -> ``/dev/hidrawN`` ->
libfido2, python-fido2, browsers) is tested in a qemu guest that boots Debian's generic
kernel with a tiny busybox initramfs, chroots into the host's root shared read-only over
9p, and runs ``tests/vm/guest_checks.py`` with the checkout's own virtual environment
(``.venv/bin/python``, seen through the 9p share of the checkout at the same path). See
tests/vm/README.md.

Kernel and initramfs are cached in ``$VFIDO_VM_CACHE`` (default ``~/.cache/vfido-vm``).

Run by hand: ``.venv/bin/python tests/vm/vmharness.py [--checks a,b] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import provenance
import pytest

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
# One list for tests/vm/install-deps.sh and this harness.
APT_PACKAGES = tuple(
    line.split("#", 1)[0].strip()
    for line in (HERE / "apt-packages.txt").read_text().splitlines()
    if line.split("#", 1)[0].strip()
)
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "uhid", "hid-generic")
# The whole guest run: ~500 s of browser checks plus ~200 s of tools_matrix on a quiet host,
# much more on a loaded one (~2000 s at load 20-30 on 2 cores): this bound only catches a
# guest that hangs.
DEFAULT_TIMEOUT = 3000.0
#: pytest's per-test limit for the vm tests: the first one pays for booting the guest.
TEST_TIMEOUT = float(os.environ.get("VFIDO_VM_TIMEOUT", DEFAULT_TIMEOUT)) + 300


class PrerequisiteMissing(RuntimeError):
    """The machine cannot run the guest (not root, no qemu, no kernel package...)."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    version: str


@dataclass(frozen=True)
class GuestRun:
    returncode: int
    timed_out: bool
    console: str
    guest_log: str
    results: dict[str, object] | None
    wall_seconds: float


def cache_dir() -> Path:
    env = os.environ.get("VFIDO_VM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vfido-vm"


def guest_python(checkout: Path = CHECKOUT) -> str:
    """The interpreter the guest runs: the checkout's own venv (``./bootstrap --test``).

    Not ``os.path.realpath(sys.executable)``: that resolves the venv's symlink to the base
    interpreter, which on a fresh machine has none of the project's dependencies (issue #13).
    The guest reaches the venv through the same 9p view of the checkout, at the same path.
    """
    python = provenance.venv_python(checkout.resolve())
    if not (python.parent.parent / "pyvenv.cfg").exists() or not os.access(python, os.X_OK):
        raise PrerequisiteMissing(f"{python} is not a virtual environment: run ./bootstrap --test")
    return str(python)


def guest_env(checkout: Path = CHECKOUT, checks: str = "") -> dict[str, str]:
    """What init.sh passes to the guest check script (written to ``guest.env``)."""
    return {
        "VFIDO_CHECKOUT": str(checkout.resolve()),
        "VFIDO_PYTHON": guest_python(checkout),
        "VFIDO_CHECKS": checks,
    }


def check_prerequisites() -> None:
    missing = []
    if os.geteuid() != 0:
        missing.append("not root (the 9p share of / with security_model=none needs root)")
    for tool in ("qemu-system-x86_64", "apt-get", "apt-cache", "dpkg", "depmod", "timeout"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not found")
    absent = missing_packages()
    if absent:
        missing.append(f"Debian packages not installed: {' '.join(absent)}")
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox not found (apt-get install busybox-static)")
    if missing:
        raise PrerequisiteMissing("; ".join(missing) + " -- run tests/vm/install-deps.sh as root")


def missing_packages(packages: tuple[str, ...] = APT_PACKAGES) -> list[str]:
    """Which of tests/vm/apt-packages.txt dpkg does not list as installed."""
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return list(packages)
    lines = proc.stdout.splitlines()
    installed = {line.split()[0] for line in lines if line.endswith("install ok installed")}
    return [p for p in packages if p not in installed]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PrerequisiteMissing(
            f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def kernel_package() -> str:
    """The generic kernel image named by ``linux-image-amd64`` (the cloud one lacks 9p)."""
    for attempt in range(2):
        out = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        match = re.search(r"Depends:\s*(linux-image-\S+-amd64)\b", out)
        if match and "cloud" not in match.group(1):
            return match.group(1)
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
    raise PrerequisiteMissing("apt-cache does not know linux-image-amd64 (apt-get update?)")


def _extract_kernel(cache: Path, package: str) -> tuple[Path, str]:
    version = package.removeprefix("linux-image-")
    root = cache / f"kernel-{version}"
    marker = root / ".complete"
    if not marker.exists():
        download = cache / "dl"
        download.mkdir(parents=True, exist_ok=True)
        debs = sorted(download.glob(f"{package}_*.deb"))
        if not debs:
            _run(["apt-get", "download", package], cwd=download)
            debs = sorted(download.glob(f"{package}_*.deb"))
        if not debs:
            raise PrerequisiteMissing(f"apt-get download {package} produced no .deb")
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        _run(["dpkg", "-x", str(debs[-1]), str(root)])
        _run(["depmod", "-b", str(root), version])
        marker.write_text(debs[-1].name)
    return root, version


def _module_closure(root: Path, version: str) -> list[str]:
    """Relative paths (within lib/modules/VERSION) of the guest modules and dependencies."""
    moddir = root / "lib" / "modules" / version
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            deps[mod] = rest.split()

    def name_of(path: str) -> str:
        base = path.rsplit("/", 1)[-1]
        base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", base)
        return base.replace("-", "_")

    by_name = {name_of(p): p for p in deps}
    wanted: list[str] = []
    todo = [by_name[m.replace("-", "_")] for m in GUEST_MODULES]
    while todo:
        path = todo.pop()
        if path in wanted:
            continue
        wanted.append(path)
        todo.extend(deps.get(path, []))
    return wanted


def _cpio_newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A newc cpio archive of ``{path: (mode, data)}`` (directories have empty data)."""
    out = io.BytesIO()
    ino = 1
    for name, (mode, data) in [*sorted(files.items()), ("TRAILER!!!", (0, b""))]:
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        )
        ino += 1
        out.write(header.encode() + encoded)
        out.write(b"\0" * ((4 - (110 + len(encoded)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
    return out.getvalue()


def build_guest(cache: Path | None = None) -> GuestImage:
    """Download/extract the kernel and build the initramfs (both cached)."""
    check_prerequisites()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    package = kernel_package()
    root, version = _extract_kernel(cache, package)
    kernel = root / "boot" / f"vmlinuz-{version}"
    if not kernel.exists():
        raise PrerequisiteMissing(f"{kernel} missing in {package}")
    init = (HERE / "init.sh").read_bytes()
    busybox = Path("/bin/busybox").read_bytes()
    modules = _module_closure(root, version)
    key = hashlib.sha256(
        init + hashlib.sha256(busybox).digest() + version.encode() + "\n".join(modules).encode()
    ).hexdigest()[:16]
    initrd = cache / f"initrd-{version}-{key}.gz"
    if initrd.exists():
        return GuestImage(kernel, initrd, version)

    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        stage = Path(tmp)
        moddir = stage / "lib" / "modules" / version
        for rel in modules:
            data = (root / "lib" / "modules" / version / rel).read_bytes()
            if rel.endswith(".xz"):
                data, rel = lzma.decompress(data), rel.removesuffix(".xz")
            target = moddir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for extra in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            src = root / "lib" / "modules" / version / extra
            if src.exists():
                shutil.copy(src, moddir / extra)
        _run(["depmod", "-b", str(stage), version])
        files: dict[str, tuple[int, bytes]] = {}
        for d in ("bin", "sbin", "proc", "sys", "dev", "newroot", "tmp", "lib", "lib/modules"):
            files[d] = (0o040755, b"")
        files["bin/busybox"] = (0o100755, busybox)
        files["init"] = (0o100755, init)
        for path in sorted(stage.rglob("*")):
            rel = str(path.relative_to(stage))
            if path.is_dir():
                files[rel] = (0o040755, b"")
            else:
                files[rel] = (0o100644, path.read_bytes())
        archive = gzip.compress(_cpio_newc(files), compresslevel=6)
        partial = initrd.with_suffix(".part")
        partial.write_bytes(archive)
        partial.rename(initrd)
    return GuestImage(kernel, initrd, version)


def run_guest(
    image: GuestImage,
    out_dir: Path,
    *,
    checkout: Path = CHECKOUT,
    checks: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> GuestRun:
    """Boot the guest once; it runs guest_checks.py and writes ``out_dir/results.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env_lines = guest_env(checkout, checks)
    (out_dir / "guest.env").write_text(
        "".join(f"{k}={shlex.quote(v)}\n" for k, v in env_lines.items())
    )
    for stale in ("results.json", "guest.log"):
        (out_dir / stale).unlink(missing_ok=True)

    def share(ident: str, path: Path, tag: str, readonly: bool) -> list[str]:
        ro = ",readonly=on" if readonly else ""
        return [
            "-fsdev",
            f"local,id={ident},path={path},security_model=none,multidevs=remap{ro}",
            "-device",
            f"virtio-9p-pci,fsdev={ident},mount_tag={tag}",
        ]

    cmd = [
        "timeout",
        "--kill-after=10",
        str(int(timeout)),
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-m",
        "4096",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        "console=ttyS0 quiet panic=-1",
        *share("r", Path("/"), "hostroot", True),
        *share("c", checkout.resolve(), "checkout", False),
        *share("o", out_dir.resolve(), "vfidoout", False),
    ]
    start = time.monotonic()
    # Its own process group: if this process is interrupted (pytest-timeout, Ctrl-C), qemu goes
    # too -- killing only `timeout` left qemu running for the rest of its guest run.
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.monotonic() - start
    console = (stdout + stderr).decode("utf-8", "replace")
    (out_dir / "console.log").write_text(console)
    log_path = out_dir / "guest.log"
    guest_log = log_path.read_text(errors="replace") if log_path.exists() else ""
    results_path = out_dir / "results.json"
    results = None
    if results_path.exists():
        try:
            results = json.loads(results_path.read_text())
        except json.JSONDecodeError:
            results = None
    return GuestRun(
        returncode=proc.returncode,
        timed_out=proc.returncode in (124, 137),
        console=console,
        guest_log=guest_log,
        results=results,
        wall_seconds=wall,
    )


class GuestResults:
    def __init__(self, run: GuestRun, out_dir: Path) -> None:
        self.run = run
        self.out_dir = out_dir
        self.results: dict[str, Any] = run.results or {}

    @property
    def checks(self) -> dict[str, Any]:
        checks: dict[str, Any] = self.results.get("checks", {})
        return checks

    def check(self, name: str) -> dict[str, Any]:
        """The result of one guest check; fails with the guest log if it did not run."""
        if name not in self.checks:
            pytest.fail(
                f"guest check {name!r} did not run (out dir {self.out_dir}).\n"
                f"guest.log tail:\n{self.run.guest_log[-4000:]}\n"
                f"console tail:\n{self.run.console[-2000:]}",
                pytrace=False,
            )
        result: dict[str, Any] = self.checks[name]
        return result

    def require_ok(self, name: str) -> dict[str, Any]:
        result = self.check(name)
        if not result["ok"]:
            pytest.fail(
                f"guest check {name!r} failed (logs in {self.out_dir}):\n{result['detail']}",
                pytrace=False,
            )
        data: dict[str, Any] = result["data"]
        return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", default="", help="comma-separated subset of checks")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args()
    image = build_guest()
    out = args.out or Path(tempfile.mkdtemp(prefix="vfido-vm-"))
    run = run_guest(image, out, checks=args.checks, timeout=args.timeout)
    print(run.console[-3000:])
    print("---- guest.log (tail)")
    print(run.guest_log[-6000:])
    print(f"---- rc={run.returncode} wall={run.wall_seconds:.1f}s out={out}")
    if run.results is None:
        return 1
    print(json.dumps(run.results, indent=1)[:20000])
    wrong = provenance.problems(run.results["info"].get("imports") or {}, CHECKOUT.resolve())
    for problem in wrong:
        print(f"NOT the checkout's venv: {problem}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
