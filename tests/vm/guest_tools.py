"""Real clients in every key configuration (issue #14), run INSIDE the test guest.

libfido2's command-line tools (``fido2-token``, ``fido2-cred``, ``fido2-assert``, Debian's
libfido2 1.12) and OpenSSH's ``ssh-keygen`` against three ``vfido run --transport uhid
--ephemeral`` keys at once:

* ``nopin``: no PIN, no built-in UV;
* ``pin``: its PIN is set with ``fido2-token -S`` and changed with ``fido2-token -C``;
* ``uv``: ``--uv`` (built-in user verification, no PIN).

The tools read a PIN with ``readpassphrase(3)`` on ``/dev/tty``, so every tool runs in its own
session whose controlling terminal is a pseudo-terminal this module answers: each PIN prompt
gets the configuration's PIN (an empty line when the key has none: what a user pressing Enter
does). OpenSSH asks through ``SSH_ASKPASS`` (``SSH_ASKPASS_REQUIRE=force``), answered the same
way. Every command runs under a timeout and is killed (with its process group) when it takes
longer: a hang is an outcome ("timeout"), never a stuck guest.

The check records, per configuration and operation, the outcome (``ok`` / ``error`` /
``timeout``), the tool's last error line and the prompts it showed; tests/vm/test_uhid_vm.py
compares that with its table of expectations. Nothing here asserts an outcome.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trace_protocols

#: The key configurations: name -> extra `vfido run` arguments.
CONFIGS: dict[str, list[str]] = {"nopin": [], "pin": [], "uv": ["--uv"]}
PIN_FIRST = "271828"
PIN = "314159"  # the "pin" key's PIN after fido2-token -C
TOOL_TIMEOUT = 60.0
MAX_PROMPTS = 4  # more PIN prompts than any tool asks for in one run: a loop, killed
PROMPT = re.compile(rb"(PIN|passphrase)[^\n]*: ?$", re.IGNORECASE)


class Key(Protocol):
    serial: str
    hidraw: str | None

    def launch(self) -> None: ...

    def wait_ready(self, timeout: float = 60.0) -> str: ...

    def stop(self) -> None: ...


@dataclass
class ToolRun:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    prompts: list[str] = field(default_factory=list)
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return "timeout"
        return "ok" if self.returncode == 0 else "error"

    @property
    def error(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_tool(
    argv: Sequence[str],
    *,
    stdin: bytes = b"",
    answers: Sequence[str] = (),
    fallback: str = "",
    timeout: float = TOOL_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> ToolRun:
    """Run one tool with a pseudo-terminal as its controlling terminal.

    stdin/stdout/stderr are pipes (the tools' data); the terminal is where readpassphrase
    prompts. Prompts are answered from ``answers`` in order, then with ``fallback``.
    """
    master, slave = os.openpty()
    slave_name = os.ttyname(slave)

    def take_terminal() -> None:  # runs in the child after setsid()
        os.close(os.open(slave_name, os.O_RDWR))  # the first tty opened becomes the ctty

    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=take_terminal,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    streams: dict[str, bytes] = {}

    def communicate() -> None:
        out, err = proc.communicate(stdin)
        streams["out"], streams["err"] = out, err

    reader = threading.Thread(target=communicate, daemon=True)
    reader.start()
    pending = list(answers)
    prompts: list[str] = []
    screen = b""
    timed_out = False
    deadline = start + timeout
    try:
        while reader.is_alive():
            if time.monotonic() > deadline or len(prompts) > MAX_PROMPTS:
                timed_out = time.monotonic() > deadline
                os.killpg(proc.pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last user closed it
                time.sleep(0.05)
                continue
            screen += chunk
            line = screen.rsplit(b"\n", 1)[-1]
            if PROMPT.search(line):
                prompts.append(line.decode(errors="replace").strip())
                answer = pending.pop(0) if pending else fallback
                os.write(master, answer.encode() + b"\n")
                screen += b"\n"
        reader.join(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            with_suppress_kill(proc)
    if len(prompts) > MAX_PROMPTS:
        streams.setdefault("err", b"")
        streams["err"] += f"\n(killed after {len(prompts)} PIN prompts)".encode()
    return ToolRun(
        argv=list(argv),
        returncode=proc.returncode,
        stdout=streams.get("out", b"").decode(errors="replace"),
        stderr=streams.get("err", b"").decode(errors="replace"),
        prompts=prompts,
        timed_out=timed_out,
        seconds=round(time.monotonic() - start, 2),
    )


def with_suppress_kill(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def random_hash() -> str:
    return b64(hashlib.sha256(os.urandom(16)).digest())


class Matrix:
    """One configuration's runs: ``record(op, *runs)`` keeps the first failing run of an op."""

    def __init__(
        self,
        name: str,
        device: str,
        pin: str | None,
        work: Path,
        others: Sequence[str] = (),
        trace: Path | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.others = list(others)  # the other keys' hidraw nodes
        self.pin = pin
        self.work = work
        self.trace = trace  # the key's `vfido run --trace` file
        self.ops: dict[str, dict[str, Any]] = {}

    def _responses(self) -> list[dict[str, Any]]:
        if self.trace is None or not self.trace.exists():
            return []
        return [r for r in trace_protocols.read_trace(self.trace) if r.get("type") == "response"]

    def trace_mark(self) -> int:
        """How many responses the key's trace holds now: :meth:`note_served` counts from it."""
        return len(self._responses())

    def note_served(self, op: str, since: int) -> None:
        """Record under ``op`` what the key answered after response ``since``: each response
        as ``"<proto> <command>"`` (``served``) and each assertion's authenticator data flags
        (``assertions``)."""
        new = self._responses()[since:]
        self.ops[op]["served"] = [f"{r.get('proto')} {r.get('command')}" for r in new]
        self.ops[op]["assertions"] = [
            list(r["result"]["authData"].get("flags", []))
            for r in new
            if r.get("command") == "getAssertion"
            and isinstance((r.get("result") or {}).get("authData"), dict)
        ]

    def tool(self, argv: Sequence[str], stdin: bytes = b"", **kw: Any) -> ToolRun:
        kw.setdefault("fallback", self.pin or "")
        return run_tool(argv, stdin=stdin, **kw)

    def record(self, op: str, *runs: ToolRun, note: str = "") -> bool:
        failing = next((r for r in runs if r.outcome != "ok"), None)
        shown = failing or runs[-1]
        self.ops[op] = {
            "outcome": shown.outcome,
            "error": shown.error,
            "command": " ".join(shown.argv[:3]),
            "prompts": [p for r in runs for p in r.prompts],
            "seconds": round(sum(r.seconds for r in runs), 2),
            "note": note,
        }
        if failing is not None:
            self.ops[op]["stderr"] = failing.stderr[-1200:]
        return failing is None

    def skip(self, op: str, why: str) -> None:
        self.ops[op] = {"outcome": "skipped", "error": why, "prompts": [], "seconds": 0.0}

    def fail(self, op: str, why: str, runs: Sequence[ToolRun] = ()) -> None:
        self.ops[op] = {
            "outcome": "wrong",
            "error": why,
            "prompts": [p for r in runs for p in r.prompts],
            "seconds": round(sum(r.seconds for r in runs), 2),
        }


# --- libfido2 ------------------------------------------------------------------------------


@dataclass
class Credential:
    cred_id: str
    pubkey: Path
    user_id: str
    large_blob_key: str | None = None


def make_credential(m: Matrix, op: str, flags: str, rp: str) -> Credential | None:
    """fido2-cred -M [flags] | fido2-cred -V [-v]: a credential of ``rp``."""
    user_id = b64(os.urandom(16))
    params = f"{random_hash()}\n{rp}\nuser-{op}\n{user_id}\n".encode()
    made = m.tool(["fido2-cred", "-M", *([flags] if flags else []), m.device, "es256"], params)
    if made.outcome != "ok":
        m.record(op, made)
        return None
    lines = made.stdout.splitlines()
    verify = ["fido2-cred", "-V", *(["-v"] if "v" in flags else []), "es256"]
    if "b" in flags:  # -V reads the 7 lines of the attestation; the 8th is the largeBlobKey
        verified = m.tool(verify, ("\n".join(lines[:7]) + "\n").encode())
    else:
        verified = m.tool(verify, made.stdout.encode())
    if not m.record(op, made, verified):
        return None
    out = verified.stdout.splitlines()
    pubkey = m.work / f"{op}.pem"
    pubkey.write_text("\n".join(out[1:]) + "\n")
    key = lines[7] if "b" in flags and len(lines) > 7 else None
    return Credential(out[0], pubkey, user_id, key)


def get_assertion(
    m: Matrix, op: str, flags: str, rp: str, creds: Sequence[Credential], uv: bool
) -> None:
    """fido2-assert -G [flags] | fido2-assert -V [-v] with the credential's public key."""
    if not creds:
        m.skip(op, "no credential to assert (its make step did not succeed)")
        return
    if "r" in flags:
        params = f"{random_hash()}\n{rp}\n".encode()
    else:
        params = f"{random_hash()}\n{rp}\n{creds[0].cred_id}\n".encode()
    got = m.tool(["fido2-assert", "-G", *([flags] if flags else []), m.device], params)
    if got.outcome != "ok":
        m.record(op, got)
        return
    lines = got.stdout.strip().splitlines()
    if "r" in flags:  # 5 lines per discoverable credential of the RP, the 5th its user id
        by_user = {c.user_id: c for c in creds}
        blocks = [lines[i : i + 5] for i in range(0, len(lines), 5)]
        ours = [(b, by_user[b[4]]) for b in blocks if len(b) == 5 and b[4] in by_user]
        if not ours:
            m.fail(op, f"no assertion for our users in {len(blocks)} answer(s)", [got])
            return
        block, cred = ours[0]
        assertion, pubkey = "\n".join(block[:4]) + "\n", cred.pubkey
    else:
        assertion, pubkey = got.stdout, creds[0].pubkey
    verify = ["fido2-assert", "-V", *(["-v"] if uv else []), str(pubkey), "es256"]
    m.record(op, got, m.tool(verify, assertion.encode()))


def pin_steps(m: Matrix) -> None:
    """fido2-token -S (the "pin" key only) and -C (every key)."""
    if m.name == "pin":
        if m.record("pin_set", m.tool(["fido2-token", "-S", m.device], answers=[PIN_FIRST] * 2)):
            m.pin = PIN_FIRST
        run = m.tool(["fido2-token", "-C", m.device], answers=[PIN_FIRST, PIN, PIN])
        if m.record("pin_change", run):
            m.pin = PIN
    else:
        # Changing a PIN that was never set: the tool asks, the key refuses (PIN_NOT_SET).
        m.record("pin_change", m.tool(["fido2-token", "-C", m.device], answers=["1234"] * 3))


def libfido2_matrix(m: Matrix) -> None:
    listing = m.tool(["fido2-token", "-L"])
    if listing.outcome == "ok" and m.device not in listing.stdout:
        m.fail("list", f"{m.device} not in {listing.stdout!r}", [listing])
    else:
        m.record("list", listing)
    info = m.tool(["fido2-token", "-I", m.device])
    m.record("info", info)
    options = re.search(r"^options: (.*)$", info.stdout, re.M)
    m.ops["info"]["options"] = options.group(1) if options else ""
    pin_steps(m)

    rp = f"{m.name}.fido2-tools.example"
    rk_rp = f"rk.{m.name}.fido2-tools.example"
    made: dict[str, Credential] = {}
    for op, flags, where in (
        ("make", "", rp),
        ("make_uv", "-v", rp),
        ("make_rk", "-r", rk_rp),
        ("make_rk_uv", "-rv", rk_rp),
    ):
        cred = make_credential(m, op, flags, where)
        if cred is not None:
            made[op] = cred
    plain = [c for k, c in made.items() if k in ("make", "make_uv")]
    rks = [c for k, c in made.items() if k in ("make_rk", "make_rk_uv")]
    get_assertion(m, "get", "", rp, plain, uv=False)
    get_assertion(m, "get_uv", "-v", rp, plain, uv=True)
    get_assertion(m, "get_rk", "-r", rk_rp, rks, uv=False)
    get_assertion(m, "get_rk_uv", "-rv", rk_rp, rks, uv=True)

    # Credential management: RPs, the RP's credentials, delete one, it is gone.
    m.record("cm_list_rps", m.tool(["fido2-token", "-L", "-r", m.device]))
    listed = m.tool(["fido2-token", "-L", "-k", rk_rp, m.device])
    m.record("cm_list_creds", listed)
    if not rks:
        m.skip("cm_delete", "no discoverable credential")
    else:
        victim = rks[0].cred_id
        deleted = m.tool(["fido2-token", "-D", "-i", victim, m.device])
        after = m.tool(["fido2-token", "-L", "-k", rk_rp, m.device])
        if deleted.outcome == "ok" and after.outcome == "ok" and victim in after.stdout:
            m.fail("cm_delete", "the deleted credential is still listed", [deleted, after])
        else:
            m.record("cm_delete", deleted)

    # Large blobs, with the key of a discoverable credential made with -b.
    # (-v on the built-in UV key: without it a discoverable credential needs a PIN it lacks)
    lb_flags = "-rvb" if m.name == "uv" else "-rb"
    lb_cred = make_credential(m, "lb_make", lb_flags, f"lb.{m.name}.fido2-tools.example")
    if lb_cred is None or not lb_cred.large_blob_key:
        for op in ("lb_set", "lb_get", "lb_list", "lb_delete"):
            m.skip(op, "no largeBlobKey (lb_make did not succeed)")
        return
    keyfile, blob, back = m.work / "lb.key", m.work / "lb.blob", m.work / "lb.back"
    keyfile.write_text(lb_cred.large_blob_key + "\n")
    payload = os.urandom(700)
    blob.write_bytes(payload)
    m.record("lb_set", m.tool(["fido2-token", "-S", "-b", "-k", str(keyfile), str(blob), m.device]))
    got = m.tool(["fido2-token", "-G", "-b", "-k", str(keyfile), str(back), m.device])
    if got.outcome == "ok" and (not back.exists() or back.read_bytes() != payload):
        m.fail("lb_get", "the blob read back differs from the one written", [got])
    else:
        m.record("lb_get", got)
    m.record("lb_list", m.tool(["fido2-token", "-L", "-b", m.device]))
    m.record("lb_delete", m.tool(["fido2-token", "-D", "-b", "-k", str(keyfile), m.device]))
    back.unlink(missing_ok=True)
    m.record(
        "lb_get_deleted",
        m.tool(["fido2-token", "-G", "-b", "-k", str(keyfile), str(back), m.device]),
    )


# --- OpenSSH ---------------------------------------------------------------------------------


def askpass_env(m: Matrix) -> dict[str, str]:
    """OpenSSH reads the PIN through SSH_ASKPASS (forced): a script that logs its prompt."""
    script = m.work / "askpass.sh"
    script.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$1" >> "$VFIDO_ASKPASS_LOG"\n'
        'printf "%s\\n" "$VFIDO_ASKPASS_ANSWER"\n'
    )
    script.chmod(0o755)
    return dict(
        os.environ,
        SSH_ASKPASS=str(script),
        SSH_ASKPASS_REQUIRE="force",
        DISPLAY=":0",
        VFIDO_ASKPASS_LOG=str(m.work / "askpass.log"),
        VFIDO_ASKPASS_ANSWER=m.pin or "",
    )


def ssh_run(m: Matrix, argv: list[str], env: dict[str, str], **kw: Any) -> ToolRun:
    log = Path(env["VFIDO_ASKPASS_LOG"])
    log.unlink(missing_ok=True)
    run = m.tool(argv, env=env, **kw)
    if log.exists():  # askpass prompts count as prompts
        run.prompts += [f"askpass: {p}" for p in log.read_text().splitlines() if p]
    return run


def alone(m: Matrix, argv: list[str], setup: Sequence[str] = ()) -> list[str]:
    """``argv`` in a mount namespace where the other keys' hidraw nodes are /dev/null.

    ``ssh-keygen -Y sign`` has no device option: with several keys and a verify-required
    key it asks the user to touch one, and every vfido key here "touches" at once. libfido2
    cannot open /dev/null as a HID device, so OpenSSH sees this key only. ``setup``: more
    shell commands run in that namespace first (the guest's root file system is read-only).
    """
    steps = [f"mount --bind /dev/null {node}" for node in m.others] + list(setup)
    if not steps:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            " && ".join(steps) + ' && exec "$@"', "alone", *argv]  # fmt: skip


def openssh_matrix(m: Matrix) -> None:
    if shutil.which("ssh-keygen") is None:
        for op in ("ssh_enroll", "ssh_sign", "ssh_download"):
            m.fail(op, "ssh-keygen not installed (tests/vm/install-deps.sh: openssh-client)")
        return
    env = askpass_env(m)
    app = f"ssh:vfido-{m.name}"
    key = m.work / "id_ed25519_sk"
    enroll = [
        "ssh-keygen", "-q", "-t", "ed25519-sk", "-O", "resident", "-O", "verify-required",
        "-O", f"application={app}", "-O", f"device={m.device}", "-O", "user=vfido-test",
        "-N", "", "-C", f"vfido {m.name}", "-f", str(key),
    ]  # fmt: skip
    if not m.record("ssh_enroll", ssh_run(m, enroll, env)):
        m.skip("ssh_sign", "no key (ssh_enroll did not succeed)")
        m.skip("ssh_download", "no key (ssh_enroll did not succeed)")
        return
    message = m.work / "message.txt"
    message.write_text(f"signed by the {m.name} key\n")
    sign = alone(m, ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "vfido", str(message)])
    signed = ssh_run(m, sign, env)
    if signed.outcome == "ok":
        check = [
            "ssh-keygen", "-Y", "check-novalidate", "-n", "vfido",
            "-f", f"{key}.pub", "-s", f"{message}.sig",
        ]  # fmt: skip
        m.record("ssh_sign", signed, m.tool(check, message.read_bytes()))
    else:
        m.record("ssh_sign", signed)
        at = sign.index("ssh-keygen") + 1
        debug = ssh_run(m, [*sign[:at], "-vvv", *sign[at:]], env)  # the same, verbose: why
        m.ops["ssh_sign"]["diagnosis"] = debug.stderr[-3000:]
    out = m.work / "download"
    out.mkdir(exist_ok=True)
    download = ["ssh-keygen", "-K", "-N", "", "-O", f"device={m.device}"]
    got = ssh_run(m, download, env, cwd=str(out))
    if got.outcome != "ok":
        m.record("ssh_download", got)
        return
    want = Path(f"{key}.pub").read_text().split()[1]
    found = [p.read_text().split()[1] for p in out.glob("*.pub")]
    if want not in found:
        m.fail(
            "ssh_download",
            f"the enrolled key is not among {len(found)} downloaded ({got.error})",
            [got],
        )
        m.ops["ssh_download"]["stderr"] = got.stderr[-1200:]
    else:
        m.record("ssh_download", got, note=f"{len(found)} key(s)")


# --- pam_u2f: sudo and login with the key ---------------------------------------------------


PAM_ORIGIN = "pam://vfido-test"
PAM_SERVICE = "vfido-test"
PAM_USER = "root"
#: Why pam_u2f refused, from its debug output and libfido2's (pam_u2f's ``debug`` turns both
#: on): what the key answered (``blob[0]`` is its status byte), or which step libfido2 refused
#: before asking the key, or pam_u2f's own verdict.
PAM_REASON = re.compile(
    r"cbor_parse_reply: blob\[0\]=0x[0-9a-f]{2}|ctap21_uv_token_tx: \w+"
    r"|Device for this keyhandle is not present"
)


def pam_enroll(m: Matrix, op: str, flags: Sequence[str]) -> str | None:
    """pamu2fcfg: a credential for ``PAM_USER``; its line of a pam_u2f authfile, or None."""
    argv = ["pamu2fcfg", "-u", PAM_USER, "-o", PAM_ORIGIN, "-i", PAM_ORIGIN, *flags]
    seen = m.trace_mark()
    run = m.tool(alone(m, argv))
    line = run.stdout.strip()
    if run.outcome == "ok" and not line.startswith(f"{PAM_USER}:"):
        m.fail(op, f"pamu2fcfg printed no authfile line: {line[:80]!r}", [run])
        line = ""
    else:
        m.record(op, run)
    m.note_served(op, seen)
    return line if m.ops[op]["outcome"] == "ok" else None


def pam_authenticate(m: Matrix, op: str, line: str | None, pin: str | None = None) -> None:
    """pamtester: PAM_SERVICE's only module is pam_u2f with an authfile holding ``line``.

    pam_u2f asks for a PIN through the PAM conversation, which pamtester reads from stdin.
    The service file goes to a tmpfs over /etc/pam.d in the tool's own mount namespace.
    """
    if line is None:
        m.skip(op, "no authfile line (its enroll step did not succeed)")
        return
    authfile = m.work / f"{op}.u2f_keys"
    authfile.write_text(line + "\n")
    authfile.chmod(0o600)
    service = m.work / f"{op}.pam"
    service.write_text(
        f"auth required pam_u2f.so authfile={authfile} origin={PAM_ORIGIN} appid={PAM_ORIGIN}"
        " cue debug debug_file=stderr\n"
    )
    setup = ["mount -t tmpfs pamd /etc/pam.d", f"cp {service} /etc/pam.d/{PAM_SERVICE}"]
    argv = alone(m, ["pamtester", PAM_SERVICE, PAM_USER, "authenticate"], setup)
    answer = m.pin if pin is None else pin
    seen = m.trace_mark()
    run = m.tool(argv, stdin=f"{answer or ''}\n".encode())
    reasons = PAM_REASON.findall(run.stderr)
    if run.outcome == "error" and reasons:  # the last line (ToolRun.error) says why
        run.stderr += f"\nwhy: {reasons[-1]}\n"
    m.record(op, run)
    m.note_served(op, seen)


def tampered(line: str | None) -> str | None:
    """The authfile line with its key handle's first character changed: still base64 (the
    last ones may be padding), a credential ID the key did not make."""
    if line is None:
        return None
    user, rest = line.split(":", 1)
    handle, tail = rest.split(",", 1)
    first = "A" if handle[0] != "A" else "B"
    return f"{user}:{first}{handle[1:]},{tail}"


def pam_matrix(m: Matrix) -> None:
    """pamu2fcfg enrolls and pam_u2f (through pamtester) authenticates: what `sudo` and a
    login with the key run. ``-N``/``-V``: the credential requires the PIN / built-in UV."""
    if shutil.which("pamu2fcfg") is None or shutil.which("pamtester") is None:
        for op in ("pam_enroll", "pam_auth"):
            m.fail(op, "pamu2fcfg/pamtester not installed (tests/vm/install-deps.sh)")
        return
    line = pam_enroll(m, "pam_enroll", [])
    pam_authenticate(m, "pam_auth", line)
    pam_authenticate(m, "pam_auth_tampered", tampered(line))
    pam_authenticate(m, "pam_auth_rk", pam_enroll(m, "pam_enroll_rk", ["-r"]))
    pam_authenticate(m, "pam_auth_rs256", pam_enroll(m, "pam_enroll_rs256", ["-t", "RS256"]))
    pin_line = pam_enroll(m, "pam_enroll_pin", ["-N"])
    pam_authenticate(m, "pam_auth_pin", pin_line)
    pam_authenticate(m, "pam_auth_uv", pam_enroll(m, "pam_enroll_uv", ["-V"]))
    if m.name == "pin":  # last: it costs a PIN retry
        pam_authenticate(m, "pam_auth_wrong_pin", pin_line, pin="000000")


# --- systemd-cryptenroll: a LUKS2 volume unlocked by the key's hmac-secret -------------------

LUKS_PASSPHRASE = "correct horse battery"


def luks_volume(m: Matrix, name: str) -> Path | None:
    """A LUKS2 header in a file, its first key slot LUKS_PASSPHRASE (PBKDF2, 1,000 rounds:
    the emulated guest is slow, and the slot under test is the key's)."""
    image = m.work / f"{name}.img"
    with image.open("wb") as f:
        f.truncate(20 * 1024 * 1024)
    made = m.tool(
        ["cryptsetup", "luksFormat", "--type", "luks2", "-q", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", "-", str(image)],
        stdin=LUKS_PASSPHRASE.encode(),
    )  # fmt: skip
    if made.outcome != "ok":
        m.record(f"{name}_format", made)
        return None
    return image


def luks_matrix(m: Matrix) -> None:
    """systemd-cryptenroll enrolls the key in a LUKS2 key slot (a credential with hmac-secret)
    with its defaults (ES256; the PIN required when the key has one) and with EdDSA and
    ``--fido2-with-client-pin=no``; cryptsetup, with systemd's FIDO2 token plugin, unlocks it
    with the key alone (``--token-only``: no passphrase to fall back on; the PIN, if asked,
    on stdin), which works only if the key's hmac-secret gives the secret it gave at
    enrollment."""
    if shutil.which("systemd-cryptenroll") is None or shutil.which("cryptsetup") is None:
        for op in ("luks_list", "luks_enroll", "luks_unlock"):
            m.fail(op, "systemd-cryptenroll/cryptsetup not installed (tests/vm/install-deps.sh)")
        return
    listed = m.tool(["systemd-cryptenroll", "--fido2-device=list"])
    if listed.outcome == "ok" and m.device not in listed.stdout:
        m.fail("luks_list", f"{m.device} not among the FIDO2 devices: {listed.stdout!r}", [listed])
    else:
        m.record("luks_list", listed)
    env = dict(os.environ, PASSWORD=LUKS_PASSPHRASE)
    variants = {
        "": [],
        "_eddsa": ["--fido2-credential-algorithm=eddsa", "--fido2-with-client-pin=no"],
    }
    for suffix, flags in variants.items():
        image = luks_volume(m, f"luks{suffix}")
        if image is None:
            continue
        seen = m.trace_mark()
        enroll = ["systemd-cryptenroll", f"--fido2-device={m.device}", *flags, str(image)]
        enrolled = m.record(f"luks_enroll{suffix}", m.tool(enroll, env=env))
        m.note_served(f"luks_enroll{suffix}", seen)
        if not enrolled:
            m.skip(f"luks_unlock{suffix}", "not enrolled")
            continue
        seen = m.trace_mark()
        unlock = ["cryptsetup", "open", "-v", "--token-only", "--test-passphrase", str(image)]
        pin = f"{m.pin or ''}\n".encode()
        run = m.tool(alone(m, unlock), stdin=pin)
        if run.outcome == "error":  # cryptsetup(8): 2 is "no permission (bad passphrase)"
            run.stderr += f"\nwhy: cryptsetup exit status {run.returncode}\n"
        m.record(f"luks_unlock{suffix}", run)
        m.note_served(f"luks_unlock{suffix}", seen)


# --- the check ---------------------------------------------------------------------------------


def tools_matrix(
    data: dict[str, Any],
    make_key: Callable[[str, list[str]], Key],
    log: Callable[..., None],
    configs: Sequence[str] = tuple(CONFIGS),
) -> str:
    """The check: every tool and operation against each key configuration.

    The three keys start at once (start-up is the slow part in the emulated guest); every
    command names its key's hidraw node, and OpenSSH's signing, which cannot, runs where the
    other keys' nodes are hidden (see ``alone``).
    """
    data["matrix"] = {}
    data["seconds"] = {}
    # Each key traces what it answers: which protocol served the pam_u2f steps.
    traces = {name: Path(tempfile.gettempdir()) / f"trace-tools-{name}.jsonl" for name in configs}
    for trace in traces.values():
        trace.unlink(missing_ok=True)
    keys = {
        name: make_key(f"vfido-vm-tools-{name}", [*CONFIGS[name], "--trace", str(traces[name])])
        for name in configs
    }
    t0 = time.monotonic()
    try:
        for key in keys.values():
            key.launch()
        nodes = {name: key.wait_ready(180) for name, key in keys.items()}
        data["keys_start_seconds"] = round(time.monotonic() - t0, 1)
        for name in configs:
            work = Path(tempfile.mkdtemp(prefix=f"tools-{name}-", dir="/tmp"))
            others = [node for other, node in nodes.items() if other != name]
            m = Matrix(name, nodes[name], None, work, others, traces[name])
            t1 = time.monotonic()
            try:
                libfido2_matrix(m)
                openssh_matrix(m)
                pam_matrix(m)
                luks_matrix(m)
            finally:
                data["matrix"][name] = m.ops
                data["seconds"][name] = round(time.monotonic() - t1, 1)
            log(f"tools {name}: " + ", ".join(f"{op}={r['outcome']}" for op, r in m.ops.items()))
    finally:
        for key in keys.values():
            key.stop()
    hung = [
        f"{name}.{op}"
        for name, ops in data["matrix"].items()
        for op, r in ops.items()
        if r["outcome"] == "timeout"
    ]
    summary = "; ".join(
        f"{name}: {sum(r['outcome'] == 'ok' for r in ops.values())}/{len(ops)} ok"
        for name, ops in data["matrix"].items()
    )
    # The outcomes are compared with the table of expectations on the host.
    data["hung"] = hung
    return f"{summary}; hung: {', '.join(hung) or 'none'}"
