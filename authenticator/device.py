"""The authenticator: assembles the commands' state, serializes requests, delegates CTAP1.

CTAP2 requests go through :mod:`vfido.authenticator.dispatch` (the command table and the
rule for pending state). :class:`Authenticator` structurally satisfies
``transports.handler.CtapHandler``. Every request is parsed into a typed request object
before anything acts on it, so malformed input never reaches the keystore. Every failure
becomes a CTAP status byte: :class:`CtapError` carries its own, anything else is
CTAP1_ERR_OTHER (logged by exception type only, never with its message, which could
contain request data).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import Token
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.behaviours import FIDO_2_0, U2F_V2, Behaviours
from vfido.authenticator.bio_enrollment import (
    BioEnrollment,
    FingerprintSensor,
    FingerprintTemplates,
    FingerprintVerifier,
)
from vfido.authenticator.client_pin import (
    CTAP21_PERMISSIONS,
    CTAP22_PERMISSIONS,
    DEFAULT_PERMISSIONS,
    ClientPin,
)
from vfido.authenticator.config import Config
from vfido.authenticator.config_command import AuthenticatorConfig, Settings
from vfido.authenticator.credential_management import CredentialManagement
from vfido.authenticator.ctap1 import Ctap1Handler
from vfido.authenticator.dispatch import (
    CTAP1_MESSAGE,
    Parts,
    command_name,
    dispatch,
    end_all,
    end_pending,
    handlers,
)
from vfido.authenticator.env import (
    Clock,
    KeepaliveStatus,
    Presence,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    SystemClock,
    UserVerifier,
    instant_verification,
)
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.extensions import THIRD_PARTY_PAYMENT
from vfido.authenticator.get_info import build_info, remaining_discoverable_credentials
from vfido.authenticator.large_blobs import LargeBlobs
from vfido.authenticator.model import (
    CTAP20_MODEL,
    max_list_length,
    narrowed_model,
    reports_member,
    reports_option,
    restrict_handlers,
)
from vfido.authenticator.pin_token import Permission
from vfido.authenticator.responses import INFO_PIN_COMPLEXITY_POLICY
from vfido.authenticator.state import RuntimeState, Services, ask_presence
from vfido.keystore.entropy import SYSTEM as SYSTEM_ENTROPY
from vfido.keystore.entropy import Entropy
from vfido.keystore.entropy import enter as enter_entropy
from vfido.keystore.entropy import leave as leave_entropy
from vfido.keystore.entropy import using as using_entropy
from vfido.keystore.store import KeyStore

log = logging.getLogger(__name__)


# ISO 7816 status word for a CTAP1 failure the CTAP1 handler did not catch.
_SW_UNKNOWN = b"\x6f\x00"
# ... and for an instruction a FIDO_2_0-only key does not support (behaviour versions).
_SW_INS_NOT_SUPPORTED = b"\x6d\x00"


class _BehavingVerifier:
    """Built-in user verification that fails while behaviour uv-fail is on, and that
    nobody answers while presence-timeout is on (as a touch nobody gives: the user is
    asked in both ways, a touch and a verification)."""

    def __init__(self, inner: UserVerifier, behaviours: Behaviours) -> None:
        self._inner = inner
        self._behaviours = behaviours

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        behaviours = self._behaviours.current()
        if behaviours.uv_fail:
            log.info("user verification fails (behaviour uv-fail)")
            return PresenceResult.DENIED
        if behaviours.presence_timeout is not None:
            log.info("nobody verifies (behaviour presence-timeout)")
            if context.wait_cancelled(behaviours.presence_timeout) or context.is_cancelled():
                return PresenceResult.CANCELLED
            return PresenceResult.TIMEOUT
        return self._inner.verify_user(request, context, timeout)

    def instant_verification(self, request: PresenceRequest) -> PresenceResult | None:
        """The same rules, for a verification nobody waits for (env.InstantVerifier)."""
        behaviours = self._behaviours.current()
        if behaviours.uv_fail:
            log.info("user verification fails (behaviour uv-fail)")
            return PresenceResult.DENIED
        if behaviours.presence_timeout is not None:
            return None  # nobody verifies: verify_user waits out the behaviour
        return instant_verification(self._inner, request)


_DEFAULT_CONFIG = Config()
_DEFAULT_CLOCK = SystemClock()

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
        entropy: Entropy = SYSTEM_ENTROPY,
    ) -> None:
        """``user_verifier``: built-in UV when ``config.builtin_uv``; defaults to the
        presence front end if it has ``verify_user``. ``behaviours``: scripted misbehaviour
        (see :mod:`vfido.authenticator.behaviours`), shared with whoever changes it at run time.
        ``entropy``: where every random value comes from, entered around each request
        (:mod:`vfido.keystore.entropy`; a seeded one is also the ``clock``, see
        :mod:`vfido.authenticator.deterministic`). Construct the key inside
        ``entropy.using(...)`` too, so its PIN protocol keys come from the same source."""
        self._entropy = entropy
        self._begin_request: Callable[[], None] | None = getattr(clock, "begin_request", None)
        behaviours = behaviours if behaviours is not None else Behaviours()
        behaviours.check_key(builtin_uv=config.builtin_uv)  # now, and at every later set()
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
            pin_complexity_policy_known=reports_member(config.model, INFO_PIN_COMPLEXITY_POLICY),
            supported_permissions=DEFAULT_PERMISSIONS
            | (Permission.BIO_ENROLLMENT if config.fingerprint else Permission.NONE),
            # A model without CTAP 2.2's persistent token (perCredMgmtRO) does not define
            # pcmr: a request naming it is a request naming an undefined bit.
            defined_permissions=CTAP22_PERMISSIONS
            if reports_option(config.model, False, "perCredMgmtRO")
            else CTAP21_PERMISSIONS,
        )
        if config.ctap21_pre:
            # 2.1-PRE platforms authorize the preview commands with getPinToken's token.
            client_pin.legacy_preview_permissions |= Permission.CREDENTIAL_MANAGEMENT
            if config.fingerprint:
                client_pin.legacy_preview_permissions |= Permission.BIO_ENROLLMENT
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
        services = self._services
        self._cred_mgmt = CredentialManagement(
            store,
            client_pin,
            lambda: remaining_discoverable_credentials(services),
            third_party_payment=config.model is None
            or THIRD_PARTY_PAYMENT in config.model.extensions,
        )
        # maxFragmentLength = maxMsgSize - 64 (section 6.10.2).
        self._large_blobs = LargeBlobs(store, client_pin, config.max_msg_size - 64)
        self._config_command = AuthenticatorConfig(
            store,
            client_pin,
            enterprise_attestation_supported=config.enterprise_attestation > 0,
            uv_protected=lambda: services.uv_protected,
        )
        self._lock = threading.Lock()  # one request at a time
        self._bio = BioEnrollment(
            store,
            client_pin,
            self.sensor,
            lambda request, context: ask_presence(self._services, context, request),
        )
        # The commands (authenticator.dispatch: one table, one rule for pending state).
        self._parts = Parts(
            services=self._services,
            client_pin=client_pin,
            credential_management=self._cred_mgmt,
            large_blobs=self._large_blobs,
            config_command=self._config_command,
            bio=self._bio,
        )
        every = handlers(config)
        self._handlers = every
        under_ctap20 = every
        if config.model is not None:  # a model class (--persona): its commands only
            limit = max_list_length(config.model, config.max_credential_count_in_list)
            self._handlers = restrict_handlers(config.model, every, limit)
            # A CTAP 2.0 getInfo reports no list limits (members 0x07, 0x08): none enforced.
            under_ctap20 = restrict_handlers(narrowed_model(config.model, CTAP20_MODEL), every)
        #: Under behaviour versions=FIDO_2_0: the commands, PIN protocols and extensions of
        #: a CTAP 2.0 key (CTAP20_MODEL), as its getInfo reports; with a persona, of both.
        self._ctap20_handlers = restrict_handlers(CTAP20_MODEL, under_ctap20)
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
        if self.answers_u2f_only:
            raise CtapError(CtapStatus.INVALID_COMMAND, "U2F-only (behaviour versions, model)")
        return build_info(self._services).to_cbor_map()

    @property
    def answers_u2f_only(self) -> bool:
        """The key answers U2F only now (behaviour versions=U2F_V2, a U2F model): it has no
        getInfo to give."""
        return self.supported_protocols() == _U2F_ONLY

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

    def _enter(self) -> Token[Entropy]:
        """Enter the key's entropy source for one request (and tick a request clock)."""
        if self._begin_request is not None:
            self._begin_request()
        return enter_entropy(self._entropy)

    def handle_cbor(self, request: bytes, transaction: RequestContext) -> bytes:
        """Answer a CTAPHID_CBOR payload with status byte (+ CBOR response map)."""
        token = self._enter()
        try:
            return self._handle_cbor(request, transaction)
        finally:
            leave_entropy(token)

    def _handle_cbor(self, request: bytes, transaction: RequestContext) -> bytes:
        # A CTAP2 request ends any U2F presence prompt still waiting for a touch.
        self._ctap1.cancel_presence()
        behaviours = self._services.behaviours.current()
        if self.answers_u2f_only:
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
                handlers = (
                    self._ctap20_handlers if behaviours.versions == FIDO_2_0 else self._handlers
                )
                body = dispatch(self._parts, handlers, bytes(request), transaction)
            except CtapError as exc:
                log.info("command %s -> %s", command_name(command), exc)
                return bytes([exc.status])
            except Exception as exc:  # never let anything escape to the transport
                log.error(
                    "command %s failed: internal error (%s)",
                    command_name(command),
                    type(exc).__name__,
                )
                return bytes([CtapStatus.OTHER])
            finally:
                self._refresh_ctap1_enabled()  # authenticatorConfig and reset change it
            if log.isEnabledFor(logging.DEBUG):
                log.debug("command %s -> OK", command_name(command))
            if body is None:
                return bytes([CtapStatus.OK])
            return bytes([CtapStatus.OK]) + cbor.encode(body)

    def handle_msg(self, apdu: bytes, transaction: RequestContext) -> bytes:
        """Answer a CTAPHID_MSG (CTAP1/U2F APDU) via authenticator.ctap1."""
        token = self._enter()
        try:
            return self._handle_msg(apdu, transaction)
        finally:
            leave_entropy(token)

    def _handle_msg(self, apdu: bytes, transaction: RequestContext) -> bytes:
        model = self._services.config.model
        with self._lock:
            end_pending(self._parts, CTAP1_MESSAGE)  # also on a key that refuses it (a review)
            if self._services.behaviours.current().versions == FIDO_2_0 or (
                model and not model.u2f
            ):
                return _SW_INS_NOT_SUPPORTED  # behaviour versions=FIDO_2_0 (or model): no U2F
            try:
                # alwaysUv: U2F cannot verify the user, so it does not sign.
                signing = self._services.ctap1_enabled
                return self._ctap1.process(bytes(apdu), transaction, signing=signing)
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
        with using_entropy(self._entropy):  # new PIN protocol keys
            self._power_cycle()

    def _power_cycle(self) -> None:
        self._services.runtime.power_cycle(self._services.clock.monotonic())
        self._client_pin.power_cycle()
        end_all(self._parts)
        self._ctap1.power_cycle()
        log.info("power cycle")
