"""authenticatorBioEnrollment (0x09), CTAP 2.1 section 6.7, with a simulated fingerprint sensor.

A key made with ``Config.fingerprint`` has a fingerprint sensor instead of the plain
"approve" built-in user verification. Nothing is measured: a *finger* is a name the
presence front end places on the sensor (:class:`FingerprintSensor`: ``vfido ctl finger
NAME``, ``VirtualKey.place_finger``), and a *template* is the record that a finger was
enrolled. The front end still answers the touch itself (approve / deny / timeout);
what it placed decides what the touch means:

* ``None`` (auto, the default): for user verification the first enrolled finger; for
  enrollment a new finger, never seen before;
* :data:`UNKNOWN_FINGER`: a finger that was never enrolled: user verification fails
  (counted against uvRetries) and enrollment takes it as a new finger;
* any other name: that finger. It matches a template enrolled with that name, or whose
  friendly name or template ID (hex) is that name.

Enrollment takes :data:`SAMPLES_REQUIRED` good samples, each one a touch, with the
feedback of a real sensor (``lastEnrollSampleStatus``): ``FP_GOOD``;
``FP_EXISTS`` for a finger already enrolled; ``FP_MERGE_FAILURE`` when another finger
than the one being enrolled touches; ``NO_USER_ACTIVITY`` when nobody touches in time.
A sample other than FP_GOOD does not count.

Templates are keystore state (``bio.templates``, erased by authenticatorReset): canonical
CBOR ``{templateId: {1: friendlyName, 2: finger}}``. Built-in UV is *enabled* (getInfo
"uv" true, CTAP 2.1 section 6.4) once a template exists; getInfo "bioEnroll" says the same.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vfido.authenticator import cbor
from vfido.authenticator.client_pin import ClientPin
from vfido.authenticator.env import (
    PresenceKind,
    PresenceRequest,
    PresenceResult,
    RequestContext,
    UserVerifier,
    instant_verification,
)
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.pin_token import Permission, require_pin_uv_auth_param
from vfido.keystore import entropy
from vfido.keystore.store import KeyStore, KeystoreFull

#: modality fingerprint (6.7.1).
MODALITY_FINGERPRINT = 0x01
#: getInfo uvModality (0x12): USER_VERIFY_FINGERPRINT_INTERNAL (FIDO Registry 3.1).
UV_MODALITY_FINGERPRINT = 0x00000002
#: fingerprintKind: touch sensor.
FINGERPRINT_KIND_TOUCH = 0x01
#: maxCaptureSamplesRequiredForEnroll.
SAMPLES_REQUIRED = 4
#: maxTemplateFriendlyName, in bytes of UTF-8.
MAX_FRIENDLY_NAME = 64
#: How many fingers the simulated sensor's database holds.
MAX_TEMPLATES = 5
#: Length of the template IDs this key issues.
TEMPLATE_ID_SIZE = 8
#: The name of a finger that was never enrolled (:meth:`FingerprintSensor.place`).
UNKNOWN_FINGER = "unknown"

_TEMPLATES = "bio.templates"
_NAME, _FINGER = 1, 2


class SubCommand(IntEnum):
    ENROLL_BEGIN = 0x01
    ENROLL_CAPTURE_NEXT_SAMPLE = 0x02
    CANCEL_CURRENT_ENROLLMENT = 0x03
    ENUMERATE_ENROLLMENTS = 0x04
    SET_FRIENDLY_NAME = 0x05
    REMOVE_ENROLLMENT = 0x06
    GET_FINGERPRINT_SENSOR_INFO = 0x07


class SampleStatus(IntEnum):
    """lastEnrollSampleStatus (6.7.4) this sensor reports."""

    FP_GOOD = 0x00
    FP_MERGE_FAILURE = 0x0A
    FP_EXISTS = 0x0B
    NO_USER_ACTIVITY = 0x0D


#: Subcommands that need a pinUvAuthParam with the be permission (6.7.2).
_AUTHENTICATED = frozenset(
    {
        SubCommand.ENROLL_BEGIN,
        SubCommand.ENROLL_CAPTURE_NEXT_SAMPLE,
        SubCommand.ENUMERATE_ENROLLMENTS,
        SubCommand.SET_FRIENDLY_NAME,
        SubCommand.REMOVE_ENROLLMENT,
    }
)

# subCommandParams keys (6.7.1)
_P_TEMPLATE_ID, _P_FRIENDLY_NAME, _P_TIMEOUT = 0x01, 0x02, 0x03
# response keys (6.7.1)
_R_MODALITY, _R_KIND, _R_MAX_SAMPLES = 0x01, 0x02, 0x03
_R_TEMPLATE_ID, _R_STATUS, _R_REMAINING, _R_INFOS, _R_MAX_NAME = 0x04, 0x05, 0x06, 0x07, 0x08


class FingerprintSensor:
    """Which finger the presence front end puts on the sensor next (thread-safe).

    Shared with whoever plays the user (the control socket, the pytest API), like
    :class:`vfido.authenticator.behaviours.Behaviours`; it survives power cycles.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finger: str | None = None

    def place(self, finger: str | None) -> None:
        """``None``: auto; :data:`UNKNOWN_FINGER`; or a finger's name."""
        if finger is not None and (not isinstance(finger, str) or not finger):
            raise ValueError("a finger is named by a non-empty string")
        with self._lock:
            self._finger = finger

    @property
    def finger(self) -> str | None:
        with self._lock:
            return self._finger


@dataclass(frozen=True)
class Template:
    template_id: bytes
    friendly_name: str
    finger: str

    def answers_to(self, finger: str) -> bool:
        return finger in (self.finger, self.friendly_name, self.template_id.hex())


@dataclass
class _Enrollment:
    """The enrollment in progress (runtime only: a power cycle or reset ends it)."""

    template_id: bytes
    finger: str
    remaining: int = SAMPLES_REQUIRED


@dataclass(frozen=True)
class BioEnrollmentRequest:
    modality: int | None  # 0x01
    sub_command: int | None  # 0x02
    params: Mapping[Any, Any] | None  # 0x03
    params_bytes: bytes  # canonical encoding of 0x03 (the signed message's tail)
    protocol: int | None  # 0x04
    pin_uv_auth_param: bytes | None = field(repr=False)  # 0x05
    get_modality: bool  # 0x06

    @classmethod
    def from_cbor_map(cls, m: Mapping[Any, Any]) -> BioEnrollmentRequest:
        def get(key: int, kind: type | tuple[type, ...]) -> Any:
            value = m.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"bioEnrollment key {key}")
            return value

        def get_unsigned(key: int) -> int | None:
            return cbor.optional_unsigned(m, key, f"bioEnrollment key {key}")

        get_modality = m.get(0x06, False)
        if not isinstance(get_modality, bool):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "getModality")
        params = get(0x03, dict)
        cbor.refuse_null_members(params, "subCommandParams")
        return cls(
            modality=get_unsigned(0x01),
            sub_command=get_unsigned(0x02),
            params=params,
            params_bytes=cbor.encode(params) if params is not None else b"",
            protocol=get_unsigned(0x04),
            pin_uv_auth_param=get(0x05, bytes),
            get_modality=get_modality,
        )

    def param(self, key: int, kind: type) -> Any:
        value = (self.params or {}).get(key)
        if value is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, f"subCommandParams {key}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, f"subCommandParams {key}")
        return value


class FingerprintTemplates:
    """The enrolled templates, in the keystore."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    def all(self) -> list[Template]:
        raw = self._store.get_state(_TEMPLATES)
        if raw is None:
            return []
        decoded = cbor.decode(raw)
        assert isinstance(decoded, dict)
        return [
            Template(bytes(tid), str(entry[_NAME]), str(entry[_FINGER]))
            for tid, entry in decoded.items()
        ]

    def put(self, templates: list[Template]) -> None:
        value = {t.template_id: {_NAME: t.friendly_name, _FINGER: t.finger} for t in templates}
        try:
            self._store.put_state({_TEMPLATES: cbor.encode(value) if value else None})
        except KeystoreFull:
            raise CtapError(CtapStatus.FP_DATABASE_FULL) from None

    def find(self, template_id: bytes) -> Template | None:
        for template in self.all():
            if hmac.compare_digest(template.template_id, template_id):
                return template
        return None

    def match(self, finger: str | None) -> Template | None:
        """The template the finger on the sensor matches (see the module docstring)."""
        templates = self.all()
        if finger is None:
            return templates[0] if templates else None
        if finger == UNKNOWN_FINGER:
            return None
        return next((t for t in templates if t.answers_to(finger)), None)


class FingerprintVerifier:
    """Built-in user verification by the simulated sensor: the front end's touch (its
    ``verify_user``), then the placed finger must match an enrolled template."""

    def __init__(
        self, inner: UserVerifier, templates: FingerprintTemplates, sensor: FingerprintSensor
    ) -> None:
        self._inner = inner
        self._templates = templates
        self._sensor = sensor

    @property
    def enabled(self) -> bool:
        """Built-in UV is enabled (configured) once a finger is enrolled."""
        return bool(self._templates.all())

    def verify_user(
        self, request: PresenceRequest, context: RequestContext, timeout: float
    ) -> PresenceResult:
        return self._matched(self._inner.verify_user(request, context, timeout))

    def instant_verification(self, request: PresenceRequest) -> PresenceResult | None:
        """The front end's instant answer, then the same match (env.InstantVerifier)."""
        instant = instant_verification(self._inner, request)
        return None if instant is None else self._matched(instant)

    def _matched(self, result: PresenceResult) -> PresenceResult:
        if result is PresenceResult.GRANTED and self._templates.match(self._sensor.finger) is None:
            return PresenceResult.DENIED  # a finger the sensor does not know
        return result


class BioEnrollment:
    """The authenticatorBioEnrollment command."""

    def __init__(
        self,
        store: KeyStore,
        client_pin: ClientPin,
        sensor: FingerprintSensor,
        touch: Callable[[PresenceRequest, RequestContext], PresenceResult],
    ) -> None:
        """``touch``: asks the presence front end for one touch of the sensor."""
        self._templates = FingerprintTemplates(store)
        self._pin = client_pin
        self._sensor = sensor
        self._touch = touch
        self._enrollment: _Enrollment | None = None

    @property
    def templates(self) -> FingerprintTemplates:
        return self._templates

    def reset_pending(self) -> None:
        """Power cycle or reset: the enrollment in progress ends."""
        self._enrollment = None

    def process(
        self, m: Mapping[Any, Any], context: RequestContext, preview: bool = False
    ) -> dict[int, Any]:
        """``preview``: the request came as userVerificationMgmtPreview (0x40), which a
        2.1-PRE key's getPinToken token also authorizes (not bioEnrollment, 0x09)."""
        request = BioEnrollmentRequest.from_cbor_map(m)
        # 6.7.2 step 1: getModality.
        if request.get_modality:
            return {_R_MODALITY: MODALITY_FINGERPRINT}
        if request.modality is None or request.sub_command is None:
            raise CtapError(CtapStatus.MISSING_PARAMETER, "modality / subCommand")
        if request.modality != MODALITY_FINGERPRINT:
            raise CtapError(CtapStatus.INVALID_OPTION, "unsupported modality")
        sub = request.sub_command
        if sub not in SubCommand.__members__.values():
            raise CtapError(CtapStatus.INVALID_SUBCOMMAND)
        if sub == SubCommand.GET_FINGERPRINT_SENSOR_INFO:
            return {
                _R_MODALITY: MODALITY_FINGERPRINT,
                _R_KIND: FINGERPRINT_KIND_TOUCH,
                _R_MAX_SAMPLES: SAMPLES_REQUIRED,
                _R_MAX_NAME: MAX_FRIENDLY_NAME,
            }
        if sub == SubCommand.CANCEL_CURRENT_ENROLLMENT:
            # 6.7.5: "cancels current ongoing enrollment, if any, and returns CTAP2_OK".
            self._enrollment = None
            return {}
        assert sub in _AUTHENTICATED
        self._authorize(request, preview)
        if sub == SubCommand.ENROLL_BEGIN:
            return self._enroll_begin(request, context)
        if sub == SubCommand.ENROLL_CAPTURE_NEXT_SAMPLE:
            return self._capture_next(request, context)
        if sub == SubCommand.ENUMERATE_ENROLLMENTS:
            templates = self._templates.all()
            if not templates:
                raise CtapError(CtapStatus.INVALID_OPTION, "no enrollments")
            return {_R_INFOS: [{0x01: t.template_id, 0x02: t.friendly_name} for t in templates]}
        if sub == SubCommand.SET_FRIENDLY_NAME:
            return self._set_friendly_name(request)
        return self._remove(request)

    # --- steps ---------------------------------------------------------------------
    def _authorize(self, request: BioEnrollmentRequest, preview: bool) -> None:
        """pinUvAuthParam over modality || subCommand || subCommandParams, be permission."""
        param = require_pin_uv_auth_param(request.pin_uv_auth_param, request.protocol)
        assert request.modality is not None and request.sub_command is not None
        message = bytes([request.modality, request.sub_command]) + request.params_bytes
        self._pin.verify_token(
            request.protocol, message, param, Permission.BIO_ENROLLMENT, preview=preview
        )

    @staticmethod
    def _check_timeout(request: BioEnrollmentRequest) -> None:
        """timeoutMilliseconds: checked; the front end's own presence timeout applies."""
        value = (request.params or {}).get(_P_TIMEOUT)
        if value is not None and not cbor.is_unsigned(value):
            raise CtapError(CtapStatus.CBOR_UNEXPECTED_TYPE, "timeoutMilliseconds")

    def _sample(self, context: RequestContext, enrolling: str) -> SampleStatus:
        """One touch of the sensor: its status for the finger being enrolled."""
        result = self._touch(PresenceRequest(PresenceKind.ENROLL), context)
        if result is PresenceResult.CANCELLED:
            raise CtapError(CtapStatus.KEEPALIVE_CANCEL)
        if result is not PresenceResult.GRANTED:
            return SampleStatus.NO_USER_ACTIVITY
        placed = self._sensor.finger
        if placed is not None and placed != UNKNOWN_FINGER:
            if self._templates.match(placed) is not None:
                return SampleStatus.FP_EXISTS
            if placed != enrolling:
                return SampleStatus.FP_MERGE_FAILURE
        return SampleStatus.FP_GOOD

    def _enroll_begin(
        self, request: BioEnrollmentRequest, context: RequestContext
    ) -> dict[int, Any]:
        # 6.7.3 enrollBegin
        if len(self._templates.all()) >= MAX_TEMPLATES:
            raise CtapError(CtapStatus.FP_DATABASE_FULL)
        template_id = entropy.random_bytes(TEMPLATE_ID_SIZE)
        placed = self._sensor.finger
        finger = placed if placed not in (None, UNKNOWN_FINGER) else f"finger-{template_id.hex()}"
        assert finger is not None
        enrollment = _Enrollment(template_id, finger)
        self._enrollment = enrollment
        self._check_timeout(request)
        status = self._sample(context, finger)
        return {_R_TEMPLATE_ID: template_id, **self._advance(enrollment, status)}

    def _capture_next(
        self, request: BioEnrollmentRequest, context: RequestContext
    ) -> dict[int, Any]:
        # 6.7.4 enrollCaptureNextSample
        enrollment = self._enrollment
        template_id = request.param(_P_TEMPLATE_ID, bytes)
        if enrollment is None or not hmac.compare_digest(enrollment.template_id, template_id):
            raise CtapError(CtapStatus.INVALID_PARAMETER, "no such enrollment in progress")
        self._check_timeout(request)
        status = self._sample(context, enrollment.finger)
        return self._advance(enrollment, status)

    def _advance(self, enrollment: _Enrollment, status: SampleStatus) -> dict[int, Any]:
        if status is SampleStatus.FP_GOOD:
            enrollment.remaining -= 1
        if enrollment.remaining == 0:
            self._enrollment = None
            self._templates.put(
                [*self._templates.all(), Template(enrollment.template_id, "", enrollment.finger)]
            )
        return {_R_STATUS: int(status), _R_REMAINING: enrollment.remaining}

    def _set_friendly_name(self, request: BioEnrollmentRequest) -> dict[int, Any]:
        # 6.7.6 setFriendlyName
        template_id = request.param(_P_TEMPLATE_ID, bytes)
        name = request.param(_P_FRIENDLY_NAME, str)
        if len(name.encode()) > MAX_FRIENDLY_NAME:
            raise CtapError(CtapStatus.INVALID_PARAMETER, "friendlyName too long")
        templates = self._templates.all()
        if not any(hmac.compare_digest(t.template_id, template_id) for t in templates):
            # "If there are no enrollments existing on authenticator for the passed
            # templateId, it returns CTAP2_ERR_INVALID_OPTION."
            raise CtapError(CtapStatus.INVALID_OPTION, "no such template")
        self._templates.put(
            [
                Template(t.template_id, name, t.finger) if t.template_id == template_id else t
                for t in templates
            ]
        )
        return {}

    def _remove(self, request: BioEnrollmentRequest) -> dict[int, Any]:
        # 6.7.7 removeEnrollment
        template_id = request.param(_P_TEMPLATE_ID, bytes)
        templates = self._templates.all()
        kept = [t for t in templates if not hmac.compare_digest(t.template_id, template_id)]
        if len(kept) == len(templates):  # as setFriendlyName (6.7.7)
            raise CtapError(CtapStatus.INVALID_OPTION, "no such template")
        self._templates.put(kept)
        return {}
