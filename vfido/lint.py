"""A relying-party lint: what the key can tell an RP developer from the requests it sees.

Everything a relying party asks for passes through the key as a CTAP request, so the key
can flag what the WebAuthn and CTAP specifications warn against: a reused challenge, a
user handle that carries the user's e-mail address, a registration that forgets the
excludeList... Each rule is in :data:`RULES` with its reason and reference.

The :class:`Linter` is sans-IO: feed it each CTAP2 request and its response
(:meth:`Linter.observe`); it keeps a little state (what getInfo said, which users it saw
registered, which clientDataHashes ceremonies used) and collects :class:`Finding` s. It
costs nothing when off: a key only gets a :class:`LintingHandler` in front of its
authenticator when asked (``VirtualKey(lint=True)``, ``vfido run --lint``), and then reads
findings with :meth:`VirtualKey.lint`, ``vfido ctl lint`` or the ``vfido_lint_key``
pytest fixture, which fails the test on findings.

Findings quote what the RP sent (RP IDs, user names): RP-controlled text. ``str(finding)``
escapes it (:func:`vfido.safetext.visible`); the JSON form keeps it raw for programs.

What the key cannot see it cannot lint: the challenge itself (only the hash of the client
data, which also covers the origin and the ceremony type, so a challenge reused for a
registration and a sign-in is not caught), the RP's server-side checks, attestation
conveyance (the platform strips it). python-fido2 and browsers probe long allow/exclude
lists in chunks with ``up=false`` and stop at the first chunk that matches, so an
over-long list is only caught when the probing reaches past the key's maximum.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vfido.authenticator import cbor
from vfido.safetext import shorten, visible
from vfido.transports.handler import CtapHandler, Transaction, WrappedHandler

log = logging.getLogger(__name__)

__all__ = ["RULES", "Finding", "Linter", "LintingHandler", "Rule", "format_findings"]

_MAKE_CREDENTIAL = 0x01
_GET_ASSERTION = 0x02
_GET_INFO = 0x04
_RESET = 0x07
#: python-fido2 and browsers probe allow/exclude lists with this clientDataHash (up=false).
_PROBE_HASH = b"\x00" * 32
#: CTAP 2.1 section 6.1 (PublicKeyCredentialUserEntity): authenticators may truncate
#: name and displayName to 64 bytes.
_NAME_LIMIT = 64
#: At most this many findings are kept (the RP controls how many it triggers).
MAX_FINDINGS = 1000
#: Users remembered for exclude-list-missing and user-handle-shared (an RP cannot grow the
#: key's memory without bound).
MAX_USERS = 100_000
#: The RSA COSE algorithms (RS256/384/512, PS256/384/512, RS1): most security keys have none.
_RSA_ALGORITHMS = frozenset({-257, -258, -259, -37, -38, -39, -65535})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_USERNAME = re.compile(r"[A-Za-z0-9._+\-@]{1,64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{32,}")  # 16 bytes or more
#: base64, base64url and base32 text of about 16 bytes or more (nanoid's 21 characters
#: carry 126 bits; base32 pads with up to six "=").
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9_\-+/]{21,}={0,6}")
#: 13-19 digits set off from letters and digits: a card or account number inside a handle
#: (``acct-4111111111111111``); not a run inside random hex or base64, which is no number.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9]{13,19}(?![0-9A-Za-z])")
_WORD = re.compile(r"[^\W_]{4,}")
_HEX_LETTERS = frozenset("0123456789abcdefABCDEF")


def _random_token(text: str, names: Iterable[object] = ()) -> bool:
    """Whether ``text`` reads as an identifier made of about 16 random bytes or more (a UUID,
    hex with letters in it, base64, base64url or base32 text: ``secrets.token_urlsafe``, a
    ULID, a nanoid), which carries no personal data: relying parties (Keycloak's UUIDs) store
    their random handles so. Not when a word of the user's ``names`` is in it
    (``JohnSmithBerlin19850312`` for John Smith), nor digits alone (a card or account
    number).

    Nothing else decides: text in a token's alphabet and length could be random however it
    reads (0.45 % of 16-byte values in base32 have no digit; 2.6 % of ``token_urlsafe(16)``
    lack a digit, a capital or a small letter, which an earlier rule called readable, so
    correct relying parties failed ``vfido_lint_key`` at random). So readable text that
    names none of the user's names (``MaryJaneWatsonNewYork`` for "jdoe") passes: the key
    cannot tell it from random letters. Only text without a letter (``+49-151-2345-6789``)
    or with a number of 13-19 digits set off by separators (a card number:
    ``acct-4111111111111111``) is not random.
    A word of the names counts from 4 letters, one beyond hex among them ("Lee" and "Abe"
    do not: random text holds them too often)."""
    if _UUID.fullmatch(text):
        return True
    if _HEX_TOKEN.fullmatch(text):  # hex holds no name: only digits (an account number)?
        return any(c in "abcdefABCDEF" for c in text)
    folded = text.casefold()
    for name in names:
        if not isinstance(name, str):
            continue
        for word in _WORD.findall(name):
            # A word with a letter beyond hex ("Lovelace", not "Abe" nor "1234"): random
            # text holds such a word by chance about never.
            if not set(word) <= _HEX_LETTERS and word.casefold() in folded:
                return False
    if not _BASE64_TOKEN.fullmatch(text) or not any(c.isalpha() for c in text):
        return False  # no letter at all: a phone, card or account number, a date
    return _DIGIT_RUN.search(text) is None


@dataclass(frozen=True)
class Rule:
    """A lint rule: its id, what it flags, why, and where the specification says so."""

    id: str
    summary: str
    reason: str
    reference: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "challenge-reuse",
            "two ceremonies used the same clientDataHash (the same challenge)",
            "a challenge must be fresh for every ceremony, or a recorded response can be "
            "replayed; the RP must generate at least 16 random bytes per ceremony",
            "WebAuthn L3 section 13.4.3 (Cryptographic Challenges)",
        ),
        Rule(
            "user-handle-pii",
            "user.id looks like an e-mail address, a user name or other readable text",
            "the user handle is stored on the authenticator and returned without user "
            "verification; it must not contain personally identifying information and "
            "should be 64 random bytes",
            "WebAuthn L3 section 14.6.1 (User Handle Contents), section 5.4.3 (user.id)",
        ),
        Rule(
            "user-handle-shared",
            "the same user.id was registered under two different user names",
            "the user handle identifies one user account; two accounts with one handle let "
            "a discoverable credential of one sign in to the other",
            "WebAuthn L3 section 5.4.3 (user.id) and section 6.1 (user handle)",
        ),
        Rule(
            "exclude-list-missing",
            "a registration for a user who already has a credential on this key came "
            "without an excludeList",
            "without excludeCredentials the user ends up with several credentials on one "
            "authenticator (a discoverable one overwrites the previous one)",
            "WebAuthn L3 section 5.4 (excludeCredentials); CTAP 2.1 section 6.1.2 step 6",
        ),
        Rule(
            "discoverable-without-uv",
            "residentKey required with userVerification discouraged",
            "a discoverable credential signs in without a user name, so user verification "
            "is the only factor beyond possession; CTAP 2.1 keys with a PIN refuse it "
            "(PUAT_REQUIRED) and browsers then ask for the PIN anyway",
            "WebAuthn L3 section 5.4.6 and 6.2.2 (passkeys need UV); CTAP 2.1 section 6.1.2 step 7",
        ),
        Rule(
            "list-too-long",
            "an allowList or excludeList longer than the key's maxCredentialCountInList",
            "the platform must split the list into several probing requests (slow, and "
            "each one may ask for a touch); keep lists to the user's credentials",
            "CTAP 2.1 section 6.4 (maxCredentialCountInList) and 6.2.2",
        ),
        Rule(
            "rs256-only",
            "pubKeyCredParams offers RSA algorithms only (RS256, PS256, ...)",
            "most security keys implement ES256 and EdDSA but no RSA: they refuse the "
            "registration; offer -8, -7 and -257",
            "WebAuthn L3 section 5.4 (pubKeyCredParams: RPs SHOULD include -8, -7, -257)",
        ),
        Rule(
            "rp-id-origin-mismatch",
            "the RP ID is not the origin's effective domain or a registrable suffix of it",
            "a client accepts such an RP ID only through related origin requests: if it "
            "supports them and https://RP-ID/.well-known/webauthn lists the origin; others "
            "refuse it (SecurityError). Relying on related origins? Leave the origin out "
            "of the lint",
            "WebAuthn L3 section 5.1.3 step 8, 5.1.4.1 step 7 and 5.11 (related origins)",
        ),
        Rule(
            "user-name-truncated",
            "user.name or user.displayName longer than 64 bytes",
            "authenticators may truncate them to 64 bytes (cutting a UTF-8 character), so "
            "account pickers show something the RP did not send",
            "CTAP 2.1 section 6.1 (PublicKeyCredentialUserEntity); WebAuthn L3 5.4.3",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One thing the RP got wrong. ``message`` quotes RP-controlled text: print ``str()``."""

    rule: str
    message: str

    @property
    def reference(self) -> str:
        return RULES[self.rule].reference

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message, "reference": self.reference}

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Finding:
        rule, message = str(item.get("rule")), str(item.get("message"))
        if rule not in RULES:
            raise ValueError(f"unknown lint rule {visible(shorten(rule, 40))}")
        return cls(rule, message)

    def __str__(self) -> str:
        return visible(f"{self.rule}: {self.message} [{self.reference}]")


def format_findings(findings: Iterable[Finding]) -> str:
    """Findings one per line, escaped for a terminal ("no findings" when none)."""
    lines = [str(f) for f in findings]
    return "\n".join(lines) if lines else "no findings"


def _quote(value: object, limit: int = 60, *, site: bool = False) -> str:
    """An RP-controlled value for a message (kept raw; escaped when printed). ``site``: an RP
    ID or origin, cut at its start (its end says whose it is)."""
    if isinstance(value, bytes):
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return value[:limit].hex()
        return repr(shorten(text, limit, keep_end=site))
    return repr(shorten(str(value), limit, keep_end=site))


def _site(value: object) -> str:
    """An RP ID or an origin, quoted for a message: :func:`_quote` keeping its end."""
    return _quote(value, site=True)


def _map(value: object) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text_handle(user_id: bytes) -> str | None:
    """``user_id`` as text if it is mostly readable UTF-8 text (random bytes almost never
    decode as UTF-8: 32 of them with a chance below 10^-9)."""
    try:
        text = user_id.decode()
    except UnicodeDecodeError:
        return None
    readable = sum(c.isprintable() for c in text)
    return text if text and readable * 2 > len(text) else None


def _same_site(rp_id: str, origin: str) -> bool:
    """WebAuthn's RP ID check (without the public suffix list): the origin is https (or
    http on localhost) and its host is the RP ID or a subdomain of it."""
    parts = urlsplit(origin)
    host = (parts.hostname or "").lower()
    rp_id = rp_id.lower()
    if parts.scheme != "https" and not (parts.scheme == "http" and host == "localhost"):
        return False
    return bool(host) and (host == rp_id or host.endswith("." + rp_id))


class Linter:
    """The rule engine (sans-IO): :meth:`observe` every CTAP2 request with its response."""

    def __init__(self, origin: str | None = None) -> None:
        #: The origin the RP's pages are served from, if the caller knows it (enables
        #: rp-id-origin-mismatch).
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                # Anything else would make every RP ID a mismatch.
                raise ValueError(f"{origin!r} is not an origin (like https://example.com)")
        self.origin = origin
        self._lock = threading.Lock()
        self._findings: OrderedDict[Finding, None] = OrderedDict()
        self._max_list: int | None = None
        self._uv_capable = False
        self._ceremonies: dict[bytes, str] = {}  # clientDataHash -> first ceremony
        self._users: dict[tuple[str, bytes], str | None] = {}  # (rp, user.id) -> name
        self._probe_rp: str | None = None
        self._probe_ids: set[bytes] = set()

    def __repr__(self) -> str:
        return f"Linter({len(self._findings)} findings)"

    # -- reading ----------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        with self._lock:
            return list(self._findings)

    def clear(self) -> None:
        """Forget the findings (the state about the key and its users stays)."""
        with self._lock:
            self._findings.clear()

    def wrap(self, handler: CtapHandler) -> LintingHandler:
        """``handler`` with every CTAP2 request and response observed by this linter."""
        return LintingHandler(handler, self)

    # -- feeding ----------------------------------------------------------------------

    def observe(self, request: bytes, response: bytes) -> None:
        """One CTAP2 request (command byte + CBOR) and the key's response (status + CBOR).
        Requests the key could not decode are the key's business, not the lint's."""
        if not request:
            return
        status = response[0] if response else None
        try:
            params = cbor.decode(request[1:]) if len(request) > 1 else {}
        except Exception:
            return
        if not isinstance(params, dict):
            return
        with self._lock:
            command = request[0]
            if command == _GET_INFO and status == 0:
                self._observe_info(response[1:])
            elif command == _MAKE_CREDENTIAL:
                self._observe_make_credential(params, status == 0)
            elif command == _GET_ASSERTION:
                self._observe_get_assertion(params, status == 0)
            elif command == _RESET and status == 0:
                self._users.clear()

    def _find(self, rule: str, message: str) -> None:
        assert rule in RULES
        if len(self._findings) < MAX_FINDINGS:
            self._findings[Finding(rule, message)] = None

    def _observe_info(self, body: bytes) -> None:
        try:
            info = cbor.decode(body)
        except Exception:
            return
        if not isinstance(info, dict):
            return
        options = info.get(0x04)
        if isinstance(options, dict):
            self._uv_capable = options.get("uv") is True or options.get("clientPin") is True
        maximum = info.get(0x07)
        self._max_list = maximum if isinstance(maximum, int) and maximum > 0 else None

    def _check_list(self, rp_id: str, name: str, items: list[Any]) -> None:
        if self._max_list is not None and len(items) > self._max_list:
            self._find(
                "list-too-long",
                f"{name} of {len(items)} credentials for {_site(rp_id)}; the key takes "
                f"{self._max_list}",
            )

    def _probe(self, rp_id: str, items: list[Any]) -> None:
        """An up=false probe of a list chunk: count the IDs probed in this ceremony."""
        if rp_id != self._probe_rp:
            self._probe_rp, self._probe_ids = rp_id, set()
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), bytes):
                self._probe_ids.add(item["id"])
        if self._max_list is not None and len(self._probe_ids) > self._max_list:
            self._find(
                "list-too-long",
                f"the platform probed more than {self._max_list} credentials for "
                f"{_site(rp_id)} in one ceremony (the key takes {self._max_list} per list)",
            )

    def _ceremony(self, client_data_hash: object, what: str) -> None:
        """A ceremony the key answered: its clientDataHash must be new."""
        if not isinstance(client_data_hash, bytes) or client_data_hash == _PROBE_HASH:
            return
        first = self._ceremonies.get(client_data_hash)
        if first is not None:
            self._find(
                "challenge-reuse",
                f"{what} used the clientDataHash of an earlier {first} "
                f"({client_data_hash[:8].hex()}...): the RP reused a challenge",
            )
        elif len(self._ceremonies) < 100_000:
            self._ceremonies[client_data_hash] = what

    def _check_origin(self, rp_id: str) -> None:
        if self.origin is not None and not _same_site(rp_id, self.origin):
            self._find(
                "rp-id-origin-mismatch",
                f"RP ID {_site(rp_id)} is not valid for origin {_site(self.origin)}",
            )

    def _observe_make_credential(self, p: dict[Any, Any], ok: bool) -> None:
        rp = _map(p.get(0x02))
        user = _map(p.get(0x03))
        rp_id, user_id = rp.get("id"), user.get("id")
        if not isinstance(rp_id, str) or not isinstance(user_id, bytes):
            return
        if p.get(0x08) == b"":
            return  # a "touch to select" probe (CTAP 2.1 section 6.1.2 step 1), not the RP's
        probed = self._probe_rp == rp_id
        self._probe_rp, self._probe_ids = None, set()
        name = user.get("name")
        # user-handle-pii / user-handle-shared
        text = _text_handle(user_id)
        names = (name, user.get("displayName"))
        if text is not None and (text in names or not _random_token(text, names)):
            if _EMAIL.fullmatch(text):
                kind = "an e-mail address"
            elif text in (name, user.get("displayName")):
                kind = "the user name"
            elif _USERNAME.fullmatch(text):
                kind = "a readable user name"
            else:
                kind = "readable text"
            self._find(
                "user-handle-pii",
                f"user.id {_quote(user_id)} for {_site(rp_id)} is {kind}, not random bytes",
            )
        known = (rp_id, user_id) in self._users
        previous = self._users.get((rp_id, user_id))
        if known and previous is not None and isinstance(name, str) and name != previous:
            self._find(
                "user-handle-shared",
                f"user.id {_quote(user_id)} of {_site(rp_id)} was registered for "
                f"{_quote(previous)} and now for {_quote(name)}",
            )
        # user-name-truncated
        for field in ("name", "displayName"):
            value = user.get(field)
            if isinstance(value, str) and len(value.encode()) > _NAME_LIMIT:
                self._find(
                    "user-name-truncated",
                    f"user.{field} {_quote(value)} for {_site(rp_id)} has "
                    f"{len(value.encode())} bytes",
                )
        # exclude-list-missing / list-too-long
        exclude = _list(p.get(0x05))
        if known and not exclude and not probed:
            self._find(
                "exclude-list-missing",
                f"registration for user.id {_quote(user_id)} of {_site(rp_id)}, who already "
                "has a credential on this key, without excludeCredentials",
            )
        self._check_list(rp_id, "excludeList", exclude)
        # rs256-only
        params = _list(p.get(0x04))
        algorithms = {
            item["alg"]
            for item in params
            if isinstance(item, dict) and type(item.get("alg")) is int
        }
        if algorithms and algorithms <= _RSA_ALGORITHMS:
            offered = ", ".join(str(a) for a in sorted(algorithms, reverse=True))
            self._find("rs256-only", f"registration for {_site(rp_id)} offers only RSA ({offered})")
        # discoverable-without-uv
        options = _map(p.get(0x07))
        if (
            options.get("rk") is True
            and options.get("uv") is not True
            and p.get(0x08) is None
            and self._uv_capable
        ):
            self._find(
                "discoverable-without-uv",
                f"discoverable credential for {_site(rp_id)} requested without user "
                "verification from a key that can verify the user",
            )
        self._check_origin(rp_id)
        if ok:
            self._ceremony(p.get(0x01), "registration")
            if known or len(self._users) < MAX_USERS:  # bounded, like the ceremonies
                self._users[(rp_id, user_id)] = name if isinstance(name, str) else None

    def _observe_get_assertion(self, p: dict[Any, Any], ok: bool) -> None:
        rp_id = p.get(0x01)
        if not isinstance(rp_id, str):
            return
        allow = _list(p.get(0x03))
        options = _map(p.get(0x05))
        self._check_list(rp_id, "allowList", allow)
        if options.get("up") is False:
            self._probe(rp_id, allow)
            return
        self._probe_rp, self._probe_ids = None, set()
        self._check_origin(rp_id)
        if ok:
            self._ceremony(p.get(0x02), "sign-in")


class LintingHandler(WrappedHandler):
    """A :class:`CtapHandler` that shows every CTAP2 request and response to a
    :class:`Linter` (after the key answered: the lint never delays or changes an answer)."""

    def __init__(self, inner: CtapHandler, linter: Linter) -> None:
        super().__init__(inner)
        self.linter = linter

    def handle_cbor(self, request: bytes, transaction: Transaction) -> bytes:
        response = self.inner.handle_cbor(request, transaction)
        try:
            self.linter.observe(bytes(request), response)
        except Exception as exc:  # a lint bug must never break the key
            log.error("lint: observing a request failed (%s)", type(exc).__name__)
        return response


def control_command(linter: Linter) -> Callable[[bool], dict[str, Any]]:
    """The ``lint`` control command's answer: the findings (and, ``clear``, forget them);
    its argument is checked where every control command's are (vfido.control.commands)."""

    def lint(clear: bool) -> dict[str, Any]:
        findings = linter.findings()
        if clear:
            linter.clear()
        return {"findings": [f.to_json() for f in findings], "origin": linter.origin}

    return lint
