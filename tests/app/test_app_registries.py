"""The application layer's registries (#18): every list of transport kinds and presence
modes derives from one registry, and the presence package imports one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vfido import api, transport_choice
from vfido.key import TRANSPORT_KINDS, build_key, get_info, offline_authenticator
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import (
    MODES,
    RUN_MODES,
    RUNTIME_MODES,
    TOOLKIT_MODES,
    AutoPresence,
    PresenceBroker,
    PresenceModeError,
    broker_for,
    front_ends_for,
    presence_help,
)
from vfido.transport_kinds import RUN_KINDS, TOOLKIT_KINDS, TransportOptions

PRESENCE_DIR = Path(__file__).resolve().parents[2] / "vfido" / "presence"


def test_transport_choices_derive_from_the_registry() -> None:
    assert RUN_KINDS == ("uhid", "unix", "udp")  # vfido run's default first
    assert transport_choice.KINDS == RUN_KINDS
    assert api.TRANSPORTS == TOOLKIT_KINDS == ("inprocess", "uhid", "unix")
    for name, kind in TRANSPORT_KINDS.items():
        assert kind.name == name


def test_an_inprocess_key_is_assembled_and_reports_one_status() -> None:
    store = SqliteKeyStore.ephemeral()
    key = build_key(
        store,
        broker_for("manual"),
        offline_authenticator(store).config,
        TransportOptions(kind="inprocess", serial="vfido-test"),
        info={"name": "t"},
    )
    try:
        key.start()
        status = key.status()
        assert status["transport"] == "inprocess" and status["serial"] == "vfido-test"
        assert status["name"] == "t" and status["presence"] == "manual"
        assert status["pending"] == [] and status["behaviours"] == {}
        assert key.announcement() == "vfido: in-process key vfido-test"
    finally:
        key.stop()
        store.close()


def test_an_unknown_transport_is_one_line() -> None:
    store = SqliteKeyStore.ephemeral()
    with pytest.raises(ValueError, match="unknown transport 'usb'"):
        build_key(
            store, AutoPresence(), offline_authenticator(store).config, TransportOptions("usb")
        )
    store.close()


def test_get_info_answers_from_the_keystore() -> None:
    with SqliteKeyStore.ephemeral() as store:
        info = get_info(store)
        assert info[3] == store.identity().aaguid  # 0x03 aaguid


def test_presence_modes_derive_from_the_registry() -> None:
    assert RUN_MODES == ("auto", "deny", "deny-uv", "prompt", "notify", "manual")
    assert RUNTIME_MODES == ("auto", "deny", "deny-uv", "manual", "notify")
    assert api.PRESENCE_MODES == TOOLKIT_MODES == ("auto", "deny", "deny-uv", "manual")
    assert presence_help().startswith(
        "how user presence is asked: auto (approve everything), deny,"
    )
    for name in RUN_MODES:
        assert name in presence_help()
    assert MODES["deny-uv"].uv_fails and not MODES["auto"].uv_fails


def test_a_mode_is_one_broker() -> None:
    broker = broker_for("deny-uv", 0.0)
    assert isinstance(broker, PresenceBroker)
    assert broker.mode == "deny-uv" and broker.uv_fails
    assert [f.name for f in broker.front_ends] == ["auto"]
    assert broker_for("manual").front_ends == ()
    with pytest.raises(PresenceModeError, match="presence must be one of"):
        broker_for("telepathy")
    with pytest.raises(ValueError, match="at run time"):
        front_ends_for("prompt")


def _imports(path: Path) -> set[str]:
    """The vfido modules ``path`` imports at module level."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vfido"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vfido"))
    return found


def test_presence_front_ends_import_only_the_pending_request() -> None:
    # no cycle: broker -> modes, pending; front ends -> pending; modes loads front ends lazily
    for front_end in ("auto", "terminal", "desktop"):
        inside = {m for m in _imports(PRESENCE_DIR / f"{front_end}.py") if "presence" in m}
        assert inside <= {"vfido.presence.pending", "vfido.presence.dbus"}, front_end
    assert not {m for m in _imports(PRESENCE_DIR / "modes.py") if "presence" in m}
    assert not {m for m in _imports(PRESENCE_DIR / "pending.py") if "presence" in m}
