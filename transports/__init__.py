"""Transports: CTAPHID framing (sans-IO) and the adapters that carry it.

Nothing here imports ``authenticator``, ``keystore`` or ``vfido``: a transport
talks to a :class:`vfido.transports.handler.CtapHandler`, which the application
wires to the authenticator.
"""
