"""Issue #15, low 3: no string from a relying party or a CTAP host reaches a terminal raw.

The attack: a CTAP host (any web page through the browser, any local client of the key)
registers a credential whose rp.id, user.name and displayName carry terminal escapes --
clear the screen, set the window title, a one-byte C1 CSI, a bidi override that makes one
site's name read as another's. Then the owner runs `vfido credentials list`, `vfido ctl
credentials list` or `vfido trace show`. Each must show the characters as visible escapes
(vfido.safetext.visible, the one helper), never emit them.
"""

from __future__ import annotations

import io
import logging
import os
import unicodedata
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from fido2.ctap2.base import Ctap2

from tests.app.test_ctl import rig
from tests.app.test_trace import traced_key
from tests.ctap2_helpers import make_key
from tests.service_helpers import PASSPHRASE, vfido
from vfido.authenticator.env import PresenceKind, PresenceRequest
from vfido.cli import main
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import describe, question
from vfido.safetext import VisibleFormatter, visible

CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
TITLE = "\x1b]0;pwned\x07"  # OSC: set the window title
CSI_C1 = "\x9b2J"  # the one-byte C1 CSI
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
HOSTILE_RP = f"evil{TITLE}{RLO}moc.elgoog.example"
HOSTILE_USER = f"alice{CLEAR}{CSI_C1}\x7f"
HOSTILE_DISPLAY = f"Alice{RLO}\u2066\u2028"
#: What must never reach the terminal raw.
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\x7f", RLO, "\u2066", "\u2028")


def _assert_inert(text: str) -> None:
    for c in FORBIDDEN:
        assert c not in text, f"{c!r} reached the terminal raw"
    assert not [c for c in text if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"]


def _register_hostile(ctap2: Ctap2) -> None:
    """What any CTAP host can do: makeCredential with hostile entity names."""
    ctap2.make_credential(
        os.urandom(32),
        {"id": HOSTILE_RP, "name": HOSTILE_RP},
        {"id": b"alice", "name": HOSTILE_USER, "displayName": HOSTILE_DISPLAY},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )


# --- the helper ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("example.com", "example.com"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\x07b\x00c", "a\\x07b\\x00c"),
        ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),
        ("\u202ecba", "\\u202ecba"),
        ("\u2066x\u2069\u200e\ufeff", "\\u2066x\\u2069\\u200e\\ufeff"),
        ("line\u2028two\u2029", "line\\u2028two\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("\ud800", "\\ud800"),  # a lone surrogate could not even be printed
        ("Zoë 日本 \u05e9\u05dc\u05d5\u05dd", "Zoë 日本 \u05e9\u05dc\u05d5\u05dd"),
        ("👩\u200d💻", "👩\u200d💻"),  # a zero-width joiner neither moves nor reorders
    ],
)
def test_visible_shows_controls_as_escapes(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_every_control_and_format_character_is_escaped_but_the_joiners() -> None:
    """SECURITY.md: "control, format and separator characters are shown as escapes", each of
    them (every bidi override and isolate, U+2067 included), and only ZWNJ/ZWJ are kept,
    which neither move nor reorder text (a session 20 mutation sampling: one kept isolate went
    unnoticed)."""
    import sys
    import unicodedata

    kept = {"\u200c", "\u200d"}
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in kept:
            assert visible(c) != c, hex(code)
    assert all(visible(c) == c for c in kept)


def test_the_presence_prompt_uses_the_same_helper() -> None:
    request = PresenceRequest(PresenceKind.AUTHENTICATE, HOSTILE_RP, HOSTILE_USER)
    for text in (question(request), describe(request)):
        _assert_inert(text)
        assert "\\x1b]0;pwned\\x07" in text and "\\u202e" in text


def test_log_lines_show_controls_as_escapes() -> None:
    formatter = VisibleFormatter("vfido: %(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "authenticator", logging.INFO, __file__, 1, "command %s -> %s", ("x", HOSTILE_RP), None
    )
    line = formatter.format(record)
    _assert_inert(line)
    assert "\n" not in line and HOSTILE_RP.encode("unicode_escape").decode() in line


# --- `vfido credentials list` -------------------------------------------------------------


def test_vfido_credentials_list_escapes_what_a_host_registered(tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    with SqliteKeyStore.create(
        directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()
    ) as store:
        _register_hostile(make_key(store=store).ctap2())
    result = vfido(["credentials", "list", "--keystore", str(directory)])
    assert result.returncode == 0, result.stderr
    _assert_inert(result.stdout)
    # The RP ID column keeps an ID's end (whose it is), so the override shows, escaped.
    assert "x07\\u202emoc.elgoog.example" in result.stdout and "alice\\x1b[2J" in result.stdout


# --- `vfido ctl credentials list` ---------------------------------------------------------


def test_vfido_ctl_credentials_list_escapes_what_a_host_registered(tmp_path: Path) -> None:
    with rig(tmp_path) as key:  # a key in-process with its control socket, as `vfido run`
        _register_hostile(Ctap2(key.hid))
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["ctl", "--socket", str(key.socket), "credentials", "list"]) == 0
    _assert_inert(out.getvalue())
    # The RP ID column keeps an ID's end (whose it is), as `vfido credentials list` does.
    assert "7\\u202emoc.elgoog.example" in out.getvalue() and "alice\\x1b[2J" in out.getvalue()


def test_a_long_rp_id_keeps_its_end_wherever_the_user_decides(tmp_path: Path) -> None:
    """A page may use a long hostname of its own as its RP ID: cut at its end, it would read
    as the site it starts with. The presence question (prompt, notification, `vfido status`,
    the log, the dashboard's heading) and `vfido ctl credentials list` cut its start."""
    rp = "accounts.google.com.sign-in.verify-session-" + "0" * 40 + ".attacker.example"
    asked = question(PresenceRequest(PresenceKind.AUTHENTICATE, rp, "bob"))
    assert "attacker.example with this security key (as bob)?" in asked
    assert "accounts.google.com" not in asked
    with rig(tmp_path) as key:
        Ctap2(key.hid).make_credential(
            os.urandom(32),
            {"id": rp, "name": "x"},
            {"id": b"bob", "name": "bob"},
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
        )
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["ctl", "--socket", str(key.socket), "credentials", "list"]) == 0
    assert "0.attacker.example" in out.getvalue() and "accounts.google" not in out.getvalue()


# --- `vfido trace show` -------------------------------------------------------------------


def test_vfido_trace_show_escapes_what_a_host_sent(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with traced_key(path) as (device, _store, _recorder):
        ctap2 = Ctap2(device)
        _register_hostile(ctap2)
        ctap2.get_assertion(HOSTILE_RP, os.urandom(32))
    for details in ([], ["--details"]):
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["trace", "show", *details, str(path)]) == 0
        _assert_inert(out.getvalue())
        assert "rp=evil\\x1b]0;pwned\\x07\\u202emoc" in out.getvalue()
