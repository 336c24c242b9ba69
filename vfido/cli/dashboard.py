"""`vfido ui`: a live dashboard for a running key, in the browser (:mod:`vfido.dashboard`)."""

from __future__ import annotations

import argparse

from vfido.cli.common import CliError, Subparsers, add_control_args, control_target


def cmd_ui(args: argparse.Namespace) -> int:
    from vfido.dashboard import UiError, has_display, serve

    path = control_target(args.name, args.socket)
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be between 0 and 65535")

    def ready(url: str) -> None:
        print(f"vfido ui for {path.stem}: {url}", flush=True)
        if not args.no_open and not has_display():
            print("(no display: open the URL in a browser on this machine)", flush=True)

    try:
        serve(path, args.port, open_browser=not args.no_open, ready=ready)
    except UiError as exc:
        raise CliError(str(exc)) from None
    return 0


def register(sub: Subparsers) -> None:
    """`vfido ui`."""
    p = sub.add_parser("ui", help="a live dashboard for a running key, in the browser")
    add_control_args(p)
    p.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)"
    )
    p.add_argument("--no-open", action="store_true", help="do not start a browser")
    p.set_defaults(func=cmd_ui)
