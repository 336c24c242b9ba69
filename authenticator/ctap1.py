"""CTAP1 / FIDO U2F (raw message formats v1.2) over ISO 7816-4 APDUs.

:class:`Ctap1Handler` answers the payload of a CTAPHID_MSG: an APDU in short
or extended length encoding. The answer is always response data followed by a
status word; nothing raises out of :meth:`Ctap1Handler.process`.

Key handles are ordinary vfido credential IDs
(:func:`vfido.authenticator.credential_source.encode_credential_id`) sealed with the
application parameter as rpIdHash and ``u2f=True``: the key stores nothing on
REGISTER, only the signature counter on AUTHENTICATE.

User presence
-------------
U2F authenticators do not block waiting for a touch: a REGISTER or
AUTHENTICATE that needs presence answers SW_CONDITIONS_NOT_SATISFIED (0x6985)
at once and the client re-sends the same command until it succeeds
(python-fido2 polls every 0.25 s). Our presence front ends, however, block
until the user answers. The two are joined by a *presence latch*:

* The first command needing presence starts ``presence.request_presence`` on
  a background thread (timeout ``config.presence_timeout``) and waits at most
  :data:`PRESENCE_WAIT` seconds for it. A front end that answers at once (the
  ``auto`` presence) therefore succeeds on the first try, with no 0x6985.
* Otherwise the command answers 0x6985. Each retry of the same kind of command
  for the same application parameter joins the same prompt (it is not asked
  again) and again waits up to :data:`PRESENCE_WAIT`; once the user approved,
  the next such command consumes the approval and proceeds. An approval is
  good for one command only.
* A denial sticks while the client keeps polling (every retry answers 0x6985
  without a new prompt); U2F has no way to report it. A timed-out or
  cancelled prompt is asked again on the next retry.
* A command of another kind or for another application cancels the prompt.
  A prompt whose client stopped polling for :data:`ABANDON_AFTER` seconds is
  cancelled (through the context handed to the front end) and forgotten, so a
  vanished client leaves no prompt behind. :meth:`Ctap1Handler.cancel_presence`
  (and :meth:`power_cycle`) cancel it explicitly.

Binding the approval to (command, application parameter) keeps a touch meant
for one site from being spent on another site's request.

Le is ignored: responses are never truncated or chained (61xx).
"""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass, field
from enum import IntEnum

from vfido.authenticator import attestation
from vfido.authenticator.behaviours import Behaviours, attestation_identity, corrupt_signed_data
from vfido.authenticator.config import Config
from vfido.authenticator.cose import ES256, CredentialKey
from vfido.authenticator.credential_source import (
    SealedCredential,
    encode_credential_id,
    resolve_credential_id,
)
from vfido.authenticator.env import (
    Clock,
    KeepaliveStatus,
    Presence,
    PresenceKind,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    SystemClock,
    instant_answer,
)
from vfido.keystore.store import KeyStore, KeystoreError

log = logging.getLogger(__name__)

#: Seconds one command waits for a pending presence prompt before answering 0x6985.
PRESENCE_WAIT = 0.2
#: Seconds without a retry after which a pending prompt (or an unused answer) is dropped.
ABANDON_AFTER = 3.0

VERSION = b"U2F_V2"

_PARAM_SIZE = 32  # challenge and application parameters
_MAX_KEY_HANDLE = 255
_MAX_COUNTER = 0xFFFFFFFF
_UP = 0x01


class Sw(IntEnum):
    """ISO 7816-4 status words used by U2F."""

    NO_ERROR = 0x9000
    WRONG_LENGTH = 0x6700
    CONDITIONS_NOT_SATISFIED = 0x6985
    WRONG_DATA = 0x6A80
    INS_NOT_SUPPORTED = 0x6D00
    COMMAND_NOT_ALLOWED = 0x6986
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00


class Ins(IntEnum):
    REGISTER = 0x01
    AUTHENTICATE = 0x02
    VERSION = 0x03


class Control(IntEnum):
    """AUTHENTICATE's P1."""

    ENFORCE_USER_PRESENCE_AND_SIGN = 0x03
    CHECK_ONLY = 0x07
    DONT_ENFORCE_USER_PRESENCE_AND_SIGN = 0x08


class ApduError(Exception):
    """Ends a command with a status word (internal to this module)."""

    def __init__(self, sw: Sw) -> None:
        super().__init__(sw.name)
        self.sw = sw


@dataclass(frozen=True)
class Apdu:
    """A parsed command APDU. ``le`` is None when absent (0 means the maximum)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None = None
    extended: bool = False


def parse_apdu(apdu: bytes) -> Apdu:
    """Parse a command APDU, short or extended length (ISO 7816-4 section 5.1).

    Raises :class:`ApduError` (WRONG_LENGTH) when the length fields do not
    match the size of ``apdu``. An extended Lc of zero is accepted (with an
    empty body) because python-fido2 sends one for U2F_VERSION.
    """
    if len(apdu) < 4:
        raise ApduError(Sw.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:  # case 1
        return Apdu(cla, ins, p1, p2, b"")
    if len(body) == 1:  # case 2 short: Le only
        return Apdu(cla, ins, p1, p2, b"", le=body[0])
    if body[0] != 0:  # short Lc
        lc = body[0]
        if len(body) == 1 + lc:  # case 3 short
            return Apdu(cla, ins, p1, p2, body[1:])
        if len(body) == 2 + lc:  # case 4 short
            return Apdu(cla, ins, p1, p2, body[1:-1], le=body[-1])
        raise ApduError(Sw.WRONG_LENGTH)
    # Extended: 0x00 followed by a two-byte Lc or Le.
    if len(body) < 3:
        raise ApduError(Sw.WRONG_LENGTH)
    (length,) = struct.unpack(">H", body[1:3])
    if len(body) == 3:  # case 2 extended
        return Apdu(cla, ins, p1, p2, b"", le=length, extended=True)
    if len(body) == 3 + length:  # case 3 extended
        return Apdu(cla, ins, p1, p2, body[3:], extended=True)
    if len(body) == 5 + length:  # case 4 extended
        (le,) = struct.unpack(">H", body[-2:])
        return Apdu(cla, ins, p1, p2, body[3:-2], le=le, extended=True)
    raise ApduError(Sw.WRONG_LENGTH)


def _sw(sw: Sw) -> bytes:
    return struct.pack(">H", sw)


# --- the presence latch -------------------------------------------------------


@dataclass(eq=False)
class _Prompt:
    """One presence request running on a background thread."""

    key: tuple[PresenceKind, bytes]  # (command kind, application parameter)
    clock: Clock
    last_poll: float
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: PresenceResult | None = None

    def abandoned(self) -> bool:
        return self.clock.monotonic() - self.last_poll > ABANDON_AFTER

    def dead(self) -> bool:
        """No longer worth joining: cancelled, abandoned, or ended other than GRANTED/DENIED."""
        if self.cancel.is_set() or self.abandoned():
            return True
        return self.done.is_set() and self.result not in (
            PresenceResult.GRANTED,
            PresenceResult.DENIED,
        )


class _PromptContext:
    """The RequestContext a background prompt runs under: cancelled on demand or when abandoned."""

    channel = 0

    def __init__(self, prompt: _Prompt) -> None:
        self._prompt = prompt

    def is_cancelled(self) -> bool:
        return self._prompt.cancel.is_set() or self._prompt.abandoned()

    def wait_cancelled(self, timeout: float) -> bool:
        # Wake up at least every 0.1 s to notice an abandoned prompt.
        remaining = timeout
        while remaining > 0:
            step = min(remaining, 0.1)
            if self._prompt.cancel.wait(step):
                return True
            if self._prompt.abandoned():
                return True
            remaining -= step
        return self.is_cancelled()

    def set_keepalive(self, status: int) -> None:
        pass


class _PresenceLatch:
    def __init__(self, presence: Presence, timeout: float, clock: Clock) -> None:
        self._presence = presence
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._prompt: _Prompt | None = None

    def cancel(self) -> None:
        with self._lock:
            if self._prompt is not None:
                self._prompt.cancel.set()
                self._prompt = None

    def check(self, kind: PresenceKind, app_param: bytes, context: RequestContext) -> bool:
        """True if the user approved this kind of command for this app (the approval is used up)."""
        instant = instant_answer(self._presence, PresenceRequest(kind))
        if instant is not None:  # a front end that answers at once: no prompt, no thread
            if log.isEnabledFor(logging.DEBUG):
                log.debug("U2F presence for %s: %s at once", kind.value, instant.value)
            return instant is PresenceResult.GRANTED
        key = (kind, app_param)
        with self._lock:
            prompt = self._prompt
            if prompt is not None and (prompt.key != key or prompt.dead()):
                prompt.cancel.set()
                prompt = None
            if prompt is None:
                prompt = _Prompt(key, self._clock, self._clock.monotonic())
                self._prompt = prompt
                self._start(prompt, PresenceRequest(kind))
            prompt.last_poll = self._clock.monotonic()
        context.set_keepalive(KeepaliveStatus.UPNEEDED)
        prompt.done.wait(PRESENCE_WAIT)
        with self._lock:
            if (
                self._prompt is prompt
                and prompt.done.is_set()
                and prompt.result is PresenceResult.GRANTED
            ):
                self._prompt = None  # one approval, one command
                return True
        return False

    def _start(self, prompt: _Prompt, request: PresenceRequest) -> None:
        def run() -> None:
            try:
                result = self._presence.request_presence(
                    request, _PromptContext(prompt), self._timeout
                )
            except Exception as exc:
                log.error("presence front end failed (%s)", type(exc).__name__)
                result = PresenceResult.TIMEOUT
            if prompt.cancel.is_set() and result is PresenceResult.GRANTED:
                result = PresenceResult.CANCELLED
            prompt.result = result
            prompt.done.set()
            log.info("U2F presence for %s: %s", request.kind.value, result.value)

        threading.Thread(target=run, name="u2f-presence", daemon=True).start()


# --- the handler ------------------------------------------------------------------


class Ctap1Handler:
    """Answers U2F APDUs (REGISTER, AUTHENTICATE, VERSION)."""

    def __init__(
        self,
        store: KeyStore,
        presence: Presence,
        config: Config,
        *,
        clock: Clock | None = None,
        behaviours: Behaviours | None = None,
    ) -> None:
        self._store = store
        self._config = config
        #: Scripted misbehaviour (authenticator.behaviours), shared with the CTAP2 side.
        self._behaviours = behaviours if behaviours is not None else Behaviours()
        self._latch = _PresenceLatch(presence, config.presence_timeout, clock or SystemClock())

    def process(self, apdu: bytes, context: RequestContext, *, signing: bool = True) -> bytes:
        """Answer one APDU with response data + SW1 SW2. Never raises. ``signing`` False
        (alwaysUv): REGISTER and AUTHENTICATE are refused, once the APDU parses."""
        try:
            return self._process(bytes(apdu), context, signing) + _sw(Sw.NO_ERROR)
        except ApduError as exc:
            log.debug("U2F request -> %s", exc.sw.name)
            return _sw(exc.sw)
        except KeystoreError as exc:
            log.error("U2F request failed: keystore: %s", exc)
            return _sw(Sw.UNKNOWN)
        except Exception as exc:
            log.error("U2F request failed: internal error (%s)", type(exc).__name__)
            return _sw(Sw.UNKNOWN)

    def cancel_presence(self) -> None:
        """Cancel a pending U2F presence prompt (e.g. when a CTAP2 request arrives)."""
        self._latch.cancel()

    def power_cycle(self) -> None:
        """Unplugged: forget any pending prompt or unused approval."""
        self._latch.cancel()

    # --- commands -------------------------------------------------------------

    def _process(self, raw: bytes, context: RequestContext, signing: bool) -> bytes:
        if raw and raw[0] != 0x00:
            raise ApduError(Sw.CLA_NOT_SUPPORTED)
        apdu = parse_apdu(raw)
        if not signing and apdu.ins in (Ins.REGISTER, Ins.AUTHENTICATE):
            # After the class and the encoding (a review: a malformed APDU got 6986, where
            # the same key without alwaysUv says 6E00 or 6700).
            raise ApduError(Sw.COMMAND_NOT_ALLOWED)
        if apdu.ins == Ins.REGISTER:
            return self._register(apdu, context)
        if apdu.ins == Ins.AUTHENTICATE:
            return self._authenticate(apdu, context)
        if apdu.ins == Ins.VERSION:
            if apdu.data:
                raise ApduError(Sw.WRONG_LENGTH)
            return VERSION
        raise ApduError(Sw.INS_NOT_SUPPORTED)

    def _register(self, apdu: Apdu, context: RequestContext) -> bytes:
        if len(apdu.data) != 2 * _PARAM_SIZE:
            raise ApduError(Sw.WRONG_LENGTH)
        challenge, app = apdu.data[:_PARAM_SIZE], apdu.data[_PARAM_SIZE:]
        if not self._latch.check(PresenceKind.REGISTER, app, context):
            raise ApduError(Sw.CONDITIONS_NOT_SATISFIED)
        identity = self._store.identity()
        mode = self._behaviours.current().attestation
        if mode in ("untrusted", "expired"):
            identity = attestation_identity(identity, mode)  # behaviour: another CA's cert
        key = CredentialKey.generate(ES256)
        sealed = SealedCredential(algorithm=ES256, private_key=key.private_bytes(), u2f=True)
        key_handle = encode_credential_id(identity.credential_key, app, sealed)
        if len(key_handle) > _MAX_KEY_HANDLE:
            raise ApduError(Sw.UNKNOWN)
        public = attestation.u2f_public_key(key)
        signature = attestation.sign_u2f_registration(identity, app, challenge, key_handle, public)
        certificate = attestation.batch_certificate(identity)
        key.remember(sealed.private_key)  # its first AUTHENTICATE usually follows at once
        log.info("U2F register: new key handle")
        return b"\x05" + public + bytes([len(key_handle)]) + key_handle + certificate + signature

    def _authenticate(self, apdu: Apdu, context: RequestContext) -> bytes:
        data = apdu.data
        if len(data) < 2 * _PARAM_SIZE + 1:
            raise ApduError(Sw.WRONG_LENGTH)
        challenge, app = data[:_PARAM_SIZE], data[_PARAM_SIZE : 2 * _PARAM_SIZE]
        length = data[2 * _PARAM_SIZE]
        key_handle = data[2 * _PARAM_SIZE + 1 :]
        if len(key_handle) != length:
            raise ApduError(Sw.WRONG_LENGTH)
        if apdu.p1 not in (
            Control.CHECK_ONLY,
            Control.ENFORCE_USER_PRESENCE_AND_SIGN,
            Control.DONT_ENFORCE_USER_PRESENCE_AND_SIGN,
        ):
            raise ApduError(Sw.WRONG_DATA)
        behaviours = self._behaviours.current()
        key = None if behaviours.vanished(key_handle) else self._credential_key(app, key_handle)
        if key is None:
            raise ApduError(Sw.WRONG_DATA)
        if apdu.p1 == Control.CHECK_ONLY:
            # "Yes, this is mine": by definition answered as a failure.
            raise ApduError(Sw.CONDITIONS_NOT_SATISFIED)
        user_present = apdu.p1 == Control.ENFORCE_USER_PRESENCE_AND_SIGN
        if user_present and not self._latch.check(PresenceKind.AUTHENTICATE, app, context):
            raise ApduError(Sw.CONDITIONS_NOT_SATISFIED)
        # U2F counts every signature (raw message formats 5.4: the token increments the
        # counter on every authentication), presence enforced or not; the behaviours as on
        # CTAP2.
        counter = behaviours.signature_counter(
            self._store,
            key_handle,
            constant_zero=self._config.constant_zero_counter,
            advance=True,
        )
        counter = min(counter, _MAX_COUNTER)
        flags_and_counter = bytes([_UP if user_present else 0]) + struct.pack(">I", counter)
        signed = app + flags_and_counter + challenge
        if behaviours.wrong_signature:
            signed = corrupt_signed_data(signed)
        signature = key.sign(signed)
        return flags_and_counter + signature

    def _credential_key(self, app: bytes, key_handle: bytes) -> CredentialKey | None:
        """The key behind ``key_handle`` if it is ours for ``app`` and usable over U2F.

        Besides our U2F key handles, ES256 credentials made over CTAP2 for the
        same rpIdHash are accepted, except those requiring user verification
        (credProtect level 3, which U2F cannot provide) and discoverable ones
        that were deleted.
        """
        if not key_handle:
            return None
        # A key handle chosen outside the key (WebDriver's Add Credential) resolves too, and
        # a removed one (Remove Credential, on a key that records them) does not.
        recorded = self._config.record_server_side_credentials
        resolved = resolve_credential_id(self._store, app, key_handle, recorded=recorded)
        sealed = resolved[0] if resolved is not None else None
        if sealed is None or sealed.algorithm != ES256:
            return None
        if not sealed.u2f:
            if sealed.cred_protect >= 3:
                return None
            if sealed.discoverable and self._store.get_credential(key_handle) is None:
                return None
        try:
            return CredentialKey.from_private_bytes(ES256, sealed.private_key)
        except ValueError:
            return None
