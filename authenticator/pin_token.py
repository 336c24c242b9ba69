"""pinUvAuthToken state (CTAP 2.1 section 6.5.2.1) and the permission bits.

Runtime only: tokens never touch the keystore and die with a power cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag

from vfido.authenticator.env import Clock
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.keystore import entropy


class Permission(IntFlag):
    """pinUvAuthToken permissions (section 6.5.5.7)."""

    NONE = 0
    MAKE_CREDENTIAL = 0x01  # mc
    GET_ASSERTION = 0x02  # ga
    CREDENTIAL_MANAGEMENT = 0x04  # cm
    BIO_ENROLLMENT = 0x08  # be
    LARGE_BLOB_WRITE = 0x10  # lbw
    AUTHENTICATOR_CONFIG = 0x20  # acfg
    #: CTAP 2.2: granted alone, it gives the persistentPinUvAuthToken (persistent_token.py).
    PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY = 0x40  # pcmr


#: A token not used within this many seconds of issuance stops being usable (6.5.2.1).
INITIAL_USAGE_TIME_LIMIT = 30.0
#: No token lives longer than this, used or not.
MAX_USAGE_TIME_PERIOD = 600.0
#: How long the user counts as present after the token was obtained with presence (6.5.2.1:
#: "The user present time limit defaults to the same default maximum per-transport values
#: as the initial usage time limit").
USER_PRESENT_TIME_LIMIT = INITIAL_USAGE_TIME_LIMIT


@dataclass
class PinUvAuthToken:
    """The one pinUvAuthToken shared by both PIN/UV auth protocols."""

    clock: Clock
    value: bytes = field(default_factory=lambda: entropy.random_bytes(32), repr=False)
    permissions: Permission = Permission.NONE
    #: What the token grants on the CTAP 2.1-PRE preview commands (0x40, 0x41) only: a
    #: getPinToken token of a 2.1-PRE key (its platforms authorize them with it), never
    #: on the 2.1 commands (bioEnrollment, credentialManagement).
    preview_permissions: Permission = Permission.NONE
    rp_id: str | None = None
    in_use: bool = False
    user_present: bool = False
    user_verified: bool = False
    _started: float = 0.0
    _used: bool = False
    #: Bumped by every reset(): state begun with one token (a credential enumeration)
    #: remembers it and ends when the token is replaced.
    generation: int = 0

    def reset(self) -> None:
        """resetPinUvAuthToken(): a fresh random value, nothing granted."""
        self.value = entropy.random_bytes(32)
        self.generation += 1
        self.stop_using()

    def grants(self, permission: Permission, *, preview: bool = False) -> bool:
        """Whether the token carries ``permission`` (on a preview command: ``preview``)."""
        granted = self.permissions | (self.preview_permissions if preview else Permission.NONE)
        return bool(granted & permission)

    def still_grants(
        self, generation: int, permission: Permission, *, preview: bool = False
    ) -> bool:
        """Whether the token of ``generation`` is still the one in use, with ``permission``."""
        self.expire_if_due()
        return (
            self.in_use
            and self.generation == generation
            and self.grants(permission, preview=preview)
        )

    def begin_using(
        self,
        user_is_present: bool,
        permissions: Permission,
        rp_id: str | None,
        preview_permissions: Permission = Permission.NONE,
    ) -> None:
        """beginUsingPinUvAuthToken(userIsPresent) plus the permissions of the request."""
        self.in_use = True
        self.user_present = user_is_present
        self.user_verified = True
        self.permissions = permissions
        self.preview_permissions = preview_permissions
        self.rp_id = rp_id
        self._started = self.clock.monotonic()
        self._used = False

    def stop_using(self) -> None:
        self.in_use = False
        self.user_present = False
        self.user_verified = False
        self.permissions = Permission.NONE
        self.preview_permissions = Permission.NONE
        self.rp_id = None
        self._used = False

    def expire_if_due(self) -> None:
        """pinUvAuthTokenUsageTimerObserver: stop using the token when its time is up."""
        if not self.in_use:
            return
        age = self.clock.monotonic() - self._started
        if age > MAX_USAGE_TIME_PERIOD or (not self._used and age > INITIAL_USAGE_TIME_LIMIT):
            self.stop_using()
        elif age > USER_PRESENT_TIME_LIMIT:
            self.user_present = False  # the user present time limit: presence is stale

    def mark_used(self) -> None:
        self._used = True

    def get_user_present_flag(self) -> bool:
        self.expire_if_due()
        return self.in_use and self.user_present

    def get_user_verified_flag(self) -> bool:
        self.expire_if_due()
        return self.in_use and self.user_verified

    def clear_user_present_flag(self) -> None:
        self.user_present = False

    def clear_user_verified_flag(self) -> None:
        self.user_verified = False

    def clear_permissions_except_lbw(self) -> None:
        self.permissions &= Permission.LARGE_BLOB_WRITE
        self.preview_permissions = Permission.NONE


def require_pin_uv_auth_param(param: bytes | None, protocol: int | None) -> bytes:
    """The pinUvAuthParam of a request that must be authenticated (bioEnrollment 6.7,
    credentialManagement 6.8, largeBlobs set 6.10.2, authenticatorConfig 6.11): absent ->
    CTAP2_ERR_PUAT_REQUIRED; present without pinUvAuthProtocol -> MISSING_PARAMETER."""
    if param is None:
        raise CtapError(CtapStatus.PUAT_REQUIRED)
    if protocol is None:
        raise CtapError(CtapStatus.MISSING_PARAMETER, "pinUvAuthProtocol")
    return param
