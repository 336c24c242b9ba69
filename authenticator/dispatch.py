"""CTAP2 command dispatch: one table of plain handlers, one declared rule for pending state.

:data:`TABLE` has a row for every :class:`Command` (a test checks that it covers the enum):
the handler, and which configurations offer the command (a command a configuration does not
offer answers CTAP1_ERR_INVALID_COMMAND, as an unknown byte does). A handler is a plain
function of the authenticator's :class:`Parts`, the CBOR payload after the command byte and
the request context; it returns the response map (None: no response data). Adding a CTAP
command = a :class:`Command` member, its handler module, and one row here.

Multi-call state (getNextAssertion, credential-management enumerations, a fingerprint
enrollment, a large-blob write in fragments) is declared in :data:`SURVIVES`: which commands
each pending state survives. Every other command ends it before its handler runs (OpenSK's
rule: one explicit pending object, any other command clears it). CTAP 2.1 section 6.3
(authenticatorGetNextAssertion) keeps the getAssertion state for consecutive
authenticatorGetNextAssertion calls only; section 6.8 (authenticatorCredentialManagement)
continues an enumeration with the GetNext subcommands, which arrive as credentialManagement
commands (the subcommands themselves decide: any other subcommand ends the enumeration). A
fingerprint enrollment (section 6.7) and a fragmented large-blob write (section 6.10.2) are
not tied to consecutive commands: they survive everything except a power cycle and a
successful authenticatorReset, which end every pending state (:func:`end_all`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Final, Literal

from vfido.authenticator import cbor
from vfido.authenticator.bio_enrollment import BioEnrollment
from vfido.authenticator.client_pin import ClientPin, SubCommand
from vfido.authenticator.config import Config
from vfido.authenticator.config_command import AuthenticatorConfig
from vfido.authenticator.credential_management import CredentialManagement
from vfido.authenticator.env import RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.get_assertion import get_assertion, get_next_assertion
from vfido.authenticator.get_info import build_info
from vfido.authenticator.large_blobs import LargeBlobs
from vfido.authenticator.make_credential import make_credential
from vfido.authenticator.requests import GetAssertionRequest, MakeCredentialRequest
from vfido.authenticator.reset import reset, selection
from vfido.authenticator.state import Services


class Command(IntEnum):
    """CTAP2 command bytes (CTAP 2.1 section 6)."""

    MAKE_CREDENTIAL = 0x01
    GET_ASSERTION = 0x02
    GET_INFO = 0x04
    CLIENT_PIN = 0x06
    RESET = 0x07
    GET_NEXT_ASSERTION = 0x08
    BIO_ENROLLMENT = 0x09
    CREDENTIAL_MANAGEMENT = 0x0A
    SELECTION = 0x0B
    LARGE_BLOBS = 0x0C
    CONFIG = 0x0D
    BIO_ENROLLMENT_PREVIEW = 0x40  # CTAP 2.1-PRE userVerificationMgmtPreview
    CREDENTIAL_MANAGEMENT_PREVIEW = 0x41  # CTAP 2.1-PRE credentialMgmtPreview


@dataclass(frozen=True)
class Parts:
    """What the handlers act on: the services every command shares and the state objects
    of the commands that keep their own (built once by ``Authenticator``)."""

    services: Services
    client_pin: ClientPin
    credential_management: CredentialManagement
    large_blobs: LargeBlobs
    config_command: AuthenticatorConfig
    bio: BioEnrollment


#: A handler's response map (None: a status-only answer), or the map already encoded.
Response = dict[int, Any] | cbor.Encoded | None
Handler = Callable[[Parts, bytes, RequestContext], Response]


# --- payloads -------------------------------------------------------------------------


def _parameters(payload: bytes) -> object:
    """Decode a command's parameter map (strict canonical CBOR); a null member, whatever the
    command, is of the wrong type (:func:`cbor.refuse_null_members`)."""
    if not payload:
        raise CtapError(CtapStatus.MISSING_PARAMETER, "no parameters")
    value = cbor.decode(payload)
    cbor.refuse_null_members(value, "the parameters")
    return value


def _parameter_map(payload: bytes) -> dict[Any, Any]:
    value = _parameters(payload)
    if not isinstance(value, dict):
        raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "parameters are not a map")
    return value


def _no_parameters(payload: bytes) -> None:
    if payload:
        raise CtapError(CtapStatus.INVALID_LENGTH, "command takes no parameters")


# --- handlers -------------------------------------------------------------------------


def _make_credential(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    request = MakeCredentialRequest.from_cbor_map(_parameters(payload))
    return make_credential(p.services, request, ctx).to_cbor_map()


def _get_assertion(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    request = GetAssertionRequest.from_cbor_map(_parameters(payload))
    return get_assertion(p.services, request, ctx).to_cbor_map()


def _get_info(p: Parts, payload: bytes, ctx: RequestContext) -> cbor.Encoded:
    _no_parameters(payload)
    return build_info(p.services).encoded()


#: clientPin subcommands that use the PIN (answered PIN_BLOCKED by behaviour pin-blocked).
_PIN_USING = frozenset(
    {
        SubCommand.CHANGE_PIN,
        SubCommand.GET_PIN_TOKEN,
        SubCommand.GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS,
    }
)


def _client_pin(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    parameters = _parameter_map(payload)
    if p.services.behaviours.current().pin_blocked:
        # Behaviour pin-blocked: a PIN is "set" and has no retries left.
        sub = parameters.get(0x02)
        if sub == SubCommand.GET_PIN_RETRIES:
            return {0x03: 0}
        if sub in _PIN_USING:
            raise CtapError(CtapStatus.PIN_BLOCKED, "pin-blocked behaviour")
        if sub == SubCommand.SET_PIN:  # 6.5.5.5 step 3: a PIN is set
            raise CtapError(CtapStatus.PIN_AUTH_INVALID, "pin-blocked behaviour: a PIN is set")
    return p.client_pin.process(parameters, ctx) or None


def _reset(p: Parts, payload: bytes, ctx: RequestContext) -> None:
    _no_parameters(payload)
    reset(p.services, ctx)
    # PIN, config and large-blob state was erased with the store; the runtime PIN/UV
    # state (tokens, key agreement keys) and every pending state go too.
    p.client_pin.power_cycle()
    end_all(p)
    return None


def _get_next_assertion(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    _no_parameters(payload)
    return get_next_assertion(p.services, ctx).to_cbor_map()


def _bio_enrollment(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    return p.bio.process(_parameter_map(payload), ctx) or None


def _bio_enrollment_preview(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    return p.bio.process(_parameter_map(payload), ctx, preview=True) or None


def _credential_management(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    return p.credential_management.process(_enumeration_map(p, payload), ctx) or None


def _credential_management_preview(
    p: Parts, payload: bytes, ctx: RequestContext
) -> dict[int, Any] | None:
    return p.credential_management.process(_enumeration_map(p, payload), ctx, preview=True) or None


def _enumeration_map(p: Parts, payload: bytes) -> Mapping[Any, Any]:
    """A credentialManagement request's parameters. One that cannot be read is a command
    other than GetNext too: it ends an enumeration (:data:`SURVIVES` lets the command
    through to ``CredentialManagement.process``, which ends it on any other subcommand)."""
    try:
        return _parameter_map(payload)
    except CtapError:
        p.credential_management.reset_pending()
        raise


def _selection(p: Parts, payload: bytes, ctx: RequestContext) -> None:
    _no_parameters(payload)
    selection(p.services, ctx)
    return None


def _large_blobs(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    services = p.services
    needs_token = services.uv_protected or services.settings.always_uv  # 6.10.2 step 5.5
    return p.large_blobs.process(_parameter_map(payload), needs_token) or None


def _config(p: Parts, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
    return p.config_command.process(_parameter_map(payload)) or None


# --- the table ------------------------------------------------------------------------


def _always(config: Config) -> bool:
    return True


def _with_fingerprint(config: Config) -> bool:
    return config.fingerprint


def _ctap21_pre(config: Config) -> bool:
    return config.ctap21_pre


def _ctap21_pre_with_fingerprint(config: Config) -> bool:
    return config.ctap21_pre and config.fingerprint


@dataclass(frozen=True)
class Row:
    """One command: its handler and whether a configuration offers it."""

    handler: Handler
    offered: Callable[[Config], bool] = _always


#: Every CTAP2 command this authenticator knows, by its byte.
TABLE: Final[Mapping[Command, Row]] = {
    Command.MAKE_CREDENTIAL: Row(_make_credential),
    Command.GET_ASSERTION: Row(_get_assertion),
    Command.GET_INFO: Row(_get_info),
    Command.CLIENT_PIN: Row(_client_pin),
    Command.RESET: Row(_reset),
    Command.GET_NEXT_ASSERTION: Row(_get_next_assertion),
    Command.BIO_ENROLLMENT: Row(_bio_enrollment, _with_fingerprint),
    Command.CREDENTIAL_MANAGEMENT: Row(_credential_management),
    Command.SELECTION: Row(_selection),
    Command.LARGE_BLOBS: Row(_large_blobs),
    Command.CONFIG: Row(_config),
    Command.BIO_ENROLLMENT_PREVIEW: Row(_bio_enrollment_preview, _ctap21_pre_with_fingerprint),
    Command.CREDENTIAL_MANAGEMENT_PREVIEW: Row(_credential_management_preview, _ctap21_pre),
}


def handlers(config: Config) -> dict[int, Handler]:
    """The handlers of the commands ``config`` offers, by command byte."""
    return {command: row.handler for command, row in TABLE.items() if row.offered(config)}


# --- pending state --------------------------------------------------------------------


class Pending(Enum):
    """State one command leaves for the next ones (runtime only: a power cycle ends it)."""

    NEXT_ASSERTION = "getAssertion's remaining credentials (6.2.2, 6.3)"
    CREDENTIAL_ENUMERATION = "an enumerateRPs / enumerateCredentials in progress (6.8.3, 6.8.4)"
    BIO_ENROLLMENT = "a fingerprint enrollment in progress (6.7.4)"
    LARGE_BLOB_WRITE = "a large-blob array received in part (6.10.2)"


#: Stands for a CTAP1/U2F message (CTAPHID_MSG) in :data:`SURVIVES`.
CTAP1_MESSAGE: Final = None
#: Stands for a command byte the key does not offer (no SURVIVES entry names it).
UNOFFERED: Final = -1
#: A pending state that survives every command and CTAP1 message.
EVERYTHING: Final = "everything"

#: Which commands each pending state survives. Any other command -- an unknown command
#: byte and a CTAP1 message (:data:`CTAP1_MESSAGE`) included -- ends it before its
#: handler runs. A power cycle and a successful authenticatorReset end them all.
SURVIVES: Final[Mapping[Pending, frozenset[Command | None] | Literal["everything"]]] = {
    # 6.3: only consecutive authenticatorGetNextAssertion calls continue a getAssertion.
    Pending.NEXT_ASSERTION: frozenset({Command.GET_NEXT_ASSERTION}),
    # 6.8: the GetNext subcommands continue an enumeration (in either spelling of the
    # command; CredentialManagement.process ends it on any other subcommand).
    Pending.CREDENTIAL_ENUMERATION: frozenset(
        {Command.CREDENTIAL_MANAGEMENT, Command.CREDENTIAL_MANAGEMENT_PREVIEW}
    ),
    # 6.7.4 / 6.10.2: not tied to consecutive commands (cancelCurrentEnrollment and a
    # largeBlobs set at offset 0 end them by their own rules).
    Pending.BIO_ENROLLMENT: EVERYTHING,
    Pending.LARGE_BLOB_WRITE: EVERYTHING,
}

#: How each pending state is ended.
_END: Final[Mapping[Pending, Callable[[Parts], None]]] = {
    Pending.NEXT_ASSERTION: lambda p: p.services.runtime.clear_pending(),
    Pending.CREDENTIAL_ENUMERATION: lambda p: p.credential_management.reset_pending(),
    Pending.BIO_ENROLLMENT: lambda p: p.bio.reset_pending(),
    Pending.LARGE_BLOB_WRITE: lambda p: p.large_blobs.reset_pending(),
}


@functools.cache
def ended_by(command: int | None) -> tuple[Pending, ...]:
    """The pending states a command byte (None: a CTAP1 message) ends, per :data:`SURVIVES`
    (computed once per command byte: it runs before every request)."""
    return tuple(
        pending
        for pending, survives in SURVIVES.items()
        if survives != EVERYTHING and command not in survives
    )


def end_pending(parts: Parts, command: int | None) -> None:
    """Apply :data:`SURVIVES` before ``command`` (None: a CTAP1 message) runs."""
    for pending in ended_by(command):
        _END[pending](parts)


def end_all(parts: Parts) -> None:
    """End every pending state (power cycle, authenticatorReset)."""
    for end in _END.values():
        end(parts)


def dispatch(
    parts: Parts, handlers: Mapping[int, Handler], request: bytes, context: RequestContext
) -> Response:
    """Run one CTAP2 request (command byte + CBOR payload) through ``handlers``."""
    if not request or len(request) > parts.services.config.max_msg_size:
        end_pending(parts, UNOFFERED)  # no command a pending state goes on with (a review)
        if not request:
            raise CtapError(CtapStatus.INVALID_LENGTH, "empty request")
        raise CtapError(CtapStatus.REQUEST_TOO_LARGE, "request exceeds maxMsgSize")
    command = request[0]
    handler = handlers.get(command)
    # A command this key does not offer is an unknown command byte, whatever SURVIVES says
    # of it (0x41 on a key without 2.1-PRE left an enumeration going: a review).
    end_pending(parts, command if handler is not None else UNOFFERED)
    if handler is None:
        raise CtapError(CtapStatus.INVALID_COMMAND, f"command 0x{command:02x}")
    return handler(parts, request[1:], context)


def command_name(command: int | None) -> str:
    """A command byte's name for the log."""
    if command is None:
        return "(empty)"
    try:
        return Command(command).name
    except ValueError:
        return f"0x{command:02x}"
