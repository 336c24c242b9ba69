"""Host-side tests of tests/vm/guest_tools.py's tool runner: prompts on a terminal are answered,
and a tool that waits for ever is killed, never hangs the guest (issue #14)."""

from __future__ import annotations

import sys
import time

import guest_tools

ASK = (
    "import getpass, sys\n"
    "pin = getpass.getpass('Enter PIN for /dev/hidraw0: ')\n"  # reads /dev/tty, like readpassphrase
    "print('data:', sys.stdin.read().strip(), 'pin:', pin)\n"
)


def test_pin_prompt_on_the_terminal_is_answered_and_stdin_stays_data() -> None:
    run = guest_tools.run_tool(
        [sys.executable, "-c", ASK], stdin=b"cred-params\n", answers=["271828"], timeout=30
    )
    assert run.outcome == "ok", run.stderr
    assert run.stdout.strip() == "data: cred-params pin: 271828"
    assert run.prompts == ["Enter PIN for /dev/hidraw0:"]


def test_unanswered_prompt_gets_the_fallback() -> None:
    run = guest_tools.run_tool([sys.executable, "-c", ASK], fallback="", timeout=30)
    assert run.outcome == "ok"
    assert run.stdout.strip() == "data:  pin:"


def test_a_hanging_tool_and_its_children_are_killed_at_the_timeout() -> None:
    start = time.monotonic()
    run = guest_tools.run_tool(["sh", "-c", "sleep 300 & sleep 300"], timeout=1.5)
    assert run.outcome == "timeout"
    assert time.monotonic() - start < 20  # the background sleep kept stdout open: killed too


def test_a_tool_that_keeps_asking_is_stopped() -> None:
    loop = "import getpass\nwhile True:\n    getpass.getpass('Enter PIN: ')\n"
    run = guest_tools.run_tool([sys.executable, "-c", loop], answers=["1"], timeout=30)
    assert run.outcome == "error"
    assert len(run.prompts) == guest_tools.MAX_PROMPTS + 1
    assert "killed after" in run.error


def test_the_expectation_table_catches_every_kind_of_difference() -> None:
    from test_tools_vm import EXPECTED, mismatches

    def result(outcome: str, error: str = "") -> dict[str, object]:
        return {"outcome": outcome, "error": error, "prompts": []}

    matrix = {
        config: {
            op: result(outcome, f"fido2-tool: {text}" if text else "")
            for op, (outcome, text) in ops.items()
        }
        for config, ops in EXPECTED.items()
    }
    assert mismatches(matrix) == []
    matrix["uv"]["make_rk"] = result("timeout")
    matrix["pin"]["ssh_sign"] = result("error", "Signing failed: invalid format")
    matrix["nopin"]["make"] = result("error", "fido_dev_make_cred: FIDO_ERR_TX")
    del matrix["pin"]["get"]
    matrix["nopin"]["new_op"] = result("ok")
    problems = mismatches(matrix)
    assert [p.split(":")[0] for p in problems] == [
        "nopin.make",
        "nopin.new_op",
        "pin.get",
        "pin.ssh_sign",
        "uv.make_rk",
    ]
    assert "HUNG" in problems[-1]


def test_one_package_list_for_install_deps_and_the_harness() -> None:
    """tests/vm/install-deps.sh installs what vmharness checks: both read apt-packages.txt."""
    from pathlib import Path

    import vmharness

    here = Path(__file__).resolve().parent
    script = (here / "install-deps.sh").read_text()
    assert '"$(dirname "$0")/apt-packages.txt"' in script
    assert "qemu-system-x86 " not in script  # no second, hard-coded list
    assert {"openssh-client", "fido2-tools", "udev"} <= set(vmharness.APT_PACKAGES)
    assert vmharness.missing_packages(("vfido-no-such-package",)) == ["vfido-no-such-package"]


def test_a_tampered_authfile_line_differs_in_its_key_handle_only() -> None:
    import base64

    line = "root:AbCd/+A=,BPubKey==,es256,+presence"  # a 67-byte ID ends in padding
    changed = guest_tools.tampered(line)
    assert changed == "root:BbCd/+A=,BPubKey==,es256,+presence"
    assert guest_tools.tampered(changed) == "root:AbCd/+A=,BPubKey==,es256,+presence"
    assert guest_tools.tampered(None) is None
    handle = base64.b64encode(bytes(range(67))).decode()
    assert handle.endswith("=")
    forged = guest_tools.tampered(f"root:{handle},k,es256,+presence")
    assert forged is not None
    other = base64.b64decode(forged.split(":", 1)[1].split(",")[0], validate=True)
    assert len(other) == 67 and other != bytes(range(67))


def test_why_pam_u2f_refused_is_its_last_telling_line() -> None:
    stderr = (
        "fido_rx: buf=0x1, len=1\ncbor_parse_reply: blob[0]=0x2e\n"
        "debug(pam_u2f): util.c:1433 (do_authentication): "
        "Device for this keyhandle is not present\n"
        "pamtester: Authentication failure\n"
    )
    reasons = guest_tools.PAM_REASON.findall(stderr)
    assert reasons == ["cbor_parse_reply: blob[0]=0x2e", "Device for this keyhandle is not present"]
