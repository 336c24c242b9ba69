"""Reading a trace file and printing it readably (`vfido trace show`)."""

from __future__ import annotations

import collections
import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: The record types `vfido run --trace` writes; a file with none of them is not a trace.
RECORD_TYPES = frozenset({"start", "event", "packet", "request", "response"})


#: The longest line :func:`read_trace` reads. A trace's longest, a packet or a 7609-byte
#: request in hex, is some 16 KB; /dev/zero or a file named by mistake may have no newline.
MAX_LINE = 1 << 20


class NotATrace(ValueError):
    """The file cannot be a trace (a line too long to be one)."""


def read_trace(path: Path, skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a trace file. Lines that are not JSON objects are skipped (their
    numbers appended to ``skipped``, if given: a line cut off by a crash, junk). Raises
    :class:`NotATrace`, UnicodeDecodeError (binary data) or OSError."""
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE + 1):
            number += 1
            if len(raw) > MAX_LINE:
                raise NotATrace(f"a line is longer than {MAX_LINE} bytes")
            line = raw.decode("utf-8").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if isinstance(record, dict):
                yield record
            elif skipped is not None:
                skipped.append(number)


def _clock_text(t: Any) -> str:
    if not isinstance(t, int | float):
        return "??:??:??.???"
    try:
        moment = datetime.datetime.fromtimestamp(t)
    except (OverflowError, OSError, ValueError):  # 1e999, nan: not a time of this machine
        return "??:??:??.???"
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _cid_text(cid: Any) -> str:
    return f"cid 0x{cid}" if isinstance(cid, str) else "cid ?"


def format_trace(records: Iterable[Mapping[str, Any]], *, details: bool = False) -> Iterator[str]:
    """Readable lines: one block per transaction (request line with its response, keepalives
    counted), one line per CTAPHID control command, packets only with ``details``."""
    keepalives: dict[str, collections.Counter[str]] = {}
    pending_control: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        kind = record.get("type")
        when = _clock_text(record.get("t"))
        if kind == "start":
            yield f"{when} trace started (vfido {record.get('version')}, pid {record.get('pid')})"
        elif kind == "event":
            yield f"{when} {record.get('event')}"
        elif kind == "packet":
            cid = str(record.get("cid", "?"))
            cmd = record.get("cmd")
            if details:
                what = cmd if cmd is not None else f"cont {record.get('cont')}"
                extra = "".join(
                    f" {k}={record[k]}"
                    for k in ("bcnt", "ctap", "new_cid", "status", "error", "seconds")
                    if record.get(k) is not None
                )
                arrow = "->" if record.get("dir") == "in" else "<-"
                yield f"{when}   {arrow} {_cid_text(cid)} {what}{extra}"
            if cmd == "KEEPALIVE":
                keepalives.setdefault(cid, collections.Counter())[str(record.get("status"))] += 1
            elif cmd in ("INIT", "PING", "WINK", "CANCEL", "LOCK") and record.get("dir") == "in":
                if cmd == "CANCEL":
                    yield f"{when} {_cid_text(cid)} CANCEL"
                else:
                    pending_control[(cid, str(cmd))] = record
            elif cmd in ("INIT", "PING", "WINK", "LOCK") and record.get("dir") == "out":
                start = pending_control.pop((cid, str(cmd)), None)
                start_when = _clock_text(start.get("t")) if start else when
                result = f" -> new {_cid_text(record['new_cid'])}" if "new_cid" in record else ""
                yield f"{start_when} {_cid_text(cid)} {cmd}{result or ' -> OK'}"
            elif cmd == "ERROR":
                yield f"{when} {_cid_text(cid)} CTAPHID ERROR {record.get('error')}"
        elif kind == "request":
            if details:
                yield (
                    f"{when} {_cid_text(record.get('cid'))} {record.get('proto')} "
                    + str(record.get("command"))
                    + " (request)"
                )
        elif kind == "response":
            start_t = record.get("t")
            duration = record.get("duration")
            if isinstance(start_t, int | float) and isinstance(duration, int | float):
                start_t -= duration
            cid = str(record.get("cid", "?"))
            line = f"{_clock_text(start_t)} {_cid_text(record.get('cid'))} "
            line += str(record.get("summary", ""))
            if isinstance(duration, int | float):
                line += f" ({duration:.3f} s)"
            counts = keepalives.pop(cid, None)
            if counts:
                line += " [keepalive " + ", ".join(f"{n}x {s}" for s, n in counts.items()) + "]"
            yield line
            if details:
                yield "    request:  " + json.dumps(record.get("params", {}), sort_keys=True)
                yield "    response: " + json.dumps(record.get("result", {}), sort_keys=True)
