"""The MACs that authenticate the keystore's signature counters and its set of state rows
(the layout is described in :mod:`vfido.keystore.sqlite_store`): the checks run when a
keystore opens and on every read of a counter or a state row."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from vfido.keystore.crypto import RecordKeys
from vfido.keystore.store import KeystoreCorrupt

ROWS_TAG = b""  # the counters row holding the number of (other) counter rows
MAX_COUNTER = (1 << 63) - 1  # SQLite INTEGER
STATE_INDEX_TAG = b""  # the state row holding the MAC of the set of (other) state rows
CREDENTIAL_ROWS = "credential_rows"  # the meta row: the number of credential rows, and its MAC


def state_digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def checked_counter(keys: RecordKeys, tag: bytes, value: object, mac: object) -> int:
    """A stored counter value after its MAC is checked (KeystoreCorrupt if it fails)."""
    if type(value) is not int or type(mac) is not bytes or not keys.check_counter(tag, value, mac):
        raise KeystoreCorrupt(
            "a signature counter failed authentication (the keystore was modified)"
        )
    return value


def verify_counters(keys: RecordKeys, rows: Iterable[tuple[Any, Any, Any]]) -> int:
    """Check every counter row (``rows``: (cred_tag, value, mac) by ascending tag) and their
    number; return the number.

    Rows come in primary-key order from the b-tree: a row damaged in place
    fails its MAC; a row duplicated, reordered or lost by damage to the tree
    breaks the strict order or the authenticated count. O(rows), once per open
    (the loop is kept lean: it runs 100,000 times for 100,000 counters).
    """
    mac_of = keys.counter_mac
    same = hmac.compare_digest
    expected = -1
    count = 0
    rows = iter(rows)
    first = next(rows, None)
    if first is not None:
        # The first row (empty tag) holds the number of the others.
        tag, value, mac = first
        if (
            tag == ROWS_TAG
            and type(value) is int
            and 0 <= value <= MAX_COUNTER
            and type(mac) is bytes
            and same(keys.rows_mac(value), mac)
        ):
            expected = value
    if expected < 0:
        raise KeystoreCorrupt(
            "the keystore's counter index is missing or failed authentication"
            " (the keystore was modified)"
        )
    previous = ROWS_TAG
    for tag, value, mac in rows:
        if type(tag) is not bytes or tag <= previous:
            raise KeystoreCorrupt("the keystore's counter table is damaged")
        if (
            type(value) is not int
            or not 0 <= value <= MAX_COUNTER
            or type(mac) is not bytes
            or not same(mac_of(tag, value), mac)
        ):
            raise KeystoreCorrupt(
                "a signature counter failed authentication (the keystore was modified)"
            )
        previous = tag
        count += 1
    if count != expected:
        raise KeystoreCorrupt(
            f"the keystore has {count} signature counters where {expected} were written"
            " (the keystore was modified)"
        )
    return count


def verify_state(keys: RecordKeys, rows: Iterable[tuple[Any, Any]]) -> dict[bytes, bytes]:
    """Check the set of state rows (``rows``: (key_tag, blob)) against its MAC; return each
    row's digest by tag."""
    digests: dict[bytes, bytes] = {}
    index: object = None
    for tag, blob in rows:
        if type(tag) is not bytes or type(blob) is not bytes:
            raise KeystoreCorrupt("a record in state is malformed")
        if tag == STATE_INDEX_TAG:
            index = blob
        else:
            digests[tag] = state_digest(blob)
    if not isinstance(index, bytes) or not hmac.compare_digest(
        keys.state_mac(digests.items()), index
    ):
        raise KeystoreCorrupt(
            "the keystore's device state failed authentication: a state record was"
            " deleted, added or replaced (the keystore was modified)"
        )
    return digests


def checked_state_blob(digests: Mapping[bytes, bytes], tag: bytes, blob: object) -> bytes:
    """A state row's blob, if it is the one verified at open or written since (``digests``)."""
    expected = digests.get(tag)
    if (
        type(blob) is not bytes
        or expected is None
        or not hmac.compare_digest(state_digest(blob), expected)
    ):
        raise KeystoreCorrupt(
            "a record in state is not the one written (the keystore was modified)"
        )
    return blob


def credential_rows_value(keys: RecordKeys, count: int) -> bytes:
    """The ``meta`` value recording ``count`` credential rows: 8 bytes of count, its MAC."""
    return count.to_bytes(8, "big") + keys.credential_rows_mac(count)


def verify_credential_rows(keys: RecordKeys, value: object, present: int) -> int:
    """Check the ``meta`` value against its MAC and the ``present`` number of credential rows
    (once per open); return the number."""
    if type(value) is not bytes or len(value) != 8 + len(keys.credential_rows_mac(0)):
        raise KeystoreCorrupt(
            "the keystore's credential index is missing or damaged (the keystore was modified)"
        )
    count = int.from_bytes(value[:8], "big")
    if not hmac.compare_digest(keys.credential_rows_mac(count), value[8:]):
        raise KeystoreCorrupt(
            "the keystore's credential index failed authentication (the keystore was modified)"
        )
    if count != present:
        raise KeystoreCorrupt(
            f"the keystore has {present} credentials where {count} were written"
            " (the keystore was modified)"
        )
    return count
