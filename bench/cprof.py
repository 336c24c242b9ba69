"""`vfido run` with cProfile on every UDP I/O thread (for bench/entry.py ``cprofile``).

    python3 bench/cprof.py OUT.prof vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process with the UDP reading loop wrapped so
that each I/O thread (where requests are read, and since session 4 answered) runs under its
own ``cProfile.Profile``; at exit the profiles are merged into OUT.prof (pstats format).
Deterministic and complete (unlike a sampler starved of the GIL on a loaded machine), but
every Python call pays the profiler's overhead: read shares, not microseconds.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

import vfido.transports.udp as udp  # noqa: E402

profiles: list[cProfile.Profile] = []
# The reading loop: per transport until session 10, shared by a process's UDP keys since.
_owner: Any = getattr(udp, "_Reader", None) or udp.UdpTransport
_loop = _owner._loop


def profiled_loop(self: Any) -> None:
    profile = cProfile.Profile()
    profiles.append(profile)
    profile.enable()
    try:
        _loop(self)
    finally:
        profile.disable()


_owner._loop = profiled_loop


def dump() -> None:
    for profile in profiles:
        profile.disable()
    if profiles:
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(sys.argv[1])


if __name__ == "__main__":
    atexit.register(dump)
    from vfido.cli import main

    sys.exit(main(["run", *sys.argv[2:]]))
