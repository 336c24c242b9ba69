"""Personas: profiles that make the key answer like a known model class of security key
(``vfido run --persona NAME``, ``VirtualKey(persona=NAME)``, ``vfido personas``).

A persona is a data file, ``vfido/personas/NAME.toml`` (shipped in the wheel)::

    summary = "one line for `vfido personas`"
    protocols = ["ctap2", "u2f"]   # CTAPHID capabilities: CBOR and/or MSG (U2F)

    [getInfo]                      # exactly what authenticatorGetInfo reports (CTAP 2.1 6.4
    versions = ["U2F_V2", "FIDO_2_0"]     # member names); a U2F-only persona has none
    aaguid = "..."
    ...

    [limits]                       # what the model has but does not report in getInfo
    algorithms = [-7, -8]
    remainingDiscoverableCredentials = 25

Loading maps it onto :class:`vfido.authenticator.config.Config`: maxMsgSize, algorithms,
maxCredentialCountInList, firmwareVersion and remainingDiscoverableCredentials (the store's
capacity) onto the Config fields of those limits; FIDO_2_1_PRE onto ``ctap21_pre``; option
``uv`` onto ``builtin_uv``; versions, option names, extensions, pinUvAuthProtocols,
maxCredentialIdLength, transports and the set of members onto an
:class:`vfido.authenticator.model.ModelClass`. It is then checked against a throwaway key
built from that Config: the getInfo such a key reports must be the profile's, member for
member, so a profile can only promise what the key does. Any problem is one
:class:`PersonaError` line naming the persona and the member.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a persona is loaded, not with the command line parser
    from vfido.authenticator.config import Config

#: The CTAPHID protocols a profile may list (transports.handler.CTAP2 / U2F).
PROTOCOLS = ("ctap2", "u2f")
#: The key's settings (Config's, named as `vfido run`'s options and VirtualKey's arguments)
#: that change what the key is: a persona fixes those, so they are refused beside it.
MODEL_SETTINGS = (
    "uv",
    "mldsa",
    "fingerprint",
    "ctap21_pre",
    "enterprise_attestation",
    "enterprise_rp_id",
    "max_resident_credentials",
)
#: [limits] members: what a model has without reporting it.
LIMITS = (
    "algorithms",
    "maxMsgSize",
    "maxCredentialCountInList",
    "firmwareVersion",
    "remainingDiscoverableCredentials",
)
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,31}")
_TOP_LEVEL = ("summary", "protocols", "getInfo", "limits")


class PersonaError(ValueError):
    """An unknown persona or a bad profile (one line, for the user)."""


@dataclass(frozen=True)
class Persona:
    """A loaded, checked profile."""

    name: str
    summary: str
    #: The CTAPHID protocols the key speaks ("ctap2", "u2f").
    protocols: tuple[str, ...]
    #: The getInfo the key reports, by member name as the profile says it (None: U2F-only).
    get_info: Mapping[str, Any] | None = field(repr=False)
    config: Config = field(repr=False)
    #: The AAGUID a keystore made for this persona gets (None: a random one).
    aaguid: bytes | None = None


def names() -> tuple[str, ...]:
    """The personas shipped with vfido, sorted."""
    files = importlib.resources.files(__name__).iterdir()
    return tuple(sorted(f.name[:-5] for f in files if f.name.endswith(".toml")))


def unknown(name: str) -> PersonaError:
    return PersonaError(f"unknown persona {name[:40]!r}; known: {', '.join(names())}")


def load(name: str) -> Persona:
    """The persona called ``name``, checked. Raises PersonaError (one line)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in names():
        raise unknown(str(name))
    return _load(name)


def summaries() -> list[tuple[str, str]]:
    """(name, summary) of every persona, without checking them against a key."""
    result = []
    for name in names():
        text = importlib.resources.files(__name__).joinpath(f"{name}.toml").read_text("utf-8")
        try:
            summary = tomllib.loads(text).get("summary", "")
        except tomllib.TOMLDecodeError:
            summary = "(unreadable profile)"
        result.append((name, str(summary)))
    return result


@functools.cache
def _load(name: str) -> Persona:
    text = importlib.resources.files(__name__).joinpath(f"{name}.toml").read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaError(f"persona {name}: not valid TOML ({exc})") from None
    return parse(name, data)


def parse(name: str, data: Mapping[str, Any], *, check: bool = True) -> Persona:
    """Map a profile's data onto a Config (and check it against a throwaway key)."""
    from vfido.authenticator.config import Config
    from vfido.authenticator.model import ModelClass

    def fail(text: str) -> PersonaError:
        return PersonaError(f"persona {name}: {text}")

    extra = sorted(set(data) - set(_TOP_LEVEL))
    if extra:
        raise fail(f"unknown entries {', '.join(extra)} (known: {', '.join(_TOP_LEVEL)})")
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary:
        raise fail("summary must be a non-empty string")
    protocols = data.get("protocols")
    if (
        not isinstance(protocols, list)
        or not protocols
        or any(p not in PROTOCOLS for p in protocols)
        or len(set(protocols)) != len(protocols)
    ):
        raise fail(f"protocols must list some of {', '.join(PROTOCOLS)}")
    info = data.get("getInfo")
    limits = data.get("limits", {})
    if not isinstance(limits, dict) or (info is not None and not isinstance(info, dict)):
        raise fail("getInfo and limits must be tables")
    bad = sorted(set(limits) - set(LIMITS))
    if bad:
        raise fail(f"limits: unknown {', '.join(bad)} (known: {', '.join(LIMITS)})")
    if "ctap2" not in protocols:
        if info is not None or limits:
            raise fail("a U2F-only persona (no ctap2) has no getInfo and no limits")
        model = ModelClass(versions=("U2F_V2",), pin_uv_auth_protocols=())
        return Persona(name, summary, tuple(protocols), None, Config(model=model))
    if info is None:
        raise fail("a ctap2 persona needs a [getInfo] table")
    both = sorted(set(info) & set(limits))
    if both:
        raise fail(f"{', '.join(both)} in both getInfo and limits (one place)")
    try:
        persona = _map(name, summary, tuple(protocols), info, limits)
    except (ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
    if check:
        _check(persona)
    return persona


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{what} must be a list of integers")
    return tuple(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(value)


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def _map(
    name: str,
    summary: str,
    protocols: tuple[str, ...],
    info: Mapping[str, Any],
    limits: Mapping[str, Any],
) -> Persona:
    from vfido.authenticator.config import Config
    from vfido.authenticator.cose import FULLY_SPECIFIED_ALGORITHMS, MLDSA_ALGORITHMS
    from vfido.authenticator.extensions import SUPPORTED
    from vfido.authenticator.model import ModelClass
    from vfido.authenticator.responses import GET_INFO_MEMBERS

    numbers = {member: key for key, member in GET_INFO_MEMBERS.items()}
    unknown_members = sorted(set(info) - set(numbers))
    if unknown_members:
        raise ValueError(f"getInfo: unknown members {', '.join(unknown_members)}")
    merged = {**limits, **info}
    versions = _strings(info.get("versions"), "getInfo versions")
    if ("U2F_V2" in versions) != ("u2f" in protocols):
        raise ValueError("versions lists U2F_V2 exactly when protocols lists u2f")
    extensions = _strings(info.get("extensions", []), "getInfo extensions")
    unsupported = [e for e in extensions if e not in SUPPORTED]
    if unsupported:
        raise ValueError(f"extensions vfido does not implement: {', '.join(unsupported)}")
    options = info.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, bool) for v in options.values()):
        raise ValueError("getInfo options must be a table of true/false")
    aaguid = None
    if "aaguid" in info:
        try:
            aaguid = uuid.UUID(str(info["aaguid"])).bytes
        except ValueError:
            raise ValueError("getInfo aaguid must be a UUID") from None
    model = ModelClass(
        versions=versions,
        extensions=extensions,
        options=frozenset(options),
        pin_uv_auth_protocols=_ints(info.get("pinUvAuthProtocols", [1]), "pinUvAuthProtocols"),
        max_credential_id_length=(
            _int(info["maxCredentialIdLength"], "maxCredentialIdLength")
            if "maxCredentialIdLength" in info
            else None
        ),
        transports=_strings(info.get("transports", ["usb"]), "getInfo transports"),
        members=frozenset(numbers[m] for m in info),
    )
    changes: dict[str, Any] = {"model": model, "ctap21_pre": "FIDO_2_1_PRE" in versions}
    if "algorithms" in merged:
        algorithms = _ints(merged["algorithms"], "algorithms")
        changes["algorithms"] = algorithms
        changes["fully_specified_algorithms"] = any(
            a in FULLY_SPECIFIED_ALGORITHMS for a in algorithms
        )
        changes["mldsa"] = any(a in MLDSA_ALGORITHMS for a in algorithms)
    for member, config_field in (
        ("maxMsgSize", "max_msg_size"),
        ("maxCredentialCountInList", "max_credential_count_in_list"),
        ("firmwareVersion", "firmware_version"),
        ("remainingDiscoverableCredentials", "max_resident_credentials"),
    ):
        if member in merged:
            changes[config_field] = _int(merged[member], member)
    changes["builtin_uv"] = "uv" in options
    changes["fingerprint"] = "bioEnroll" in options
    return Persona(name, summary, protocols, dict(info), Config(**changes), aaguid)


def expected_info(persona: Persona) -> dict[int, Any]:
    """The profile's getInfo as the key's CBOR map (member numbers, COSE algorithm maps,
    AAGUID bytes): what a key of this persona must answer while fresh."""
    from vfido.authenticator.responses import GET_INFO_MEMBERS

    if persona.get_info is None:
        raise PersonaError(f"persona {persona.name} is U2F-only: it has no getInfo")
    numbers = {member: key for key, member in GET_INFO_MEMBERS.items()}
    result: dict[int, Any] = {}
    for member, value in persona.get_info.items():
        if member == "aaguid":
            value = persona.aaguid
        elif member == "algorithms":
            value = [{"type": "public-key", "alg": a} for a in value]
        result[numbers[member]] = value
    return result


def longest_credential_id(config: Config) -> int:
    """The length of the longest credential ID a key with ``config`` can issue (its largest
    private key, every flag, a credBlob of the most bytes if it offers credBlob)."""
    from vfido.authenticator.cose import CredentialKey
    from vfido.authenticator.credential_source import SealedCredential
    from vfido.authenticator.extensions import CRED_BLOB, MAX_CRED_BLOB_LENGTH
    from vfido.keystore.credential_id import SEAL_OVERHEAD

    blob = config.model is None or CRED_BLOB in config.model.extensions
    longest = 0
    for algorithm in config.algorithms:
        sealed = SealedCredential(
            algorithm=algorithm,
            private_key=CredentialKey.generate(algorithm).private_bytes(),
            cred_protect=3,
            discoverable=True,
            hmac_secret=True,
            u2f=True,
            cred_blob=bytes(MAX_CRED_BLOB_LENGTH) if blob else None,
            third_party_payment=True,
        )
        longest = max(longest, SEAL_OVERHEAD + len(sealed.to_bytes()))
    return longest


def _check(persona: Persona) -> None:
    """The getInfo of a throwaway key of this persona must be the profile's."""
    import cbor2

    from vfido.authenticator.device import Authenticator
    from vfido.authenticator.env import NullContext
    from vfido.authenticator.responses import GET_INFO_MEMBERS
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.presence import AutoPresence

    expected = expected_info(persona)
    with SqliteKeyStore.ephemeral(aaguid=persona.aaguid) as store:
        key = Authenticator(store, AutoPresence(), persona.config)
        answer = key.handle_cbor(b"\x04", NullContext())
    if answer[:1] != b"\x00":
        raise PersonaError(f"persona {persona.name}: getInfo fails (status {answer[0]:#04x})")
    actual = cbor2.loads(answer[1:])
    limit = persona.config.model.max_credential_id_length if persona.config.model else None
    longest = longest_credential_id(persona.config)
    if limit is not None and longest > limit:
        raise PersonaError(
            f"persona {persona.name}: maxCredentialIdLength {limit} is less than the "
            f"{longest} bytes of the longest credential ID vfido issues for its algorithms"
        )
    for number in sorted(set(expected) | set(actual)):
        member = GET_INFO_MEMBERS.get(number, str(number))
        if number not in actual:
            raise PersonaError(f"persona {persona.name}: getInfo {member}: vfido cannot report it")
        if number not in expected:
            raise PersonaError(f"persona {persona.name}: getInfo {member} is missing")
        if actual[number] != expected[number]:
            raise PersonaError(
                f"persona {persona.name}: getInfo {member} = {expected[number]!r}, "
                f"but a vfido key of this model reports {actual[number]!r}"
            )
