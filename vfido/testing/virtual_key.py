"""Run a vfido key from Python: in-process for test suites, over UHID for browsers.

:class:`VirtualKey` builds the same key ``vfido run`` serves (keystore -> authenticator ->
CTAPHID) inside the calling process::

    from vfido.api import VirtualKey

    with VirtualKey() as key:                       # ephemeral keystore, auto-approving user
        client = key.client("https://example.com")  # a python-fido2 Fido2Client on key.device
        options, state = server.register_begin(user)  # e.g. python-fido2's Fido2Server
        result = client.make_credential(options["publicKey"])
        print(key.credentials())                    # the discoverable credentials it holds

``transport="uhid"`` makes it a real HID device of the kernel (``/dev/uhid`` -> ``/dev/hidrawN``,
see :attr:`VirtualKey.hidraw_path`) that browsers and libfido2 use like a USB key.
:meth:`VirtualKey.service` runs ``vfido run`` as a subprocess instead (UDP or UHID), for tests
that want the key in another process.

The pytest plugin :mod:`vfido.testing.pytest_plugin` wraps both in fixtures (``vfido_key``,
``vfido_hid_key``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin
from fido2.hid import CtapHidDevice

from vfido import reproducible
from vfido.authenticator.behaviours import Behaviours, RawValue
from vfido.authenticator.config import Config
from vfido.authenticator.cose import MLDSA_ALGORITHMS
from vfido.authenticator.device import Authenticator
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.lint import Finding, Linter
from vfido.presence.broker import PresenceBroker, broker_for
from vfido.reproducible import SeededEnvironment
from vfido.safetext import is_utf8
from vfido.testing.common import (
    DEFAULT_ORIGIN,
    PRESENCE_MODES,
    TRANSPORTS,
    Credential,
    PendingRequest,
    VirtualKeyError,
    _serials,
    _wait_hidraw,
    open_hidraw,
)
from vfido.transport_kinds.inprocess import InProcessTransport

if TYPE_CHECKING:
    from vfido.control import ControlServer
    from vfido.control.client import KeyController
    from vfido.control.commands import KeyParts
    from vfido.key import Key
    from vfido.testing.service_key import ServiceKey
    from vfido.virtual_authenticator import AuthenticatorOptions


class _PinInteraction(UserInteraction):
    """A python-fido2 user that knows the key's PIN (``VirtualKey(pin=...)``)."""

    def __init__(self, pin: str | None) -> None:
        self._pin = pin

    def request_pin(self, permissions: ClientPin.PERMISSION, rp_id: str | None) -> str | None:
        return self._pin

    def __repr__(self) -> str:
        return "_PinInteraction(pin=<hidden>)" if self._pin else "_PinInteraction()"


def _broker(mode: str, delay: float, timeout: float) -> PresenceBroker:
    """The presence broker ``vfido run --presence MODE`` uses (:func:`broker_for`)."""
    if mode not in PRESENCE_MODES:
        raise ValueError(f"presence must be one of {', '.join(PRESENCE_MODES)}, not {mode!r}")
    return broker_for(mode, delay, timeout)


def _config(
    base: Config | None,
    *,
    uv: bool | None,
    attestation: str | None,
    algorithms: Sequence[int] | None,
    zero_counter: bool | None,
    presence_timeout: float | None,
    mldsa: bool | None = None,
    ctap21_pre: bool | None = None,
    fingerprint: bool | None = None,
) -> Config:
    changes: dict[str, Any] = {}
    if fingerprint is not None:
        changes["fingerprint"] = fingerprint
    if ctap21_pre is not None:
        changes["ctap21_pre"] = ctap21_pre
    if uv is not None:
        changes["builtin_uv"] = uv
    if mldsa is not None:
        changes["mldsa"] = mldsa
    if attestation is not None:
        changes["attestation"] = attestation
    if algorithms is not None:
        changes["algorithms"] = tuple(algorithms)
    if zero_counter is not None:
        changes["constant_zero_counter"] = zero_counter
    if presence_timeout is not None:
        changes["presence_timeout"] = presence_timeout
    if base is None:
        return Config(**changes)
    if mldsa and algorithms is None:
        # base.algorithms lost ML-DSA if base had it off: turning it on adds it back.
        offered = base.algorithms + tuple(a for a in MLDSA_ALGORITHMS if a not in base.algorithms)
        changes["algorithms"] = offered
    return dataclasses.replace(base, **changes)


def default_uv(
    uv: bool | None, *, pin: str | None = None, config: Config | None = None
) -> bool | None:
    """Whether a toolkit key has built-in user verification (None: as ``config`` says).

    On unless asked otherwise: a key that supports clientPin but has neither a PIN nor
    built-in UV cannot serve userVerification "preferred" (the default of python-fido2's
    ``Fido2Server`` and of py_webauthn), python-fido2's client then refuses with
    CONFIGURATION_UNSUPPORTED. With a ``pin`` the PIN verifies the user (a client would
    otherwise prefer built-in UV and never enter it); a whole ``config`` keeps its own
    ``builtin_uv``.
    """
    if uv is not None:
        return uv
    if config is not None:
        return None
    return pin is None


def _set_pin(device: CtapHidDevice, pin: str) -> None:
    """Set the key's PIN through CTAP clientPin, unless it already has one."""
    ctap2 = Ctap2(device)
    if not ctap2.info.options.get("clientPin"):
        ClientPin(ctap2).set_pin(pin)


class VirtualKey:
    """A vfido key running in this process. Use it as a context manager.

    Keystore: an ephemeral in-memory one (the default), or ``keystore=DIR`` with
    ``passphrase`` (``create=True`` makes it if missing), or an opened ``store`` (the key
    takes it over and closes it).

    Behaviour (the options of ``vfido run``): ``presence`` (``auto`` approves everything,
    ``deny`` refuses, ``deny-uv`` approves presence but fails built-in user verification,
    ``manual`` waits for :meth:`approve`/:meth:`deny`), ``presence_delay``,
    ``presence_timeout``, ``uv`` (built-in user verification: the user's approval verifies
    them; on by default, so the defaults of relying-party libraries, userVerification
    "preferred", work; off by default when ``pin`` or ``config`` is given; see
    :func:`default_uv`), ``pin`` (set at start through
    CTAP clientPin if the key has none; :meth:`client` then answers PIN prompts with it),
    ``attestation`` (``packed``/``self``/``none``), ``algorithms`` (COSE ids the key accepts,
    in order of preference), ``zero_counter``, ``mldsa`` (offer ML-DSA-44/-65/-87: off by
    default, as Firefox cannot parse them in getInfo), ``ctap21_pre`` (CTAP 2.1-PRE
    compatibility: ``FIDO_2_1_PRE``, credentialMgmtPreview), ``fingerprint`` (a simulated
    fingerprint sensor: :meth:`place_finger` chooses the finger that touches); ``config``
    gives a whole
    :class:`vfido.authenticator.config.Config` (the named options override its fields);
    ``persona`` a model class of key instead (``vfido personas`` lists them; its AAGUID for an
    ephemeral keystore);
    ``behaviours`` scripted misbehaviour at start, ``{name: value}`` (see
    ``vfido ctl behaviour list``), changed later through :attr:`behaviours`.
    ``seed``: a reproducible key, FOR TESTS ONLY (``vfido run --deterministic``): every
    random value and the clock follow from the seed, so the same requests get
    byte-identical answers; it warns on stderr and refuses ``keystore``/``store``.
    ``lint``: check what relying parties send (:mod:`vfido.lint`; :meth:`lint` reads the
    findings); ``lint_origin`` (implies ``lint``): the RP's origin, to check RP IDs against.
    ``control_socket``: also serve the key's control socket there (the commands of
    :mod:`vfido.control.commands`: ``vfido ctl --socket PATH ...``, :meth:`controller`).

    Transport: ``inprocess`` (python-fido2 talks CTAPHID to the key through queues; nothing
    outside the process sees it), ``uhid`` (a kernel HID device: needs read/write access to
    ``/dev/uhid``; ``serial`` names it, default unique per key) or ``unix`` (a Unix socket in
    a private temporary directory, :attr:`unix_socket`, that only this user can connect to:
    ``transports.unix.open_unix_device(key.unix_socket)`` from another process).
    """

    def __init__(
        self,
        *,
        keystore: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        create: bool = False,
        store: SqliteKeyStore | None = None,
        presence: str = "auto",
        presence_delay: float = 0.0,
        presence_timeout: float | None = None,
        uv: bool | None = None,
        pin: str | None = None,
        attestation: str | None = None,
        algorithms: Sequence[int] | None = None,
        zero_counter: bool | None = None,
        mldsa: bool | None = None,
        ctap21_pre: bool | None = None,
        fingerprint: bool | None = None,
        config: Config | None = None,
        persona: str | None = None,
        behaviours: Mapping[str, RawValue] | None = None,
        transport: str = "inprocess",
        serial: str | None = None,
        name: str = "vfido virtual FIDO2 key",
        control_socket: str | os.PathLike[str] | None = None,
        seed: str | bytes | None = None,
        lint: bool = False,
        lint_origin: str | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if store is not None and keystore is not None:
            raise ValueError("give keystore or store, not both")
        if keystore is not None and passphrase is None:
            raise ValueError("a keystore directory needs its passphrase")
        if passphrase is not None and keystore is None:
            raise ValueError("a passphrase is for a keystore directory: give keystore= too")
        if pin is not None:
            if not isinstance(pin, str):
                raise TypeError(f"pin must be a str, not {type(pin).__name__}")
            if not is_utf8(pin):
                raise ValueError("the PIN is not UTF-8 text")
            if len(pin.encode()) < 4:
                raise ValueError("a PIN has at least 4 characters")
        self._persona_aaguid: bytes | None = None
        if persona is not None:  # a model class (vfido.personas): its Config is the base
            from vfido.personas import MODEL_SETTINGS, load

            if config is not None:
                raise ValueError("give persona or config, not both")
            loaded = load(persona)
            config, self._persona_aaguid = loaded.config, loaded.aaguid
            # (what was given, what the persona has), for the settings a persona fixes
            given = {
                "uv": (uv, config.builtin_uv),
                "mldsa": (mldsa, config.mldsa),
                "ctap21_pre": (ctap21_pre, config.ctap21_pre),
                "fingerprint": (fingerprint, config.fingerprint),
            }
            for setting in MODEL_SETTINGS:  # as `vfido run --persona` refuses their flags
                value, has = given.get(setting, (None, None))
                if value is not None and value != has:
                    raise ValueError(
                        f"persona {persona!r} fixes what the key is: leave out {setting}= "
                        "(or give no persona)"
                    )
        #: The relying-party lint (``lint=True``), else None.
        self.linter: Linter | None = Linter(lint_origin) if lint or lint_origin else None
        #: A seeded key's randomness and clock (``seed``), else None.
        self.seeded: SeededEnvironment | None = None
        if seed is not None:
            self.seeded = reproducible.environment(
                seed, persistent=store is not None or keystore is not None
            )
        self.config = _config(
            config,
            uv=default_uv(uv, pin=pin, config=config),
            attestation=attestation,
            algorithms=algorithms,
            zero_counter=zero_counter,
            presence_timeout=presence_timeout,
            mldsa=mldsa,
            ctap21_pre=ctap21_pre,
            fingerprint=fingerprint,
        )
        self.presence = _broker(presence, presence_delay, self.config.presence_timeout)
        #: Scripted misbehaviour (:mod:`vfido.authenticator.behaviours`): ``key.behaviours.set(
        #: "counter-regression")``, ``.clear()``... at any time, also before :meth:`start`.
        self.behaviours = Behaviours((behaviours or {}).items())
        self.transport = transport
        self.keystore_dir = Path(keystore) if keystore is not None else None
        self.serial = serial or f"vfido-py-{os.getpid()}-{next(_serials)}"
        self.name = name
        #: The control socket (``vfido ctl --socket PATH``, :meth:`controller`), if asked for.
        self.control_socket = Path(control_socket) if control_socket is not None else None
        # The log line of a request nobody is asked about says what answers it: the key's own
        # methods, or `vfido approve` given the socket (it looks in its own directory else).
        self.presence.answer_hint = "answer with key.approve() or key.deny()" + (
            f" (or `vfido approve --socket {self.control_socket}`)"
            if self.control_socket is not None
            else ""
        )
        self._control: ControlServer | None = None
        self._passphrase = passphrase
        self._create = create
        self._pin = pin
        self._store = store
        self._authenticator: Authenticator | None = None
        self._key: Key | None = None
        #: The Unix socket of a ``transport="unix"`` key (None otherwise).
        self.unix_socket: Path | None = None
        self._hidraw: str | None = None
        self._device: CtapHidDevice | None = None
        self._devices: list[CtapHidDevice] = []
        self._started = False
        #: The WebDriver options the key was made from (:meth:`from_webauthn_options`).
        self.webauthn_options: AuthenticatorOptions | None = None

    def __repr__(self) -> str:
        where = str(self.keystore_dir) if self.keystore_dir else "ephemeral"
        state = "running" if self._started else "stopped"
        return f"VirtualKey({self.transport}, {where}, {state})"

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> VirtualKey:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> VirtualKey:
        """Open the keystore and plug the key in. Prefer ``with VirtualKey(...) as key``."""
        if self._started:
            raise VirtualKeyError("the key is already running")
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _open_store(self) -> SqliteKeyStore:
        if self._store is not None:
            return self._store
        if self.keystore_dir is None:
            if self.seeded is not None:
                aaguid = self._persona_aaguid
                return reproducible.build(
                    self.seeded, lambda: SqliteKeyStore.ephemeral(aaguid=aaguid)
                )
            return SqliteKeyStore.ephemeral(aaguid=self._persona_aaguid)
        passphrase, self._passphrase = self._passphrase, None  # not kept once used
        assert passphrase is not None
        if SqliteKeyStore.exists(self.keystore_dir):
            return SqliteKeyStore.open(self.keystore_dir, passphrase)
        if not self._create:
            raise VirtualKeyError(
                f"no keystore in {self.keystore_dir} (VirtualKey(create=True) makes one)"
            )
        return SqliteKeyStore.create(self.keystore_dir, passphrase)

    def _start(self) -> None:
        from vfido.key import TransportOptions, build_key
        from vfido.transports.uhid import UhidTransport, UhidUnavailableError

        self._store = self._open_store()
        self._started = True
        if self.transport == "unix":
            self.unix_socket = Path(tempfile.mkdtemp(prefix="vfido-unix-")) / "key.ctaphid"
        options = TransportOptions(
            kind=self.transport,
            serial=self.serial,
            name=self.name,
            unix_socket=str(self.unix_socket) if self.unix_socket is not None else None,
        )
        info = {
            "name": self.control_socket.stem if self.control_socket else self.serial,
            "keystore": str(self.keystore_dir) if self.keystore_dir else "(ephemeral)",
            "presence_timeout": self.config.presence_timeout,
        }
        self._key = key = build_key(
            self._store,
            self.presence,
            self.config,
            options,
            behaviours=self.behaviours,
            info=info,
            webauthn_options=self.webauthn_options,
            seeded=self.seeded,
            linter=self.linter,
        )
        self._authenticator = key.device
        try:
            key.start()
        except UhidUnavailableError as exc:
            raise VirtualKeyError(str(exc)) from None
        if isinstance(key.transport, UhidTransport):
            self._hidraw = _wait_hidraw(key.transport.hidraw_path)
        if self.webauthn_options is not None:
            from vfido.virtual_authenticator import WebAuthnError, check_backup_defaults

            try:
                check_backup_defaults(key.parts, self.webauthn_options)
            except WebAuthnError as exc:
                raise VirtualKeyError(str(exc)) from None
        if self.control_socket is not None:
            self._control = key.control_server(self.control_socket)
            self._control.start()
        if self._pin is not None:
            _set_pin(self.device, self._pin)

    def close(self) -> None:
        """Unplug the key and close its keystore (idempotent)."""
        control, self._control = self._control, None
        if control is not None:
            control.stop()
        devices, self._devices, self._device = self._devices, [], None
        for device in devices:
            device.close()
        key, self._key = self._key, None
        if key is not None:
            key.stop()
        if self.unix_socket is not None:
            shutil.rmtree(self.unix_socket.parent, ignore_errors=True)
            self.unix_socket = None
        self._hidraw = None
        store, self._store = self._store, None
        if store is not None:
            store.close()
        self._authenticator = None
        self._started = False

    def _require_running(self) -> None:
        if not self._started:
            raise VirtualKeyError("the key is not running (use `with VirtualKey(...) as key`)")

    # -- what tests use ---------------------------------------------------------------------

    @property
    def device(self) -> CtapHidDevice:
        """A python-fido2 :class:`~fido2.hid.CtapHidDevice` on the key (opened once, closed
        with the key). Over UHID it is the hidraw node."""
        self._require_running()
        if self._device is None:
            self._device = self.open_device()
        return self._device

    def open_device(self) -> CtapHidDevice:
        """Another python-fido2 device on the key (like a second application opening the
        node). Closed with the key, or earlier by the caller."""
        self._require_running()
        assert self._key is not None
        if isinstance(self._key.transport, InProcessTransport):
            device: CtapHidDevice = self._key.transport.open()
        elif self.unix_socket is not None:
            from vfido.transports.unix import open_unix_device

            device = open_unix_device(self.unix_socket)
        else:
            assert self._hidraw is not None
            device = open_hidraw(self._hidraw)
        self._devices.append(device)
        return device

    @property
    def hidraw_path(self) -> str | None:
        """``/dev/hidrawN`` of a UHID key (None for an in-process key)."""
        return self._hidraw

    @property
    def store(self) -> SqliteKeyStore:
        """The keystore (for inspection; the key writes to it concurrently)."""
        self._require_running()
        assert self._store is not None
        return self._store

    @property
    def authenticator(self) -> Authenticator:
        """The CTAP authenticator behind the transport."""
        self._require_running()
        assert self._authenticator is not None
        return self._authenticator

    def client(
        self,
        origin: str = DEFAULT_ORIGIN,
        *,
        user_interaction: UserInteraction | None = None,
        device: CtapHidDevice | None = None,
    ) -> Fido2Client:
        """A python-fido2 :class:`~fido2.client.Fido2Client` for ``origin`` on
        :attr:`device`. Without ``user_interaction`` it enters the key's ``pin`` if asked."""
        return Fido2Client(
            device or self.device,
            client_data_collector=DefaultClientDataCollector(origin),
            user_interaction=user_interaction or _PinInteraction(self._pin),
        )

    def credentials(self) -> list[Credential]:
        """The discoverable credentials the key holds, oldest first."""
        summaries = self.store.list_credentials()
        return sorted(
            (Credential.from_summary(s) for s in summaries),
            key=lambda c: (c.created, c.credential_id),
        )

    @property
    def aaguid(self) -> bytes:
        return self.store.identity().aaguid

    @property
    def attestation_root(self) -> bytes:
        """DER of the keystore's attestation root certificate (trust it for ``packed``)."""
        return self.store.identity().attestation_chain[-1]

    def place_finger(self, finger: str | None) -> None:
        """The finger that touches the simulated fingerprint sensor next (``fingerprint``
        key): a name (a finger enrolled under it, or its template's friendly name or ID in
        hex), ``"unknown"`` (a finger never enrolled), or None (auto: the first enrolled
        finger; a new one when enrolling). See :mod:`vfido.authenticator.bio_enrollment`."""
        self.authenticator.sensor.place(finger)

    def lint(self, *, clear: bool = False) -> list[Finding]:
        """The relying-party lint's findings so far (``clear``: then forget them); print
        ``vfido.lint.format_findings(...)`` (escaped: findings quote what the RP sent).
        Raises :class:`VirtualKeyError` for a key made without ``lint=True``."""
        if self.linter is None:
            raise VirtualKeyError("this key does not lint: make it with VirtualKey(lint=True)")
        findings = self.linter.findings()
        if clear:
            self.linter.clear()
        return findings

    def power_cycle(self) -> None:
        """Unplug and re-plug the key: channels, PIN tokens and pending state are dropped.
        :attr:`device` is then opened again, as a host opens a re-plugged key (its old
        channel is gone); devices from :meth:`open_device` are the caller's to reopen."""
        self._require_running()
        assert self._key is not None
        if isinstance(self._key.transport, InProcessTransport):  # the CTAPHID runner too
            self._key.transport.power_cycle()
        else:
            self.authenticator.power_cycle()
        device, self._device = self._device, None
        if device is not None:
            self._devices.remove(device)  # closed once: a hidraw fd number is reused
            device.close()

    def controller(self) -> KeyController:
        """A :class:`vfido.control.KeyController` on the key's control socket (needs
        ``control_socket``); close it after use."""
        from vfido.control.client import KeyController

        self._require_running()
        if self.control_socket is None:
            raise VirtualKeyError("this key has no control socket: VirtualKey(control_socket=...)")
        return KeyController(self.control_socket)

    # -- presence="manual" ------------------------------------------------------------------

    def _answer(self, granted: bool, wait: float) -> PendingRequest:
        pending = self.presence.wait_pending(wait)
        if not pending:
            raise VirtualKeyError(f"no request waited for the user within {wait} s")
        answered = self.presence.answer(granted, pending[0].id, "VirtualKey")
        info = answered.describe()
        return PendingRequest(
            id=answered.id,
            kind=answered.request.kind.value,
            rp_id=answered.request.rp_id,
            user_name=answered.request.user_name,
            question=str(info["question"]),
        )

    def approve(self, wait: float = 10.0) -> PendingRequest:
        """Approve the request waiting for the user (waiting up to ``wait`` s for one)."""
        return self._answer(True, wait)

    def deny(self, wait: float = 10.0) -> PendingRequest:
        """Refuse the request waiting for the user (waiting up to ``wait`` s for one)."""
        return self._answer(False, wait)

    # -- the W3C WebDriver virtual-authenticator model (vfido.virtual_authenticator) ---------

    @classmethod
    def from_webauthn_options(
        cls, options: Mapping[str, Any] | AuthenticatorOptions, **kwargs: Any
    ) -> VirtualKey:
        """A key that behaves as WebDriver's Add Virtual Authenticator ``options`` say
        (``{"protocol": "ctap2", "transport": "usb", "hasUserVerification": True, ...}``,
        or an :class:`~vfido.virtual_authenticator.AuthenticatorOptions`); ``kwargs`` are
        further :class:`VirtualKey` arguments (``transport="uhid"``...). Raises
        :class:`~vfido.virtual_authenticator.WebAuthnError` for bad options."""
        from vfido.virtual_authenticator import AuthenticatorOptions

        if not isinstance(options, AuthenticatorOptions):
            options = AuthenticatorOptions.from_json(options)
        arguments = {**options.key_arguments(), **kwargs}
        if (
            options.default_backup_eligibility
            and "store" not in kwargs
            and "keystore" not in kwargs
        ):
            from vfido.backup import backup_eligible_identity

            arguments["store"] = SqliteKeyStore.ephemeral(identity=backup_eligible_identity())
        key = cls(**arguments)
        key.webauthn_options = options
        # As the browser's own virtual authenticator: no rk storage without hasResidentKey,
        # and Get Credentials lists the server-side credentials the browser makes.
        key.config = dataclasses.replace(
            key.config,
            resident_keys=options.has_resident_key,
            record_server_side_credentials=True,
            default_backup_state=options.default_backup_state,
        )
        return key

    def _webauthn(self) -> KeyParts:
        self._require_running()
        assert self._key is not None
        return self._key.parts

    def webauthn_options_json(self) -> dict[str, Any]:
        """The Add Virtual Authenticator options this key behaves as."""
        from vfido.virtual_authenticator import options_of

        return options_of(self._webauthn()).to_json()

    def webauthn_add_credential(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """WebDriver's Add Credential: ``params`` is the Credential Parameters JSON
        (``credentialId``, ``isResidentCredential``, ``rpId``, ``privateKey`` base64url
        PKCS#8, ``userHandle``, ``signCount``, ``largeBlob``, ``backupEligibility``,
        ``backupState``); returns the credential as Get Credentials shows it, without its
        ``privateKey``."""
        from vfido.virtual_authenticator import add_credential

        return add_credential(self._webauthn(), params)

    def webauthn_get_credentials(self) -> list[dict[str, Any]]:
        """WebDriver's Get Credentials (private keys included).

        A key not made from WebDriver options (:meth:`from_webauthn_options`) keeps no
        record of the server-side credentials registrations make: they are not listed here
        (or removable), and keep working; ``config=Config(record_server_side_credentials=
        True)`` keeps one.
        """
        from vfido.virtual_authenticator import get_credentials

        return get_credentials(self._webauthn())

    def webauthn_remove_credential(self, credential_id: bytes | str) -> None:
        """WebDriver's Remove Credential (``bytes`` or base64url); which credentials a key
        can reach: :meth:`webauthn_get_credentials`."""
        from vfido.virtual_authenticator import b64url_decode, remove_credential

        if isinstance(credential_id, str):
            credential_id = b64url_decode("credentialId", credential_id)
        remove_credential(self._webauthn(), credential_id)

    def webauthn_remove_all_credentials(self) -> None:
        """WebDriver's Remove All Credentials; which credentials a key can reach:
        :meth:`webauthn_get_credentials`."""
        from vfido.virtual_authenticator import remove_all_credentials

        remove_all_credentials(self._webauthn())

    def webauthn_set_user_verified(self, verified: bool) -> None:
        """WebDriver's Set User Verified: built-in UV succeeds (True) or fails from now on."""
        from vfido.virtual_authenticator import set_user_verified

        set_user_verified(self._webauthn(), verified)

    def webauthn_set_credential_properties(
        self,
        credential_id: bytes | str,
        *,
        backup_eligibility: bool | None = None,
        backup_state: bool | None = None,
    ) -> None:
        """WebDriver's Set Credential Properties: a credential's BE/BS flags."""
        from vfido.virtual_authenticator import b64url_decode, set_credential_properties

        if isinstance(credential_id, str):
            credential_id = b64url_decode("credentialId", credential_id)
        params = {"backupEligibility": backup_eligibility, "backupState": backup_state}
        set_credential_properties(self._webauthn(), credential_id, params)

    # -- as a service -----------------------------------------------------------------------

    @staticmethod
    def service(
        *,
        transport: str = "udp",
        keystore: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        presence: str = "auto",
        uv: bool = True,
        attestation: str | None = None,
        zero_counter: bool = False,
        serial: str | None = None,
        behaviours: Mapping[str, RawValue] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 60.0,
        mldsa: bool = False,
    ) -> ServiceKey:
        """``vfido run`` as a subprocess (``with VirtualKey.service() as key:``).

        ``transport``: ``udp`` (free local ports; :attr:`ServiceKey.device` connects to it;
        every local user can use it, so a ``keystore`` needs ``unix`` instead, or
        ``extra_args=["--udp-insecure-any-local-user"]``), ``unix`` (a Unix socket only this
        user can connect to) or ``uhid``. Without ``keystore`` the key is ephemeral. ``uv``:
        built-in user verification (``vfido run --uv``), on by default as for
        :class:`VirtualKey`; ``uv=False`` runs a key that can only verify users with a PIN.
        ``behaviours``: scripted misbehaviour at start (``--behaviour NAME=VALUE``).
        ``mldsa``: ``--mldsa``. ``extra_args`` go to ``vfido run`` as they are (see
        ``vfido run --help``).
        """
        from vfido.testing.service_key import ServiceKey

        return ServiceKey(
            transport=transport,
            keystore=keystore,
            passphrase=passphrase,
            presence=presence,
            uv=uv,
            attestation=attestation,
            zero_counter=zero_counter,
            serial=serial,
            behaviours=behaviours,
            extra_args=extra_args,
            ready_timeout=ready_timeout,
            mldsa=mldsa,
        )
