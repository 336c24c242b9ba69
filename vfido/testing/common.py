"""What the toolkit's keys share: their errors, the credential and pending-request records
they return, and opening a UHID key's hidraw node."""

from __future__ import annotations

import datetime
import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from fido2.hid import CtapHidDevice
from fido2.utils import websafe_decode

from vfido.authenticator.cose import CredentialKey
from vfido.keystore.store import CredentialSummary
from vfido.presence.modes import TOOLKIT_MODES
from vfido.transport_kinds import TOOLKIT_KINDS

if TYPE_CHECKING:
    pass


#: Presence modes a key run from Python can use (the interactive ``prompt`` / ``notify`` of
#: ``vfido run`` make no sense in a test; the registry :data:`vfido.presence.modes.MODES`).
#: ``manual``: answer with :meth:`VirtualKey.approve` / :meth:`VirtualKey.deny`.
PRESENCE_MODES: Final = TOOLKIT_MODES
#: ``VirtualKey(transport=...)``: the kinds of the transport registry a key in this process runs.
TRANSPORTS: Final = TOOLKIT_KINDS
DEFAULT_ORIGIN: Final = "https://example.com"
#: Seconds to wait for the kernel to create the hidraw node of a UHID key.
HIDRAW_TIMEOUT: Final = 10.0

_serials = itertools.count(1)


class VirtualKeyError(RuntimeError):
    """The key could not be started (bad options, no keystore, UHID unavailable...)."""


@dataclass(frozen=True)
class Credential:
    """A discoverable credential held by the key (``key.credentials()``).

    Server-side (non-discoverable) credentials are not listed: the key keeps nothing for them,
    their private key travels sealed inside the credential ID.
    """

    credential_id: bytes
    rp_id: str
    user_id: bytes
    user_name: str | None
    user_display_name: str | None
    rp_name: str | None
    #: COSE algorithm identifier (-7 ES256, -8 EdDSA, -35 ES384, -36 ES512, -257 RS256...).
    algorithm: int
    #: The COSE_Key of the credential's public key (integer keys, as an RP stores it).
    public_key: dict[int, Any] = field(repr=False, hash=False, compare=False)
    #: The signature counter the next assertion will exceed.
    sign_count: int
    created: datetime.datetime
    #: credProtect level (1: userVerificationOptional ... 3: userVerificationRequired).
    cred_protect: int = 1
    backup_eligible: bool = False
    backup_state: bool = False

    @classmethod
    def from_summary(cls, summary: CredentialSummary) -> Credential:
        r = summary.record
        public = CredentialKey.from_private_bytes(r.algorithm, r.private_key).cose_public_key()
        return cls(
            credential_id=r.credential_id,
            rp_id=r.rp_id,
            user_id=r.user_id,
            user_name=r.user_name,
            user_display_name=r.user_display_name,
            rp_name=r.rp_name,
            algorithm=r.algorithm,
            public_key=dict(public),
            sign_count=summary.sign_count,
            created=datetime.datetime.fromtimestamp(r.created, datetime.UTC),
            cred_protect=r.cred_protect,
            backup_eligible=r.backup_eligible,
            backup_state=r.backup_state,
        )

    @classmethod
    def from_control(cls, item: Mapping[str, Any]) -> Credential:
        """From the control socket's ``credentials`` answer (with ``public_key``)."""
        import cbor2

        cose = item.get("public_key_cose")
        return cls(
            credential_id=websafe_decode(item["id"]),
            rp_id=item["rp_id"],
            user_id=websafe_decode(item["user_id"]),
            user_name=item.get("user_name"),
            user_display_name=item.get("user_display_name"),
            rp_name=item.get("rp_name"),
            algorithm=int(item["algorithm"]),
            public_key=dict(cbor2.loads(websafe_decode(cose))) if cose else {},
            sign_count=int(item["sign_count"]),
            created=datetime.datetime.fromtimestamp(int(item["created"]), datetime.UTC),
            cred_protect=int(item.get("cred_protect", 1)),
            backup_eligible=bool(item.get("backup_eligible")),
            backup_state=bool(item.get("backup_state")),
        )


@dataclass(frozen=True)
class PendingRequest:
    """A request waiting for the user (``presence="manual"``), as :meth:`VirtualKey.approve`
    answered it."""

    id: int
    kind: str  # "register", "authenticate", "excluded", "reset", ...
    rp_id: str | None
    user_name: str | None
    question: str


def open_hidraw(path: str) -> CtapHidDevice:
    """A python-fido2 device on one hidraw node (without opening every key on the system)."""
    from fido2.hid.linux import get_descriptor, open_connection

    descriptor = get_descriptor(path)  # type: ignore[no-untyped-call]
    connection = CloseOnce(open_connection(descriptor))  # type: ignore[no-untyped-call]
    return CtapHidDevice(descriptor, connection)  # type: ignore[arg-type]


class CloseOnce:
    """A device connection that closes at most once. A hidraw connection's close is
    ``os.close(fd)``: a second one (the caller's, then the key's) would close whatever
    reused that number meanwhile, another device's for instance."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wait_hidraw(find: Any, timeout: float = HIDRAW_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while True:
        path: str | None = find()
        if path:
            return path
        if time.monotonic() > deadline:
            raise VirtualKeyError(f"the kernel made no hidraw node within {timeout:.0f} s")
        time.sleep(0.05)
