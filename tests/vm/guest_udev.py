"""udev/70-vfido.rules in the test guest (issue #15, low 5): whose is the key's hidraw node.

Run INSIDE the guest by guest_checks.py's ``udev_rules`` check: systemd-udevd with the
project's rules file, then

* ``/dev/uhid`` is group ``vfido`` 0660: a member opens it, a non-member cannot;
* ``vfido run`` started by uid 65534 (group vfido): its hidraw node belongs to 65534 (0600),
  is tagged ``uaccess`` / ``ID_FIDO_TOKEN``; 65534 lists and queries it with libfido2;
* uid 65533, also in group vfido, can neither open nor list it (before: it could);
* a UHID device with the pid.codes test id 1209:0001 that is not vfido's (another HID
  ``phys``), and one whose ``phys`` names no numeric uid, are not matched: root's 0600, and
  group vfido cannot open them (before: group vfido 0660).

The host's Python lives under /root (0700 in the guest), so the key process gets the
``dac_read_search`` capability to read its interpreter: that lets it read files, not open the
read-write device nodes this check is about. uaccess itself needs logind, which the guest does
not run: the tag is checked, the ACL is not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

CREATOR, OTHER = 65534, 65533


class Key(Protocol):
    cmd: list[str]
    hidraw: str | None

    def launch(self) -> None: ...

    def wait_ready(self, timeout: float = 60.0) -> str: ...

    def stop(self) -> None: ...


def sh(cmd: list[str], **kw: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{cmd} exited {proc.returncode}: {proc.stdout.decode(errors='replace')[-800:]} "
            f"{proc.stderr.decode(errors='replace')[-800:]}"
        )
    out: bytes = proc.stdout
    return out.decode(errors="replace")


def can_open(user: list[str], path: str) -> bool:
    """Whether ``user`` (a setpriv prefix) can open ``path`` read-write."""
    return subprocess.run([*user, "sh", "-c", f": <> {path}"], capture_output=True).returncode == 0


def node_state(path: str, env: dict[str, str]) -> dict[str, Any]:
    st = os.stat(path)
    props = sh(["udevadm", "info", "--query=all", path], env=env)
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": oct(st.st_mode & 0o777), "udev": props}


def raw_device(phys: str, serial: str) -> tuple[int, str]:
    """A UHID device with vfido's ids and report descriptor but another ``phys``."""
    from vfido.transports import uhid

    fd = os.open("/dev/uhid", os.O_RDWR)
    os.write(
        fd,
        uhid.encode_create2(
            name="pid.codes test device",
            phys=phys,
            uniq=serial,
            vendor_id=0x1209,
            product_id=0x0001,
        ),
    )
    deadline = time.monotonic() + 10
    while (path := uhid.find_hidraw(serial)) is None:
        if time.monotonic() > deadline:
            os.close(fd)
            raise RuntimeError(f"no hidraw node for the raw device {serial}")
        time.sleep(0.05)
    return fd, path


def destroy(fd: int) -> None:
    from vfido.transports import uhid

    os.write(fd, uhid._event(uhid.UhidEventType.DESTROY))
    os.close(fd)


def udev_rules(
    data: dict[str, Any],
    checkout: Path,
    make_key: Callable[[str, list[str]], Key],
    log: Callable[..., None],
) -> str:
    udevd = Path("/lib/systemd/systemd-udevd")
    if not udevd.exists():
        raise RuntimeError("systemd-udevd not installed (apt-get install udev)")
    env = dict(os.environ, SYSTEMD_IGNORE_CHROOT="1")
    rules_dir = Path("/etc/udev/rules.d")
    group_copy = Path("/tmp/etc-group")
    text = Path("/etc/group").read_text()
    if not re.search(r"^vfido:", text, re.M):
        text += "vfido:x:990:\n"
    group_copy.write_text(text)
    gid = int(re.search(r"^vfido:[^:]*:(\d+):", text, re.M).group(1))  # type: ignore[union-attr]

    def as_user(uid: int, *groups: int) -> list[str]:
        clear = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", *clear]

    creator, other, outsider = as_user(CREATOR, gid), as_user(OTHER, gid), as_user(OTHER)
    mounted: list[str] = []
    raw: list[int] = []
    try:
        sh(["mount", "-t", "tmpfs", "rules", str(rules_dir)])
        mounted.append(str(rules_dir))
        sh(["mount", "--bind", str(group_copy), "/etc/group"])
        mounted.append("/etc/group")
        shutil.copy(checkout / "udev" / "70-vfido.rules", rules_dir / "70-vfido.rules")
        sh([str(udevd), "--daemon"], env=env)
        sh(["udevadm", "trigger", "--action=add"], env=env)
        sh(["udevadm", "settle", "--timeout=30"], env=env)

        # /dev/uhid: group vfido.
        st = os.stat("/dev/uhid")
        data["uhid"] = {"gid": st.st_gid, "mode": oct(st.st_mode & 0o777)}
        data["uhid_member_opens"] = can_open(other, "/dev/uhid")
        data["uhid_outsider_opens"] = can_open(outsider, "/dev/uhid")

        # The creator's key.
        home = Path(f"/tmp/home-{CREATOR}")
        runtime = Path(f"/tmp/xdg-{CREATOR}")
        for d in (home, runtime):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, CREATOR, CREATOR)
        key = make_key("vfido-vm-udev", [])
        key.cmd = [
            *creator,
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "env",
            f"HOME={home}",
            f"XDG_RUNTIME_DIR={runtime}",
            *key.cmd,
        ]
        key.launch()
        try:
            hidraw = key.wait_ready(120)
            sh(["udevadm", "settle", "--timeout=30"], env=env)
            data["key"] = node_state(hidraw, env)
            data["key"]["path"] = hidraw
            data["creator_info"] = run_as(creator, ["fido2-token", "-I", hidraw])
            data["creator_list"] = run_as(creator, ["fido2-token", "-L"])
            data["other_info"] = run_as(other, ["fido2-token", "-I", hidraw])
            data["other_list"] = run_as(other, ["fido2-token", "-L"])
            data["other_opens"] = can_open(other, hidraw)
            data["creator_opens"] = can_open(creator, hidraw)

            # Devices that are not vfido's: another phys (a USB path), or no numeric uid.
            data["foreign"] = {}
            for label, phys in (
                ("usb_phys", "usb-0000:00:14.0-1/input0"),
                ("bad_uid", "vfido-uid/0x10"),
            ):
                fd, path = raw_device(phys, f"vfido-vm-foreign-{label}")
                raw.append(fd)
                sh(["udevadm", "settle", "--timeout=30"], env=env)
                state = node_state(path, env)
                state["member_opens"] = can_open(other, path)
                data["foreign"][label] = state
        finally:
            key.stop()
    finally:
        for fd in raw:
            destroy(fd)
        subprocess.run(["udevadm", "control", "--exit"], env=env, capture_output=True, check=False)
        for path in reversed(mounted):
            subprocess.run(["umount", path], capture_output=True, check=False)
    log(f"udev: key {data['key']['path']} uid {data['key']['uid']} mode {data['key']['mode']}")
    return (
        f"/dev/uhid gid {data['uhid']['gid']} {data['uhid']['mode']}; key node uid "
        f"{data['key']['uid']} {data['key']['mode']}; other member opens it: {data['other_opens']}"
    )


def run_as(user: list[str], cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run([*user, *cmd], capture_output=True, timeout=60, check=False)
    return {
        "rc": proc.returncode,
        "out": proc.stdout.decode(errors="replace")[-1500:],
        "err": proc.stderr.decode(errors="replace")[-800:],
    }
