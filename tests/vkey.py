"""Build a whole vfido key in-process: keystore -> authenticator -> CTAPHID -> python-fido2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.hid import CtapHidDevice

from tests.rp import ORIGIN
from vfido.authenticator.behaviours import Behaviours
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.authenticator.env import Presence
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.transports.inprocess import open_device


@dataclass
class Key:
    store: SqliteKeyStore
    authenticator: Authenticator
    device: CtapHidDevice

    def client(self, origin: str = ORIGIN, interaction: Any = None) -> Fido2Client:
        return Fido2Client(
            self.device,
            client_data_collector=DefaultClientDataCollector(origin),
            user_interaction=interaction or UserInteraction(),
        )

    @property
    def root_der(self) -> bytes:
        return self.store.identity().attestation_chain[-1]


@contextmanager
def running_key(
    presence: Presence | None = None,
    config: Config | None = None,
    store: SqliteKeyStore | None = None,
    behaviours: Behaviours | None = None,
) -> Iterator[Key]:
    """A key with an ephemeral keystore (or ``store``, closed afterwards too), talking CTAPHID
    to python-fido2 in-process; ``behaviours`` script its misbehaviour."""
    store = store or SqliteKeyStore.ephemeral()
    device_impl = Authenticator(
        store, presence or AutoPresence(), config or Config(), behaviours=behaviours
    )
    device = open_device(device_impl)
    try:
        yield Key(store, device_impl, device)
    finally:
        device.close()
        store.close()
