"""`vfido trace show FILE`: a trace written by `vfido run --trace FILE`, readably."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vfido.cli.common import CliError, Subparsers


def cmd_show(args: argparse.Namespace) -> int:
    """The trace's records readably; each line that holds none is one error line on stderr
    (its number and why), after them, and makes the exit status 1."""
    from vfido.safetext import visible
    from vfido.trace.format import NOT_TEXT, NotATrace, SkippedLine, format_trace, read_trace

    path = Path(args.file)
    skipped: list[SkippedLine] = []
    try:
        records = list(read_trace(path, skipped))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except NotATrace as exc:
        raise CliError(f"{path} is not a vfido trace ({exc})") from None
    if not records:  # a file named by mistake: one line, not one per line of it
        why = (
            "binary data"
            if any(line.why == NOT_TEXT for line in skipped)
            else "no trace records; `vfido run --trace FILE` writes one"
        )
        raise CliError(f"{path} is not a vfido trace ({why})")
    for line in format_trace(records, details=args.details):
        print(visible(line))  # RP IDs, user names, anything in the file: never raw
    if not skipped:
        return 0
    sys.stdout.flush()  # the records first, then what was left out of them
    for bad in skipped:  # said, not hidden: a line cut off by a crash, damaged, or junk
        print(visible(f"vfido: error: {path} line {bad.number}: {bad.why}"), file=sys.stderr)
    return 1


def register(sub: Subparsers) -> None:
    """`vfido trace show FILE`."""
    p = sub.add_parser("trace", help="read a trace written by `vfido run --trace FILE`")
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    q = tsub.add_parser("show", help="print a trace readably, one transaction per line")
    q.add_argument("file", metavar="FILE", help="the trace file (JSON lines)")
    q.add_argument(
        "--details",
        action="store_true",
        help="also print every packet and the decoded request and response of each transaction",
    )
    q.set_defaults(func=cmd_show)
