"""authenticatorReset (0x07, CTAP 2.1 section 6.6) and authenticatorSelection
(0x0B, section 6.9)."""

from __future__ import annotations

import logging

from vfido.authenticator.config_command import Settings
from vfido.authenticator.cose import clear_key_cache
from vfido.authenticator.credential_source import clear_credential_cache
from vfido.authenticator.env import PresenceKind, PresenceRequest, RequestContext
from vfido.authenticator.errors import CtapError, CtapStatus
from vfido.authenticator.persistent_token import forget_info_members
from vfido.authenticator.state import Services, require_presence

log = logging.getLogger(__name__)


def reset(services: Services, context: RequestContext) -> None:
    # Only within the configured window after power-up (the spec's 10 s);
    # later -> CTAP2_ERR_NOT_ALLOWED.
    elapsed = services.runtime.since_power_up(services.clock.monotonic())
    if elapsed > services.config.reset_window:
        raise CtapError(CtapStatus.NOT_ALLOWED, "reset window closed")
    # User presence: declined -> OPERATION_DENIED, timeout -> USER_ACTION_TIMEOUT.
    require_presence(services, context, PresenceRequest(PresenceKind.RESET))
    # Erase credentials, counters and state; new credential key (old IDs die).
    services.store.reset()
    clear_key_cache()  # loaded keys of the now dead credentials
    clear_credential_cache()  # and their unsealed IDs
    forget_info_members()  # getInfo's identifier and ciphers of the old credential key
    Settings.forget(services.store)  # the config state was erased
    services.runtime.clear_pending()
    log.warning("authenticatorReset: all credentials erased")


def selection(services: Services, context: RequestContext) -> None:
    # Touch -> OK; declined -> OPERATION_DENIED; timeout -> USER_ACTION_TIMEOUT.
    require_presence(services, context, PresenceRequest(PresenceKind.SELECT))
