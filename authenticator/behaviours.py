"""Scripted misbehaviour: ways this key can deliberately misbehave, for testing relying
parties and clients.

A :class:`Behaviours` object is held in :class:`vfido.authenticator.state.Services` and shared
with whoever configures the key (``vfido run --behaviour NAME[=VALUE]``, the control
socket's ``set-behaviour`` command). It holds an immutable :class:`BehaviourSettings`
snapshot, replaced atomically on every change; a command handler reads one snapshot
(:meth:`Behaviours.current`) at each defined point and acts on its typed fields. Nothing
is monkeypatched: the state machine consults data.

The behaviours (:data:`CATALOGUE` lists them with their values):

``counter-regression[=N]``
    Assertions report a signature counter ``N`` (default 1) below the highest the key has
    reported for that credential (at least 0), as a cloned key that lags behind the
    original would. The stored counter does not advance; a credential that has reported
    only 0 first reports 1 (there must be something to fall below: a relying party skips
    the check when both counters are 0).
``zero-counter``
    Every signature counter is 0 (like ``Config.constant_zero_counter``).
``counter-jump[=N]``
    Each assertion with user presence advances the counter by ``N`` (default 1000)
    instead of 1.
``presence-timeout[=SECONDS]``
    Every user-presence request ends unanswered: USER_ACTION_TIMEOUT (OPERATION_DENIED for
    the zero-length pinUvAuthParam probe, as its step says), after SECONDS
    (default 0) of UPNEEDED keepalives (a CTAPHID_CANCEL still ends it at once).
``uv-fail``
    Built-in user verification fails (needs a key with built-in UV, ``vfido run --uv``);
    every failure counts against uvRetries, as a finger the sensor does not know.
``pin-blocked``
    The PIN is reported blocked: getInfo says ``clientPin: true``, getPINRetries says 0,
    every PIN operation (token, change) fails with PIN_BLOCKED, setPIN with
    PIN_AUTH_INVALID (6.5.5.5 step 3: a PIN is set), and the key counts as protected by
    user verification.
``slow[=MS]``
    Every CTAP2 command is answered after MS milliseconds (default 1000); PROCESSING
    keepalives continue meanwhile and a CTAPHID_CANCEL ends the wait (KEEPALIVE_CANCEL).
``wrong-signature``
    Assertion signatures are made over other data: valid encoding, but they do not verify.
``vanished-credential[=ID,...]``
    The credentials with these base64url IDs (without a value: every credential) are
    unknown to the key, as if deleted: getAssertion answers NO_CREDENTIALS for them and
    makeCredential does not treat them as excluded.
``attestation=untrusted|expired|none``
    ``untrusted``: packed attestation by a batch certificate from another CA (this
    process's "misbehaviour" root, :func:`misbehaviour_root`), so the trust path to the
    key's real root fails. ``expired``: packed attestation by a certificate of that CA
    whose validity ended a year ago. ``none``: the ``none`` attestation format.
``omit-user``
    Assertions carry no user entity, not even for discoverable credentials.
``versions=FIDO_2_0|U2F_V2``
    ``FIDO_2_0``: a CTAP2-only key that answers as a CTAP 2.0 key (``model.CTAP20_MODEL``:
    getInfo's six members, PIN protocol 1, hmac-secret, no CTAP 2.1 command or option);
    CTAPHID_INIT advertises NMSG and CTAPHID_MSG is refused (ERR_INVALID_CMD).
    ``U2F_V2``: a U2F-only key: CTAPHID_INIT advertises no CBOR capability and
    CTAPHID_CBOR is refused (ERR_INVALID_CMD), so clients use U2F. The flags follow the
    behaviour at each CTAPHID_INIT (``Authenticator.supported_protocols``); where no
    transport checks them, the key itself answers CTAP1_ERR_INVALID_COMMAND or
    SW_INS_NOT_SUPPORTED.
``store-full``
    Discoverable credentials cannot be created (KEY_STORE_FULL); getInfo reports no
    remaining discoverable credentials.

When counter behaviours combine, ``zero-counter`` wins over ``counter-regression``,
which wins over ``counter-jump``.

CTAP1/U2F requests honour the counter behaviours, ``wrong-signature``,
``vanished-credential`` (key handles answered SW_WRONG_DATA) and
``attestation=untrusted|expired``; the others concern CTAP2 only. Behaviours survive a
power cycle (they are the key's script, not its state).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vfido.keystore import entropy
from vfido.keystore.store import AttestationMaterial, DeviceIdentity, KeyStore

if TYPE_CHECKING:  # cryptography.x509 is imported by the behaviours that make certificates
    from cryptography import x509

#: A value as it arrives from JSON or the command line.
RawValue = str | int | float | bool | None

FIDO_2_0 = "FIDO_2_0"
U2F_V2 = "U2F_V2"
ATTESTATION_MODES = ("untrusted", "expired", "none")


class BehaviourError(ValueError):
    """An unknown behaviour or a bad value (one line, for the user)."""


def _check_builtin_uv(names: Iterable[str]) -> None:
    """For a key without built-in UV: refuse the behaviours that need it."""
    for name in names:
        if spec(name).needs_builtin_uv:
            raise BehaviourError(f"{name} needs a key with built-in UV (vfido run --uv)")


@dataclass(frozen=True)
class BehaviourSettings:
    """One immutable snapshot of the active behaviours (all off by default)."""

    counter_regression: int | None = None
    zero_counter: bool = False
    counter_jump: int | None = None
    presence_timeout: float | None = None
    uv_fail: bool = False
    pin_blocked: bool = False
    slow_ms: int | None = None
    wrong_signature: bool = False
    #: Every credential vanished (``vanished-credential`` without a value).
    all_credentials_vanished: bool = False
    vanished_credentials: frozenset[bytes] = field(default_factory=frozenset)
    attestation: str | None = None  # one of ATTESTATION_MODES
    omit_user: bool = False
    versions: str | None = None  # FIDO_2_0 or U2F_V2
    store_full: bool = False

    def vanished(self, credential_id: bytes) -> bool:
        """Whether ``credential_id`` is to be treated as unknown."""
        return self.all_credentials_vanished or credential_id in self.vanished_credentials

    def counter_step(self) -> int:
        return self.counter_jump if self.counter_jump is not None else 1

    def signature_counter(
        self, store: KeyStore, credential_id: bytes, *, constant_zero: bool, advance: bool
    ) -> int:
        """The signature counter an assertion of ``credential_id`` reports, under the
        counter behaviours; for CTAP2 (``advance``: with user presence) and U2F alike.

        ``zero-counter`` (or ``constant_zero``, the key's ``--zero-counter``): 0.
        ``counter-regression`` (a cloned key): below the highest value reported, which is
        the stored one, and the stored counter does not advance. A credential that has
        reported only 0 has nothing to fall below (an RP skips the check when both counters
        are 0): its first assertion advances as the original key's would. Otherwise the
        counter advances by ``counter-jump`` (1) and is persisted before the response leaves
        (``advance``), or is reported as it is.
        """
        if constant_zero or self.zero_counter:
            return 0
        if self.counter_regression is not None and advance:
            highest = store.get_counter(credential_id)
            if highest == 0:
                return store.increment_counter(credential_id, 1)
            return max(0, highest - self.counter_regression)
        if advance:
            return store.increment_counter(credential_id, self.counter_step())
        return store.get_counter(credential_id)


@dataclass(frozen=True)
class BehaviourSpec:
    """One behaviour: its name, what its value is, and how it maps onto the settings."""

    name: str
    summary: str
    #: Description of the value, e.g. ``"N (default 1)"``; empty: takes no value.
    value_help: str
    #: Parses the raw value (None when absent) into the settings' field values.
    apply: Callable[[RawValue], dict[str, Any]] = field(repr=False)
    #: The settings fields this behaviour controls (reset by ``clear``).
    fields: tuple[str, ...]
    #: The value as shown when listing (from the settings).
    show: Callable[[BehaviourSettings], RawValue | list[str]] = field(repr=False)
    #: Whether it is on in these settings.
    active: Callable[[BehaviourSettings], bool] = field(repr=False)
    #: Kind of value: ``bool`` (none), ``int``, ``number`` (seconds), ``choice``, ``text``.
    kind: str = "bool"
    choices: tuple[str, ...] = ()
    #: Only meaningful for a key with built-in user verification.
    needs_builtin_uv: bool = False

    def describe(self, settings: BehaviourSettings | None = None) -> dict[str, Any]:
        """For listings: name, description, value type; with ``settings``, whether it is
        on (``enabled``) and its ``value`` there (for a ``bool`` behaviour: ``enabled``;
        otherwise None when off)."""
        result: dict[str, Any] = {
            "name": self.name,
            "description": self.summary,
            "type": self.kind,
            "value_help": self.value_help or None,
            "needs_builtin_uv": self.needs_builtin_uv,
        }
        if self.choices:
            result["choices"] = list(self.choices)
        if settings is not None:
            enabled = self.active(settings)
            result["enabled"] = enabled
            if self.kind == "bool":
                result["value"] = enabled
            else:
                result["value"] = self.show(settings) if enabled else None
        return result


# --- value parsers ---------------------------------------------------------------------


def _no_value(name: str) -> Callable[[RawValue], None]:
    def parse(raw: RawValue) -> None:
        if raw not in (None, "", True):
            raise BehaviourError(f"{name} takes no value")

    return parse


def _int_value(name: str, default: int, minimum: int, maximum: int) -> Callable[[RawValue], int]:
    def parse(raw: RawValue) -> int:
        if raw is None or raw == "":
            return default
        if isinstance(raw, bool):
            raise BehaviourError(f"{name} takes an integer")
        if isinstance(raw, float):
            if not raw.is_integer():
                raise BehaviourError(f"{name} takes an integer")
            raw = int(raw)
        try:
            value = int(raw)
        except ValueError:
            raise BehaviourError(f"{name} takes an integer, not {str(raw)[:32]!r}") from None
        if not minimum <= value <= maximum:
            raise BehaviourError(f"{name} must be between {minimum} and {maximum}")
        return value

    return parse


def _seconds_value(name: str, maximum: float) -> Callable[[RawValue], float]:
    def parse(raw: RawValue) -> float:
        if raw is None or raw == "":
            return 0.0
        if isinstance(raw, bool):
            raise BehaviourError(f"{name} takes a number of seconds")
        try:
            value = float(raw)
        except ValueError:
            raise BehaviourError(f"{name} takes a number of seconds") from None
        if not math.isfinite(value) or not 0 <= value <= maximum:
            raise BehaviourError(f"{name} must be between 0 and {maximum:g} seconds")
        return value

    return parse


def _choice_value(name: str, choices: tuple[str, ...]) -> Callable[[RawValue], str]:
    def parse(raw: RawValue) -> str:
        if not isinstance(raw, str) or not raw:
            raise BehaviourError(f"{name} needs a value: {' | '.join(choices)}")
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise BehaviourError(f"{name} must be one of {', '.join(choices)}")

    return parse


def b64url_decode(text: str) -> bytes:
    """Decode unpadded (or padded) base64url. Raises ValueError."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _credential_ids(raw: RawValue) -> dict[str, Any]:
    if raw is None or raw == "" or raw is True:
        return {"all_credentials_vanished": True, "vanished_credentials": frozenset()}
    if not isinstance(raw, str):
        raise BehaviourError("vanished-credential takes base64url credential IDs")
    ids = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            decoded = b64url_decode(part)
        except ValueError:
            raise BehaviourError("vanished-credential: an ID is not base64url") from None
        if not decoded:
            raise BehaviourError("vanished-credential: an ID is empty")
        ids.add(decoded)
    if not ids:
        raise BehaviourError("vanished-credential: no ID given")
    return {"all_credentials_vanished": False, "vanished_credentials": frozenset(ids)}


def _flag(name: str, field_name: str, summary: str, **extra: Any) -> BehaviourSpec:
    check = _no_value(name)

    def apply(raw: RawValue) -> dict[str, Any]:
        check(raw)
        return {field_name: True}

    return BehaviourSpec(
        name=name,
        summary=summary,
        value_help="",
        apply=apply,
        fields=(field_name,),
        show=lambda s: None,
        active=lambda s: bool(getattr(s, field_name)),
        **extra,
    )


def _valued(
    name: str,
    field_name: str,
    summary: str,
    value_help: str,
    parse: Callable[[RawValue], Any],
    kind: str,
    choices: tuple[str, ...] = (),
) -> BehaviourSpec:
    return BehaviourSpec(
        name=name,
        summary=summary,
        value_help=value_help,
        apply=lambda raw: {field_name: parse(raw)},
        fields=(field_name,),
        show=lambda s: getattr(s, field_name),
        active=lambda s: getattr(s, field_name) is not None,
        kind=kind,
        choices=choices,
    )


CATALOGUE: tuple[BehaviourSpec, ...] = (
    _valued(
        "counter-regression",
        "counter_regression",
        "assertions report a counter N below the highest reported (a cloned key)",
        "N (default 1)",
        _int_value("counter-regression", 1, 1, 0xFFFFFFFF),
        "int",
    ),
    _flag("zero-counter", "zero_counter", "every signature counter is 0"),
    _valued(
        "counter-jump",
        "counter_jump",
        "each assertion advances the counter by N instead of 1",
        "N (default 1000)",
        _int_value("counter-jump", 1000, 1, 0x7FFFFFFF),
        "int",
    ),
    _valued(
        "presence-timeout",
        "presence_timeout",
        "user presence is never given: USER_ACTION_TIMEOUT after SECONDS",
        "SECONDS (default 0)",
        _seconds_value("presence-timeout", 600.0),
        "number",
    ),
    _flag(
        "uv-fail",
        "uv_fail",
        "built-in user verification fails (counts against uvRetries)",
        needs_builtin_uv=True,
    ),
    _flag("pin-blocked", "pin_blocked", "the PIN is reported blocked (PIN_BLOCKED)"),
    _valued(
        "slow",
        "slow_ms",
        "every CTAP2 answer comes after MS milliseconds, with keepalives",
        "MS (default 1000)",
        _int_value("slow", 1000, 0, 600_000),
        "int",
    ),
    _flag("wrong-signature", "wrong_signature", "assertion signatures do not verify"),
    BehaviourSpec(
        name="vanished-credential",
        summary="these credentials (default: every one) are unknown: NO_CREDENTIALS",
        value_help="ID[,ID...] base64url (default: every credential)",
        apply=_credential_ids,
        fields=("all_credentials_vanished", "vanished_credentials"),
        show=lambda s: (
            None
            if s.all_credentials_vanished
            else sorted(b64url(c) for c in s.vanished_credentials)
        ),
        active=lambda s: s.all_credentials_vanished or bool(s.vanished_credentials),
        kind="text",
    ),
    _valued(
        "attestation",
        "attestation",
        "untrusted or expired attestation certificate, or none attestation",
        " | ".join(ATTESTATION_MODES),
        _choice_value("attestation", ATTESTATION_MODES),
        "choice",
        ATTESTATION_MODES,
    ),
    _flag("omit-user", "omit_user", "assertions carry no user entity"),
    _valued(
        "versions",
        "versions",
        "report only FIDO_2_0, or be a U2F-only key",
        f"{FIDO_2_0} | {U2F_V2}",
        _choice_value("versions", (FIDO_2_0, U2F_V2)),
        "choice",
        (FIDO_2_0, U2F_V2),
    ),
    _flag("store-full", "store_full", "the credential store is full: KEY_STORE_FULL"),
)

_SPECS: dict[str, BehaviourSpec] = {spec.name: spec for spec in CATALOGUE}
#: Behaviour names, in catalogue order.
NAMES: tuple[str, ...] = tuple(_SPECS)


def spec(name: str) -> BehaviourSpec:
    """The behaviour called ``name``. Raises BehaviourError."""
    found = _SPECS.get(name)
    if found is None:
        raise BehaviourError(f"unknown behaviour {name!r}; known: {', '.join(NAMES)}")
    return found


def parse_assignment(text: str) -> tuple[str, str | None]:
    """``"NAME"`` or ``"NAME=VALUE"`` (the ``--behaviour`` syntax) -> (name, value)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    spec(name)  # fail early on unknown names
    return name, (value if sep else None)


class Behaviours:
    """The key's active behaviours: thread-safe, typed, swapped as whole snapshots."""

    def __init__(self, initial: Iterable[tuple[str, RawValue]] = ()) -> None:
        self._lock = threading.Lock()
        self._settings = BehaviourSettings()
        # The key's built-in UV, once the key is assembled (check_key); None before.
        self._builtin_uv: bool | None = None
        for name, value in initial:
            self.set(name, value)

    @classmethod
    def from_assignments(
        cls, assignments: Iterable[str], *, builtin_uv: bool | None = None
    ) -> Behaviours:
        """From ``NAME[=VALUE]`` strings (``vfido run --behaviour``). With ``builtin_uv``
        given, behaviours that need built-in UV are refused on a key without it. Raises
        BehaviourError."""
        pairs = [parse_assignment(a) for a in assignments]
        if builtin_uv is False:
            _check_builtin_uv(name for name, _ in pairs)
        return cls(pairs)

    def check_key(self, *, builtin_uv: bool) -> None:
        """Refuse (BehaviourError) active behaviours the key cannot act out: those that need
        built-in UV on a key without it (the Authenticator checks its own, for every front end:
        ``VirtualKey(uv=False, behaviours={"uv-fail": True})`` was taken silently, a newcomer
        review); and from then on, :meth:`set` refuses them too (the control socket,
        ``key.behaviours``)."""
        if not builtin_uv:
            _check_builtin_uv(self.active())
        self._builtin_uv = builtin_uv

    def current(self) -> BehaviourSettings:
        """The snapshot to act on (read it once per decision point).

        No lock: snapshots are immutable and replacing the reference is atomic, so a
        reader sees the old or the new snapshot, never a mix (this runs per request)."""
        return self._settings

    def set(self, name: str, value: RawValue = None) -> BehaviourSettings:
        """Turn ``name`` on with ``value`` (replacing an earlier value). Raises BehaviourError."""
        if self._builtin_uv is False:
            _check_builtin_uv([name])
        updates = spec(name).apply(value)
        with self._lock:
            self._settings = replace(self._settings, **updates)
            return self._settings

    def clear(self, name: str | None = None) -> BehaviourSettings:
        """Turn ``name`` off (None: every behaviour). Raises BehaviourError for unknown names."""
        with self._lock:
            if name is None:
                self._settings = BehaviourSettings()
            else:
                defaults = BehaviourSettings()
                cleared = {f: getattr(defaults, f) for f in spec(name).fields}
                self._settings = replace(self._settings, **cleared)
            return self._settings

    def active(self) -> dict[str, RawValue | list[str]]:
        """The active behaviours: name -> value (None for behaviours without one)."""
        settings = self.current()
        return {s.name: s.show(settings) for s in CATALOGUE if s.active(settings)}

    def __repr__(self) -> str:
        return f"Behaviours({sorted(self.active())})"


# --- helpers used at the hook points -----------------------------------------------------


def corrupt_signed_data(data: bytes) -> bytes:
    """What ``wrong-signature`` signs instead of ``data``: the same length, every bit of the
    last byte flipped (the signature is well formed but does not verify)."""
    if not data:
        return b"\xff"
    return data[:-1] + bytes([data[-1] ^ 0xFF])


MISBEHAVIOUR_ROOT_CN = "vfido Misbehaviour Test Root CA (not trusted)"


@functools.lru_cache(maxsize=1)
def _misbehaviour_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = entropy.ec_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vfido"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Misbehaviour"),
            x509.NameAttribute(NameOID.COMMON_NAME, MISBEHAVIOUR_ROOT_CN),
        ]
    )
    now = entropy.utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(now - datetime.timedelta(days=3 * 365))
        .not_valid_after(now + datetime.timedelta(days=10 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def misbehaviour_root() -> bytes:
    """DER of the CA that issues the ``untrusted`` and ``expired`` attestation
    certificates (made once per process). Trusting it lets a test separate "expired"
    from "untrusted"."""
    return _misbehaviour_ca()[1].public_bytes(serialization.Encoding.DER)


@functools.lru_cache(maxsize=16)
def _rogue_material(aaguid: bytes, expired: bool) -> tuple[bytes, bytes]:
    """(batch key PKCS#8 DER, batch certificate DER) issued by the misbehaviour CA."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca_key, ca_cert = _misbehaviour_ca()
    key = entropy.ec_private_key(ec.SECP256R1())
    now = entropy.utc_now()
    if expired:
        not_before, not_after = (
            now - datetime.timedelta(days=730),
            now - datetime.timedelta(days=365),
        )
    else:
        not_before, not_after = (
            now - datetime.timedelta(days=1),
            now + datetime.timedelta(days=5 * 365),
        )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vfido"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(
                NameOID.COMMON_NAME,
                "vfido Expired Batch Certificate" if expired else "vfido Untrusted Batch Cert",
            ),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(entropy.x509_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), bytes([0x04, 16]) + aaguid
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    der_key = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der_key, cert.public_bytes(serialization.Encoding.DER)


def attestation_identity(identity: DeviceIdentity, mode: str) -> DeviceIdentity:
    """The identity to attest with under ``attestation=untrusted|expired``: the real one
    with its batch key and certificate replaced by the misbehaviour CA's."""
    if mode not in ("untrusted", "expired"):
        raise ValueError(f"no substitute identity for attestation mode {mode!r}")
    key, cert = _rogue_material(identity.aaguid, mode == "expired")
    return replace(identity, attestation=AttestationMaterial(key, (cert, misbehaviour_root())))


def describe_catalogue(settings: BehaviourSettings | None = None) -> list[dict[str, Any]]:
    """Every behaviour, for listings (``vfido ctl behaviour list``), with its state in
    ``settings`` if given."""
    return [s.describe(settings) for s in CATALOGUE]
