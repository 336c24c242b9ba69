"""`vfido doctor | install-udev`: this machine's setup for browsers (UHID, udev, hidraw)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfido.cli.common import CliError, Subparsers, key_name


def cmd_doctor(args: argparse.Namespace) -> int:
    from vfido.doctor import format_check, run_checks

    checks = run_checks(name=args.name)
    for check in checks:
        print(format_check(check))
    failed = sum(1 for c in checks if c.status == "FAIL")
    warned = sum(1 for c in checks if c.status == "warn")
    if failed:
        print(f"{failed} check(s) failed")
    elif warned:
        print(f"no check failed ({warned} warning(s): see above)")
    else:
        print("all checks passed")
    return 1 if failed else 0


def cmd_install_udev(args: argparse.Namespace) -> int:
    from vfido.udev_install import InstallError, install

    try:
        return install(
            prefix=Path(args.prefix) if args.prefix else None,
            dry_run=args.dry_run,
            user=args.user,
        )
    except InstallError as exc:
        raise CliError(str(exc)) from None


def register_doctor(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="check that browsers can use the key (UHID, udev, hidraw)")
    p.add_argument("--name", type=key_name, help="which running key to check (default: every one)")
    p.set_defaults(func=cmd_doctor)


def register_install_udev(sub: Subparsers) -> None:
    p = sub.add_parser(
        "install-udev",
        help="install the udev rules, uhid module loading and systemd user unit (as root)",
    )
    p.add_argument("--dry-run", action="store_true", help="only print what would be done")
    p.add_argument(
        "--prefix", metavar="DIR", help="install under DIR instead of / (no system changes)"
    )
    p.add_argument(
        "--user", help="add USER to the group vfido (default: $SUDO_USER when run with sudo)"
    )
    p.set_defaults(func=cmd_install_udev)
