"""The encoding of a stored credential record: a canonical CBOR map with an integer key per
field (declared below, never derived from field order); decoding checks every type, and a
record that does not decode is :class:`~vfido.keystore.store.KeystoreCorrupt`."""

from __future__ import annotations

from typing import Any

import cbor2

from vfido.keystore.store import CredentialRecord, KeystoreCorrupt

_R_CREDENTIAL_ID = 1
_R_RP_ID = 2
_R_RP_ID_HASH = 3
_R_USER_ID = 4
_R_ALGORITHM = 5
_R_PRIVATE_KEY = 6
_R_CREATED = 7
_R_RP_NAME = 8
_R_USER_NAME = 9
_R_USER_DISPLAY_NAME = 10
_R_CRED_PROTECT = 11
_R_CRED_RANDOM_UV = 12
_R_CRED_RANDOM_NO_UV = 13
_R_CRED_BLOB = 14
_R_LARGE_BLOB_KEY = 15
_R_BACKUP_ELIGIBLE = 16
_R_BACKUP_STATE = 17


def encode_record(r: CredentialRecord) -> bytes:
    data: dict[int, Any] = {
        _R_CREDENTIAL_ID: r.credential_id,
        _R_RP_ID: r.rp_id,
        _R_RP_ID_HASH: r.rp_id_hash,
        _R_USER_ID: r.user_id,
        _R_ALGORITHM: r.algorithm,
        _R_PRIVATE_KEY: r.private_key,
        _R_CREATED: r.created,
        _R_CRED_PROTECT: r.cred_protect,
        _R_BACKUP_ELIGIBLE: r.backup_eligible,
        _R_BACKUP_STATE: r.backup_state,
    }
    optional = {
        _R_RP_NAME: r.rp_name,
        _R_USER_NAME: r.user_name,
        _R_USER_DISPLAY_NAME: r.user_display_name,
        _R_CRED_RANDOM_UV: r.cred_random_uv,
        _R_CRED_RANDOM_NO_UV: r.cred_random_no_uv,
        _R_CRED_BLOB: r.cred_blob,
        _R_LARGE_BLOB_KEY: r.large_blob_key,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    return bytes(cbor2.dumps(data, canonical=True))


def _field(m: dict[Any, Any], key: int, typ: type, *, optional: bool = False) -> Any:
    value = m.get(key)
    if value is None and optional:
        return None
    if type(value) is not typ:
        raise KeystoreCorrupt("a stored credential is malformed")
    return value


def decode_record(data: bytes) -> CredentialRecord:
    try:
        m = cbor2.loads(data)
    except Exception:  # cbor2 raises several types
        raise KeystoreCorrupt("a stored credential is malformed") from None
    if not isinstance(m, dict):
        raise KeystoreCorrupt("a stored credential is malformed")
    return CredentialRecord(
        credential_id=_field(m, _R_CREDENTIAL_ID, bytes),
        rp_id=_field(m, _R_RP_ID, str),
        rp_id_hash=_field(m, _R_RP_ID_HASH, bytes),
        user_id=_field(m, _R_USER_ID, bytes),
        algorithm=_field(m, _R_ALGORITHM, int),
        private_key=_field(m, _R_PRIVATE_KEY, bytes),
        created=_field(m, _R_CREATED, int),
        rp_name=_field(m, _R_RP_NAME, str, optional=True),
        user_name=_field(m, _R_USER_NAME, str, optional=True),
        user_display_name=_field(m, _R_USER_DISPLAY_NAME, str, optional=True),
        cred_protect=_field(m, _R_CRED_PROTECT, int),
        cred_random_uv=_field(m, _R_CRED_RANDOM_UV, bytes, optional=True),
        cred_random_no_uv=_field(m, _R_CRED_RANDOM_NO_UV, bytes, optional=True),
        cred_blob=_field(m, _R_CRED_BLOB, bytes, optional=True),
        large_blob_key=_field(m, _R_LARGE_BLOB_KEY, bytes, optional=True),
        backup_eligible=_field(m, _R_BACKUP_ELIGIBLE, bool),
        backup_state=_field(m, _R_BACKUP_STATE, bool),
    )
