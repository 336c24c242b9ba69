"""Reading a trace file and printing it readably (`vfido trace show`)."""

from __future__ import annotations

import collections
import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

#: The record types `vfido run --trace` writes; a file with none of them is not a trace.
RECORD_TYPES = frozenset({"start", "event", "packet", "request", "response"})


#: The longest line :func:`read_trace` reads. A trace's longest, a packet or a 7609-byte
#: request in hex, is some 16 KB; /dev/zero or a file named by mistake may have no newline.
MAX_LINE = 1 << 20


class NotATrace(ValueError):
    """The file cannot be a trace (a line too long to be one)."""


#: Why a line with bytes that are not UTF-8 is skipped (a binary file has such lines).
NOT_TEXT = "not UTF-8 text"


class SkippedLine(NamedTuple):
    """A line of a trace file that is no trace record: its number (from 1) and why."""

    number: int
    why: str


def read_trace(path: Path, skipped: list[SkippedLine] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a trace file (JSON objects of a type in :data:`RECORD_TYPES`), from
    every line that holds one. Any other line (junk, a line cut off by a crash, a damaged
    byte, one longer than :data:`MAX_LINE`) is skipped, and said in ``skipped`` if given:
    one bad line never hides the others. Raises :class:`NotATrace` for a line longer than
    :data:`MAX_LINE` before any record (a file without newlines: /dev/zero is not read to
    its end), or OSError."""
    with open(path, "rb") as f:
        number, records = 0, 0

        def skip(why: str) -> None:
            if skipped is not None:
                skipped.append(SkippedLine(number, why))

        while raw := f.readline(MAX_LINE + 1):
            number += 1
            if len(raw) > MAX_LINE:
                if not records:
                    raise NotATrace(f"a line is longer than {MAX_LINE} bytes")
                while raw and not raw.endswith(b"\n"):  # the rest of it, read in pieces
                    raw = f.readline(MAX_LINE + 1)
                skip(f"longer than {MAX_LINE} bytes")
                continue
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                skip(NOT_TEXT)
                continue
            if not line:
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                cut = "" if raw.endswith(b"\n") else " (the file ends mid-line)"
                skip(f"not JSON{cut}")
                continue
            if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
                skip("not a trace record")
                continue
            records += 1
            yield record


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
