"""`vfido doctor` against fake /sys, /dev, /etc and /run/udev trees (and for real), and
`vfido install-udev` into a prefix."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.presence_helpers import as_other_user
from tests.service_helpers import env, udp_service, vfido
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.control import ControlServer
from vfido.doctor import Check, Key, Paths, check_roundtrip, format_check, run_checks
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.transports.inprocess import open_device
from vfido.udev_install import FILES, UDEV_DIR, InstallError, install, unit_text

SERIAL = "vfido-0123456789ab"


def in_process_key(_path: str) -> Any:
    """A real key (authenticator + CTAPHID runner) behind python-fido2's CtapHidDevice."""
    return open_device(Authenticator(SqliteKeyStore.ephemeral(), AutoPresence(), Config()))


@pytest.fixture
def root() -> Iterator[Path]:
    """A fake root other users can traverse (tmp_path's parents are 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="vfido-doctor-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def write(path: Path, text: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def healthy(root: Path, *, tags: str = "E:ID_SECURITY_TOKEN=1\nG:uaccess\nQ:uaccess\n") -> None:
    """A machine where everything is set up and one vfido key runs as hidraw3."""
    write(root / "dev/uhid", mode=0o666)
    write(root / "etc/group", "root:x:0:\nvfido:x:990:alice\n")
    write(root / "etc/udev/rules.d/70-vfido.rules", (UDEV_DIR / "70-vfido.rules").read_text())
    write(root / "etc/modules-load.d/vfido.conf", "# comment\nuhid\n")
    write(root / "etc/systemd/user/vfido.service", "[Service]\n")
    device = root / "sys/devices/virtual/misc/uhid/0003:1209:0001.0004"
    write(
        device / "uevent",
        f"DRIVER=hid-generic\nHID_ID=0003:00001209:00000001\nHID_NAME=vfido virtual FIDO2 key\n"
        f"HID_PHYS=vfido/{SERIAL}\nHID_UNIQ={SERIAL}\n",
    )
    (device / "hidraw/hidraw3").mkdir(parents=True)
    write(root / "sys/class/hidraw/hidraw3/dev", "241:3\n")
    write(root / "dev/hidraw3", mode=0o666)
    write(root / "run/udev/data/c241:3", f"I:123\n{tags}")


def paths(root: Path) -> Paths:
    return Paths(root=root, control_dir=root / "run/user/vfido", home=root / "home/alice")


def statuses(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_everything_fine(root: Path) -> None:
    healthy(root)
    checks = run_checks(paths(root), opener=in_process_key)
    lines = [format_check(c) for c in checks]
    assert all(c.status == "ok" for c in checks), "\n".join(lines)
    assert [c.name for c in checks] == [
        "uhid module",
        "/dev/uhid access",
        "udev rules",
        "uhid at boot",
        "systemd user unit",
        "key running",
        "hidraw node",
        "hidraw access",
        "security token",
        "INIT + getInfo",
    ]
    assert SERIAL in checks[5].detail and "sysfs" in checks[5].detail
    assert "FIDO_2_0" in checks[-1].detail and "U2F_V2" in checks[-1].detail
    assert all("\n" not in line for line in lines)


def test_bare_machine_says_what_to_do(root: Path) -> None:
    write(root / "etc/group", "root:x:0:\n")
    checks = run_checks(paths(root), opener=in_process_key)
    by_name = {c.name: c for c in checks}
    assert by_name["uhid module"].failed and "modprobe uhid" in by_name["uhid module"].fix
    assert by_name["/dev/uhid access"].status == "skip"
    assert by_name["udev rules"].failed and "vfido install-udev" in by_name["udev rules"].fix
    assert by_name["uhid at boot"].status == "warn"
    assert (
        by_name["key running"].failed and "vfido run --transport uhid" in by_name["key running"].fix
    )
    for check in checks:
        line = format_check(check)
        assert ("fix: " in line) == (check.status in ("FAIL", "warn")), line


def test_outdated_rules_and_missing_tags(root: Path) -> None:
    healthy(root, tags="E:ID_FIDO_TOKEN=1\n")
    write(root / "etc/udev/rules.d/70-vfido.rules", "# an old version\n")
    checks = run_checks(paths(root), opener=in_process_key)
    by_name = {c.name: c for c in checks}
    assert by_name["udev rules"].status == "warn"
    token = by_name["security token"]
    assert token.failed and "ID_SECURITY_TOKEN and uaccess" in token.detail
    assert "udevadm trigger" in token.fix
    # the node works, so the round trip still runs
    assert by_name["INIT + getInfo"].status == "ok"


def test_no_udev_record(root: Path) -> None:
    healthy(root)
    (root / "run/udev/data/c241:3").unlink()
    token = {c.name: c for c in run_checks(paths(root), opener=in_process_key)}["security token"]
    assert token.failed and "no record" in token.detail


def test_hidraw_node_missing(root: Path) -> None:
    healthy(root)
    (root / "dev/hidraw3").unlink()
    result = statuses(run_checks(paths(root), opener=in_process_key))
    assert result["hidraw node"] == "FAIL"
    assert result["hidraw access"] == result["INIT + getInfo"] == "skip"


def test_permission_problems_as_another_user(root: Path) -> None:
    healthy(root)
    (root / "dev/uhid").chmod(0o600)
    (root / "dev/hidraw3").chmod(0o600)

    def check() -> list[tuple[str, str, str]]:
        return [(c.name, c.status, c.fix) for c in run_checks(paths(root), opener=in_process_key)]

    result = {name: (status, fix) for name, status, fix in as_other_user(check)}
    assert result["/dev/uhid access"][0] == "FAIL"
    # the node's group is not vfido (990): the rule was not applied
    assert "udev rule is not applied" in result["/dev/uhid access"][1]
    assert result["hidraw access"][0] == "FAIL" and "udevadm trigger" in result["hidraw access"][1]
    assert result["INIT + getInfo"][0] == "skip"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own a node as group vfido")
def test_not_in_group_yet(root: Path) -> None:
    healthy(root)
    (root / "dev/uhid").chmod(0o660)
    os.chown(root / "dev/uhid", 0, 990)  # the rule applied: group vfido

    def check() -> str:
        checks = run_checks(paths(root), opener=in_process_key)
        return next(c.fix for c in checks if c.name == "/dev/uhid access")

    assert "sudo usermod -aG vfido nobody" in as_other_user(check)
    write(root / "etc/group", "root:x:0:\nvfido:x:990:alice,nobody\n")
    assert "log out and in again" in as_other_user(check)


def test_udp_key_found_by_its_control_socket(root: Path) -> None:
    healthy(root)
    server = ControlServer(root / "run/user/vfido/udp-8111.sock")
    status = {
        "name": "udp-8111",
        "transport": "udp",
        "udp": {"host": "127.0.0.1", "port": 8111},
        "presence": "auto",
    }
    server.register("status", lambda _args: status)
    with server:
        checks = {c.name: c for c in run_checks(paths(root), opener=in_process_key)}
    assert "udp 127.0.0.1:8111" in checks["key running"].detail
    assert "control socket" in checks["key running"].detail
    # A UDP key is not broken: browsers just cannot see it (a warning, with the way to UHID).
    assert checks["hidraw node"].status == "warn"
    assert "--transport uhid" in checks["hidraw node"].fix
    assert checks["INIT + getInfo"].status == "skip"  # this fake status has no ports


def kernel_paths(root: Path) -> Paths:
    return Paths(
        root=root, control_dir=root / "run/user/vfido", home=root / "home/alice", release="6.1.0-t"
    )


def test_kernel_without_uhid_support(root: Path) -> None:
    """CONFIG_UHID not set: no module to load, and UDP / in-process keys still work."""
    write(root / "lib/modules/6.1.0-t/modules.dep", "kernel/drivers/hid/hid-generic.ko:\n")
    write(root / "lib/modules/6.1.0-t/modules.builtin", "kernel/drivers/hid/hid.ko\n")
    check = next(c for c in run_checks(kernel_paths(root)) if c.name == "uhid module")
    assert check.failed and "no UHID support" in check.detail and "CONFIG_UHID" in check.detail
    assert "modprobe" not in check.fix and "UDP" in check.fix and "in-process" in check.fix


def test_kernel_config_says_uhid_is_not_set(root: Path) -> None:
    write(root / "boot/config-6.1.0-t", "CONFIG_HID=y\n# CONFIG_UHID is not set\n")
    check = next(c for c in run_checks(kernel_paths(root)) if c.name == "uhid module")
    assert check.failed and "no UHID support" in check.detail


def test_uhid_module_not_loaded(root: Path) -> None:
    write(root / "lib/modules/6.1.0-t/modules.dep", "kernel/drivers/hid/uhid.ko.xz: hid.ko\n")
    check = next(c for c in run_checks(kernel_paths(root)) if c.name == "uhid module")
    assert check.failed and "not loaded" in check.detail
    assert "sudo modprobe uhid" in check.fix and "UDP" in check.fix


def test_cannot_tell_without_modules_or_config(root: Path) -> None:
    check = next(c for c in run_checks(kernel_paths(root)) if c.name == "uhid module")
    assert check.failed and "a container?" in check.detail and "modprobe uhid" in check.fix


@pytest.mark.slow
def test_a_healthy_udp_key_passes_doctor(tmp_path: Path) -> None:
    """Only a UDP key runs: UHID and udev are warnings (browsers need them, it does not),
    and INIT + getInfo over UDP is checked."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    with udp_service(["--ephemeral"], extra_env={"XDG_RUNTIME_DIR": str(runtime)}):
        result = vfido(["doctor"], XDG_RUNTIME_DIR=str(runtime))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert re.search(r"^ok    INIT \+ getInfo: CTAPHID v2, .*FIDO_2_1", result.stdout, re.M), (
        result.stdout
    )
    # Warnings were summed up as "all checks passed" (a newcomer trial).
    warned = len(re.findall(r"^warn ", result.stdout, re.M))
    assert warned and result.stdout.splitlines()[-1] == (
        f"no check failed ({warned} warning(s): see above)"
    )


@pytest.mark.slow
def test_a_healthy_unix_socket_key_passes_doctor(tmp_path: Path) -> None:
    """As a UDP key: UHID and udev are warnings, and INIT + getInfo is checked over the
    key's socket (it failed the UHID checks and skipped this one with a UDP-only reason: a
    session 15 newcomer's trial)."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    key = subprocess.Popen(
        [sys.executable, "-m", "vfido", "run", "--ephemeral", "--transport", "unix"],
        env=env(XDG_RUNTIME_DIR=str(runtime)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert key.stderr is not None
        for line in key.stderr:
            if "listening on unix" in line:
                break
        result = vfido(["doctor"], XDG_RUNTIME_DIR=str(runtime))
    finally:
        key.terminate()
        key.communicate(timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert re.search(r"^ok    INIT \+ getInfo: CTAPHID v2, .*FIDO_2_1", result.stdout, re.M), (
        result.stdout
    )


def test_uhid_key_found_by_its_control_socket(root: Path) -> None:
    healthy(root)
    server = ControlServer(root / "run/user/vfido/k.sock")
    status = {"name": "k", "transport": "uhid", "hidraw": "/dev/hidraw3", "presence": "notify"}
    server.register("status", lambda _args: status)
    with server:
        checks = run_checks(paths(root), name="k", opener=in_process_key)
    assert all(c.status == "ok" for c in checks), [format_check(c) for c in checks]


def test_roundtrip_failure_is_one_line() -> None:
    def broken(path: str) -> Any:
        raise OSError(5, "Input/output error", path)

    check = check_roundtrip(Key("", "uhid", "/dev/hidraw9", "sysfs"), "/dev/hidraw9", broken)
    assert check.failed and "Input/output error" in check.detail
    assert "\n" not in format_check(check)


def test_a_key_that_answers_u2f_only_passes_the_roundtrip() -> None:
    """A healthy U2F-only key (behaviour versions=U2F_V2, the u2f persona) has no CBOR:
    the check failed it with "Device does not support CTAP2." and a fix that does not help
    (a newcomer). It asks such a key for its U2F version instead."""
    from vfido.authenticator.behaviours import Behaviours

    def u2f_key(_path: str) -> Any:
        only = Behaviours.from_assignments(["versions=U2F_V2"])
        store = SqliteKeyStore.ephemeral()
        return open_device(Authenticator(store, AutoPresence(), Config(), behaviours=only))

    check = check_roundtrip(Key("", "uhid", "/dev/hidraw9", "sysfs"), "/dev/hidraw9", u2f_key)
    assert not check.failed, check
    assert check.detail.endswith("U2F_V2 (U2F only)"), check.detail
    both = check_roundtrip(Key("", "uhid", "/dev/hidraw9", "sysfs"), "/dev/hidraw9", in_process_key)
    assert not both.failed and "FIDO_2_1" in both.detail and "aaguid" in both.detail


def test_snap_browser_warning(root: Path) -> None:
    healthy(root)
    write(root / "snap/bin/chromium", mode=0o755)
    checks = {c.name: c for c in run_checks(paths(root), opener=in_process_key)}
    assert checks["snap browsers"].status == "warn"


@pytest.mark.slow
def test_doctor_for_real(tmp_path: Path) -> None:
    """On this machine: one line per check, status 1 if something failed, no traceback."""
    result = vfido(["doctor"], XDG_RUNTIME_DIR=str(tmp_path))
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines and lines[0].split()[0] in ("ok", "FAIL")
    failed = [line for line in lines if line.startswith("FAIL")]
    assert result.returncode == (1 if failed else 0), result.stdout
    assert all("fix: " in line for line in failed)


# --- install-udev -------------------------------------------------------------------------------


def test_install_into_prefix(tmp_path: Path) -> None:
    out: list[str] = []
    assert install(prefix=tmp_path, out=out.append) == 0
    for name, destination in FILES:
        target = tmp_path / destination
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        if name != "vfido.service":
            assert target.read_bytes() == (UDEV_DIR / name).read_bytes()
    unit = (tmp_path / "etc/systemd/user/vfido.service").read_text()
    assert "ExecStart=" in unit and " run --transport uhid" in unit
    assert any(line.startswith("skipped (--prefix): modprobe uhid") for line in out)
    assert not any(line.startswith("ran:") for line in out)
    # and doctor then finds them
    checks = {c.name: c for c in run_checks(Paths(root=tmp_path, home=tmp_path / "home"))}
    assert checks["udev rules"].status == "ok"
    assert checks["uhid at boot"].status == "ok"
    assert checks["systemd user unit"].status == "ok"


def test_install_never_writes_through_a_planted_temporary_file(tmp_path: Path) -> None:
    """The files were written through a fixed `.NAME.tmp` beside them: a symlink planted there
    (by anyone who can write the directory) sent root's write to any file, and the user's own
    file of that name was lost. Now the temporary file is a new one each time."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for _, destination in FILES:
        target = tmp_path / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / f".{target.name}.tmp").symlink_to(victim)
    assert install(prefix=tmp_path, out=lambda line: None) == 0
    assert victim.read_text() == "precious"
    for _, destination in FILES:
        target = tmp_path / destination
        assert target.is_file() and not target.is_symlink()
        assert (target.parent / f".{target.name}.tmp").is_symlink()  # left alone
        leftovers = [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == [f".{target.name}.tmp"]


def test_install_keeps_a_file_that_was_edited(tmp_path: Path) -> None:
    """A rules file the administrator edited was replaced without a word (a session 15
    newcomer's trial): it is now kept beside it, under a name udev does not read, each time
    it differs; an unchanged file is simply installed again."""
    assert install(prefix=tmp_path, out=lambda line: None) == 0
    rules = tmp_path / "etc/udev/rules.d/70-vfido.rules"
    edits = []
    for n in range(2):
        edits.append(rules.read_text() + f"# my own rule {n}\n")
        rules.write_text(edits[-1])
        out: list[str] = []
        assert install(prefix=tmp_path, out=out.append) == 0
        kept = rules.with_name("70-vfido.rules.vfido-old" + (f".{n}" if n else ""))
        assert kept.read_text() == edits[-1]
        assert f"installed {rules} (kept what was there before as {kept})" in out
        assert rules.read_bytes() == (UDEV_DIR / "70-vfido.rules").read_bytes()
    out = []
    assert install(prefix=tmp_path, out=out.append) == 0  # nothing differs: nothing kept
    assert f"installed {rules}" in out
    assert sorted(p.name for p in rules.parent.iterdir()) == [
        "70-vfido.rules",
        "70-vfido.rules.vfido-old",
        "70-vfido.rules.vfido-old.1",
    ]
    rules.write_text("edited")
    out = []
    install(prefix=tmp_path, dry_run=True, out=out.append)
    assert rules.read_text() == "edited"
    assert any("would keep what was there before" in line for line in out)


def test_install_keeps_what_was_there_without_reading_through_it(tmp_path: Path) -> None:
    """The first version of the backup read the old file through a symlink planted in its
    place and wrote what it pointed to as a new 0644 file (root's secrets, readable by all),
    and hung on a FIFO (the diff review). The old entry is now kept as itself, a hard link
    to the same inode: a symlink stays a symlink, a file keeps its mode."""
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    rules = tmp_path / "etc/udev/rules.d/70-vfido.rules"
    modules = tmp_path / "etc/modules-load.d/vfido.conf"
    rules.parent.mkdir(parents=True)
    modules.parent.mkdir(parents=True)
    rules.symlink_to(secret)
    os.mkfifo(modules)
    assert install(prefix=tmp_path, out=lambda line: None) == 0
    kept = rules.with_name("70-vfido.rules.vfido-old")
    assert kept.is_symlink() and os.readlink(kept) == str(secret)
    assert stat.S_ISFIFO(modules.with_name("vfido.conf.vfido-old").lstat().st_mode)
    assert rules.read_bytes() == (UDEV_DIR / "70-vfido.rules").read_bytes()
    assert secret.read_text() == "root only" and stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_install_copies_what_it_cannot_link(tmp_path: Path, monkeypatch: Any) -> None:
    """Where a hard link is refused (fs.protected_hardlinks for another user's file, a file
    system without links), the old file is copied with its mode, a symlink made again; a
    directory in the way is one line (the second diff review: the install stopped there,
    saying "cannot write")."""
    rules = tmp_path / "etc/udev/rules.d/70-vfido.rules"
    modules = tmp_path / "etc/modules-load.d/vfido.conf"
    rules.parent.mkdir(parents=True)
    modules.parent.mkdir(parents=True)
    rules.write_text("# mine")
    rules.chmod(0o640)
    modules.symlink_to("/nowhere")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    assert install(prefix=tmp_path, out=lambda line: None) == 0
    kept = rules.with_name("70-vfido.rules.vfido-old")
    assert kept.read_text() == "# mine" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert os.readlink(modules.with_name("vfido.conf.vfido-old")) == "/nowhere"
    unit = tmp_path / "etc/systemd/user/vfido.service"
    unit.unlink()
    unit.mkdir()
    with pytest.raises(InstallError) as refusal:
        install(prefix=tmp_path, out=lambda line: None)
    assert str(refusal.value) == (
        f"cannot keep the old {unit} as vfido.service.vfido-old: it is neither a file nor a symlink"
    )


def test_unit_runs_this_interpreter_when_vfido_is_not_on_path() -> None:
    text = "ExecStart=/usr/bin/env vfido run --transport uhid\n"
    rewritten = unit_text(text, python="/opt/venv/bin/python")
    if shutil.which("vfido", path="/usr/local/bin:/usr/bin:/bin") is None:
        assert rewritten == "ExecStart=/opt/venv/bin/python -m vfido run --transport uhid\n"
    else:
        assert rewritten == text


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    out: list[str] = []
    install(prefix=tmp_path, dry_run=True, out=out.append)
    assert list(tmp_path.iterdir()) == []
    assert any(line.startswith("would install") for line in out)
    result = vfido(["install-udev", "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert "would install /etc/udev/rules.d/70-vfido.rules" in result.stdout
    assert "would run: modprobe uhid" in result.stdout


def test_needs_root_without_prefix() -> None:
    def attempt() -> str:
        try:
            install(out=lambda _line: None)
        except InstallError as exc:
            return str(exc)
        return "installed"

    assert "run it as root" in as_other_user(attempt)


def test_missing_sources_and_unknown_user(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="this installation of vfido is incomplete"):
        install(prefix=tmp_path, source=tmp_path / "nothing")
    with pytest.raises(InstallError, match="no user"):
        install(prefix=tmp_path, user="no-such-user-vfido")


# --- `vfido run` without /dev/uhid ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.path.exists("/dev/uhid"), reason="this machine has /dev/uhid")
def test_run_uhid_without_uhid_is_one_line(tmp_path: Path) -> None:
    result = vfido(
        ["run", "--transport", "uhid", "--ephemeral", "--presence", "manual"],
        XDG_RUNTIME_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "modprobe uhid" in result.stderr
    assert list((tmp_path / "vfido").iterdir()) == []  # no control socket left behind
