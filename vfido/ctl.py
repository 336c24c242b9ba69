"""`vfido ctl`: drive a running key through its control socket from the shell (the Python
API, :class:`vfido.control.client.KeyController`, also importable from here).

Python::

    from vfido.control import KeyController

    with KeyController(name="udp-8111") as key:       # or socket=Path(...), or the only key
        cred = key.add_credential("example.com", user_id=b"alice", user_name="alice",
                                  private_key_pem=pem)  # -> dict, cred["id"] is base64url
        key.set_behaviour("counter-regression", 5)
        key.set_presence("manual")
        ...
        key.approve(wait=10)

Shell::

    vfido ctl [--name NAME | --socket PATH] COMMAND ...
    vfido ctl status | info | commands
    vfido ctl credentials list [--rp RP_ID] [--public-key] [--json]
    vfido ctl credentials add --rp RP_ID [--user-id B64URL | --user-id-text TEXT]
        [--user-name N] [--display-name N] [--key FILE.pem | --cose-key FILE.cbor]
        [--alg ES256] [--server-side] [--sign-count N] [--cred-protect 1|2|3] [--json]
    vfido ctl credentials remove ID
    vfido ctl approve|deny [--id N] [--wait S]
    vfido ctl presence [MODE] [--delay S]
    vfido ctl behaviour list | set NAME[=VALUE] | clear [NAME]
    vfido ctl power-cycle
    vfido ctl log [--limit N] [--since SEQ] [--json]
    vfido ctl webauthn options | credentials | add-credential JSON | remove-credential ID
        | remove-all-credentials | set-user-verified true|false
        | set-credential-properties ID [--backup-eligibility B] [--backup-state B]
    vfido ctl call COMMAND [JSON-ARGS]

The protocol itself (every command, argument, answer and error) is documented in
:mod:`vfido.control.commands`.
"""

from __future__ import annotations

# TRANSITIONAL(#18): re-export for branches in flight; the integrator removes it.
from vfido.cli.ctl import CtlError, register  # noqa: F401
from vfido.control.client import KeyController as KeyController
