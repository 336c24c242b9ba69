"""`vfido run` whose authenticator answers a repeated getAssertion from a cache (for
bench/entry.py ``transport``): what the rest of `vfido run` costs per getAssertion.

    python3 bench/cached_handler.py vfido-run-arguments...
    python3 bench/cached_handler.py --by-command vfido-run-arguments...
    python3 bench/cached_handler.py --busy-us 60 vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process after wrapping
``Authenticator.handle_cbor``: the first answer to each distinct getAssertion request is
computed as usual and kept; the same request again gets the kept bytes (no parsing,
presence, counter or signature). Every other command is answered as usual. The key-side
cost measured against this process is the transport's, the runner's and the framing's share
of a getAssertion; the difference to plain `vfido run` is the authenticator's.

``--by-command`` (bench/chromium.py's ``vfido_cached``): a browser's requests differ every
time (each create() makes a new credential, which its get() names), so the kept answer is
the first one to each *command* among getInfo, makeCredential and getAssertion, whatever
the request says: like the floor key, one credential for every create(), which get() then
names. What it measures is everything of `vfido run` but the authenticator, under the
browser.

``--minimal`` (bench/entry.py ``transport``'s middle row): every getAssertion is answered by
``bench/minimal.py``, only what every key computes for one (strict decoding, the rpId's
hash, one signature, encoding; no checks, lookup, presence or state): what a key with
vfido's codec costs behind `vfido run`'s transport before any of the spec's steps.

``--compute`` (after ``--by-command``; bench/chromium.py's ``vfido_computed``): before a
kept answer, the key computes what a real one must for that command and throws it away: a
P-256 key pair and one ECDSA signature for a makeCredential (the credential's key pair, the
packed attestation signature), one signature for a getAssertion, nothing for a getInfo. The
cryptography of vfido's answers, without the Python around it: under the browser, it tells
the cost of the key's computing from the cost of the rest of its answer.

``--busy-us N`` (bench/entry.py ``calibration``): a kept getAssertion answer is sent after
a busy wait of N µs (a loop on the clock: it runs for N µs however warm or cold the CPU is,
and touches nothing a request needs). A key whose answer takes a known time: the key-side
cost measured against it should be N more than the cached key's, whatever the client; what
it measures above that is the instrument's own error.

``--sleep-ms CMD=MS,...`` (after ``--by-command``; bench/chromium.py's ``vfido_slept``): a
kept answer is returned only after sleeping that long for that command (a hexadecimal
command byte: ``04=1.5,01=8.1,02=4.1``): a key that takes as long as vfido but spends no
CPU and touches no memory meanwhile, to tell the browser's cost of waiting for the key
from the cost of the key's computing beside the browser.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from minimal import KEY, minimal_get_assertion  # noqa: E402

from vfido.authenticator.device import Authenticator  # noqa: E402
from vfido.authenticator.dispatch import Command  # noqa: E402
from vfido.authenticator.env import RequestContext  # noqa: E402

MAKE_CREDENTIAL = Command.MAKE_CREDENTIAL
GET_ASSERTION = Command.GET_ASSERTION
#: --by-command: makeCredential, getAssertion, getInfo.
BY_COMMAND = frozenset({MAKE_CREDENTIAL, GET_ASSERTION, Command.GET_INFO})
_handle_cbor = Authenticator.handle_cbor
_answers: dict[bytes, bytes] = {}
_by_command = False
_sleep: dict[int, float] = {}  # --sleep-ms: seconds per command byte
_minimal = False
_compute = False
_busy = 0.0  # --busy-us, in seconds
_SIGNED = bytes(69)  # authenticatorData || clientDataHash: what a getAssertion signs


def compute_like_a_key(command: int) -> None:
    """``--compute``: the cryptography a real answer to ``command`` takes, thrown away."""
    if command == MAKE_CREDENTIAL:
        ec.generate_private_key(ec.SECP256R1())  # the credential's key pair
    if command in (MAKE_CREDENTIAL, GET_ASSERTION):
        KEY.sign(_SIGNED, ec.ECDSA(hashes.SHA256()))


def cached_handle_cbor(self: Authenticator, request: bytes, transaction: RequestContext) -> bytes:
    request = bytes(request)
    if _minimal and request[:1] == bytes([GET_ASSERTION]):
        return minimal_get_assertion(request)
    if _by_command and request[:1] and request[0] in BY_COMMAND:
        cache_key = request[:1]  # --by-command: one answer per command
    elif request[:1] == bytes([GET_ASSERTION]):
        cache_key = request  # one answer per distinct getAssertion
    else:
        return _handle_cbor(self, request, transaction)
    answer = _answers.get(cache_key)
    if answer is None:
        answer = _answers[cache_key] = _handle_cbor(self, request, transaction)
    elif _busy:
        busy_wait(_busy)
    elif _sleep:
        time.sleep(_sleep.get(request[0], 0.0))
    elif _compute:
        compute_like_a_key(request[0])
    return answer


def busy_wait(seconds: float) -> None:
    """``--busy-us``: return ``seconds`` from now, never yielding the CPU."""
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end:
        pass


def parse_sleeps(text: str) -> dict[int, float]:
    """``04=1.5,01=8.1`` -> {0x04: 0.0015, 0x01: 0.0081}."""
    sleeps = {}
    for item in text.split(","):
        command, _, ms = item.partition("=")
        sleeps[int(command, 16)] = float(ms) / 1e3
    return sleeps


Authenticator.handle_cbor = cached_handle_cbor  # type: ignore[method-assign]

if __name__ == "__main__":
    from vfido.cli import main

    arguments = sys.argv[1:]
    if arguments[:1] == ["--minimal"]:
        _minimal = True
        arguments = arguments[1:]
    if arguments[:1] == ["--busy-us"]:
        _busy = float(arguments[1]) / 1e6
        arguments = arguments[2:]
    if arguments[:1] == ["--by-command"]:
        _by_command = True
        arguments = arguments[1:]
        if arguments[:1] == ["--compute"]:
            _compute = True
            arguments = arguments[1:]
        if arguments[:1] == ["--sleep-ms"]:
            _sleep = parse_sleeps(arguments[1])
            arguments = arguments[2:]
    sys.exit(main(["run", *arguments]))
