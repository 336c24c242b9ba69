"""Run a vfido key from Python (the toolkit's documented import; the code is in
:mod:`vfido.testing`)::

    from vfido.api import VirtualKey

    with VirtualKey() as key:                       # ephemeral keystore, auto-approving user
        client = key.client("https://example.com")  # a python-fido2 Fido2Client on key.device
"""

from vfido.testing import *  # noqa: F403 (every public name of vfido.testing)
from vfido.testing import __all__ as __all__
