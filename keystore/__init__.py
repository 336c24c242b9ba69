"""Encrypted on-disk storage for credentials, counters and device state.

:mod:`vfido.keystore.store` is the interface the authenticator uses; the SQLite
implementation lives in :mod:`vfido.keystore.sqlite_store`.
"""
