"""Encrypted on-disk storage for credentials, counters and device state.

:mod:`keystore.store` is the interface the authenticator uses; the SQLite
implementation lives in :mod:`keystore.sqlite_store`.
"""
