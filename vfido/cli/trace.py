"""`vfido trace show FILE`: a trace written by `vfido run --trace FILE`, readably."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vfido.cli.common import CliError, Subparsers


def cmd_show(args: argparse.Namespace) -> int:
    from vfido.safetext import visible
    from vfido.trace.format import RECORD_TYPES, NotATrace, format_trace, read_trace

    path = Path(args.file)
    skipped: list[int] = []
    try:
        records = list(read_trace(path, skipped))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a vfido trace (binary data)") from None
    except NotATrace as exc:
        raise CliError(f"{path} is not a vfido trace ({exc})") from None
    if not any(record.get("type") in RECORD_TYPES for record in records):
        raise CliError(
            f"{path} is not a vfido trace (no trace records; `vfido run --trace FILE` writes one)"
        )
    for line in format_trace(records, details=args.details):
        print(visible(line))  # RP IDs, user names, anything in the file: never raw
    if skipped:  # said, not hidden: a line cut off by a crash, or not from vfido at all
        shown = ", ".join(str(n) for n in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(
            visible(
                f"vfido: note: skipped {len(skipped)} line(s) of {path} that are not "
                f"trace records (line {shown})"
            ),
            file=sys.stderr,
        )
    return 0


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
