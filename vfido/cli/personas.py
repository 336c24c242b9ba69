"""``vfido personas [NAME]`` and what ``vfido run --persona NAME`` takes from a persona."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

from vfido.cli.common import CliError, Subparsers

if TYPE_CHECKING:
    from vfido.authenticator.config import Config
    from vfido.personas import Persona

log = logging.getLogger(__name__)

#: `vfido run`'s value of a vfido.personas.MODEL_SETTINGS option that was not given (False
#: for the others: flags).
_NOT_GIVEN: dict[str, Any] = {
    "enterprise_attestation": 0,
    "enterprise_rp_id": [],
    "max_resident_credentials": 100_000,
}

PERSONA_HELP = (
    "answer like a model class of key: its getInfo, commands, limits and CTAPHID "
    "protocols (`vfido personas` lists them)"
)


def run_config(args: argparse.Namespace) -> Config:
    """The Config of `vfido run --persona NAME` with the flags that do not change the model
    (--attestation, --zero-counter, --presence-timeout). Raises CliError (one line)."""
    from vfido.personas import MODEL_SETTINGS

    persona = _load(args.persona)
    for attribute in MODEL_SETTINGS:
        unset = _NOT_GIVEN.get(attribute, False)
        if getattr(args, attribute, unset) != unset:
            flag = "--" + attribute.replace("_", "-")
            raise CliError(
                f"--persona {persona.name} fixes what the key is: leave out {flag} "
                "(or run without --persona)"
            )
    if persona.aaguid is not None and not getattr(args, "ephemeral", False):
        log.warning(
            "--persona %s: the persistent keystore keeps its own AAGUID (the persona's, %s, "
            "is used by --ephemeral keys)",
            persona.name,
            persona.aaguid.hex(),
        )
    return dataclasses.replace(
        persona.config,
        attestation=args.attestation,
        constant_zero_counter=args.zero_counter,
        presence_timeout=args.presence_timeout,
    )


def _load(name: str) -> Persona:
    """The persona ``name`` (:func:`vfido.personas.load`). Raises CliError (one line)."""
    from vfido.personas import PersonaError, load

    try:
        return load(name)
    except PersonaError as exc:
        raise CliError(str(exc)) from None


def cmd_personas(args: argparse.Namespace) -> int:
    from vfido.personas import summaries

    if args.persona is None:
        listed = summaries()
        width = max(len(name) for name, _ in listed)
        for name, summary in listed:
            print(f"{name:<{width}}  {summary}")
        return 0
    persona = _load(args.persona)
    shown: dict[str, Any] = {
        "name": persona.name,
        "summary": persona.summary,
        "protocols": list(persona.protocols),
    }
    if persona.get_info is not None:
        shown["getInfo"] = dict(persona.get_info)
        shown["limits"] = {
            "algorithms": list(persona.config.algorithms),
            "maxMsgSize": persona.config.max_msg_size,
            "maxCredentialCountInList": persona.config.max_credential_count_in_list,
            "discoverableCredentials": persona.config.max_resident_credentials,
        }
    print(json.dumps(shown, indent=2))
    return 0


def register(sub: Subparsers) -> None:
    """Add ``vfido personas`` to the command parser."""
    p = sub.add_parser("personas", help="list the personas (model classes) `vfido run` can be")
    p.add_argument("persona", nargs="?", metavar="NAME", help="show this persona's getInfo")
    p.set_defaults(func=cmd_personas)


__all__ = ["PERSONA_HELP", "cmd_personas", "register", "run_config"]
