"""`vfido run` with a sampling profiler thread (for bench/entry.py ``profile``; no py-spy).

    python3 bench/sampler.py OUT.txt HZ vfido-run-arguments...

Runs ``vfido.cli.main(["run", ...])`` in this process. A daemon thread wakes ``HZ`` times a
second, takes ``sys._current_frames()`` and counts each other thread's Python stack (the
thread's name first, the innermost frame last). At exit it writes the counts to OUT.txt in
the collapsed format py-spy's ``-f raw`` writes (``frame;frame;... count``), which
``entry.summarize_profile`` reads. A thread blocked in a C call (``select``, a lock) is
counted at the Python line that made the call: these are wall-clock samples, so the
request path's share is read against the serving threads' idle frames.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # bench/entry.py --tree DIR measures that checkout
    sys.path.insert(0, str(ROOT))

counts: Counter[str] = Counter()


def _stack(frame: FrameType | None) -> list[str]:
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    frames.reverse()
    return frames


def sample(interval: float) -> None:
    me = threading.get_ident()
    while True:
        time.sleep(interval)
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            name = names.get(ident, "?")
            counts[";".join([f"thread ({name})", *_stack(frame)])] += 1


def dump() -> None:
    with open(sys.argv[1], "w") as out:
        for stack, count in counts.items():
            out.write(f"{stack} {count}\n")


if __name__ == "__main__":
    atexit.register(dump)
    hz = float(sys.argv[2])
    threading.Thread(target=sample, args=(1.0 / hz,), name="sampler", daemon=True).start()
    from vfido.cli import main

    sys.exit(main(["run", *sys.argv[3:]]))
