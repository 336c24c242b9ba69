"""The control API of a running key: every command of its control socket, registered in one
place (:func:`register_commands`) and described once, here.

Transport (see :mod:`vfido.control.server`): a Unix stream socket, mode 0600, in a directory of
mode 0700 (``$XDG_RUNTIME_DIR/vfido/<name>.sock``, else ``/tmp/vfido-<uid>/<name>.sock``, or
``vfido run --control-socket PATH``); connections from other users are refused
(``SO_PEERCRED``). JSON lines: each request is one object ``{"cmd": NAME, ...arguments}`` on
one line, each answer one object on one line: ``{"ok": true, ...result}`` or
``{"ok": false, "error": "one human line"}``. A connection may send any number of requests,
one at a time. Binary values (credential IDs, user IDs, COSE keys) are base64url without
padding. Each command takes the arguments listed below (declared where it is registered): an
argument it does not take is an error answer naming the ones it does (``unknown argument
'credentail_id' to credentials-remove (its arguments: id)``), as is a wrong type or value.

Clients: :class:`vfido.control.client.KeyController` (Python), ``vfido ctl ...`` (shell),
``vfido ui`` (browser).

Commands
========

``commands`` -> ``{"commands": [NAME, ...]}``
    What this key offers (a key without a presence broker has no ``pending``...).

``status`` -> ``{"version", "pid", "transport": "udp"|"uhid"|"unix", "udp": {"host", "port",
"peer_port"} | "hidraw", "serial" | "unix_socket", "name", "keystore", "presence",
"presence_delay", "presence_timeout", "pending": [REQUEST...], "behaviours": {NAME: VALUE}}``

``pending`` ``{"wait"?: seconds}`` -> ``{"pending": [REQUEST, ...]}``
    The requests waiting for the user; with ``wait``, waits up to that long for one.
    REQUEST is ``{"id", "kind", "action", "rp_id", "user_name", "question", "remaining"}``.

``approve`` / ``deny`` ``{"id"?: int, "wait"?: seconds}`` -> ``{"request": REQUEST,
"granted": bool}``
    Answer the pending request (the only one, or ``id``). Errors: ``no request is waiting
    for approval``, ``several requests are waiting (...)``, ``no pending request N``,
    ``request N was already answered``.

``presence-mode`` ``{"mode"?: MODE, "delay"?: seconds}`` -> ``{"mode", "delay", "modes":
[...], "initial"}``
    Without ``mode``: the current presence mode. With ``mode``: switch to it for the next
    requests: ``auto`` (approve, after ``delay``), ``deny``, ``deny-uv`` (presence granted,
    built-in UV fails), ``manual`` (only ``approve``/``deny``), ``notify`` (desktop
    notification), or the mode the key started with (``initial``, e.g. ``prompt``).
    Errors: a key without a presence broker; an unknown mode.

``credentials`` ``{"rp_id"?: str, "public_key"?: bool}`` -> ``{"credentials": [CRED, ...]}``
    The discoverable credentials (server-side credentials live in their ID only), newest
    first per RP. CRED is ``{"id", "rp_id", "rp_name", "user_id", "user_name",
    "user_display_name", "algorithm", "algorithm_name", "cred_protect", "sign_count",
    "created" (unix seconds), "discoverable": true, "backup_eligible", "backup_state"}``,
    plus ``"public_key_cose"`` (base64url CBOR) and ``"public_key_pem"`` with
    ``public_key``.

``credentials-add`` -> ``{"credential": CRED}`` (with ``public_key_cose``/``_pem``)
    Import (or create) a credential so a test can pre-seed an account. Arguments:
    ``rp_id`` (required); ``discoverable`` (default true); ``user_id`` (base64url, 1-64
    bytes, required when discoverable); ``user_name``, ``user_display_name``, ``rp_name``;
    the private key as ``private_key_pem`` (unencrypted PEM: EC P-256/384/521, Ed25519,
    RSA-2048) or ``private_key_cose`` (base64url CBOR COSE_Key with ``d``), else a new key of
    ``algorithm`` (``"ES256"``, ``"EdDSA"``, ``"ES384"``, ``"ES512"``, ``"RS256"`` or the COSE
    number; default ES256); ``cred_protect`` (1-3, default 1); ``sign_count`` (starting
    counter, default 0). The credential ID is sealed by this key, so only this key can use
    it; a discoverable credential replaces the one for the same RP and user ID, and CRED
    then has ``"replaced"``: the base64url ID of the credential it replaced. The
    private key never comes back. Errors: bad key or argument, the store is full.

``credentials-remove`` ``{"id": base64url or a unique prefix}`` -> ``{"removed": ID}``
    Delete a discoverable credential. Errors: none or several match.

``behaviours`` -> ``{"behaviours": [ITEM, ...], "active": {NAME: VALUE},
"misbehaviour_root_pem": PEM}``
    Scripted misbehaviour (:mod:`vfido.authenticator.behaviours`). Without arguments: every
    behaviour as ITEM ``{"name", "description", "type": "bool"|"int"|"number"|"choice"|
    "text", "choices"?, "value_help", "needs_builtin_uv", "enabled", "value"}`` (``value``: for
    a ``bool`` behaviour the same as ``enabled``, else its value or null when off).
    ``{"name": NAME, "value"?: VALUE}`` turns NAME on (``value`` absent, null or true: no
    value / the default; false: off). ``{"clear": true}`` turns every behaviour off,
    ``{"name": NAME, "clear": true}`` only NAME. The answer is the new state.
    ``misbehaviour_root_pem`` is the CA of the ``attestation=untrusted|expired``
    certificates. Errors: unknown name, bad value, ``uv-fail`` on a key without built-in UV.

``power-cycle`` -> ``{}``
    Unplug and replug the key: CTAPHID channels, PIN tokens and pending state are gone;
    the authenticatorReset window reopens. Credentials and behaviours stay.

``info`` -> ``{"info": {NAME: VALUE}}``
    authenticatorGetInfo as the host would see it (behaviours included), with CTAP names
    (``versions``, ``aaguid`` in hex, ``options``...). Errors: the key (as scripted) answers
    getInfo with an error; the key answers U2F only (:data:`U2F_ONLY`: it has no getInfo).

``metadata`` -> ``{"statement": {...} | null, "aaguid": hex, "credentials": N}``
    The key's FIDO MDS3 metadata statement (:mod:`vfido.metadata`, as ``vfido metadata``
    prints it) made from the running key's keystore, configuration and getInfo (null for a
    key that answers U2F only: vfido writes statements of FIDO2 keys), its AAGUID and how
    many discoverable credentials it holds: what ``vfido metadata`` and ``vfido info`` show
    for a running key (an ``--ephemeral`` one too).

``finger`` ``{"finger"?: NAME | "unknown" | null}`` -> ``{"finger": NAME | null,
"enrolled": [{"id": hex, "name": friendlyName, "finger": NAME}, ...]}``
    Only on a key with a fingerprint sensor (``vfido run --fingerprint``): the finger that
    touches the sensor next (:mod:`vfido.authenticator.bio_enrollment`): a name, ``"unknown"`` (a
    finger never enrolled) or null (auto). Without ``finger``: the current one. The answer
    lists the enrolled fingers. Error: a bad finger.

``log`` ``{"limit"?: int, "since"?: seq}`` -> ``{"records": [...], "last": seq}``
    Only on a key run with ``--trace`` (registered by :func:`vfido.trace.add_trace_commands`,
    which documents it): the most recent requests, responses and CTAPHID control packets,
    secrets redacted. Poll with ``since`` = the previous ``last``.

``lint`` ``{"clear"?: true}`` -> ``{"findings": [{"rule", "message", "reference"}, ...],
"origin"}``
    Only on a key run with ``--lint`` (:mod:`vfido.lint`): the relying-party lint's
    findings; ``clear`` also forgets them.

WebDriver virtual authenticators
================================
The W3C WebDriver extension's commands (WebAuthn Level 3 section 11) on this key, with its
names and JSON shapes (:mod:`vfido.virtual_authenticator` says how each maps onto vfido).
CREDENTIAL is the Credential Parameters object ``{"credentialId", "isResidentCredential",
"rpId", "privateKey" (base64url PKCS#8), "userHandle", "signCount", "largeBlob",
"backupEligibility", "backupState"}``. Errors are ``{"ok": false, "error", "webdriver_error"}``
with the WebDriver error code (``invalid argument``, ``unsupported operation``); an argument
that is not one of the command's is an ``invalid argument``.

``webauthn-authenticator`` -> ``{"options": OPTIONS}``
    The Add Virtual Authenticator options the key behaves as (``protocol``, ``transport``,
    ``hasResidentKey``, ``hasUserVerification``, ``isUserConsenting``, ``isUserVerified``,
    ``extensions``, ``defaultBackupEligibility``, ``defaultBackupState``).
``webauthn-add-credential`` CREDENTIAL -> ``{"credential": CREDENTIAL}`` (without ``privateKey``)
``webauthn-get-credentials`` -> ``{"credentials": [CREDENTIAL, ...]}``
``webauthn-remove-credential`` ``{"credentialId"}`` -> ``{}``
``webauthn-remove-all-credentials`` -> ``{}``
``webauthn-set-user-verified`` ``{"isUserVerified": bool}`` -> ``{}``
``webauthn-set-credential-properties`` ``{"credentialId", "backupEligibility"?,
"backupState"?}`` -> ``{}``

Adding a command: a handler ``handler(args: dict) -> dict`` (it runs on a control
connection's thread and raises :class:`vfido.control.server.CommandError` for an error
answer), registered with the names of its arguments (``server.register(NAME, handler,
accepts=(...))``; the server refuses any other) in its group below (:func:`add_key_commands`,
:func:`add_presence_commands`, :func:`add_webauthn_commands`; ``log``'s handler lives with the
recorder, :func:`vfido.trace.add_trace_commands`), and described above. The groups are put
together in one place, :func:`register_commands`, which every key's control socket uses
(:meth:`vfido.key.Key.control_server`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cbor2
from cryptography.hazmat.primitives import serialization

from vfido.authenticator import behaviours as beh
from vfido.authenticator.cose import ALGORITHM_NAMES, CredentialKey, UnsupportedAlgorithm
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import Presence
from vfido.authenticator.errors import CtapError
from vfido.authenticator.provisioning import (
    ProvisioningError,
    add_credential,
    key_from_cose,
    key_from_pem,
)
from vfido.authenticator.responses import GET_INFO_MEMBERS
from vfido.control.server import MAX_WAIT, CommandError, ControlServer, Handler
from vfido.credentials import CredentialLookupError, find_credential_id
from vfido.keystore.store import CredentialRecord, KeyStore, KeystoreError, KeystoreFull
from vfido.presence.broker import PresenceBroker
from vfido.presence.modes import RUNTIME_MODES
from vfido.safetext import is_utf8
from vfido.virtual_authenticator import AuthenticatorOptions

if TYPE_CHECKING:
    from vfido.lint import Linter
    from vfido.trace import TraceRecorder

log = logging.getLogger(__name__)

b64url = beh.b64url

#: What ``info`` says of a key that answers U2F only (a CTAP1 key has no getInfo).
U2F_ONLY = (
    "this key answers U2F only (the u2f persona, behaviour versions=U2F_V2): it has no "
    "authenticatorGetInfo; its U2F version is U2F_V2"
)


@dataclass
class KeyParts:
    """What the control commands act on: the parts of one running key."""

    device: Authenticator
    store: KeyStore
    presence: Presence
    #: The transport (for power-cycle: its runner resets CTAPHID too); None in-process.
    transport: object | None = None
    clock: Callable[[], float] | None = None
    #: The WebDriver options the key was made from (``vfido webdriver``; None: as it is).
    webauthn_options: AuthenticatorOptions | None = None


def _str_arg(args: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = args.get(name)
    if value is None:
        if required:
            raise CommandError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise CommandError(f"{name} must be a string")
    if not is_utf8(value):  # a lone surrogate (JSON "\\udcff"): stored, shown escaped
        raise CommandError(f"{name} is not UTF-8 text")
    return value


def _bool_arg(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise CommandError(f"{name} must be true or false")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CommandError(f"{name} must be an integer")
    return value


def _b64_arg(args: dict[str, Any], name: str) -> bytes | None:
    text = _str_arg(args, name)
    if text is None:
        return None
    try:
        return beh.b64url_decode(text)
    except ValueError:
        raise CommandError(f"{name} must be base64url") from None


def _algorithm(value: object) -> int:
    if value is None:
        return -7
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        for number, name in ALGORITHM_NAMES.items():
            if name.lower() == value.lower():
                return number
        try:
            return int(value)  # a COSE number, as `vfido ctl` passes every --alg: "-8"
        except ValueError:
            pass
    raise CommandError(
        f"unknown algorithm {str(value)[:20]!r}: a name ({', '.join(ALGORITHM_NAMES.values())}) "
        "or a COSE number"
    )


def _public(key: CredentialKey) -> dict[str, str]:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cose = cbor2.dumps(dict(key.cose_public_key()), canonical=True)
    return {"public_key_cose": b64url(cose), "public_key_pem": pem.decode()}


def describe_record(
    record: CredentialRecord, sign_count: int, public_key: bool = False
) -> dict[str, Any]:
    """A discoverable credential as the control API shows it (no secrets)."""
    result: dict[str, Any] = {
        "id": b64url(record.credential_id),
        "rp_id": record.rp_id,
        "rp_name": record.rp_name,
        "user_id": b64url(record.user_id),
        "user_name": record.user_name,
        "user_display_name": record.user_display_name,
        "algorithm": record.algorithm,
        "algorithm_name": ALGORITHM_NAMES.get(record.algorithm, str(record.algorithm)),
        "cred_protect": record.cred_protect,
        "sign_count": sign_count,
        "created": record.created,
        "discoverable": True,
        "backup_eligible": record.backup_eligible,
        "backup_state": record.backup_state,
    }
    if public_key:
        try:
            key = CredentialKey.from_private_bytes(record.algorithm, record.private_key)
        except (ValueError, UnsupportedAlgorithm):
            result["public_key_cose"] = result["public_key_pem"] = None
        else:
            result.update(_public(key))
    return result


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def add_key_commands(server: ControlServer, key: KeyParts) -> None:
    """Register the key's control commands (see the module docstring) on ``server``."""
    device, store = key.device, key.store
    behaviours = device.behaviours

    def now() -> float:
        return key.clock() if key.clock is not None else time.time()

    def credentials(args: dict[str, Any]) -> dict[str, Any]:
        rp_id = _str_arg(args, "rp_id")
        public_key = _bool_arg(args, "public_key", False)
        try:
            summaries = store.list_credentials()
        except KeystoreError as exc:
            raise CommandError(str(exc)) from None
        return {
            "credentials": [
                describe_record(s.record, s.sign_count, public_key)
                for s in summaries
                if rp_id is None or s.record.rp_id == rp_id
            ]
        }

    def credentials_add(args: dict[str, Any]) -> dict[str, Any]:
        rp_id = _str_arg(args, "rp_id", required=True)
        assert rp_id is not None
        if not rp_id.isprintable() or any(c.isspace() for c in rp_id):
            # An RP ID is a domain (or a name like "ssh:"): control characters, spaces and
            # bidi overrides are a typo or an attack on whoever lists the credentials.
            raise CommandError("rp_id must be printable, without spaces")
        pem = _str_arg(args, "private_key_pem")
        cose = _b64_arg(args, "private_key_cose")
        if pem is not None and cose is not None:
            raise CommandError("give private_key_pem or private_key_cose, not both")
        discoverable = _bool_arg(args, "discoverable", True)
        # The algorithm of a given private key is the key's; one named beside it must agree
        # (it used to be ignored: --alg ES256 with an Ed25519 key made an EdDSA credential).
        algorithm = _algorithm(args.get("algorithm"))  # ES256 when none is named
        named = args.get("algorithm") is not None
        try:
            if pem is not None:
                credential_key = key_from_pem(pem)
            elif cose is not None:
                try:
                    cose_map = cbor2.loads(cose)
                except Exception:  # cbor2 raises several types
                    raise CommandError("private_key_cose is not CBOR") from None
                if not isinstance(cose_map, dict):
                    raise CommandError("private_key_cose is not a COSE_Key map")
                credential_key = key_from_cose(cose_map)
            else:
                if algorithm not in device.config.algorithms:
                    raise CommandError(f"this key does not offer algorithm {algorithm}")
                credential_key = CredentialKey.generate(algorithm)
            if named and algorithm != credential_key.algorithm:
                raise CommandError(
                    f"the private key given is {ALGORITHM_NAMES.get(credential_key.algorithm)}, "
                    f"not {ALGORITHM_NAMES.get(algorithm, algorithm)}: name no algorithm with a "
                    "private key"
                )
            made = add_credential(
                store,
                credential_key,
                rp_id,
                now=now(),
                discoverable=discoverable,
                user_id=_b64_arg(args, "user_id"),
                user_name=_str_arg(args, "user_name"),
                user_display_name=_str_arg(args, "user_display_name"),
                rp_name=_str_arg(args, "rp_name"),
                cred_protect=_int_arg(args, "cred_protect", 1),
                sign_count=_int_arg(args, "sign_count", 0),
                max_resident_credentials=device.config.max_resident_credentials,
                default_backup_state=device.config.default_backup_state,
            )
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None
        except KeystoreFull as exc:
            raise CommandError(f"the keystore is full: {exc}") from None
        except KeystoreError as exc:
            raise CommandError(str(exc)) from None
        if made.discoverable:
            record = store.get_credential(made.credential_id)
            assert record is not None
            result = describe_record(record, made.sign_count, public_key=True)
        else:
            result = {
                "id": b64url(made.credential_id),
                "rp_id": rp_id,
                "algorithm": made.algorithm,
                "algorithm_name": ALGORITHM_NAMES.get(made.algorithm, str(made.algorithm)),
                "sign_count": made.sign_count,
                "discoverable": False,
                **_public(made.key),
            }
        if made.replaced is not None:
            result["replaced"] = b64url(made.replaced)
        log.info(
            "control: added a %s credential for %s%s",
            "discoverable" if made.discoverable else "server-side",
            rp_id,
            " (it replaces the one for that user)" if made.replaced is not None else "",
        )
        return {"credential": result}

    def credentials_remove(args: dict[str, Any]) -> dict[str, Any]:
        wanted = _str_arg(args, "id", required=True)
        assert wanted is not None
        try:
            credential_id = find_credential_id(store, wanted)
        except CredentialLookupError as exc:
            raise CommandError(str(exc)) from None
        store.delete_credential(credential_id)
        log.info("control: removed a credential")
        return {"removed": b64url(credential_id)}

    def presence_mode(args: dict[str, Any]) -> dict[str, Any]:
        broker = key.presence
        if not isinstance(broker, PresenceBroker):
            raise CommandError("this key's presence mode cannot be switched")
        mode = _str_arg(args, "mode")
        delay = args.get("delay")
        # Its range (nan and inf too, which Python's JSON reads) is front_ends_for's rule.
        if delay is not None and (not isinstance(delay, int | float) or isinstance(delay, bool)):
            raise CommandError("delay must be a number of seconds")
        if delay is not None and mode is None:
            raise CommandError("delay is given with a mode (auto)")
        if mode is not None:
            try:
                broker.set_mode(mode, None if delay is None else float(delay))
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        initial = broker.initial_mode
        modes = list(RUNTIME_MODES) + ([initial] if initial not in RUNTIME_MODES else [])
        return {"mode": broker.mode, "delay": broker.delay, "modes": modes, "initial": initial}

    def behaviours_command(args: dict[str, Any]) -> dict[str, Any]:
        name = _str_arg(args, "name")
        clear = _bool_arg(args, "clear", False)
        try:
            if clear:
                behaviours.clear(name)
            elif name is not None:
                value = args.get("value")
                if value is False:
                    behaviours.clear(name)
                else:
                    if not isinstance(value, str | int | float | bool | None):
                        raise CommandError("value must be a string, number or boolean")
                    behaviours.set(name, value)
                log.info("control: behaviours now %s", sorted(behaviours.active()))
        except beh.BehaviourError as exc:
            raise CommandError(str(exc)) from None
        settings = behaviours.current()
        root = beh.misbehaviour_root()
        from cryptography import x509

        root_pem = x509.load_der_x509_certificate(root).public_bytes(serialization.Encoding.PEM)
        return {
            "behaviours": beh.describe_catalogue(settings),
            "active": behaviours.active(),
            "misbehaviour_root_pem": root_pem.decode(),
        }

    def power_cycle(args: dict[str, Any]) -> dict[str, Any]:
        runner = getattr(key.transport, "runner", None) if key.transport is not None else None
        if runner is not None and callable(getattr(runner, "power_cycle", None)):
            runner.power_cycle()  # CTAPHID state and the device
        else:
            device.power_cycle()
        log.info("control: power cycle")
        return {}

    def finger(args: dict[str, Any]) -> dict[str, Any]:
        """The finger on the simulated fingerprint sensor (authenticator.bio_enrollment)."""
        if "finger" in args:
            placed = args["finger"]
            if placed is not None and (not isinstance(placed, str) or not placed):
                raise CommandError("finger must be a name, 'unknown', or null (auto)")
            if placed is not None and not is_utf8(placed):
                raise CommandError("finger is not UTF-8 text")
            device.sensor.place(placed)
            log.info("control: finger placed")
        return {
            "finger": device.sensor.finger,
            "enrolled": [
                {"id": t.template_id.hex(), "name": t.friendly_name, "finger": t.finger}
                for t in device.fingerprints.all()
            ],
        }

    def get_info() -> dict[int, Any] | None:
        """getInfo as a host would get it now; None for a key that answers U2F only (the
        ``versions`` behaviour, the u2f persona): such a key has no getInfo to give."""
        if device.answers_u2f_only:
            return None
        try:
            return device.info()
        except CtapError as exc:
            raise CommandError(f"getInfo answers CTAP error 0x{exc.status:02x}") from None

    def info(args: dict[str, Any]) -> dict[str, Any]:
        decoded = get_info()
        if decoded is None:
            raise CommandError(U2F_ONLY)
        named = {GET_INFO_MEMBERS.get(k, str(k)): _json_value(v) for k, v in decoded.items()}
        return {"info": named}

    add_webauthn_commands(server, key)
    server.register("credentials", credentials, accepts=("rp_id", "public_key"))
    server.register(
        "credentials-add",
        credentials_add,
        accepts=(
            *("rp_id", "discoverable", "user_id", "user_name", "user_display_name", "rp_name"),
            *("private_key_pem", "private_key_cose", "algorithm", "cred_protect", "sign_count"),
        ),
    )
    server.register("credentials-remove", credentials_remove, accepts=("id",))
    server.register("presence-mode", presence_mode, accepts=("mode", "delay"))
    server.register("behaviours", behaviours_command, accepts=("name", "value", "clear"))
    server.register("power-cycle", power_cycle, accepts=())
    server.register("info", info, accepts=())

    def metadata(args: dict[str, Any]) -> dict[str, Any]:
        from vfido.metadata import metadata_statement

        decoded = get_info()
        statement = (
            None if decoded is None else metadata_statement(key.store, device.config, decoded)
        )
        return {
            "statement": statement,  # None: U2F only (vfido writes statements of FIDO2 keys)
            "aaguid": key.store.identity().aaguid.hex(),
            "credentials": key.store.count_credentials(),
        }

    server.register("metadata", metadata, accepts=())
    if device.config.fingerprint:
        server.register("finger", finger, accepts=("finger",))
    else:
        server.lacks("finger", "this key has no fingerprint sensor: run it with --fingerprint")


def add_webauthn_commands(server: ControlServer, key: KeyParts) -> None:
    """Register the ``webauthn-*`` commands (see the module docstring) on ``server``."""
    from vfido import virtual_authenticator as va

    def wrap(
        func: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def handler(args: dict[str, Any]) -> dict[str, Any]:
            try:
                return func(args)
            except va.WebAuthnError as exc:
                raise CommandError(str(exc), webdriver_error=exc.code) from None

        return handler

    def credential_id(args: dict[str, Any]) -> bytes:
        return va.b64url_decode("credentialId", args.get("credentialId"))

    def now() -> float:
        return key.clock() if key.clock is not None else time.time()

    def remove(args: dict[str, Any]) -> dict[str, Any]:
        va.remove_credential(key, credential_id(args))
        return {}

    def remove_all(args: dict[str, Any]) -> dict[str, Any]:
        va.remove_all_credentials(key)
        return {}

    def user_verified(args: dict[str, Any]) -> dict[str, Any]:
        va.set_user_verified(key, args.get("isUserVerified"))
        return {}

    def properties(args: dict[str, Any]) -> dict[str, Any]:
        va.set_credential_properties(key, credential_id(args), args)
        return {}

    # Each command, its handler and the names of its arguments (the Credential Parameters').
    commands: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], tuple[str, ...]]] = {
        "webauthn-authenticator": (lambda a: {"options": va.options_of(key).to_json()}, ()),
        "webauthn-add-credential": (
            lambda a: {"credential": va.add_credential(key, a, now())},
            (
                *("credentialId", "isResidentCredential", "rpId", "privateKey", "userHandle"),
                *("signCount", "largeBlob", "backupEligibility", "backupState"),
            ),
        ),
        "webauthn-get-credentials": (lambda a: {"credentials": va.get_credentials(key)}, ()),
        "webauthn-remove-credential": (remove, ("credentialId",)),
        "webauthn-remove-all-credentials": (remove_all, ()),
        "webauthn-set-user-verified": (user_verified, ("isUserVerified",)),
        "webauthn-set-credential-properties": (
            properties,
            ("credentialId", "backupEligibility", "backupState"),
        ),
    }
    for name, (func, accepts) in commands.items():
        server.register(name, wrap(func), accepts=accepts, webdriver_error=va.INVALID_ARGUMENT)


# --- presence commands ------------------------------------------------------------------


def _wait_arg(args: dict[str, Any]) -> float:
    wait = args.get("wait", 0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise CommandError(f"wait must be a number of seconds between 0 and {MAX_WAIT:.0f}")
    return float(wait)


def add_presence_commands(server: ControlServer, broker: PresenceBroker) -> None:
    """``pending``, ``approve`` and ``deny`` for the requests of ``broker``."""

    def pending(args: dict[str, Any]) -> dict[str, Any]:
        wait = _wait_arg(args)
        items = broker.wait_pending(wait) if wait else broker.pending()
        return {"pending": [p.describe() for p in items]}

    def answerer(granted: bool) -> Handler:
        def handler(args: dict[str, Any]) -> dict[str, Any]:
            wait = _wait_arg(args)
            request_id = args.get("id")
            if request_id is not None and (
                not isinstance(request_id, int) or isinstance(request_id, bool)
            ):
                raise CommandError("id must be an integer")
            if wait:
                broker.wait_pending(wait)
            try:
                answered = broker.answer(granted, request_id, "control socket")
            except LookupError as exc:
                raise CommandError(str(exc)) from None
            return {"request": answered.describe(), "granted": granted}

        return handler

    server.register("pending", pending, accepts=("wait",))
    server.register("approve", answerer(True), accepts=("id", "wait"))
    server.register("deny", answerer(False), accepts=("id", "wait"))


# --- the whole command set, in one place -----------------------------------------------


def register_commands(
    server: ControlServer,
    key: KeyParts,
    status: Callable[[], dict[str, Any]],
    trace: TraceRecorder | None = None,
    linter: Linter | None = None,
) -> None:
    """Register every command of a key's control socket on ``server``: ``status`` (answered
    by ``status()``), the presence commands when the key's presence is a broker, the key's
    and the WebDriver commands, ``log`` with a ``trace`` recorder and ``lint`` with a
    relying-party ``linter`` (``commands`` comes with the server)."""
    server.register("status", lambda _args: status(), accepts=())
    if isinstance(key.presence, PresenceBroker):
        add_presence_commands(server, key.presence)
    add_key_commands(server, key)
    if trace is not None:
        from vfido.trace import add_trace_commands

        add_trace_commands(server, trace)
    else:
        server.lacks("log", "this key records no trace: run it with --trace FILE")
    if linter is not None:
        from vfido.lint import control_command

        # ``lint``: the relying-party lint's findings (see :mod:`vfido.lint`);
        # ``{"clear": true}`` also forgets them.
        lint = control_command(linter)
        server.register(
            "lint", lambda args: lint(_bool_arg(args, "clear", False)), accepts=("clear",)
        )
    else:
        server.lacks("lint", "this key does not lint relying parties: run it with --lint")
