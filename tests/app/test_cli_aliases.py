"""`vfido status | approve | deny` are `vfido ctl status | approve | deny` (#18): one code
path, the same output, the same one-line errors. In-process, against a real control socket
and presence broker."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.presence_helpers import REGISTER, Context
from vfido.authenticator.env import PresenceResult
from vfido.cli import main
from vfido.control import ControlServer
from vfido.control.commands import add_presence_commands
from vfido.presence import PresenceBroker


@pytest.fixture
def key(tmp_path: Path) -> Iterator[tuple[ControlServer, PresenceBroker]]:
    broker = PresenceBroker(mode="manual")
    server = ControlServer(tmp_path / "run" / "vfido" / "k1.sock")
    server.register(
        "status",
        lambda _args: {
            "name": "k1",
            "pid": 7,
            "transport": "udp",
            "udp": {"host": "127.0.0.1", "port": 9, "peer_port": 10},
            "keystore": "(ephemeral)",
            "presence": broker.mode,
            "presence_timeout": 30,
            "pending": [],
        },
    )
    add_presence_commands(server, broker)
    with server:
        yield server, broker


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_status_is_ctl_status(key: tuple[ControlServer, PresenceBroker]) -> None:
    socket = str(key[0].path)
    short = run(["status", "--json", "--socket", socket])
    long = run(["ctl", "--socket", socket, "status"])
    assert short == long and short[0] == 0 and '"name": "k1"' in short[1]
    readable = run(["status", "--socket", socket])
    assert readable[0] == 0
    assert "transport:     udp 127.0.0.1:9 -> 10" in readable[1]
    assert "pending:       none" in readable[1]


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_answers_are_ctl_answers(key: tuple[ControlServer, PresenceBroker], verb: str) -> None:
    server, broker = key
    socket = str(server.path)
    # nothing waiting: the same one line from both spellings, with the --wait hint
    short = run([verb, "--socket", socket])
    long = run(["ctl", "--socket", socket, verb])
    assert short == long and short[0] == 1 and short[1] == ""
    assert short[2].count("\n") == 1 and "no request" in short[2] and "--wait" in short[2]
    # a request waiting: each spelling answers one, and says so in the same words
    for argv in ([verb, "--socket", socket, "--wait", "30"], ["ctl", "--socket", socket, verb]):
        results: list[PresenceResult] = []

        def ask(results: list[PresenceResult] = results) -> None:
            results.append(broker.request_presence(REGISTER, Context(), 60))

        asking = threading.Thread(target=ask)
        asking.start()
        if argv[0] == "ctl":  # `vfido ctl approve` without --wait: once the request is there
            assert broker.wait_pending(30)
        status, out, err = run(argv)
        asking.join(30)
        assert status == 0, err
        assert out.startswith(f"{'approved' if verb == 'approve' else 'denied'} request ")
        expected = PresenceResult.GRANTED if verb == "approve" else PresenceResult.DENIED
        assert results == [expected]
