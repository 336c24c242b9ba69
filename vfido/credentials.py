"""Naming a discoverable credential the way people do: its base64url ID or a unique prefix of
it (``vfido credentials delete``, the control socket's ``credentials-remove``)."""

from __future__ import annotations

from vfido.authenticator.behaviours import b64url
from vfido.keystore.store import KeyStore


class CredentialLookupError(ValueError):
    """No credential, or several, answer to the given ID; one line saying which."""


def find_credential_id(store: KeyStore, text: str) -> bytes:
    """The ID of the one discoverable credential whose base64url ID starts with ``text``
    (listings cut IDs short with ``..``; padding is ignored). Raises
    :class:`CredentialLookupError` for an empty, unknown or ambiguous ``text``."""
    prefix = text.rstrip(".=")
    if not prefix:
        raise CredentialLookupError("give the credential's id or a unique prefix of it")
    matches = [
        summary.record.credential_id
        for summary in store.list_credentials()
        if b64url(summary.record.credential_id).startswith(prefix)
    ]
    if not matches:
        raise CredentialLookupError(f"no discoverable credential with id {prefix[:24]}")
    if len(matches) > 1:
        raise CredentialLookupError(
            f"{len(matches)} credentials start with {prefix[:24]}: give more of the id"
        )
    return matches[0]
