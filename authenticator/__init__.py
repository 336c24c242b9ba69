"""The CTAP 2.1 / CTAP1 (U2F) state machine.

Sans-IO: :class:`vfido.authenticator.device.Authenticator` is fed request bytes and
returns response bytes. It reaches storage only through
:class:`vfido.keystore.store.KeyStore` and the user only through
:class:`vfido.authenticator.env.Presence`.
"""
