"""vfido.testing.devtools without a browser: the message framing, finding Chromium, and the client
against a stand-in that speaks the pipe protocol and misbehaves on request (no answer, an
error, a crash, a refusal to quit) in ways a real Chromium cannot be made to. The real
browser is driven by tests/app/test_ui.py and examples/flask_rp/test_chromium.py."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vfido.testing.devtools import (
    BROWSER_ENVIRONMENT,
    Browser,
    CdpError,
    _encode,
    _Splitter,
    find_chromium,
)

# A stand-in for ``chromium --remote-debugging-pipe``: commands on fd 3, answers and events on
# fd 4, each a JSON object ended by NUL. --fake-* flags (passed as extra_flags) set its mode.
FAKE_BROWSER = r"""
import json, os, subprocess, sys, time

flags = sys.argv[1:]
mode = next((f.split("=", 1)[1] for f in flags if f.startswith("--fake-mode=")), "")
for flag in flags:
    if flag.startswith("--fake-pidfile="):
        with open(flag.split("=", 1)[1], "w") as f:
            f.write(str(os.getpid()))
handled = []

def out(*messages, split=False):
    data = b"".join(json.dumps(m).encode() + b"\0" for m in messages)
    if split:  # one byte at a time: the client must reassemble the message
        for i in range(len(data)):
            os.write(4, data[i : i + 1])
            time.sleep(0.001)
    else:
        os.write(4, data)

def answer(command):
    method, reply = command["method"], {"id": command["id"], "result": {}}
    if mode == "mute":
        return
    if method == "Browser.getVersion":
        reply["result"] = {"product": "Fake/1.0"}
    elif method == "Browser.close":
        if mode == "stubborn":
            return
        out(reply)
        sys.exit(0)
    elif method == "Target.createTarget":
        reply["result"] = {"targetId": "T1"}
    elif method == "Target.attachToTarget":
        reply["result"] = {"sessionId": "S1"}
    elif method == "Runtime.enable":
        console = {"type": "warning", "args": [{"type": "string", "value": "careful"},
                   {"type": "number", "value": 2}, {"type": "object", "description": "Object"}]}
        out({"method": "Runtime.consoleAPICalled", "sessionId": "S1", "params": console})
    elif method == "Page.handleJavaScriptDialog":
        handled.append([command.get("sessionId"), command["params"]])
    elif method == "Test.dialog":
        event = {"method": "Page.javascriptDialogOpening", "sessionId": "S1",
                 "params": {"message": "Delete alice?", "type": "confirm"}}
        out(event)
    elif method == "Test.handled":
        reply["result"] = {"handled": handled}
    elif method == "Test.me":
        reply["result"] = {"argv": flags, "env": sorted(os.environ)}
    elif method == "Test.error":
        reply = {"id": command["id"], "error": {"code": -32000, "message": "Nope", "data": "why"}}
    elif method == "Test.silent":
        return
    elif method == "Test.exit":
        os._exit(3)
    elif method == "Test.stderr":
        sys.stderr.write("fake browser says hello\n")
        sys.stderr.flush()
    elif method == "Test.helper":  # like a renderer: same process group, outlives nothing
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        reply["result"] = {"pid": helper.pid}
    elif method == "Test.split":
        event = {"method": "Some.event", "params": {"nul": "a\u0000b"}}
        reply["result"] = {"text": "a\u0000b" * 50}
        out(event, reply, split=True)
        return
    out(reply)

pending = b""
while chunk := os.read(3, 65536):
    pending += chunk
    while b"\0" in pending:
        raw, pending = pending.split(b"\0", 1)
        answer(json.loads(raw))
"""


@pytest.fixture
def fake_browser(tmp_path: Path) -> str:
    path = tmp_path / "fake-chromium"
    path.write_text(f"#!{sys.executable}\n{FAKE_BROWSER}")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Profiles go under the test's directory, so a leftover one is seen."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


# --- framing --------------------------------------------------------------------------------


def test_messages_are_json_ended_by_one_nul() -> None:
    encoded = _encode({"id": 1, "method": "Runtime.evaluate", "params": {"expression": "'\0'"}})
    assert encoded.endswith(b"\0") and encoded.count(b"\0") == 1
    assert json.loads(encoded[:-1])["params"]["expression"] == "'\0'"


def test_splitter_reassembles_messages_across_reads() -> None:
    splitter = _Splitter()
    assert splitter.feed(b'{"id"') == []
    assert splitter.feed(b":1}") == []
    assert splitter.feed(b'\0{"id":2}\0{"i') == [b'{"id":1}', b'{"id":2}']
    assert splitter.feed(b"") == []
    assert splitter.feed(b'd":3}\0') == [b'{"id":3}']
    assert splitter.feed(b"\0") == [b""]


# --- finding Chromium -------------------------------------------------------------------------


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_chromium_takes_the_first_known_name_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "chromium").write_text("not executable")
    chrome = executable(tmp_path / "google-chrome")
    monkeypatch.delenv("VFIDO_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() == str(chrome)
    browser = executable(tmp_path / "chromium-browser")
    assert find_chromium() == str(browser)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_chromium() is None
    with pytest.raises(FileNotFoundError, match="no Chromium"):
        Browser()


def test_vfido_chromium_chooses_and_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = executable(tmp_path / "my-browser")
    executable(tmp_path / "chromium")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("VFIDO_CHROMIUM", "my-browser")
    assert find_chromium() == str(mine)
    monkeypatch.setenv("VFIDO_CHROMIUM", str(mine))
    assert find_chromium() == str(mine)
    monkeypatch.setenv("VFIDO_CHROMIUM", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="typo"):
        find_chromium()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Browser(str(tmp_path / "nowhere"))


# --- the client against the stand-in --------------------------------------------------------------


def test_commands_answers_and_events(
    fake_browser: str, tmp_path: Path, own_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VFIDO_TEST_SECRET", "must not reach the browser")
    log = tmp_path / "browser.log"
    with Browser(fake_browser, log=log, extra_flags=["--fake-mode=ok"]) as browser:
        assert browser.version == {"product": "Fake/1.0"}
        me = browser.send("Test.me")
        assert "--remote-debugging-pipe" in me["argv"] and "--headless=new" in me["argv"]
        assert f"--user-data-dir={browser.profile}" in me["argv"]
        assert browser.profile.parent == own_tempdir and browser.profile.is_dir()
        assert set(me["env"]) <= set(BROWSER_ENVIRONMENT)

        with pytest.raises(CdpError, match=r"^Test.error: Nope \(why\)$"):
            browser.send("Test.error")
        started = time.monotonic()
        with pytest.raises(
            CdpError, match=re.escape("Test.silent: no answer from the browser within 0.3 s")
        ):
            browser.send("Test.silent", timeout=0.3)
        assert time.monotonic() - started < 5
        assert browser.send("Test.split")["text"] == "a\0b" * 50  # after an event, byte by byte

        page = browser.open_page()
        assert page.console == ["warning: careful 2 Object"]
        browser.send("Test.dialog")
        handled = browser.send("Test.handled")["handled"]
        assert handled == [["S1", {"accept": True}]]
        assert browser.dialogs == ["Delete alice?"]

        browser.send("Test.stderr")
    assert browser.process.returncode == 0  # it quit when asked
    assert not browser.profile.exists()
    assert "fake browser says hello" in log.read_text()
    browser.close()  # a second close does nothing
    with pytest.raises(CdpError, match=re.escape("Test.me: the browser is gone")):
        browser.send("Test.me")


def test_a_browser_that_goes_away_fails_every_command(fake_browser: str) -> None:
    with Browser(fake_browser) as browser:
        with pytest.raises(
            CdpError, match=re.escape("Test.exit: the browser closed the DevTools pipe")
        ):
            browser.send("Test.exit")
        with pytest.raises(CdpError, match=re.escape("Target.createTarget: the browser is gone")):
            browser.open_page()
    assert browser.process.returncode == 3


def test_close_kills_a_browser_that_does_not_quit_and_its_helpers(
    fake_browser: str, own_tempdir: Path
) -> None:
    browser = Browser(fake_browser, extra_flags=["--fake-mode=stubborn"])
    helper = browser.send("Test.helper")["pid"]
    assert not gone(helper)
    started = time.monotonic()
    browser.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert gone(browser.process.pid)
    for _ in range(100):  # the helper was killed with the group; its reaper may take a moment
        if gone(helper):
            break
        time.sleep(0.05)
    assert gone(helper)
    assert list(own_tempdir.iterdir()) == []


def test_a_browser_that_never_answers_is_killed_at_start(
    fake_browser: str, tmp_path: Path, own_tempdir: Path
) -> None:
    pidfile = tmp_path / "pid"
    log = tmp_path / "browser.log"
    flags = ["--fake-mode=mute", f"--fake-pidfile={pidfile}"]
    with pytest.raises(CdpError) as raised:
        # A plain string, as other paths in the API take (a str was an AttributeError).
        Browser(fake_browser, log=str(log), extra_flags=flags, timeout=0.5)
    assert str(raised.value) == (
        f"{fake_browser} did not start (Browser.getVersion: no answer from the browser within"
        f" 0.5 s; running; its output is in {log})"
    )
    assert gone(int(pidfile.read_text()))
    assert list(own_tempdir.iterdir()) == []
    assert os.path.exists(log)
