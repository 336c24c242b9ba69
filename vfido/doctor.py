"""``vfido doctor``: can browsers on this machine use the key? One line per check.

Each check is ``ok``, ``warn`` (works, but something is worth fixing), ``FAIL`` (with the fix,
on the same line) or ``skip`` (an earlier check failed). The exit status is 1 if any check
failed.

Every path is taken relative to :attr:`Paths.root`, so the checks run against a fake
``/sys``, ``/dev``, ``/etc`` and ``/run/udev`` tree in tests; running keys are found through
their control sockets (:mod:`vfido.control`) or, failing that, in sysfs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fido2.ctap1 import Ctap1
from fido2.ctap2.base import Ctap2
from fido2.hid import CAPABILITY

from vfido.control import ControlClient, ControlError, find_key, running_keys
from vfido.udev_install import UDEV_DIR

GROUP = "vfido"
VENDOR_ID, PRODUCT_ID = 0x1209, 0x0001
RULES = "70-vfido.rules"
RULES_DIRS = ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d")
MODULES_LOAD_DIRS = ("etc/modules-load.d", "run/modules-load.d", "usr/lib/modules-load.d")
ROUNDTRIP_TIMEOUT = 10.0

INSTALL = "sudo vfido install-udev"
START = "vfido run --transport uhid (or: systemctl --user start vfido)"
#: Said wherever UHID is missing: what works without it.
WITHOUT_UHID = (
    "UDP and Unix-socket keys (`vfido run --transport udp|unix`) and in-process keys "
    "(vfido.api.VirtualKey) work without it"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL" | "skip"
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def format_check(check: Check) -> str:
    line = f"{check.status:<4}  {check.name}: {check.detail}"
    if check.fix and check.status in ("FAIL", "warn"):
        line += f"; fix: {check.fix}"
    return line


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def _warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


@dataclass(frozen=True)
class Paths:
    """Where the checks look (``root`` is ``/`` except in tests)."""

    root: Path = Path("/")
    control_dir: Path | None = None  # default: where clients look (vfido.control.find_key)
    home: Path = field(default_factory=Path.home)
    udev_source: Path = UDEV_DIR
    #: The running kernel's release (``uname -r``): where its modules and config are.
    release: str = field(default_factory=lambda: os.uname().release)

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")


@dataclass(frozen=True)
class Key:
    """A running vfido key."""

    name: str
    transport: str  # "uhid" | "unix" | "udp"
    hidraw: str | None  # "/dev/hidrawN"
    found_by: str  # "control socket" | "sysfs"
    detail: str = ""
    udp: tuple[str, int, int] | None = None  # host, port, peer port of a UDP key
    unix: str | None = None  # the socket of a Unix-socket key


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _groups(paths: Paths) -> dict[str, tuple[int, list[str]]]:
    """``/etc/group`` under the root: name -> (gid, members)."""
    result: dict[str, tuple[int, list[str]]] = {}
    with contextlib.suppress(OSError):
        for line in (
            paths.at("/etc/group").read_text(encoding="utf-8", errors="replace").split("\n")
        ):
            parts = line.split(":")
            if len(parts) >= 4 and parts[2].isdigit():
                result[parts[0]] = (int(parts[2]), [m for m in parts[3].split(",") if m])
    return result


def _can_open(path: Path) -> OSError | None:
    """None if ``path`` opens read-write (it is closed at once), else the error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc
    os.close(fd)
    return None


# --- checks ---------------------------------------------------------------------------------


def kernel_uhid(paths: Paths) -> str:
    """What the running kernel has: ``builtin``, ``module`` (it can be loaded), ``absent``
    (CONFIG_UHID is not set: no module, not built in) or ``unknown`` (no modules directory
    or kernel config to look at, e.g. in a container)."""
    modules = paths.at(f"/lib/modules/{paths.release}")
    with contextlib.suppress(OSError):
        if "/uhid.ko" in (modules / "modules.builtin").read_text(errors="replace"):
            return "builtin"
    with contextlib.suppress(OSError):
        if "/uhid.ko" in (modules / "modules.dep").read_text(errors="replace"):
            return "module"
    if any((modules / "kernel/drivers/hid").glob("uhid.ko*")):
        return "module"
    config = None
    with contextlib.suppress(OSError):
        config = paths.at(f"/boot/config-{paths.release}").read_text(errors="replace")
    if config is None:
        with contextlib.suppress(OSError):
            import gzip

            config = gzip.decompress(paths.at("/proc/config.gz").read_bytes()).decode(
                errors="replace"
            )
    if config is not None:
        for line in config.splitlines():
            if line.startswith("CONFIG_UHID="):
                return "builtin" if line.strip() == "CONFIG_UHID=y" else "module"
        return "absent"
    if (modules / "modules.dep").is_file():
        return "absent"  # the kernel's module list has no uhid, and it is not built in
    return "unknown"


def check_uhid(paths: Paths) -> Check:
    name = "uhid module"
    if paths.at("/dev/uhid").exists():
        return _ok(name, "/dev/uhid present")
    if paths.at("/sys/devices/virtual/misc/uhid").exists() or paths.at("/sys/module/uhid").exists():
        return _fail(
            name,
            "uhid is loaded but /dev/uhid is missing",
            "sudo udevadm trigger --subsystem-match=misc (is devtmpfs mounted on /dev?)",
        )
    kernel = kernel_uhid(paths)
    if kernel == "absent":
        return _fail(
            name,
            f"this kernel ({paths.release}) has no UHID support: CONFIG_UHID is not set and "
            "there is no uhid module, so browsers cannot see vfido here",
            f"a kernel with CONFIG_UHID (most distributions' kernels), or a VM; {WITHOUT_UHID}",
        )
    if kernel == "unknown":
        return _fail(
            name,
            f"no /dev/uhid, and no /lib/modules/{paths.release} or kernel config to tell why "
            "(a container?)",
            f"on the host: sudo modprobe uhid, and pass /dev/uhid in; {WITHOUT_UHID}",
        )
    if kernel == "builtin":
        return _fail(
            name,
            "uhid is built into the kernel but /dev/uhid is missing",
            "is devtmpfs mounted on /dev? sudo udevadm trigger --subsystem-match=misc",
        )
    return _fail(
        name,
        "the kernel's uhid module is not loaded (no /dev/uhid)",
        f"sudo modprobe uhid ({INSTALL} loads it at every boot); {WITHOUT_UHID}",
    )


def _access_fix(paths: Paths, node: Path) -> str:
    user = _user()
    groups = _groups(paths)
    if GROUP not in groups:
        return f"{INSTALL} --user {user} (creates group {GROUP}), then log in again"
    gid, members = groups[GROUP]
    with contextlib.suppress(OSError):
        if node.stat().st_gid != gid:
            return f"the udev rule is not applied: {INSTALL}, then sudo udevadm trigger"
    if user in members and gid not in os.getgroups():
        return f"you are in group {GROUP} but this session is older: log out and in again"
    return f"sudo usermod -aG {GROUP} {user}, then log out and in again"


def check_uhid_access(paths: Paths) -> Check:
    name = "/dev/uhid access"
    node = paths.at("/dev/uhid")
    if not node.exists():
        return _skip(name, "no /dev/uhid")
    error = _can_open(node)
    if error is None:
        return _ok(name, f"{_user()} can open /dev/uhid read-write")
    return _fail(name, f"cannot open /dev/uhid: {error.strerror}", _access_fix(paths, node))


def check_rules(paths: Paths) -> Check:
    name = "udev rules"
    for directory in RULES_DIRS:
        installed = paths.at(directory) / RULES
        if installed.is_file():
            shown = "/" + directory + "/" + RULES
            source = paths.udev_source / RULES
            with contextlib.suppress(OSError):
                if source.is_file() and source.read_bytes() != installed.read_bytes():
                    return _warn(name, f"{shown} differs from {source}", f"{INSTALL} to update")
            return _ok(name, f"{shown} installed")
    return _fail(name, f"{RULES} is not installed", INSTALL)


def check_modules_load(paths: Paths) -> Check:
    name = "uhid at boot"
    for directory in MODULES_LOAD_DIRS:
        with contextlib.suppress(OSError):
            for conf in sorted(paths.at(directory).glob("*.conf")):
                lines = conf.read_text(encoding="utf-8", errors="replace").splitlines()
                if any(line.strip() == "uhid" for line in lines):
                    return _ok(name, f"/{directory}/{conf.name} loads uhid")
    with contextlib.suppress(OSError):
        release = os.uname().release
        builtin = paths.at(f"/lib/modules/{release}/modules.builtin").read_text(errors="replace")
        if "/uhid.ko" in builtin:
            return _ok(name, "uhid is built into the kernel")
    return _warn(name, "nothing loads uhid at boot", INSTALL)


def check_user_unit(paths: Paths) -> Check:
    name = "systemd user unit"
    for candidate in (
        paths.home / ".config/systemd/user/vfido.service",
        paths.at("/etc/systemd/user/vfido.service"),
        paths.at("/usr/lib/systemd/user/vfido.service"),
    ):
        if candidate.is_file():
            return _ok(name, f"{candidate} (start: systemctl --user enable --now vfido)")
    return _warn(
        name,
        "vfido.service is not installed (optional: starts the key at login)",
        f"{INSTALL}, then systemctl --user enable --now vfido",
    )


def _key_from_status(path: Path, status: dict[str, Any]) -> Key:
    transport = str(status.get("transport", "?"))
    hidraw = status.get("hidraw")
    address = None
    unix = None
    if transport == "udp":
        udp = status.get("udp") or {}
        detail = f"udp {udp.get('host')}:{udp.get('port')}"
        host, port, peer = udp.get("host"), udp.get("port"), udp.get("peer_port")
        if isinstance(host, str) and isinstance(port, int) and isinstance(peer, int):
            address = (host, port, peer)
    elif transport == "unix":
        detail = f"unix {status.get('unix_socket')}"
        if isinstance(status.get("unix_socket"), str):
            unix = str(status["unix_socket"])
    else:
        detail = f"uhid {hidraw or '(no hidraw node)'}"
    return Key(
        str(status.get("name") or path.stem),
        transport,
        hidraw if isinstance(hidraw, str) else None,
        "control socket",
        f"{detail}, presence {status.get('presence')}",
        address,
        unix,
    )


def sysfs_keys(paths: Paths) -> list[Key]:
    """vfido devices among the UHID devices in sysfs (vendor 1209, product 0001)."""
    keys = []
    base = paths.at("/sys/devices/virtual/misc/uhid")
    with contextlib.suppress(OSError):
        for device in sorted(base.iterdir()):
            try:
                uevent = dict(
                    line.split("=", 1)
                    for line in (device / "uevent").read_text(errors="replace").splitlines()
                    if "=" in line
                )
            except OSError:
                continue
            hid_id = uevent.get("HID_ID", "").split(":")
            ours = len(hid_id) == 3 and hid_id[1:] == [f"{VENDOR_ID:08X}", f"{PRODUCT_ID:08X}"]
            if not ours and "vfido" not in uevent.get("HID_NAME", ""):
                continue
            nodes: list[str] = []
            with contextlib.suppress(OSError):
                nodes = sorted(p.name for p in (device / "hidraw").iterdir())
            hidraw = f"/dev/{nodes[0]}" if nodes else None
            serial = uevent.get("HID_UNIQ") or device.name
            keys.append(Key(serial, "uhid", hidraw, "sysfs", f"uhid {hidraw or '(no hidraw)'}"))
    return keys


def find_keys(paths: Paths, name: str | None = None) -> list[Key]:
    """Running keys: from their control sockets, else from sysfs."""
    directory = paths.control_dir  # None: where clients look (the fallback included)
    sockets = [find_key(name, directory=directory)] if name else running_keys(directory)
    keys = []
    for path in sockets:
        with contextlib.suppress(ControlError), ControlClient(path, timeout=5) as client:
            keys.append(_key_from_status(path, client.call("status")))
    if keys:
        return keys
    found = sysfs_keys(paths)
    return [k for k in found if name is None or k.name == name]


def check_running(keys: list[Key], name: str | None) -> Check:
    label = "key running"
    if not keys:
        which = f"no key named {name}" if name else "no vfido key is running"
        return _fail(label, which, START)
    described = "; ".join(f"{k.name} ({k.detail}, found by {k.found_by})" for k in keys)
    return _ok(label, described)


def _udev_record(paths: Paths, hidraw: str) -> list[str] | None:
    """The udev database lines of ``/dev/hidrawN``, or None."""
    node = hidraw.rsplit("/", 1)[-1]
    try:
        devnum = paths.at(f"/sys/class/hidraw/{node}/dev").read_text().strip()
        return paths.at(f"/run/udev/data/c{devnum}").read_text(errors="replace").splitlines()
    except OSError:
        return None


def check_hidraw(paths: Paths, key: Key) -> list[Check]:
    """Node present, read-write for the user, tagged as a security token."""
    prefix = f"{key.name}: " if key.name else ""
    present, access, tagged = (
        f"{prefix}hidraw node",
        f"{prefix}hidraw access",
        f"{prefix}security token",
    )
    if key.transport != "uhid":
        return [
            _warn(
                present,
                f"this key runs on {key.transport.upper()}, for test tools and python-fido2; "
                "browsers only see hidraw keys",
                "vfido run --transport uhid, for browsers",
            )
        ]
    if key.hidraw is None or not paths.at(key.hidraw).exists():
        return [
            _fail(
                present,
                f"no hidraw node for the key ({key.hidraw or 'none reported'})",
                "is the kernel's hidraw driver available (CONFIG_HIDRAW)? restart the key and "
                "look at dmesg",
            ),
            _skip(access, "no hidraw node"),
            _skip(tagged, "no hidraw node"),
        ]
    node = paths.at(key.hidraw)
    checks = [_ok(present, key.hidraw)]
    error = _can_open(node)
    if error is None:
        checks.append(_ok(access, f"{_user()} can open {key.hidraw} read-write"))
    else:
        checks.append(
            _fail(
                access,
                f"cannot open {key.hidraw}: {error.strerror}",
                f"{INSTALL}, then sudo udevadm trigger --subsystem-match=hidraw (the node "
                "belongs to the user who started the key, and to the user at the seat)",
            )
        )
    record = _udev_record(paths, key.hidraw)
    trigger = f"{INSTALL}, then sudo udevadm trigger --action=change --subsystem-match=hidraw"
    if record is None:
        checks.append(
            _fail(
                tagged, f"udev has no record of {key.hidraw} (is systemd-udevd running?)", trigger
            )
        )
        return checks
    token = "E:ID_SECURITY_TOKEN=1" in record
    uaccess = any(line in ("G:uaccess", "Q:uaccess") for line in record)
    missing = [what for what, ok in (("ID_SECURITY_TOKEN", token), ("uaccess", uaccess)) if not ok]
    if missing:
        checks.append(_fail(tagged, f"{key.hidraw} lacks {' and '.join(missing)}", trigger))
    else:
        checks.append(_ok(tagged, f"{key.hidraw} has ID_SECURITY_TOKEN=1 and the uaccess tag"))
    return checks


Opener = Callable[[str], Any]


def _open_hidraw(path: str) -> Any:
    from fido2.hid import open_device

    return open_device(path)


def check_roundtrip(
    key: Key, path: str, opener: Opener = _open_hidraw, timeout: float = ROUNDTRIP_TIMEOUT
) -> Check:
    """CTAPHID INIT (opening the device) and authenticatorGetInfo through ``opener(path)``
    (a key that answers U2F only, without CBOR: its U2F version instead)."""
    name = f"{key.name}: INIT + getInfo" if key.name else "INIT + getInfo"
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            device = opener(path)
            try:
                if device.capabilities & CAPABILITY.CBOR:
                    info = Ctap2(device).get_info()
                    outcome["detail"] = (
                        f"CTAPHID v{device.version}, {', '.join(info.versions)}, "
                        f"aaguid {bytes(info.aaguid).hex()}"
                    )
                else:  # a key that answers U2F only (no CBOR): its U2F version instead
                    version = Ctap1(device).get_version()
                    outcome["detail"] = f"CTAPHID v{device.version}, {version} (U2F only)"
            finally:
                device.close()
        except Exception as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    thread = threading.Thread(target=attempt, name="doctor-roundtrip", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return _fail(
            name,
            f"no answer within {timeout:.0f} s",
            "the key hangs: restart it with `vfido -v run ...` and read its log",
        )
    if "error" in outcome:
        return _fail(
            name,
            outcome["error"],
            "restart the key with `vfido -v run ...` and read its log",
        )
    return _ok(name, str(outcome["detail"]))


def _open_udp(key: Key) -> Any:
    from vfido.transports.udp import open_udp_device

    assert key.udp is not None
    host, port, peer = key.udp
    return open_udp_device(port, peer, host=host, timeout=ROUNDTRIP_TIMEOUT)


UdpOpener = Callable[[Key], Any]


def check_udp_roundtrip(key: Key, opener: UdpOpener | None = None) -> Check:
    """CTAPHID INIT + getInfo over UDP, from the port the key sends replies to. A client
    that holds that port is using the key: that is no fault of the key."""
    name = f"{key.name}: INIT + getInfo" if key.name else "INIT + getInfo"
    if key.udp is None:
        return _skip(name, "the key did not say its UDP ports")
    peer = key.udp[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((key.udp[0], peer))
        except OSError:
            return _ok(name, f"not tried: a client holds the reply port {peer} (in use)")
    return check_roundtrip(key, "udp", lambda _path: (opener or _open_udp)(key))


def _open_unix(path: str) -> Any:
    from vfido.transports.unix import open_unix_device

    return open_unix_device(path, timeout=ROUNDTRIP_TIMEOUT)


def check_unix_roundtrip(key: Key, opener: Opener = _open_unix) -> Check:
    """CTAPHID INIT + getInfo over the key's Unix socket."""
    if key.unix is None:
        name = f"{key.name}: INIT + getInfo" if key.name else "INIT + getInfo"
        return _skip(name, "the key did not say its socket")
    return check_roundtrip(key, key.unix, opener)


def check_snap_browsers(paths: Paths) -> Check | None:
    snaps = [b for b in ("chromium", "firefox") if paths.at(f"/snap/bin/{b}").exists()]
    if not snaps:
        return None
    return _warn(
        "snap browsers",
        f"{' and '.join(snaps)} installed as snap: snapd's u2f-devices interface does not "
        "cover UHID keys, so the snap cannot open the key",
        "use a non-snap (deb, Flatpak) browser for vfido",
    )


def _warn_only(check: Check) -> Check:
    if not check.failed:
        return check
    return Check(check.name, "warn", check.detail + " (only browsers need it)", check.fix)


def run_checks(
    paths: Paths | None = None,
    name: str | None = None,
    opener: Opener = _open_hidraw,
    udp_opener: UdpOpener | None = None,
) -> list[Check]:
    paths = paths or Paths()
    checks = [
        check_uhid(paths),
        check_uhid_access(paths),
        check_rules(paths),
        check_modules_load(paths),
        check_user_unit(paths),
    ]
    keys = find_keys(paths, name)
    if keys and all(key.transport in ("udp", "unix") for key in keys):
        # Only UDP and Unix-socket keys run: UHID and udev matter for browsers only, not for
        # what runs.
        checks = [_warn_only(check) for check in checks]
    checks.append(check_running(keys, name))
    if not keys:
        checks.append(_skip("hidraw", "no key running"))
    for key in keys:
        label = key.name if len(keys) > 1 else ""
        shown = replace(key, name=label)
        hidraw_checks = check_hidraw(paths, shown)
        checks += hidraw_checks
        if key.hidraw and all(c.status == "ok" for c in hidraw_checks[:2]):
            checks.append(check_roundtrip(shown, str(paths.at(key.hidraw)), opener))
        elif key.transport == "uhid":
            checks.append(_skip(f"{label + ': ' if label else ''}INIT + getInfo", "see above"))
        elif key.transport == "unix":
            checks.append(check_unix_roundtrip(shown))
        else:
            checks.append(check_udp_roundtrip(shown, udp_opener))
    snap = check_snap_browsers(paths)
    if snap is not None:
        checks.append(snap)
    return checks
