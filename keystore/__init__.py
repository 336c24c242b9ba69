"""Encrypted on-disk storage for credentials, counters and device state.

:mod:`vfido.keystore.store` is the interface the authenticator uses (with
:mod:`vfido.keystore.credential_id`, the sealed credential-ID format). The SQLite
implementation is :mod:`vfido.keystore.sqlite_store` (the store), built from
:mod:`~vfido.keystore.schema` (tables, connections, transactions, migrations),
:mod:`~vfido.keystore.files` (the directory and its files), :mod:`~vfido.keystore.records`
(the credential record codec), :mod:`~vfido.keystore.integrity` (the counter and state
MACs) and :mod:`~vfido.keystore.sqlite_errors` (SQLite and OS errors as keystore errors),
over :mod:`~vfido.keystore.crypto`, :mod:`~vfido.keystore.kdf`,
:mod:`~vfido.keystore.identity` and :mod:`~vfido.keystore.lock`.
"""
