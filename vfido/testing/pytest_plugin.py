"""pytest fixtures for testing relying parties and WebAuthn clients against a vfido key.

Installed with vfido (entry point ``pytest11``: ``vfido.pytest_plugin``), so a project that
has vfido installed gets the fixtures with no configuration; without installing, load it
with ``-p vfido.pytest_plugin`` or ``pytest_plugins = ["vfido.pytest_plugin"]`` in the
top-level conftest.py (both are safe together with the entry point).

Fixtures (each a fresh key with an ephemeral keystore and, as every toolkit key by default,
built-in user verification, so userVerification "preferred" works; unplugged after the test):

``vfido_key``
    a :class:`vfido.api.VirtualKey` running in-process: ``vfido_key.client(origin)`` is a
    python-fido2 ``Fido2Client``, ``vfido_key.device`` the ``CtapHidDevice``.
``vfido_hid_key``
    the same key as a kernel HID device over UHID (``vfido_hid_key.hidraw_path``), for
    browsers and libfido2. Skipped with the reason where ``/dev/uhid`` is missing or not
    readable and writable (set ``VFIDO_REQUIRE_UHID=1`` to fail instead).
``vfido_key_factory``
    ``vfido_key_factory(**options)`` starts more keys (any :class:`VirtualKey` option).
``vfido_lint_key``
    ``vfido_key`` with the relying-party lint on (:mod:`vfido.lint`): the test fails if the
    RP it drives reuses a challenge, puts an e-mail address in user.id...

The marker ``@pytest.mark.vfido(**options)`` passes :class:`VirtualKey` options to
``vfido_key`` and ``vfido_hid_key``, e.g. ``@pytest.mark.vfido(pin="1234", presence="manual")``
or ``@pytest.mark.vfido(uv=False)`` (a key without built-in UV).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from vfido.api import VirtualKey

UHID_PATH = "/dev/uhid"
REQUIRE_UHID_ENV = "VFIDO_REQUIRE_UHID"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vfido(**options): vfido.api.VirtualKey options for the vfido_key and vfido_hid_key "
        "fixtures (presence, uv, pin, attestation, algorithms, mldsa, ...)",
    )


def uhid_unavailable(path: str = UHID_PATH) -> str | None:
    """Why a UHID key cannot be made here, or None if ``path`` is usable."""
    from vfido.transports.uhid import uhid_unavailable as reason

    return reason(path)


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("vfido")
    if marker is None:
        return {}
    if marker.args:
        raise TypeError("@pytest.mark.vfido takes keyword arguments (VirtualKey options) only")
    return dict(marker.kwargs)


@pytest.fixture
def vfido_key_factory() -> Iterator[Callable[..., VirtualKey]]:
    """Start keys with any :class:`vfido.api.VirtualKey` options; all stop after the test."""
    from vfido.api import VirtualKey

    keys: list[VirtualKey] = []

    def make(**options: Any) -> VirtualKey:
        key = VirtualKey(**options).start()
        keys.append(key)
        return key

    try:
        yield make
    finally:
        for key in reversed(keys):
            key.close()


@pytest.fixture
def vfido_key(
    request: pytest.FixtureRequest, vfido_key_factory: Callable[..., VirtualKey]
) -> VirtualKey:
    """An in-process vfido key (ephemeral keystore; options from ``@pytest.mark.vfido``)."""
    return vfido_key_factory(**_marker_options(request))


@pytest.fixture
def vfido_hid_key(
    request: pytest.FixtureRequest, vfido_key_factory: Callable[..., VirtualKey]
) -> VirtualKey:
    """A vfido key on the kernel's UHID interface: ``vfido_hid_key.hidraw_path`` is its
    ``/dev/hidrawN``. Skipped where ``/dev/uhid`` cannot be used."""
    reason = uhid_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_UHID_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_UHID_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    options = _marker_options(request)
    options["transport"] = "uhid"
    return vfido_key_factory(**options)


@pytest.fixture
def vfido_lint_key(
    request: pytest.FixtureRequest, vfido_key_factory: Callable[..., VirtualKey]
) -> Iterator[VirtualKey]:
    """:func:`vfido_key` with the relying-party lint on (:mod:`vfido.lint`): the test fails
    (at teardown) if the RP under test sent anything the lint flags, with one escaped line
    per finding. ``@pytest.mark.vfido(lint_origin="https://...")`` also checks RP IDs
    against the origin."""
    from vfido.lint import format_findings

    options = _marker_options(request)
    options.setdefault("lint", True)
    key = vfido_key_factory(**options)
    yield key
    findings = key.lint()
    if findings:
        pytest.fail(
            f"the vfido relying-party lint found {len(findings)} problem(s):\n"
            + format_findings(findings),
            pytrace=False,
        )
