"""A model class this key answers as: narrower protocol versions, getInfo members, options,
extensions and PIN protocols than everything vfido implements (``vfido run --persona``).

``Config.model`` holds a :class:`ModelClass`; None (the default) is the full key. Everything
below is derived from it, nothing is a second copy of a handler:

* which CTAP2 commands exist (:func:`restrict_handlers`): a CTAP 2.0 key knows makeCredential,
  getAssertion, getInfo, clientPIN, reset and getNextAssertion; FIDO_2_1_PRE adds
  credentialMgmtPreview (0x41); FIDO_2_1 adds selection and the commands its options name
  (credMgmt, largeBlobs, authnrCfg, bioEnroll). The others answer CTAP1_ERR_INVALID_COMMAND,
  as a key of that model does;
* which clientPIN subcommands (getPinUvAuthToken* and getUVRetries only with the
  ``pinUvAuthToken`` option, CTAP 2.1 section 6.5) and pinUvAuthProtocols it accepts (others:
  INVALID_SUBCOMMAND / INVALID_PARAMETER);
* which extensions it processes: the others are removed from makeCredential/getAssertion
  before parsing, so they are ignored (CTAP 2.1 section 12: an authenticator ignores
  extensions it does not support);
* the most credentials an allowList/excludeList may carry, and the longest ID in it, when
  getInfo reports maxCredentialCountInList / maxCredentialIdLength (more, longer:
  CTAP2_ERR_LIMIT_EXCEEDED, as Chromium's virtual CTAP2 device answers);
* what getInfo reports (:func:`restrict_info`): the model's versions, extensions, option names,
  PIN protocols, maxCredentialIdLength and transports, and only its members;
* which CTAPHID protocols the key advertises (:attr:`ModelClass.ctap2`, :attr:`ModelClass.u2f`):
  a U2F-only model has no CBOR capability, one without U2F_V2 answers no CTAPHID_MSG.

Limits Config already has (algorithms, maxMsgSize, maxCredentialCountInList, firmwareVersion,
the discoverable credential capacity) stay there. Personas (data files mapped onto a Config)
live in :mod:`vfido.personas`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from vfido.authenticator import cbor
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.responses import GetInfoResponse

U2F_V2 = "U2F_V2"
FIDO_2_0 = "FIDO_2_0"
FIDO_2_1_PRE = "FIDO_2_1_PRE"
FIDO_2_1 = "FIDO_2_1"
#: CTAP 2.3 section 6.4: "FIDO_2_3" for CTAP 2.3; "FIDO_2_2" was never defined (CTAP 2.2 has
#: no version string of its own) and must not be reported.
FIDO_2_3 = "FIDO_2_3"
#: Every version string a model may report, in getInfo's order.
VERSIONS = (U2F_V2, FIDO_2_0, FIDO_2_1_PRE, FIDO_2_1, FIDO_2_3)

#: CTAP2 command bytes every CTAP2 model knows (CTAP 2.0 section 5): makeCredential,
#: getAssertion, getInfo, clientPIN, reset, getNextAssertion.
CTAP20_COMMANDS = frozenset({0x01, 0x02, 0x04, 0x06, 0x07, 0x08})
#: Commands an option in getInfo stands for (CTAP 2.1 section 6.4 / 2.1-PRE).
OPTION_COMMANDS: Mapping[str, int] = {
    "credMgmt": 0x0A,
    "largeBlobs": 0x0C,
    "authnrCfg": 0x0D,
    "bioEnroll": 0x09,
    "credentialMgmtPreview": 0x41,
    "userVerificationMgmtPreview": 0x40,
}
SELECTION = 0x0B
#: clientPIN subcommands of CTAP 2.0 (getPINRetries ... getPINToken).
CTAP20_PIN_SUBCOMMANDS = frozenset({0x01, 0x02, 0x03, 0x04, 0x05})
#: ... and those CTAP 2.1 adds with the pinUvAuthToken option.
CTAP21_PIN_SUBCOMMANDS = frozenset({0x06, 0x07, 0x09})

# Request map keys (CTAP 2.1 sections 6.1, 6.2, 6.5): (extensions, pinUvAuthParam,
# pinUvAuthProtocol, list).
_MAKE_CREDENTIAL_KEYS = (0x06, 0x08, 0x09, 0x05)
#: makeCredential's attestationFormatsPreference (CTAP 2.2), known to a key whose getInfo
#: reports attestationFormats: one of an older model ignores it, as a key ignores a
#: parameter it does not know.
_MC_ATTESTATION_FORMATS_PREFERENCE, _INFO_ATTESTATION_FORMATS = 0x0B, 0x16
#: ... and its enterpriseAttestation (CTAP 2.1): unknown to a CTAP 2.0 model.
_MC_ENTERPRISE_ATTESTATION = 0x0A
_GET_ASSERTION_KEYS = (0x04, 0x06, 0x07, 0x03)
_MAKE_CREDENTIAL, _GET_ASSERTION, _CLIENT_PIN = 0x01, 0x02, 0x06
_INFO_MAX_CREDENTIAL_COUNT_IN_LIST = 0x07
_INFO_MAX_CREDENTIAL_ID_LENGTH = 0x08


@dataclass(frozen=True)
class ModelClass:
    """What a model of key reports and answers (see the module documentation)."""

    #: getInfo versions, exactly (U2F_V2 alone: a U2F-only key, no CTAP2 at all).
    versions: tuple[str, ...]
    #: getInfo extensions; the only ones the key processes.
    extensions: tuple[str, ...] = ()
    #: getInfo option names reported (values stay derived from the key's state).
    options: frozenset[str] = frozenset()
    pin_uv_auth_protocols: tuple[int, ...] = (1,)
    #: getInfo maxCredentialIdLength (None: vfido's own bound).
    max_credential_id_length: int | None = None
    transports: tuple[str, ...] = ("usb",)
    #: The getInfo member keys reported (CTAP 2.1 section 6.4 numbers).
    members: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.versions or any(v not in VERSIONS for v in self.versions):
            raise ValueError(f"versions must be some of {', '.join(VERSIONS)}")
        if len(set(self.versions)) != len(self.versions):
            raise ValueError("versions must not repeat")
        if not set(self.pin_uv_auth_protocols) <= {1, 2}:
            raise ValueError("pinUvAuthProtocols must be 1 and/or 2")
        if self.ctap2 and not self.pin_uv_auth_protocols:
            raise ValueError("a CTAP2 model needs a pinUvAuthProtocol")
        if self.max_credential_id_length is not None and self.max_credential_id_length < 16:
            raise ValueError("maxCredentialIdLength must be at least 16")

    @property
    def ctap2(self) -> bool:
        """Whether the key speaks CTAP2 (CTAPHID_CBOR)."""
        return any(v != U2F_V2 for v in self.versions)

    @property
    def u2f(self) -> bool:
        """Whether the key speaks U2F (CTAPHID_MSG)."""
        return U2F_V2 in self.versions

    @property
    def ctap21(self) -> bool:
        return FIDO_2_1 in self.versions or FIDO_2_3 in self.versions

    def commands(self) -> frozenset[int]:
        """The CTAP2 command bytes a key of this model answers."""
        if not self.ctap2:
            return frozenset()
        known = set(CTAP20_COMMANDS)
        if self.ctap21:
            known.add(SELECTION)
        known.update(OPTION_COMMANDS[o] for o in self.options if o in OPTION_COMMANDS)
        return frozenset(known)

    def pin_subcommands(self) -> frozenset[int]:
        if "pinUvAuthToken" in self.options:
            return CTAP20_PIN_SUBCOMMANDS | CTAP21_PIN_SUBCOMMANDS
        return CTAP20_PIN_SUBCOMMANDS


#: What a CTAP 2.0 key reports and answers (CTAP 2.0 section 5): its six getInfo members,
#: its five options, PIN protocol 1 with getPINToken, hmac-secret, the 2.0 commands. The
#: behaviour ``versions=FIDO_2_0`` makes the key answer as this model (on top of a persona's).
CTAP20_MODEL = ModelClass(
    versions=(FIDO_2_0,),
    extensions=("hmac-secret",),
    options=frozenset({"plat", "rk", "clientPin", "up", "uv"}),
    pin_uv_auth_protocols=(1,),
    members=frozenset(range(0x01, 0x07)),
)


def answers_as_ctap20(model: ModelClass | None, ctap20: bool) -> bool:
    """Whether the key follows CTAP 2.0's rules where 2.1 changed them: under behaviour
    versions=FIDO_2_0 (``ctap20``), or as a model of no later version (the ctap20 persona)."""
    return ctap20 or (model is not None and model.ctap2 and not _after_ctap20(model))


def _after_ctap20(model: ModelClass) -> bool:
    return not {FIDO_2_1_PRE, FIDO_2_1, FIDO_2_3}.isdisjoint(model.versions)


def reports_member(model: ModelClass | None, key: int) -> bool:
    """Whether a key of ``model`` (None: the full key) can report the getInfo member
    ``key`` (CTAP 2.1 section 6.4 numbers), as :func:`restrict_info` keeps its members."""
    return model is None or key in model.members


def reports_option(model: ModelClass | None, ctap20: bool, name: str) -> bool:
    """Whether the key's getInfo can report the option ``name`` at all: a key of ``model``
    (None: the full key), narrowed to a CTAP 2.0 key's when ``ctap20`` (behaviour
    versions=FIDO_2_0), as :func:`restrict_info` narrows its getInfo. An option not reported
    is absent, and the spec gives absence its meaning (makeCredUvNotRqd absent: false)."""
    if model is not None and name not in model.options:
        return False
    return not ctap20 or name in CTAP20_MODEL.options


def narrowed_model(model: ModelClass, outer: ModelClass) -> ModelClass:
    """``model`` reporting only the getInfo members ``outer`` reports too (a persona under
    behaviour versions=FIDO_2_0: no list limits enforced that its getInfo no longer says)."""
    return replace(model, members=model.members & outer.members)


# --- the handlers -------------------------------------------------------------------------

H = TypeVar("H", bound=Callable[..., Any])


def restrict_handlers(
    model: ModelClass, handlers: Mapping[int, H], max_list: int | None = None
) -> dict[int, H]:
    """The command handlers a key of ``model`` has, the kept ones narrowed to its
    extensions, PIN protocols and subcommands. ``max_list``: the maxCredentialCountInList
    a longer allowList/excludeList exceeds (None: not reported, not enforced)."""
    allowed = model.commands()
    kept: dict[int, Any] = {c: h for c, h in handlers.items() if c in allowed}
    if not model.ctap2:
        return kept
    if _MAKE_CREDENTIAL in kept:
        unknown = frozenset(
            {_MC_ATTESTATION_FORMATS_PREFERENCE}
            if not reports_member(model, _INFO_ATTESTATION_FORMATS)
            else ()
        ) | frozenset({_MC_ENTERPRISE_ATTESTATION} if not _after_ctap20(model) else ())
        kept[_MAKE_CREDENTIAL] = _narrowed(
            kept[_MAKE_CREDENTIAL], model, _MAKE_CREDENTIAL_KEYS, max_list, unknown
        )
    if _GET_ASSERTION in kept:
        kept[_GET_ASSERTION] = _narrowed(kept[_GET_ASSERTION], model, _GET_ASSERTION_KEYS, max_list)
    if _CLIENT_PIN in kept:
        kept[_CLIENT_PIN] = _pin_checked(kept[_CLIENT_PIN], model)
    return kept


def max_list_length(model: ModelClass, configured: int) -> int | None:
    """The allowList/excludeList limit a key of ``model`` enforces: the maxCredentialCountInList
    its getInfo reports, else none."""
    return configured if _INFO_MAX_CREDENTIAL_COUNT_IN_LIST in model.members else None


def _narrowed(
    handler: Callable[[Any, bytes, Any], Any],
    model: ModelClass,
    keys: tuple[int, int, int, int],
    max_list: int | None,
    unknown: frozenset[int] = frozenset(),
) -> Callable[[Any, bytes, Any], Any]:
    """``handler`` as a key of ``model`` answers: its PIN protocols, list limits and
    extensions; the parameters ``unknown`` to it (a later version's) dropped, unread."""
    extensions_key, param_key, protocol_key, list_key = keys
    supported = frozenset(model.extensions)
    # maxCredentialIdLength, where getInfo reports it: a longer listed ID is refused too.
    max_id = (
        model.max_credential_id_length if _INFO_MAX_CREDENTIAL_ID_LENGTH in model.members else None
    )

    def narrowed(services: Any, payload: bytes, context: Any) -> Any:
        params = cbor.decode(payload) if payload else None
        if isinstance(params, dict) and not unknown.isdisjoint(params):
            params = {k: v for k, v in params.items() if k not in unknown}
            payload = cbor.encode(params)
        if isinstance(params, dict):
            protocol = params.get(protocol_key)
            # Step 2 reads the protocol only "If the pinUvAuthParam parameter is present", and
            # step 1 (a zero-length one, the platform's probe) comes before it. A negative
            # number is not an unsigned one: the parser says so (CBOR type).
            if (
                params.get(param_key)  # present and not empty
                and cbor.is_unsigned(protocol)
                and protocol not in model.pin_uv_auth_protocols
            ):
                raise CtapError(CtapStatus.INVALID_PARAMETER, "pinUvAuthProtocol of another model")
            credentials = params.get(list_key)
            if (
                max_list is not None
                and isinstance(credentials, list)
                and len(credentials) > max_list
            ):
                raise CtapError(CtapStatus.LIMIT_EXCEEDED, "more than maxCredentialCountInList")
            if max_id is not None and isinstance(credentials, list):
                for descriptor in credentials:
                    cid = descriptor.get("id") if isinstance(descriptor, dict) else None
                    if isinstance(cid, bytes) and len(cid) > max_id:
                        raise CtapError(CtapStatus.LIMIT_EXCEEDED, "ID over maxCredentialIdLength")
            extensions = params.get(extensions_key)
            if isinstance(extensions, dict) and not supported.issuperset(extensions):
                # CTAP 2.1 section 12: extensions the key does not support are ignored.
                params[extensions_key] = {k: v for k, v in extensions.items() if k in supported}
                payload = cbor.encode(params)
        return handler(services, payload, context)

    return narrowed


def _pin_checked(
    handler: Callable[[Any, bytes, Any], Any], model: ModelClass
) -> Callable[[Any, bytes, Any], Any]:
    subcommands = model.pin_subcommands()

    def checked(services: Any, payload: bytes, context: Any) -> Any:
        params = cbor.decode(payload) if payload else None
        if isinstance(params, dict):
            sub = params.get(0x02)
            if cbor.is_unsigned(sub) and sub not in subcommands:
                raise CtapError(CtapStatus.INVALID_SUBCOMMAND, "clientPIN subcommand of 2.1")
            protocol = params.get(0x01)
            if cbor.is_unsigned(protocol) and protocol not in model.pin_uv_auth_protocols:
                raise CtapError(CtapStatus.INVALID_PARAMETER, "pinUvAuthProtocol of another model")
        return handler(services, payload, context)

    return checked


# --- getInfo ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfoResponse(GetInfoResponse):
    """A getInfo response with only the model's members."""

    members: frozenset[int] = frozenset()

    def to_cbor_map(self) -> dict[int, Any]:
        full = super().to_cbor_map()
        return {k: v for k, v in full.items() if k in self.members}


def restrict_info(model: ModelClass, response: GetInfoResponse) -> GetInfoResponse:
    """``response`` (the full key's getInfo, or a model's already) as a key of ``model``
    reports it. Applied twice (a persona, then the behaviour ``versions=FIDO_2_0``), the
    members, extensions and options are those both models report."""
    versions = tuple(v for v in model.versions if v != U2F_V2 or U2F_V2 in response.versions)
    members = model.members
    extensions = model.extensions
    if isinstance(response, ModelInfoResponse):
        members = response.members & model.members
        extensions = tuple(e for e in model.extensions if e in response.extensions)
    narrowed = replace(
        response,
        versions=versions,
        extensions=extensions,
        options={k: v for k, v in response.options.items() if k in model.options},
        pin_uv_auth_protocols=model.pin_uv_auth_protocols,
        max_credential_id_length=(
            model.max_credential_id_length
            if model.max_credential_id_length is not None
            else response.max_credential_id_length
        ),
        transports=model.transports,
    )
    values = {f.name: getattr(narrowed, f.name) for f in fields(GetInfoResponse)}
    return ModelInfoResponse(**values, members=members)
