"""The benchmark scripts (bench/) still run against today's code.

They are run by hand, never in CI (timings on a shared machine are noisy), so nothing else
notices when a move breaks one: session 5's namespace move left bench/keyserver.py importing
``logsink`` from where it no longer is, and `bench/entry.py --only multi` failed. These tests
measure nothing; they import every script and run the one whose keys the others drive.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fido2.hid import CtapHidDevice

from vfido.transports.udp import free_ports, open_udp_device

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py"))


def test_the_scripts_are_found() -> None:
    assert {
        "entry",
        "bench",
        "keyserver",
        "refkey",
        "hidraw",
        "cached_handler",
        "timed_key",
        "cold",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_imports(name: str) -> None:
    """Importing a script runs its top level (its imports, the patches the in-process
    ones apply), not its ``__main__`` part."""
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); sys.argv = ['x']; import {name}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@contextlib.contextmanager
def _keyserver() -> Iterator[tuple[int, int]]:
    """bench/keyserver.py serving one key: (its port, its peer's port) once it is ready;
    closing its stdin at the end must stop it with exit code 0."""
    port, peer = free_ports(2)
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "keyserver.py"), f"{port}:{peer}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        yield port, peer
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    assert server.returncode == 0


def test_keyserver_serves_keys_until_stdin_closes() -> None:
    """bench/keyserver.py (entry.py's `multi`: many keys in one process) serves a key that
    python-fido2 reaches, and stops when its stdin closes."""
    with _keyserver() as (port, peer):
        device: CtapHidDevice = open_udp_device(port, peer, timeout=10.0)
        try:
            assert device.ping(b"bench") == b"bench"
        finally:
            device.close()


def test_timed_key_records_each_call_with_wall_and_cpu(tmp_path: Path) -> None:
    """bench/timed_key.py's wrapper (what it puts around the key's request path): one
    record per call, with the first byte of the request, and the records dumped as JSON."""
    sys.path.insert(0, str(BENCH))
    try:
        import timed_key
    finally:
        sys.path.remove(str(BENCH))

    class Handler:
        def handle(self, request: bytes) -> bytes:
            return request[::-1]

    timed_key.timed(Handler, "handle", "handler")
    timed_key.RECORDS.clear()
    assert Handler().handle(b"\x04\x01") == b"\x01\x04"
    ((what, first, _start, wall, cpu, thread),) = timed_key.RECORDS
    assert (what, first) == ("handler", "04") and wall >= 0 and cpu >= 0 and thread
    timed_key.dump(str(tmp_path / "t.json"))
    assert json.loads((tmp_path / "t.json").read_text())["rec"][0][:2] == ["handler", "04"]


CACHED_BY_COMMAND = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import cached_handler
from harness import make_credential_request
from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import broker_for
from vfido.transports.runner import HidTransaction
key = Authenticator(SqliteKeyStore.ephemeral(), broker_for("auto", 0.0), Config(),
                    behaviours=Behaviours.from_assignments([], builtin_uv=False))
first, second = (make_credential_request(os.urandom(32)) for _ in range(2))
t = HidTransaction(1, 1)
plain = [key.handle_cbor(r, t) for r in (first, second)]
cached_handler._by_command = True
kept = [key.handle_cbor(r, t) for r in (first, second, b"\\x04", b"\\x04")]
print(plain[0] != plain[1], kept[0] == kept[1], kept[0] not in plain, kept[2] is kept[3])
print(cached_handler.parse_sleeps("04=1.5,01=8") == {4: 0.0015, 1: 0.008})
cached_handler._sleep = {0x04: 0.3}
start = time.monotonic()
again = key.handle_cbor(b"\\x04", t)
print(again is kept[2], time.monotonic() - start >= 0.3)
cached_handler._sleep, cached_handler._compute = {}, True
print(key.handle_cbor(second, t) is kept[0])
"""


def test_cached_handler_by_command_keeps_the_first_answer_of_each_command() -> None:
    """bench/cached_handler.py ``--by-command`` (chromium.py's ``vfido_cached``): a second
    makeCredential with another challenge gets the first one's answer; without it, each
    request is answered afresh; with ``--sleep-ms`` (``vfido_slept``) a kept answer comes
    after the command's sleep; with ``--compute`` (``vfido_computed``) it is still the kept
    one."""
    assert _snippet_prints(CACHED_BY_COMMAND) == ["True"] * 8


def _snippet_prints(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (bench/ on its path as ``sys.argv[1]``): the words
    it printed; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


MINIMAL = """
import hashlib, os, sys
sys.path.insert(0, sys.argv[1])
import minimal
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from harness import get_assertion_request
from vfido.authenticator import cbor
cdh, credential = os.urandom(32), os.urandom(48)
request = get_assertion_request(cdh, credential)
first, second = (cbor.decode(minimal.minimal_get_assertion(request)[1:]) for _ in "ab")
rp_id = cbor.decode(request[1:])[1]
print(first[1] == {"id": credential, "type": "public-key"})
print(first[2][:32] == hashlib.sha256(rp_id.encode()).digest(), first[2][32] == 0x01)
print(int.from_bytes(second[2][33:], "big") == int.from_bytes(first[2][33:], "big") + 1)
minimal.KEY.public_key().verify(first[3], first[2] + cdh, ec.ECDSA(hashes.SHA256()))
print(True)
"""


def test_minimal_answers_a_verifiable_assertion() -> None:
    """bench/minimal.py (``cached_handler.py --minimal``, entry.py ``transport``'s middle
    row): the minimal answer is still a real assertion: the descriptor the request named,
    the rpId's hash, user presence, a counter that moves, and a signature over
    authenticatorData || clientDataHash that verifies (a minimal answer that skipped the
    signature would measure nothing)."""
    assert _snippet_prints(MINIMAL) == ["True"] * 5


@pytest.mark.parametrize(
    "flags",
    [("--by-command", "--compute", "--sleep-ms", "04=1"), ("--busy-us", "30")],
)
def test_cached_handler_strips_its_own_flags_before_vfido_run(flags: tuple[str, ...]) -> None:
    """``--by-command --compute --sleep-ms ...`` and ``--busy-us N`` are cached_handler's;
    `vfido run` gets the rest."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "cached_handler.py"), *flags, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--transport" in done.stdout


BUSY = """
import sys, time
sys.path.insert(0, sys.argv[1])
import cached_handler
for seconds in (0.0, 0.002, 0.02):
    start = time.perf_counter()
    cached_handler.busy_wait(seconds)
    print(seconds <= time.perf_counter() - start < seconds + 0.5)
"""


def test_busy_wait_lasts_what_it_is_given() -> None:
    """``cached_handler.py --busy-us`` (entry.py ``calibration``): the wait lasts at least
    the time given, and ends."""
    assert _snippet_prints(BUSY) == ["True"] * 3


def test_compiled_names_modules_that_exist_and_refuses_an_existing_directory(
    tmp_path: Path,
) -> None:
    """bench/compiled.py (a mypyc-built copy for ``--tree``): every module it compiles is
    one of the copy's (a renamed module would otherwise stay pure Python, and only the
    build's last check would say so), and it never writes into a directory that exists.
    (The build itself takes a minute of gcc: run by hand, as the benchmarks are.)"""
    sys.path.insert(0, str(BENCH))
    try:
        import compiled
    finally:
        sys.path.remove(str(BENCH))
    for path in compiled.COMPILED:
        assert (ROOT / path).is_file(), path
    kept = tmp_path / "kept"
    kept.write_text("mine")
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")  # built through, it made "nowhere" (a review)
    for given in (kept, dangling):
        done = subprocess.run(
            [sys.executable, str(BENCH / "compiled.py"), str(given)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "exists" in done.stderr
    assert kept.read_text() == "mine"
    assert not (tmp_path / "nowhere").exists()


def test_runner_path_drives_the_runner_with_both_requests() -> None:
    """bench/runner_path.py still drives today's runner: a CBOR request and a PING each make
    a round trip (it measures nothing here)."""
    sys.path.insert(0, str(BENCH))
    try:
        import runner_path
    finally:
        sys.path.remove(str(BENCH))
    ((cbor_us, ping_us),) = runner_path.run(n=20, rounds=1)
    assert cbor_us > 0 and ping_us > 0


def test_entry_client_polls_for_answers_and_gives_up_at_its_timeout() -> None:
    """bench/entry.py ``--client polls``: a RawClient that polls its socket (never blocks in
    recv) reads a key's answers as the blocking one does, and gives up after its timeout
    when nothing answers instead of spinning for ever."""
    sys.path.insert(0, str(BENCH))
    import entry

    from vfido.transports.ctaphid import Command

    with _keyserver() as (port, peer):
        for polls in (False, True):
            client = entry.RawClient(port, peer, polls=polls)
            try:
                client.init(retry_every=0.05)
                assert client._sock.gettimeout() == (0.0 if polls else 30.0)
                assert client.call(client.prepare(Command.PING, b"\x5a" * 100)) == b"\x5a" * 100
            finally:
                client.close()
    silent, silent_peer = free_ports(2)
    client = entry.RawClient(silent, silent_peer, timeout=0.2, polls=True)
    try:
        with pytest.raises(TimeoutError):
            client.call(client.prepare(Command.PING, b"x"))
    finally:
        client.close()


def test_entry_uv_section_drives_vfido_run_with_built_in_uv(tmp_path: Path) -> None:
    """bench/entry.py ``--only uv``: `vfido run --uv` answers getAssertions with the uv
    option (the section checks the UV flag) and, answering them at once, sends no
    keepalive (there were two per request before session 28: UPNEEDED, then PROCESSING)."""
    sys.path.insert(0, str(BENCH))
    import entry

    out: dict[str, object] = {}
    entry.bench_uv(out, tmp_path, 1)
    result = out["uv"]
    assert isinstance(result, dict)
    assert result["keepalives"] == 0
    (row,) = result["rows"]
    assert row["name"] == "getAssertion ES256 with uv (--uv)" and row["blocks"] == 1
