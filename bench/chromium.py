"""Headless Chromium create()/get() through `vfido run` vs the floor key (issue #16), in the guest.

    VFIDO_VM_CHECKS=bench_chromium .venv/bin/python -m pytest tests/vm/test_bench_vm.py \
        -m vm -s -k chromium

The guest check ``bench_chromium`` (tests/vm/guest_checks.py) calls :func:`run`. Each round
runs two blocks, one per key, in ABBA order (floor then vfido, then vfido then floor, ...)
so that drift of the guest or the host does not land in the ratio. A block: start the key
(only ONE key exists at a time: a browser sends its requests to every key it sees, and there
is no udev in the guest, so Chromium sees the keys present when it starts), start headless
Chromium on ``chromium_bench.html`` (a fresh profile), let the page time one warm-up
create()+get() and then N create() and N get() with ``performance.now()``, stop Chromium,
stop the key.

* floor: ``bench/floorkey.py -v`` (answers from memory; its log names every command);
* floor_sized (opt-in): the floor key with ``--shape FILE``: still from memory, but with the
  bytes vfido says (its getInfo verbatim, packed attestation with its certificate, its
  credential ID length; the file made by :func:`vfido_shape` at the start of the run), so
  that vfido / floor_sized is vfido's own computing and floor_sized / floor the cost of the
  size of what a full key says;
* vfido: ``vfido run --transport uhid --ephemeral --presence auto --trace FILE``, the entry
  point users run (default logging), with a trace to prove what served each ceremony;
* vfido_cached (opt-in): the same `vfido run`, untraced, whose authenticator answers every
  getInfo, makeCredential and getAssertion with its first answer to that command
  (``bench/cached_handler.py --by-command``): the process, the threads and the transport
  of vfido with a floor's authenticator, so that vfido_untraced / vfido_cached is the
  authenticator's share under the browser and vfido_cached / floor_sized the rest;
* vfido_slept (opt-in): vfido_cached that sleeps, before each answer, as long as vfido's
  handler takes under this benchmark (``SLEPT_MS``): the browser waits as long, but the key
  computes nothing meanwhile;
* vfido_computed (opt-in): vfido_cached that computes, before each answer, the cryptography
  of vfido's (``cached_handler.py --compute``: a key pair and a signature per
  makeCredential, a signature per getAssertion) and throws it away: vfido's computing
  without the Python around it.
* vfido_niced and floor_sized_niced (opt-in): `vfido run` untraced and floor_sized at nice
  ``NICED`` (-10), the process and its scheduling group (each key runs in a session of its
  own, as the browser does, and the kernel may group processes by session: autogroup), so
  that the scheduler runs the key before the browser's processes:
  whether vfido's answers cost the browser time because the key waits for a CPU the browser
  keeps busy (see ``cpu_ms`` below); vfido_niced is measured against floor_sized_niced too,
  both keys at the same priority.

Each block also notes the CPU times around its timed ceremonies (the page marks the start
and the end; :func:`cpu_sample`): per create() + get() pair, the wall time, the machine's
busy and idle CPU time, the key process's, the browser's (every process below it) and the
rest; ``cpu_ms`` in the result is their median per key.

Per ceremony kind: median ms of each key (all its blocks), and vfido/floor as the median of
the per-round ratios of the block medians, with p10-p90 over the rounds (and each key against
floor_sized when it ran; vfido, vfido_untraced, vfido_slept and vfido_computed against
vfido_cached when it ran). Which protocol served each ceremony is checked (the vfido trace:
the CTAP2 makeCredential whose credential ID the page got, the CTAP2 getAssertion whose
signature it got; the floor keys' command logs: as many CTAP2 makeCredential / user-present
getAssertion answers as the page's ceremonies); a block that does not match raises. No
timing is ever asserted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cbor2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "vm"))

import floorkey  # noqa: E402
import trace_protocols  # noqa: E402
from entry import stop  # noqa: E402

from vfido.authenticator.behaviours import b64url  # noqa: E402
from vfido.authenticator.dispatch import Command  # noqa: E402

PAGE = HERE / "chromium_bench.html"
KINDS = ("create", "get")
#: The keys ``run`` knows. References get rows of the others against them: the floors of
#: every key; ``vfido_cached`` of the full vfido keys, ``vfido_computed`` and ``vfido_slept``
#: (the authenticator's share, the computing's share, the waiting's share); ``vfido_base``
#: (`vfido run` untraced from another checkout, ``base_tree``, or under another interpreter,
#: ``base_python``) of ``vfido_untraced`` only: before / after in the same rounds.
KEYS = (
    "floor",
    "floor_sized",
    "vfido",
    "vfido_untraced",
    "vfido_base",
    "vfido_cached",
    "vfido_slept",
    "vfido_computed",
    "vfido_timed",
    "vfido_niced",
    "floor_sized_niced",
)
#: The keys run at a higher scheduling priority than the browser's processes (nice ``NICED``;
#: the guest's checks run as root, which may lower a nice value), and the key each one is.
NICED_KEYS = {"vfido_niced": "vfido_untraced", "floor_sized_niced": "floor_sized"}
NICED = -10
#: vfido_slept's sleep per command (getInfo, makeCredential, getAssertion): the median wall
#: time of vfido's handler under this benchmark, as ``vfido_timed`` measured it in session 25
#: (6 blocks of 20 ceremonies: 126 calls of makeCredential and of getAssertion with the
#: warm-ups, 252 of getInfo; bench/HISTORY.md; session 8's were 1.5, 8.1 and 4.1 ms).
SLEPT_MS = "04=1.8,01=14.5,02=6.0"
REFERENCES = ("floor", "floor_sized", "floor_sized_niced", "vfido_cached", "vfido_base")
#: The keys that run vfido's own authenticator, the only ones a ``uv`` run may have: the floor
#: keys and the cached ones cannot verify a user.
UV_KEYS = ("vfido", "vfido_untraced", "vfido_base", "vfido_timed", "vfido_niced")
#: The keys that are `vfido run` answering from its first answers (cached_handler.py
#: --by-command): the reference and its variants, measured against it.
CACHED_KEYS = ("vfido_cached", "vfido_slept", "vfido_computed")
FLOOR_CREDENTIAL = b64url(floorkey.CREDENTIAL_ID)
SHAPE_FILE = "floor-sized-shape.json"


def vfido_shape() -> floorkey.Shape:
    """What `vfido run --transport uhid --ephemeral --presence auto` says, for the floor key's
    ``--shape``: its getInfo response, the x5c of one makeCredential (ES256, not
    discoverable, no UV: what Chromium asks on the benchmark's page) and its credential ID
    length. The authenticator is assembled in this process as ``vfido run`` assembles it:
    the CLI's own parser defaults, its config, presence, behaviours and keystore."""
    from vfido.authenticator.device import Authenticator
    from vfido.authenticator.env import NullContext
    from vfido.cli import run as run_cli
    from vfido.cli.common import open_store
    from vfido.cli.main import build_parser

    argv = ["run", "--transport", "uhid", "--ephemeral", "--presence", "auto"]
    args = build_parser().parse_args(argv)
    store = open_store(args)
    try:
        key = Authenticator(
            store,
            run_cli.presence_broker(args),
            run_cli.config(args),
            behaviours=run_cli.behaviours(args),
        )
        info = key.handle_cbor(bytes([floorkey.GET_INFO]), NullContext())
        request = {
            1: hashlib.sha256(b"vfido_shape client data").digest(),
            2: {"id": "localhost", "name": "bench"},
            3: {"id": b"\7" * 16, "name": "bench", "displayName": "bench"},
            4: [{"type": "public-key", "alg": floorkey.ES256}],
        }
        made = key.handle_cbor(
            bytes([floorkey.MAKE_CREDENTIAL]) + cbor2.dumps(request, canonical=True),
            NullContext(),
        )
    finally:
        store.close()
    if info[:1] != b"\0" or made[:1] != b"\0":
        raise RuntimeError(
            f"vfido answered getInfo {info[:1].hex()}, makeCredential {made[:1].hex()}"
        )
    response = cbor2.loads(made[1:])
    fmt, auth_data, statement = response[1], response[2], response[3]
    if fmt != "packed" or not statement.get("x5c"):
        raise RuntimeError(f"vfido's makeCredential is {fmt!r} without x5c: not the shape to copy")
    # authenticatorData: rpIdHash (32) flags (1) signCount (4) aaguid (16) credentialIdLength (2)
    (length,) = struct.unpack_from(">H", auth_data, 53)
    return floorkey.Shape(info, tuple(statement["x5c"]), length)


def write_shape(path: Path, python: str = sys.executable) -> floorkey.Shape:
    """:func:`vfido_shape` by ``python`` in the checkout (as the keys run), into ``path``."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import chromium; from pathlib import Path; "
        "Path(sys.argv[2]).write_text(chromium.vfido_shape().to_json())"
    )
    subprocess.run([python, "-c", code, str(HERE), str(path)], cwd=ROOT, check=True)
    return floorkey.Shape.from_json(path.read_text())


class BenchServer:
    """Serves the page on http://localhost:PORT/ (a free port) and keeps what it POSTs."""

    def __init__(self) -> None:
        page = PAGE.read_bytes()
        owner = self
        self.results: dict[str, Any] | None = None
        self.requested = threading.Event()
        self.done = threading.Event()
        #: Called at each of the page's marks (``POST /mark?NAME``); what it returns is kept
        #: in ``marks[NAME]`` (the CPU times around the timed ceremonies: :func:`cpu_sample`).
        self.sampler: Callable[[], dict[str, float]] | None = None
        self.marks: dict[str, dict[str, float]] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requested.set()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.startswith("/mark?"):
                    if owner.sampler is not None:
                        owner.marks[self.path.split("?", 1)[1]] = owner.sampler()
                    self.send_response(204)
                    self.end_headers()
                    return
                owner.results = json.loads(body)
                if owner.results.get("done"):
                    owner.done.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def key_process(
    argv: list[str],
    log_path: Path,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """A key process (its stderr in ``log_path``); yields its hidraw node and its pid;
    SIGTERM at the end. The key runs in a session of its own, as the browser does
    (:func:`browse`): where the kernel groups each session's processes for the scheduler
    (autogroup), the key is then a group of its own, whose priority :func:`set_priority`
    can set without changing the benchmark's."""
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + timeout
        while True:
            found = re.search(r"hidraw: (/dev/hidraw\d+)", log_path.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{argv} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield found.group(1), proc.pid
    finally:
        stop(proc, timeout=30)  # a key's UHID_DESTROY is slow under emulation


def browse(
    argv_for: Callable[[str], list[str]],
    query: str,
    log_path: Path,
    start_timeout: float = 120.0,
    page_timeout: float = 300.0,
    key_pid: int | None = None,
) -> dict[str, Any]:
    """Headless Chromium on the page until it posts ``done`` (one restart if the page is not
    requested within ``start_timeout``: on a loaded host Chromium sometimes never asks).
    With ``key_pid``, the result's ``cpu`` holds :func:`cpu_sample` at the page's marks
    ``start`` and ``end`` (around the timed ceremonies)."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR") if k in os.environ}
    server = BenchServer()
    try:
        with log_path.open("ab") as blog:
            for attempt in (1, 2):
                url = f"http://localhost:{server.port}/?{query}"
                proc = subprocess.Popen(
                    argv_for(url),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=blog,
                    stderr=blog,
                    start_new_session=True,
                )
                if key_pid is not None:
                    server.sampler = functools.partial(cpu_sample, key_pid, proc.pid)
                try:
                    if server.requested.wait(start_timeout) or attempt == 2:
                        server.done.wait(page_timeout)
                        break
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
    finally:
        server.close()
    if server.results is None or not server.results.get("done"):
        raise RuntimeError(f"the page did not finish: {server.results}")
    if key_pid is not None:
        server.results["cpu"] = server.marks
    return server.results


#: Clock ticks per second of /proc's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(text: str) -> list[str]:
    """The fields of a ``/proc/PID/stat`` line after ``pid (comm)`` (the comm may hold spaces
    and parentheses): index 0 is field 3 of the line (state), 1 the ppid, 11 and 12 utime
    and stime, 16 the nice value."""
    return text.rsplit(")", 1)[1].split()


def cpu_sample(key_pid: int, browser_pid: int, proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU time so far, in ms: the machine's ``busy`` and ``idle`` time summed over its CPUs
    (``/proc/stat``: idle and iowait are idle; user, nice, system, irq, softirq and steal
    busy; guest time is inside user and nice already), the ``key`` process's (all its
    threads), the ``browser``'s (``browser_pid`` and every process below it, as long as it
    lives: what an exited one took is not counted), and ``wall``, the monotonic clock. The
    machine's figures are counted in clock ticks, the processes' from their run time: their
    difference (``other`` in :func:`cpu_per_pair`) is as much sampling noise as CPU time."""
    wall = time.monotonic() * 1e3
    first = (proc / "stat").read_text().split("\n", 1)[0].split()
    if first[0] != "cpu":
        raise RuntimeError(f"{proc / 'stat'} does not start with the cpu line: {first}")
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat_fields(text)
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    browser = 0
    for pid in ticks:
        walk, seen = pid, set()
        while walk not in (0, 1, browser_pid) and walk in parent and walk not in seen:
            seen.add(walk)  # a pid reused while /proc was read could make a loop
            walk = parent[walk]
        if walk == browser_pid:
            browser += ticks[pid]
    ms = 1e3 / CLOCK_TICKS
    return {
        "wall": wall,
        "busy": (user + nice + system + irq + softirq + steal) * ms,
        "idle": (idle + iowait) * ms,
        "key": ticks.get(key_pid, 0) * ms,
        "browser": browser * ms,
        "key_waited": key_waited(key_pid, proc),
    }


def key_waited(pid: int, proc: Path = Path("/proc")) -> float:
    """How long, in ms, the threads of process ``pid`` have been ready to run but waiting for
    a CPU (the second figure of each ``/proc/PID/task/TID/schedstat``, in ns; the threads
    alive now: vfido's live as long as the key); 0.0 where the kernel keeps no schedstat."""
    waited = 0
    for stat in (proc / str(pid) / "task").glob("*/schedstat"):
        try:
            waited += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waited / 1e6


def set_priority(pid: int, nice: int, proc: Path = Path("/proc")) -> None:
    """The key ``pid`` (started under ``nice -n NICE``) also at ``nice`` as a scheduling group,
    where the kernel groups processes by session (autogroup, ``/proc/PID/autogroup``): a
    process's nice value ranks it only against the processes of its own group, and the
    browser is a group of its own. Needs root (the guest's checks run as root)."""
    group = proc / str(pid) / "autogroup"
    if group.exists():
        group.write_text(str(nice))


def key_priority(pid: int, proc: Path = Path("/proc")) -> dict[str, Any]:
    """The key process's nice value and its scheduling group's (``/proc/PID/autogroup``, e.g.
    "/autogroup-42 nice -10"; None where the kernel has no autogroup), and whether the
    kernel's autogroup is on (``/proc/sys/kernel/sched_autogroup_enabled``; None: absent)."""
    fields = stat_fields((proc / str(pid) / "stat").read_text())
    group = proc / str(pid) / "autogroup"
    enabled = proc / "sys" / "kernel" / "sched_autogroup_enabled"
    return {
        "nice": int(fields[16]),
        "autogroup": group.read_text().strip() if group.exists() else None,
        "autogroup_enabled": enabled.read_text().strip() == "1" if enabled.exists() else None,
    }


def check_priority(key: str, priority: dict[str, Any]) -> None:
    """Raises unless a niced key runs at ``NICED`` (and its group too where autogroup is on),
    and every other key at nice 0: a block labelled niced that is not would be a wrong row."""
    want = NICED if key in NICED_KEYS else 0
    group = priority["autogroup"]
    ok = priority["nice"] == want
    if priority["autogroup_enabled"] and group is not None:
        ok = ok and group.endswith(f"nice {want}")
    if not ok:
        raise RuntimeError(f"{key} should run at nice {want}: {priority}")


def cpu_summary(blocks: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per key: the median over its blocks of each of :func:`cpu_per_pair`'s figures."""
    keys = dict.fromkeys(b["key"] for b in blocks)
    return {
        key: {
            name: statistics.median(b["cpu_ms"][name] for b in blocks if b["key"] == key)
            for name in next(b["cpu_ms"] for b in blocks if b["key"] == key)
        }
        for key in keys
    }


def cpu_per_pair(marks: dict[str, dict[str, float]], pairs: int) -> dict[str, float]:
    """Per create() + get() pair between the marks ``start`` and ``end``, in ms: ``wall``,
    the machine's ``busy`` and ``idle`` CPU time, the ``key``'s, the ``browser``'s and
    ``other``: busy time of neither (the kernel's threads, this benchmark's server and
    sampling), within the noise of the machine's tick-counted figures; ``key_waited``, how
    long the key's threads were ready to run but waited for a CPU. Raises if the page's
    marks did not both arrive."""
    missing = [name for name in ("start", "end") if name not in marks]
    if missing:
        raise RuntimeError(f"the page's marks {missing} did not reach the server: {marks}")
    start, end = marks["start"], marks["end"]
    per = {name: (end[name] - start[name]) / pairs for name in start}
    per["other"] = per["busy"] - per["key"] - per["browser"]  # key_waited is not CPU time
    return per


def counted(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in page["ceremonies"] if c["kind"] in KINDS]


def served_by_floor(
    page: dict[str, Any], floor_log: str, credential: str = FLOOR_CREDENTIAL
) -> dict[str, Any]:
    """What the floor key's command log says served the page; raises unless every ceremony
    succeeded, got the floor's credential (``credential``, base64url: floor_sized's is
    longer), and the log holds exactly one CTAP2 answer of the right kind (makeCredential;
    user-present getAssertion) per ceremony."""
    lines = re.findall(r"^\S+ (cbor \S+ \S+(?: up=\d)?) (hit|miss) [\d.]+ms$", floor_log, re.M)
    counts: dict[str, int] = {}
    for command, _ in lines:
        counts[command] = counts.get(command, 0) + 1
    creates = [c for c in page["ceremonies"] if c["kind"].endswith("create")]
    gets = [c for c in page["ceremonies"] if c["kind"].endswith("get")]
    _all_ok(page)
    wrong = [c for c in creates if c.get("rawId") != credential]
    if wrong:
        raise RuntimeError(f"create() returned a credential the floor key did not make: {wrong}")
    made = counts.get("cbor makeCredential 00", 0)
    signed = counts.get("cbor getAssertion 00 up=1", 0)
    if made != len(creates) or signed != len(gets):
        raise RuntimeError(
            f"floor key log: {made} makeCredential / {signed} getAssertion(up) answers for "
            f"{len(creates)} create() / {len(gets)} get(): {counts}"
        )
    hits = sum(1 for command, hit in lines if hit == "hit" and "getInfo" not in command)
    key_ms: dict[str, list[float]] = {}
    for command, ms in re.findall(r"^\S+ cbor (\S+) 00(?: up=1)? \S+ ([\d.]+)ms$", floor_log, re.M):
        key_ms.setdefault(command, []).append(float(ms))
    inits = len(re.findall(r"^\S+ ctaphid INIT$", floor_log, re.M))
    return {
        "commands": counts,
        "cache_hits": hits,
        "inits": inits,
        "key_ms": {command: statistics.median(v) for command, v in key_ms.items()},
        "u2f": 0,
    }


def served_by_vfido(page: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """What vfido's trace says served the page; raises unless every create() was one CTAP2
    makeCredential and every get() one CTAP2 getAssertion, with as many OK makeCredential
    responses as create() calls and no U2F ceremony at all."""
    _all_ok(page)
    for c in page["ceremonies"]:
        if c["kind"].endswith("create"):
            got = trace_protocols.served_create(records, c["rawId"])
            want = ["CBOR makeCredential"]
        else:
            got = trace_protocols.served_get(records, c["signature"])
            want = ["CBOR getAssertion"]
        if got != want:
            raise RuntimeError(f"{c['kind']} {c['i']} served by {got}, not {want}")
    counts = trace_protocols.protocol_counts(records)
    ok = {
        name: sum(
            1
            for r in records
            if r.get("type") == "response"
            and r.get("status") in ("OK", "NO_ERROR")
            and f"{r.get('proto')} {r.get('command')}" == name
        )
        for name in ("CBOR makeCredential", "CBOR getAssertion")
    }
    creates = sum(1 for c in page["ceremonies"] if c["kind"].endswith("create"))
    u2f = sum(counts.get(name, 0) for name in trace_protocols.U2F_CEREMONIES)
    if ok["CBOR makeCredential"] != creates or u2f:
        raise RuntimeError(f"trace: {counts} for {creates} create() calls")
    return {"commands": counts, "key_ms": vfido_key_ms(records), "u2f": u2f}


def vfido_key_ms(records: list[dict[str, Any]]) -> dict[str, float]:
    """Median key-side time per successful CTAP2 command in a `vfido run --trace` file: from
    the request's first report in to its response's last report out (the trace's clock; the
    recording itself included)."""
    spans: dict[str, list[float]] = {}
    started: float | None = None
    current: list[Any] | None = None  # [command, start, end]
    for record in records:
        if record.get("type") == "packet" and record.get("dir") == "in":
            if current is not None:
                spans.setdefault(current[0], []).append((current[2] - current[1]) * 1e3)
                current = None
            if record.get("cmd") == "CBOR":
                started = record["t"]
        elif record.get("type") == "response" and record.get("proto") == "CBOR":
            ok = record.get("status") in ("OK", "NO_ERROR")
            current = [record.get("command"), started, record["t"]] if ok and started else None
        elif record.get("type") == "packet" and current is not None:
            current[2] = record["t"]
    if current is not None:
        spans.setdefault(current[0], []).append((current[2] - current[1]) * 1e3)
    return {command: statistics.median(v) for command, v in spans.items()}


def all_user_verified(page: dict[str, Any]) -> int:
    """How many ceremonies came back with the UV flag (the page reads it from each
    credential's authenticatorData); raises unless every one of them did: only a CTAP2 key's
    own verification sets it, so a ceremony served otherwise cannot pass."""
    _all_ok(page)
    unverified = [c for c in page["ceremonies"] if c.get("uv") is not True]
    if unverified:
        raise RuntimeError(f"ceremonies without the UV flag: {unverified}")
    return len(page["ceremonies"])


def _all_ok(page: dict[str, Any]) -> None:
    failed = [c for c in page["ceremonies"] if not c.get("ok")]
    if failed or len(counted(page)) != 2 * page["n"]:
        raise RuntimeError(f"ceremonies failed or missing: {failed or page['ceremonies']}")


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=10, method="inclusive")
    return q[0], q[-1]


def summarize(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per measured key and ceremony kind from the blocks (each: round, key,
    ms = {kind: [ms...]}), against a reference key's blocks of the same rounds. First against
    ``floor``: ``create`` and ``get`` for ``vfido``, ``create (KEY)``/``get (KEY)`` for any
    other key (``floor_sized`` and ``vfido_base`` included); then, when ``floor_sized`` ran,
    every key but the references against it, and ``vfido_cached``: ``create KEY /
    floor_sized``, and ``floor_sized_niced`` against it (what the priority gives a floor);
    then ``vfido_niced`` against ``floor_sized_niced`` (both at the same priority); then,
    when ``vfido_cached`` ran, ``vfido``, ``vfido_untraced``, ``vfido_niced``,
    ``vfido_slept`` and ``vfido_computed`` against it (the authenticator's share, the
    waiting's share, the computing's share); then,
    when ``vfido_base`` ran, ``vfido_untraced`` against it (after / before): ``create
    vfido_untraced / vfido_base``.
    A row's ``floor_ms`` is its reference's (``reference``), ``vfido_ms`` its key's."""
    rows = []
    rounds = sorted({b["round"] for b in blocks})
    keys = list(dict.fromkeys(b["key"] for b in blocks))
    for reference in (r for r in REFERENCES if r in keys):
        measured = [
            k for k in keys if k != reference and (k not in REFERENCES or reference == "floor")
        ]
        if reference == "floor_sized":  # vfido's process and transport vs a floor's; nice
            measured += [k for k in keys if k in ("vfido_cached", "floor_sized_niced")]
        if reference == "floor_sized_niced":  # both at the same priority
            measured = [k for k in keys if k == "vfido_niced"]
        if reference == "vfido_cached":  # the authenticator's share; the wait's share
            measured = [
                k for k in keys if k in ("vfido", "vfido_untraced", "vfido_niced", *CACHED_KEYS[1:])
            ]
        if reference == "vfido_base":  # another (older) checkout's `vfido run`, untraced
            measured = [k for k in keys if k == "vfido_untraced"]
        for key in sorted(measured, key=lambda k: k != "vfido"):
            for kind in KINDS:
                rows.append(_row(blocks, rounds, kind, key, reference))
    return rows


def _row(
    blocks: list[dict[str, Any]], rounds: list[int], kind: str, key: str, reference: str
) -> dict[str, Any]:
    pooled = {
        k: [ms for b in blocks if b["key"] == k for ms in b["ms"][kind]] for k in (reference, key)
    }
    ratios = []
    for r in rounds:
        med = {b["key"]: statistics.median(b["ms"][kind]) for b in blocks if b["round"] == r}
        if reference in med and key in med:
            ratios.append(med[key] / med[reference])
    p10, p90 = _quantiles(ratios)
    if reference != "floor":
        name = f"{kind} {key} / {reference}"
    else:
        name = kind if key == "vfido" else f"{kind} ({key})"
    return {
        "name": name,
        "key": key,
        "reference": reference,
        "n": len(pooled[key]),
        "floor_ms": statistics.median(pooled[reference]),
        "vfido_ms": statistics.median(pooled[key]),
        "ratio": statistics.median(ratios),
        "ratio_p10": p10,
        "ratio_p90": p90,
        "round_ratios": ratios,
    }


#: The commands of a browser's ceremonies, by the hex first byte timed_key.py records.
_TIMED_COMMANDS = {
    f"{command:02x}": name
    for command, name in (
        (Command.GET_INFO, "getInfo"),
        (Command.MAKE_CREDENTIAL, "makeCredential"),
        (Command.GET_ASSERTION, "getAssertion"),
    )
}


def handler_records(path: Path) -> list[list[Any]]:
    """The handler calls ``bench/timed_key.py`` recorded at ``path`` (``[what, first byte
    hex, start, wall s, cpu s, thread]``, ``what`` = "handler")."""
    return [rec for rec in json.loads(path.read_text())["rec"] if rec[0] == "handler"]


def handler_times(records: list[list[Any]]) -> dict[str, dict[str, float]]:
    """Per command of a ceremony: how many handler calls, their median wall and thread-CPU
    time in ms."""
    times: dict[str, dict[str, float]] = {}
    for byte, name in _TIMED_COMMANDS.items():
        calls = [rec for rec in records if rec[1] == byte]
        if calls:
            times[name] = {
                "calls": len(calls),
                "wall_ms": statistics.median(rec[3] for rec in calls) * 1e3,
                "cpu_ms": statistics.median(rec[4] for rec in calls) * 1e3,
            }
    return times


def base_import(python: str, base_tree: Path) -> str:
    """Where ``vfido_base``'s `vfido` comes from, checked to be ``base_tree`` (an editable
    install or the working directory could otherwise put this checkout's first)."""
    probe = subprocess.run(
        [python, "-P", "-c", "import vfido; print(vfido.__file__)"],
        env=dict(os.environ, PYTHONPATH=str(base_tree)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    found = probe.stdout.strip()
    if probe.returncode != 0 or not found:
        raise RuntimeError(f"vfido_base would import no vfido from {base_tree}")
    if not Path(found).resolve().is_relative_to(base_tree.resolve()):
        raise RuntimeError(f"vfido_base would import {found}, not {base_tree}")
    return found


def interpreter(python: str) -> str:
    """``python``'s path, version and build flags (how `configure` was run), for the record:
    two builds of one version differ (session 27: Debian's and pyenv's 3.11)."""
    probe = subprocess.run(
        [
            python,
            "-c",
            "import sys, sysconfig; print(sys.executable, sys.version.split()[0],"
            " sysconfig.get_config_var('CONFIG_ARGS'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return probe.stdout.strip()


def trace_file(scratch: Path, tag: str) -> Path:
    """Where the key ``vfido`` of the block ``tag`` writes its trace."""
    return scratch / f"trace-{tag}.jsonl"


def times_file(scratch: Path, tag: str) -> Path:
    """Where the key ``vfido_timed`` of the block ``tag`` writes its handler records."""
    return scratch / f"times-{tag}.json"


def key_argv(
    key: str,
    tag: str,
    scratch: Path,
    python: str,
    base_tree: Path | None = None,
    base_python: str | None = None,
    *,
    uv: bool = False,
) -> tuple[list[str], dict[str, str] | None]:
    """The command line and environment (None: this one's) of ``key``'s process for the block
    ``tag``; its files in ``scratch``: the sized floor's shape, vfido's trace
    (:func:`trace_file`), control socket and ``vfido_timed``'s records (:func:`times_file`).
    Every key runs under ``python`` but ``vfido_base``, which runs under ``base_python`` (if
    given) with ``base_tree`` first on its path. ``uv``: `vfido run --uv` (one of
    :data:`UV_KEYS`), built-in user verification."""
    if uv and key not in UV_KEYS:
        raise ValueError(f"{key} cannot verify a user: a uv run takes {UV_KEYS}")
    if key in NICED_KEYS:
        argv, env = key_argv(NICED_KEYS[key], tag, scratch, python, base_tree, base_python, uv=uv)
        return ["nice", "-n", str(NICED), *argv], env  # nice execs: the same pid
    env = None
    if key in ("floor", "floor_sized"):
        argv = [
            python,
            str(HERE / "floorkey.py"),
            "-v",
            "--serial",
            f"vfido-{key}".replace("_", "-"),
        ]
        if key == "floor_sized":
            argv += ["--shape", str(scratch / SHAPE_FILE)]
        return argv, env
    argv = [python, "-m", "vfido", "run", "--transport", "uhid", "--ephemeral"]
    if key in CACHED_KEYS:
        argv[1:4] = [str(HERE / "cached_handler.py"), "--by-command"]
    if key == "vfido_computed":
        argv[3:3] = ["--compute"]
    if key == "vfido_slept":
        argv[3:3] = ["--sleep-ms", SLEPT_MS]
    if key == "vfido_timed":
        argv[1:4] = [str(HERE / "timed_key.py")]
        env = dict(os.environ, WRAP_OUT=str(times_file(scratch, tag)))
    if key == "vfido_base":
        # -P: not the checkout (the cwd) first on sys.path, but PYTHONPATH's tree.
        argv[0:1] = [base_python or python, "-P"]
        env = dict(os.environ, PYTHONPATH=str(base_tree))
    argv += ["--presence", "auto", "--serial", "vfido-bench"]
    argv += ["--control-socket", str(scratch / f"ctl-{tag}.sock")]
    if key == "vfido":
        argv += ["--trace", str(trace_file(scratch, tag))]
    if uv:
        argv.append("--uv")
    return argv, env


def run(
    out: Path,
    argv_for: Callable[[str], list[str]],
    log: Callable[..., None] = print,
    rounds: int = 6,
    n: int = 20,
    python: str = sys.executable,
    keys: tuple[str, ...] = ("floor", "vfido"),
    base_tree: Path | None = None,
    base_python: str | None = None,
    uv: bool = False,
) -> dict[str, Any]:
    """``rounds`` x ``keys`` blocks of ``n`` create() + ``n`` get(), the order reversed every
    other round; the rows. ``uv``: the ceremonies CI runs for discoverable credentials
    (``residentKey`` and ``userVerification`` "required") against `vfido run --uv`, every
    key one of :data:`UV_KEYS`, and every ceremony checked to come back user-verified (the
    UV flag: CTAP2, and the key's built-in verification). ``vfido_untraced`` (opt-in) is
    `vfido run` without ``--trace``: nothing proves which protocol served it (the traced
    blocks of the same build do; in a ``uv`` run the UV flag does), it shows what the trace
    costs. ``floor_sized`` (opt-in) is the floor key with vfido's
    shapes (:func:`vfido_shape`, made once by ``python`` at the start). ``vfido_base``
    (opt-in) is `vfido run` untraced from the checkout ``base_tree`` (e.g. ``git archive``
    of an older commit), under ``base_python`` if given (another interpreter; ``base_tree``
    may then be this checkout): its rows against the floor, and ``vfido_untraced``'s
    against it.
    ``vfido_cached``, ``vfido_slept`` and ``vfido_computed`` (opt-in) are `vfido run`
    untraced with its authenticator answering from its first answers
    (``bench/cached_handler.py --by-command``), the second sleeping ``SLEPT_MS`` before
    each, the third computing a real answer's cryptography before each (``--compute``).
    ``vfido_timed`` (opt-in) is `vfido run` untraced under ``bench/timed_key.py``: each of
    its blocks gets ``handler_ms``, the wall and thread-CPU time of vfido's handler per
    command under the browser (:func:`handler_times`; the recording itself costs a little),
    and the result ``handler_ms`` pooled over its blocks. ``vfido_niced`` and
    ``floor_sized_niced`` (opt-in) are ``vfido_untraced`` and ``floor_sized`` at nice
    ``NICED``. Every block gets ``cpu_ms`` (:func:`cpu_per_pair`) and ``priority``
    (:func:`key_priority`, checked by :func:`check_priority`); the result ``cpu_ms``, the
    medians per key (:func:`cpu_summary`)."""
    unknown = [key for key in keys if key not in KEYS]
    if unknown:
        raise ValueError(f"unknown keys {unknown}: choose from {KEYS}")
    if ("vfido_base" in keys) != (base_tree is not None):
        raise ValueError("vfido_base and base_tree go together")
    if base_python is not None and base_tree is None:
        raise ValueError("base_python is vfido_base's interpreter: it needs vfido_base")
    if uv and any(key not in UV_KEYS for key in keys):
        raise ValueError(f"a uv run takes only keys that verify a user: {UV_KEYS}")
    result: dict[str, Any] = {"load": [os.getloadavg()], "rounds": rounds, "n": n, "blocks": []}
    result["keys"] = list(keys)
    result["uv"] = uv
    result["cpus"] = os.cpu_count()
    if base_tree is not None:
        base_interpreter = base_python or python  # what key_argv starts vfido_base with
        result["base_import"] = base_import(base_interpreter, base_tree)
        result["base_python"] = interpreter(base_interpreter)
        result["python"] = interpreter(python)
    # The keys' logs, vfido's trace and control socket on the guest's tmpfs, copied to ``out``
    # after each block: ``out`` is a 9p share (no sockets; every write a round trip to the host).
    scratch = Path(tempfile.mkdtemp(prefix="vfido-bench-chromium-"))
    timed: list[list[Any]] = []  # vfido_timed's handler records, all its blocks
    credential = {"floor": FLOOR_CREDENTIAL}
    if "floor_sized" in keys or "floor_sized_niced" in keys:
        shape = write_shape(scratch / SHAPE_FILE, python)
        shutil.copyfile(scratch / SHAPE_FILE, out / SHAPE_FILE)
        credential["floor_sized"] = b64url(floorkey.credential_id(shape.credential_id_length))
        credential["floor_sized_niced"] = credential["floor_sized"]
        result["floor_sized_shape"] = {
            "get_info_bytes": len(shape.get_info),
            "x5c_bytes": [len(cert) for cert in shape.x5c],
            "credential_id_length": shape.credential_id_length,
        }
    for r in range(rounds):
        order = keys if r % 2 == 0 else keys[::-1]
        for key in order:
            tag = f"bench-chromium-r{r}-{key}"
            key_log = scratch / f"{tag}.log"
            argv, env = key_argv(key, tag, scratch, python, base_tree, base_python, uv=uv)
            t0 = time.monotonic()
            with key_process(argv, key_log, env=env) as (_, key_pid):
                if key in NICED_KEYS:
                    set_priority(key_pid, NICED)
                priority = key_priority(key_pid)
                check_priority(key, priority)
                started = time.monotonic() - t0
                query = f"n={n}&label={key}" + ("&uv=1" if uv else "")
                page = browse(argv_for, query, out / f"{tag}-chromium.log", key_pid=key_pid)
            (out / f"{tag}-page.json").write_text(json.dumps(page, indent=1))
            for kept in scratch.glob(f"*{tag}*"):
                if kept.is_file() and not kept.name.endswith(".sock"):
                    shutil.copyfile(kept, out / kept.name)
            if key in credential:
                served = served_by_floor(page, key_log.read_text(errors="replace"), credential[key])
            elif key == "vfido":
                served = served_by_vfido(page, trace_protocols.read_trace(trace_file(scratch, tag)))
            else:
                _all_ok(page)
                served = {"commands": "not traced", "u2f": 0}
            if uv:
                served["user_verified"] = all_user_verified(page)
            ms = {
                kind: [c["ms"] for c in page["ceremonies"] if c["kind"] == kind] for kind in KINDS
            }
            medians = {kind: statistics.median(v) for kind, v in ms.items()}
            block = {"round": r, "key": key, "ms": ms, "median_ms": medians}
            block.update(served=served, start_s=started)
            block["cpu_ms"] = cpu_per_pair(page["cpu"], n)
            block["priority"] = priority
            if key == "vfido_timed":
                records = handler_records(times_file(scratch, tag))
                timed.extend(records)
                block["handler_ms"] = handler_times(records)
                log(f"round {r} vfido_timed, the handler per command: {block['handler_ms']}")
            result["blocks"].append(block)
            log(
                f"round {r} {key}: create {medians['create']:.1f} ms, get "
                f"{medians['get']:.1f} ms (medians of {n}); {served['commands']}; per pair "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in block["cpu_ms"].items())
            )
    result["load"].append(os.getloadavg())
    result["cpu_ms"] = cpu_summary(result["blocks"])
    for key, per in result["cpu_ms"].items():
        log(f"{key}, CPU per create() + get() (median of blocks): {per}")
    if timed:
        result["handler_ms"] = handler_times(timed)
        log(f"vfido_timed, the handler per command, all rounds: {result['handler_ms']}")
    result["rows"] = summarize(result["blocks"])
    for row in result["rows"]:
        key, reference = row["key"], row["reference"]
        log(
            f"{row['name']}: {reference} {row['floor_ms']:.1f} ms, {key} {row['vfido_ms']:.1f} "
            f"ms, {key}/{reference} {row['ratio']:.3f} ({row['ratio_p10']:.3f}-"
            f"{row['ratio_p90']:.3f})"
        )
    return result
