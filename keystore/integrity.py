"""The MACs that authenticate the keystore's signature counters and its set of state rows
(the layout is described in :mod:`vfido.keystore.sqlite_store`): the checks run when a
keystore opens and on every read of a counter or a state row."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CounterIndex:
    """What the index row of the counters table (tag :data:`ROWS_TAG`) authenticates: the
    number of the other rows and ``members``, the XOR of their tags'
    :meth:`RecordKeys.counter_member` (format 5). Updated with every row added or deleted,
    inside the transaction that does it."""

    rows: int = 0
    members: int = 0

    def with_row(self, keys: RecordKeys, tag: bytes, present: bool) -> CounterIndex:
        """The index after the row of ``tag`` is added (``present``) or deleted."""
        rows = self.rows + (1 if present else -1)
        return CounterIndex(rows, self.members ^ keys.counter_member(tag))

    def mac(self, keys: RecordKeys) -> bytes:
        return keys.rows_mac(self.rows, self.members)


def verify_counters(
    keys: RecordKeys, rows: Iterable[tuple[Any, Any, Any]], *, format_4: bool = False
) -> CounterIndex:
    """Check every counter row (``rows``: (cred_tag, value, mac) by ascending tag) and the
    set of them; return the index.

    Rows come in primary-key order from the b-tree: a row damaged in place fails its MAC; a
    row duplicated, reordered or lost by damage to the tree breaks the strict order or the
    index; a row deleted breaks the index, also when an older index row is put back (a
    review did it: the counter started again at 0), since that one covers other members.
    ``format_4``: the index authenticates the number of rows alone (the migration to format
    5 checks it, then writes the returned index's MAC over it). O(rows), once per open (the
    loop is kept lean: it runs 100,000 times for 100,000 counters).
    """
    mac_of = keys.counter_mac
    member = keys.counter_member
    same = hmac.compare_digest
    rows = iter(rows)
    first = next(rows, None)
    # The first row (empty tag) is the index.
    if (
        first is None
        or first[0] != ROWS_TAG
        or type(first[1]) is not int
        or not 0 <= first[1] <= MAX_COUNTER
        or type(first[2]) is not bytes
    ):
        raise KeystoreCorrupt(
            "the keystore's counter index is missing or failed authentication"
            " (the keystore was modified)"
        )
    _, expected, index_mac = first
    count = 0
    members = 0
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
        members ^= member(tag)
        previous = tag
        count += 1
    written = keys.rows_mac_v4(expected) if format_4 else keys.rows_mac(expected, members)
    if not same(written, index_mac) or count != expected:
        raise KeystoreCorrupt(
            f"the keystore's counter index does not authenticate its {count} signature "
            "counters: one was deleted, added or put back, or the index replaced (the "
            "keystore was modified)"
        )
    return CounterIndex(count, members)


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
