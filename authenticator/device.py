"""The authenticator: CTAP2 command dispatch, CTAP1 delegation, runtime state.

:class:`Authenticator` structurally satisfies ``transports.handler.CtapHandler``.
Every request is parsed into a typed request object before anything acts on
it, so malformed input never reaches the keystore. Every failure becomes a
CTAP status byte: :class:`CtapError` carries its own, anything else is
CTAP1_ERR_OTHER (logged by exception type only, never with its message, which
could contain request data).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.behaviours import FIDO_2_0, U2F_V2, Behaviours
from vfido.authenticator.bio_enrollment import (
    BioEnrollment,
    FingerprintSensor,
    FingerprintTemplates,
    FingerprintVerifier,
)
from vfido.authenticator.client_pin import DEFAULT_PERMISSIONS, ClientPin, SubCommand
from vfido.authenticator.config import Config
from vfido.authenticator.config_command import AuthenticatorConfig, Settings
from vfido.authenticator.credential_management import CredentialManagement
from vfido.authenticator.ctap1 import Ctap1Handler
from vfido.authenticator.env import (
    Clock,
    KeepaliveStatus,
    Presence,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    SystemClock,
    UserVerifier,
)
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.get_assertion import get_assertion, get_next_assertion
from vfido.authenticator.get_info import build_info
from vfido.authenticator.large_blobs import LargeBlobs
from vfido.authenticator.make_credential import make_credential
from vfido.authenticator.model import max_list_length, restrict_handlers
from vfido.authenticator.pin_token import Permission
from vfido.authenticator.requests import GetAssertionRequest, MakeCredentialRequest
from vfido.authenticator.reset import reset, selection
from vfido.authenticator.state import RuntimeState, Services, ask_presence
from vfido.keystore.store import KeyStore

log = logging.getLogger(__name__)


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


# ISO 7816 status word for a CTAP1 failure the CTAP1 handler did not catch.
_SW_UNKNOWN = b"\x6f\x00"
# ... and for an instruction a FIDO_2_0-only key does not support (behaviour versions).
_SW_INS_NOT_SUPPORTED = b"\x6d\x00"
# ... and for U2F_REGISTER/AUTHENTICATE while alwaysUv turns CTAP1 off (Services.ctap1_enabled).
_SW_COMMAND_NOT_ALLOWED = b"\x69\x86"
_U2F_SIGNING_INS = frozenset({0x01, 0x02})  # U2F_REGISTER, U2F_AUTHENTICATE

#: clientPin subcommands that use the PIN (answered PIN_BLOCKED by behaviour pin-blocked).
_PIN_USING = frozenset(
    {
        SubCommand.CHANGE_PIN,
        SubCommand.GET_PIN_TOKEN,
        SubCommand.GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS,
    }
)


class _BehavingVerifier:
    """Built-in user verification that fails while behaviour uv-fail is on."""

    def __init__(self, inner: UserVerifier, behaviours: Behaviours) -> None:
        self._inner = inner
        self._behaviours = behaviours

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        if self._behaviours.current().uv_fail:
            log.info("user verification fails (behaviour uv-fail)")
            return PresenceResult.DENIED
        return self._inner.verify_user(request, context, timeout)


_DEFAULT_CONFIG = Config()
_DEFAULT_CLOCK = SystemClock()

# A handler gets the services, the CBOR payload (after the command byte) and
# the request context, and returns the response map (None: no response data).
_Handler = Callable[[Services, bytes, RequestContext], dict[int, Any] | None]


def _parameters(payload: bytes) -> object:
    """Decode a command's parameter map (strict canonical CBOR)."""
    if not payload:
        raise CtapError(CtapStatus.MISSING_PARAMETER, "no parameters")
    return cbor.decode(payload)


def _no_parameters(payload: bytes) -> None:
    if payload:
        raise CtapError(CtapStatus.INVALID_LENGTH, "command takes no parameters")


def _make_credential(s: Services, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    request = MakeCredentialRequest.from_cbor_map(_parameters(payload))
    return make_credential(s, request, ctx).to_cbor_map()


def _get_assertion(s: Services, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    request = GetAssertionRequest.from_cbor_map(_parameters(payload))
    return get_assertion(s, request, ctx).to_cbor_map()


def _get_info(s: Services, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    _no_parameters(payload)
    return build_info(s).to_cbor_map()


def _parameter_map(payload: bytes) -> dict[Any, Any]:
    value = _parameters(payload)
    if not isinstance(value, dict):
        raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "parameters are not a map")
    return value


def _get_next_assertion(s: Services, payload: bytes, ctx: RequestContext) -> dict[int, Any]:
    _no_parameters(payload)
    return get_next_assertion(s, ctx).to_cbor_map()


def _selection(s: Services, payload: bytes, ctx: RequestContext) -> None:
    _no_parameters(payload)
    selection(s, ctx)
    return None


_HANDLERS: dict[int, _Handler] = {
    Command.MAKE_CREDENTIAL: _make_credential,
    Command.GET_ASSERTION: _get_assertion,
    Command.GET_INFO: _get_info,
    Command.GET_NEXT_ASSERTION: _get_next_assertion,
    Command.SELECTION: _selection,
}


#: The credentialManagement commands (CTAP 2.1 and its 2.1-PRE preview).
_CREDENTIAL_MANAGEMENT_COMMANDS = frozenset(
    {Command.CREDENTIAL_MANAGEMENT, Command.CREDENTIAL_MANAGEMENT_PREVIEW}
)

# Protocol names of transports.handler.ProtocolReporter (strings, so that this package
# does not import the transports).
_BOTH_PROTOCOLS = frozenset({"ctap2", "u2f"})
_U2F_ONLY = frozenset({"u2f"})
_CTAP2_ONLY = frozenset({"ctap2"})


class Authenticator:
    """A CTAP 2.1 / CTAP1 authenticator over a keystore and a presence front end."""

    def __init__(
        self,
        store: KeyStore,
        presence: Presence,
        config: Config = _DEFAULT_CONFIG,
        clock: Clock = _DEFAULT_CLOCK,
        user_verifier: UserVerifier | None = None,
        behaviours: Behaviours | None = None,
    ) -> None:
        """``user_verifier``: built-in UV when ``config.builtin_uv``; defaults to the
        presence front end if it has ``verify_user``. ``behaviours``: scripted misbehaviour
        (see :mod:`vfido.authenticator.behaviours`), shared with whoever changes it at run time."""
        behaviours = behaviours if behaviours is not None else Behaviours()
        if config.builtin_uv:
            if user_verifier is None and callable(getattr(presence, "verify_user", None)):
                user_verifier = presence  # type: ignore[assignment]
            if user_verifier is None:
                raise ValueError("builtin_uv needs a presence front end with verify_user")
        else:
            user_verifier = None
        if user_verifier is not None:
            user_verifier = _BehavingVerifier(user_verifier, behaviours)
        #: The simulated fingerprint sensor: which finger touches next (Config.fingerprint).
        self.sensor = FingerprintSensor()
        if config.fingerprint and user_verifier is not None:
            user_verifier = FingerprintVerifier(
                user_verifier, FingerprintTemplates(store), self.sensor
            )
        client_pin = ClientPin(
            store,
            clock,
            user_verifier=user_verifier,
            uv_timeout=config.presence_timeout,
            pin_complexity_policy=config.pin_complexity_policy,
            supported_permissions=DEFAULT_PERMISSIONS
            | (Permission.BIO_ENROLLMENT if config.fingerprint else Permission.NONE),
        )
        if config.ctap21_pre:
            # 2.1-PRE platforms authorize the preview commands with getPinToken's token.
            client_pin.legacy_permissions |= Permission.CREDENTIAL_MANAGEMENT
            if config.fingerprint:
                client_pin.legacy_permissions |= Permission.BIO_ENROLLMENT
        self._services = Services(
            store=store,
            presence=presence,
            config=config,
            clock=clock,
            runtime=RuntimeState(clock.monotonic()),
            client_pin=client_pin,
            settings=Settings(store),
            user_verifier=user_verifier,
            behaviours=behaviours,
        )
        self._client_pin = client_pin
        self._cred_mgmt = CredentialManagement(store, client_pin, config.max_resident_credentials)
        # maxFragmentLength = maxMsgSize - 64 (section 6.10.2).
        self._large_blobs = LargeBlobs(store, client_pin, config.max_msg_size - 64)
        self._config_command = AuthenticatorConfig(
            store, client_pin, enterprise_attestation_supported=config.enterprise_attestation > 0
        )
        self._lock = threading.Lock()  # one request at a time
        # Per instance, so features with their own state (clientPin...) can add handlers.
        self._handlers: dict[int, _Handler] = dict(_HANDLERS)
        self._handlers[Command.RESET] = self._reset
        self._handlers[Command.CLIENT_PIN] = self._client_pin_command
        self._handlers[Command.CREDENTIAL_MANAGEMENT] = self._credential_management
        self._handlers[Command.LARGE_BLOBS] = self._large_blobs_command
        self._handlers[Command.CONFIG] = self._config
        self._bio = BioEnrollment(
            store,
            client_pin,
            self.sensor,
            lambda request, context: ask_presence(self._services, context, request),
        )
        if config.fingerprint:
            self._handlers[Command.BIO_ENROLLMENT] = self._bio_enrollment
            if config.ctap21_pre:
                self._handlers[Command.BIO_ENROLLMENT_PREVIEW] = self._bio_enrollment
        if config.ctap21_pre:
            self._handlers[Command.CREDENTIAL_MANAGEMENT_PREVIEW] = (
                self._credential_management_preview
            )
        if config.model is not None:  # a model class (--persona): its commands only
            limit = max_list_length(config.model, config.max_credential_count_in_list)
            self._handlers = restrict_handlers(config.model, self._handlers, limit)
        self._ctap1 = Ctap1Handler(store, presence, config, clock=clock, behaviours=behaviours)
        # Read by supported_protocols on the transport's I/O thread (which must not touch
        # the keystore): refreshed after every CTAP2 command, which is what changes it.
        self._ctap1_enabled = self._services.ctap1_enabled

    @property
    def config(self) -> Config:
        return self._services.config

    @property
    def fingerprints(self) -> FingerprintTemplates:
        """The fingers enrolled on the simulated sensor (Config.fingerprint)."""
        return self._bio.templates

    @property
    def behaviours(self) -> Behaviours:
        """The scripted misbehaviour in force; change it at any time."""
        return self._services.behaviours

    def info(self) -> dict[int, Any]:
        """The authenticatorGetInfo response map as the host would get it now (behaviours
        included), without waiting for a request in progress (for the control socket).
        Raises CtapError where the key, as scripted, answers getInfo with an error."""
        if self.supported_protocols() == _U2F_ONLY:
            raise CtapError(CtapStatus.INVALID_COMMAND, "U2F-only (behaviour versions, model)")
        return build_info(self._services).to_cbor_map()

    # --- CtapHandler ---------------------------------------------------------

    def supported_protocols(self) -> frozenset[str]:
        """What this key answers now (transports.handler.ProtocolReporter): "ctap2" and
        "u2f", or one of them under the ``versions`` behaviour, so the transport
        advertises a U2F-only key without CTAPHID's CBOR flag and a CTAP2-only one with
        NMSG, as hardware keys of those kinds do."""
        versions = self._services.behaviours.current().versions
        model = self._services.config.model  # a model class (--persona)
        if versions == U2F_V2 or (model is not None and not model.ctap2):
            return _U2F_ONLY
        if versions == FIDO_2_0 or not self._ctap1_enabled or (model is not None and not model.u2f):
            return _CTAP2_ONLY
        return _BOTH_PROTOCOLS

    def handle_cbor(self, request: bytes, transaction: RequestContext) -> bytes:
        """Answer a CTAPHID_CBOR payload with status byte (+ CBOR response map)."""
        # A CTAP2 request ends any U2F presence prompt still waiting for a touch.
        self._ctap1.cancel_presence()
        behaviours = self._services.behaviours.current()
        if self.supported_protocols() == _U2F_ONLY:
            # Behaviour versions=U2F_V2 (or a U2F model): a U2F-only key knows no CTAP2 command.
            return bytes([CtapStatus.INVALID_COMMAND])
        if behaviours.slow_ms:
            # Behaviour slow: PROCESSING keepalives go out while we wait.
            transaction.set_keepalive(KeepaliveStatus.PROCESSING)
            if transaction.wait_cancelled(behaviours.slow_ms / 1000):
                return bytes([CtapStatus.KEEPALIVE_CANCEL])
        with self._lock:
            command = request[0] if request else None
            try:
                body = self._dispatch(bytes(request), transaction)
            except CtapError as exc:
                log.info("command %s -> %s", _name(command), exc)
                return bytes([exc.status])
            except Exception as exc:  # never let anything escape to the transport
                log.error(
                    "command %s failed: internal error (%s)", _name(command), type(exc).__name__
                )
                return bytes([CtapStatus.OTHER])
            finally:
                self._refresh_ctap1_enabled()  # authenticatorConfig and reset change it
            if log.isEnabledFor(logging.DEBUG):
                log.debug("command %s -> OK", _name(command))
            if body is None:
                return bytes([CtapStatus.OK])
            return bytes([CtapStatus.OK]) + cbor.encode(body)

    def handle_msg(self, apdu: bytes, transaction: RequestContext) -> bytes:
        """Answer a CTAPHID_MSG (CTAP1/U2F APDU) via authenticator.ctap1."""
        model = self._services.config.model
        if self._services.behaviours.current().versions == FIDO_2_0 or (model and not model.u2f):
            return _SW_INS_NOT_SUPPORTED  # behaviour versions=FIDO_2_0 (or model): no U2F
        with self._lock:
            self._services.runtime.clear_pending()
            if len(apdu) > 1 and apdu[1] in _U2F_SIGNING_INS and not self._services.ctap1_enabled:
                return _SW_COMMAND_NOT_ALLOWED  # alwaysUv: U2F cannot verify the user
            try:
                return self._ctap1.process(bytes(apdu), transaction)
            except Exception as exc:
                log.error("CTAP1 request failed: internal error (%s)", type(exc).__name__)
                return _SW_UNKNOWN

    def _refresh_ctap1_enabled(self) -> None:
        try:
            self._ctap1_enabled = self._services.ctap1_enabled
        except Exception as exc:  # a keystore read failed: keep the last answer
            log.error("cannot read alwaysUv (%s)", type(exc).__name__)

    def wink(self) -> None:
        log.info("wink: this is the vfido key")

    def power_cycle(self) -> None:
        """Unplug + replug: forget runtime state and reopen the reset window."""
        self._services.runtime.power_cycle(self._services.clock.monotonic())
        self._client_pin.power_cycle()
        self._cred_mgmt.reset_pending()
        self._large_blobs.reset_pending()
        self._bio.reset_pending()
        self._ctap1.power_cycle()
        log.info("power cycle")

    # --- commands with their own state -----------------------------------------

    def _reset(self, s: Services, payload: bytes, ctx: RequestContext) -> None:
        _no_parameters(payload)
        reset(s, ctx)
        # PIN, config and large-blob state was erased with the store; the
        # runtime PIN/UV state (tokens, key agreement keys, partial writes) goes too.
        self._client_pin.power_cycle()
        self._large_blobs.reset_pending()
        self._bio.reset_pending()
        return None

    def _client_pin_command(
        self, s: Services, payload: bytes, ctx: RequestContext
    ) -> dict[int, Any] | None:
        parameters = _parameter_map(payload)
        if s.behaviours.current().pin_blocked:
            # Behaviour pin-blocked: a PIN is "set" and has no retries left.
            sub = parameters.get(0x02)
            if sub == SubCommand.GET_PIN_RETRIES:
                return {0x03: 0}
            if sub in _PIN_USING:
                raise CtapError(CtapStatus.PIN_BLOCKED, "pin-blocked behaviour")
            if sub == SubCommand.SET_PIN:
                raise CtapError(CtapStatus.NOT_ALLOWED, "pin-blocked behaviour: a PIN is set")
        return self._client_pin.process(parameters, ctx) or None

    def _credential_management(
        self, s: Services, payload: bytes, ctx: RequestContext
    ) -> dict[int, Any] | None:
        return self._cred_mgmt.process(_parameter_map(payload), ctx) or None

    def _credential_management_preview(
        self, s: Services, payload: bytes, ctx: RequestContext
    ) -> dict[int, Any] | None:
        return self._cred_mgmt.process(_parameter_map(payload), ctx, preview=True) or None

    def _bio_enrollment(
        self, s: Services, payload: bytes, ctx: RequestContext
    ) -> dict[int, Any] | None:
        return self._bio.process(_parameter_map(payload), ctx) or None

    def _large_blobs_command(
        self, s: Services, payload: bytes, ctx: RequestContext
    ) -> dict[int, Any] | None:
        return self._large_blobs.process(_parameter_map(payload), s.uv_protected) or None

    def _config(self, s: Services, payload: bytes, ctx: RequestContext) -> dict[int, Any] | None:
        return self._config_command.process(_parameter_map(payload)) or None

    # --- internals ----------------------------------------------------------

    def _dispatch(self, request: bytes, context: RequestContext) -> dict[int, Any] | None:
        if not request:
            raise CtapError(CtapStatus.INVALID_LENGTH, "empty request")
        if len(request) > self._services.config.max_msg_size:
            raise CtapError(CtapStatus.REQUEST_TOO_LARGE, "request exceeds maxMsgSize")
        command = request[0]
        if command != Command.GET_NEXT_ASSERTION:
            # The getNextAssertion state only survives consecutive getNextAssertion calls.
            self._services.runtime.clear_pending()
        if command not in _CREDENTIAL_MANAGEMENT_COMMANDS:
            # Only credentialManagement GetNext* continue an enumeration.
            self._cred_mgmt.reset_pending()
        handler = self._handlers.get(command)
        if handler is None:
            raise CtapError(CtapStatus.INVALID_COMMAND, f"command 0x{command:02x}")
        return handler(self._services, request[1:], context)


def _name(command: int | None) -> str:
    if command is None:
        return "(empty)"
    try:
        return Command(command).name
    except ValueError:
        return f"0x{command:02x}"
