"""`vfido run` whose authenticator answers a repeated getAssertion from a cache (for
bench/entry.py ``transport``): what the rest of `vfido run` costs per getAssertion.

    python3 bench/cached_handler.py vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process after wrapping
``Authenticator.handle_cbor``: the first answer to each distinct getAssertion request is
computed as usual and kept; the same request again gets the kept bytes (no parsing,
presence, counter or signature). Every other command is answered as usual. The key-side
cost measured against this process is the transport's, the runner's and the framing's share
of a getAssertion; the difference to plain `vfido run` is the authenticator's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

from vfido.authenticator.device import Authenticator  # noqa: E402
from vfido.authenticator.env import RequestContext  # noqa: E402

GET_ASSERTION = 0x02
_handle_cbor = Authenticator.handle_cbor
_answers: dict[bytes, bytes] = {}


def cached_handle_cbor(self: Authenticator, request: bytes, transaction: RequestContext) -> bytes:
    request = bytes(request)
    answer = _answers.get(request)
    if answer is None:
        answer = _handle_cbor(self, request, transaction)
        if request[:1] == bytes([GET_ASSERTION]):
            _answers[request] = answer
    return answer


Authenticator.handle_cbor = cached_handle_cbor  # type: ignore[method-assign]

if __name__ == "__main__":
    from vfido.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
