"""vfido: a virtual FIDO2 security key for Linux (application layer)."""

__version__ = "0.1.0"
