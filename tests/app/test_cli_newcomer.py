"""The CLI as a newcomer meets it (issue 17): a bad value is one line and a non-zero exit,
never a traceback; errors name what to change."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.service_helpers import ROOT, env, udp_service, vfido
from vfido.transports.udp import CONNECT_TIMEOUT, NoKeyError, free_ports, open_udp_device


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    directory = tmp_path / "ks"
    result = vfido(["init", "--keystore", str(directory)])
    assert result.returncode == 0, result.stderr
    return directory


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["init", "--aaguid", "xyz"], ["--aaguid", "32 hex digits"]),
        (["run", "--ephemeral", "--presence-delay", "-1"], ["--presence-delay"]),
        (["run", "--ephemeral", "--presence-delay", "soon"], ["--presence-delay"]),
        (["run", "--ephemeral", "--udp-port", "99999"], ["--udp-port", "0 to 65535"]),
        (["run", "--ephemeral", "--udp-port", "-1"], ["--udp-port", "0 to 65535"]),
        (["run", "--ephemeral", "--udp-peer-port", "99999"], ["--udp-peer-port"]),
        (["run", "--ephemeral", "--udp-peer-port", "-5"], ["--udp-peer-port"]),
        (["run", "--ephemeral", "--keystore", "somewhere"], ["--ephemeral", "--keystore"]),
        (["info", "--ephemeral", "--keystore", "somewhere"], ["--ephemeral", "--keystore"]),
    ],
    ids=lambda v: (
        " ".join(v) if isinstance(v, list) and v and v[0] in ("init", "run", "info") else ""
    ),
)
def test_bad_flag_values_are_one_line(args: list[str], needles: list[str], tmp_path: Path) -> None:
    if args[0] == "init":
        args = [*args, "--keystore", str(tmp_path / "ks")]
    result = vfido(args)
    one_line_error(result, *needles)
    assert not (tmp_path / "ks").exists()


def test_trace_show_refuses_binary_and_non_trace_files(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line_error(vfido(["trace", "show", str(binary)]), "not a vfido trace")
    for text in ('{"some": "json"}\n', "hello\n", ""):
        other = tmp_path / "other.jsonl"
        other.write_text(text)
        one_line_error(vfido(["trace", "show", str(other)]), "not a vfido trace")


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """``vfido ... | head``: the reader went away; no "Broken pipe", exit 0."""
    for args in (["info", "--ephemeral"], ["run", "--help"]):
        read, write = os.pipe()
        os.close(read)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "vfido", *args],
                env=env(),
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr


def _close_standard_descriptors() -> None:
    for fd in (0, 1, 2):
        os.close(fd)


def test_closed_standard_descriptors_are_opened_on_dev_null(tmp_path: Path) -> None:
    """``vfido ... >&-`` (a launcher that closes descriptors): the command runs as with its
    output sent to /dev/null, not into a traceback; and a closed descriptor does not become
    the number of the next file vfido opens (a child's output would land in that file)."""
    directory = tmp_path / "ks"
    closed_stdout = subprocess.run(
        [sys.executable, "-m", "vfido", "init", "--keystore", str(directory)],
        env={**env(), "VFIDO_PASSPHRASE": "correct horse battery staple"},
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(1),  # in the child, before vfido starts
    )
    assert closed_stdout.returncode == 0, closed_stdout.stderr
    assert "Traceback" not in closed_stdout.stderr
    info = vfido(["info", "--keystore", str(directory)], passphrase="correct horse battery staple")
    assert info.returncode == 0, info.stderr
    # Which number the next file gets, in a process whose 0, 1 and 2 were closed.
    code = (
        "import os, sys; from vfido.cli.main import _open_standard_streams; "
        "_open_standard_streams(); fd = os.open(os.devnull, os.O_RDONLY); "
        "print(fd, file=sys.stderr); sys.exit(0 if fd > 2 else 1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env(),
        timeout=60,
        check=False,
        preexec_fn=_close_standard_descriptors,
    )
    assert result.returncode == 0


def test_address_in_use_names_the_port_and_the_flag() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        (peer,) = free_ports(1)
        args = ["--udp-port", str(port), "--udp-peer-port", str(peer)]
        result = vfido(["run", "--ephemeral", *args])
    one_line_error(result, str(port), "--udp-port", "in use")


def test_peer_port_0_is_refused() -> None:
    """--udp-peer-port 0 started a key that could never answer (nothing can be sent to
    port 0); --udp-port 0 (any free port) stays allowed."""
    result = vfido(["run", "--ephemeral", "--udp-peer-port", "0"])
    assert result.returncode == 2
    one_line_error(result, "--udp-peer-port", "1 to 65535")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--max-resident-credentials", "0"], "--max-resident-credentials: 0 is not from 1"),
        (["--enterprise-attestation", "1", "--enterprise-rp-id="], "RP ID cannot be empty"),
        (["--enterprise-rp-id", "corp.example"], "is for --enterprise-attestation 1"),
        # Mode 1 for no RP, and an RP ID that is no domain, were taken (session 15).
        (["--enterprise-attestation", "1"], "is for the RPs --enterprise-rp-id names"),
        (["--enterprise-attestation", "1", "--enterprise-rp-id", "a b"], "is not an RP ID"),
        (["--enterprise-attestation", "1", "--enterprise-rp-id=https://a.example"], "no scheme"),
        (["--persona", "ctap21", "--enterprise-attestation", "1"], "fixes what the key is"),
    ],
)
def test_run_flag_errors_name_the_flag(flags: list[str], said: str) -> None:
    """The errors named the configuration's fields ("max_resident_credentials must be...",
    "enterprise_rp_ids must be a tuple of RP IDs"), not the flags; an RP ID given without
    the mode that uses it was taken silently."""
    result = vfido(["run", "--ephemeral", *flags])
    one_line_error(result, said)


def test_a_udp_client_with_no_key_says_so_at_once() -> None:
    port = free_ports(1)[0]  # nothing listens there
    start = time.monotonic()
    with pytest.raises(NoKeyError, match=f"no key answers on udp 127.0.0.1:{port}"):
        open_udp_device(port=port, peer_port=free_ports(1)[0])
    assert time.monotonic() - start < CONNECT_TIMEOUT + 5  # not the 60 s read timeout


def test_a_silent_udp_peer_is_no_key_within_the_connect_timeout() -> None:
    """Something bound to the port that never answers (no ICMP error either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(NoKeyError, match="within"):
            open_udp_device(port=port, peer_port=free_ports(1)[0])


def test_credentials_delete_refuses_an_empty_prefix(keystore: Path) -> None:
    with udp_service(["--keystore", str(keystore)]) as service, service.client() as client:
        from tests.rp import RelyingParty, register

        register(client, RelyingParty(), rk=True)
    for prefix in ("", ".."):
        one_line_error(vfido(["credentials", "delete", "--keystore", str(keystore), prefix]), "id")
    listed = vfido(["credentials", "list", "--keystore", str(keystore)])
    assert "example.com" in listed.stdout  # still there


def test_passphrase_change_names_the_missing_variable(keystore: Path) -> None:
    result = vfido(["passphrase", "change", "--keystore", str(keystore)])
    one_line_error(result, "VFIDO_NEW_PASSPHRASE", "--new-passphrase-file")
    result = vfido(["info", "--keystore", str(keystore)], passphrase=None)
    one_line_error(result, "VFIDO_PASSPHRASE", "--passphrase-file")


def test_pin_commands_name_the_missing_variable_and_explain_a_long_pin(keystore: Path) -> None:
    ks = ["--keystore", str(keystore)]
    one_line_error(vfido(["pin", "set", *ks]), "VFIDO_NEW_PIN", "--new-pin-file")
    one_line_error(vfido(["pin", "set", *ks], VFIDO_NEW_PIN="x" * 64), "too long", "63 bytes")
    one_line_error(vfido(["pin", "set", *ks], VFIDO_NEW_PIN="12"), "PIN must be >= 4")
    result = vfido(["pin", "set", *ks], VFIDO_NEW_PIN="1234")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no INFO lines from python-fido2 (or vfido) without -v
    one_line_error(vfido(["pin", "change", *ks], VFIDO_NEW_PIN="5678"), "VFIDO_PIN", "--pin-file")
    one_line_error(vfido(["pin", "change", *ks], VFIDO_PIN="1234"), "VFIDO_NEW_PIN")
    result = vfido(["pin", "change", *ks], VFIDO_PIN="1234", VFIDO_NEW_PIN="é" * 32)
    one_line_error(result, "too long", "64")


def test_python_fido2_info_lines_only_with_verbose(keystore: Path) -> None:
    ks = ["--keystore", str(keystore)]
    quiet = vfido(["pin", "set", *ks], VFIDO_NEW_PIN="1234")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = vfido(["-v", "pin", "change", *ks], VFIDO_PIN="1234", VFIDO_NEW_PIN="5678")
    assert loud.returncode == 0, loud.stderr
    assert "INFO fido2.ctap2.pin: PIN has been changed" in loud.stderr, loud.stderr


def test_run_help_shows_every_option_with_its_help_and_default() -> None:
    result = vfido(["run", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, default in [
        ("--transport", "uhid where /dev/uhid is usable, else udp for --ephemeral"),
        ("--presence", "auto"),
        ("--presence-delay", "0.0"),
        ("--presence-timeout", "30.0"),
        ("--udp-port", "8111"),
        ("--udp-peer-port", "7112"),
        ("--attestation", "packed"),
        ("--max-resident-credentials", "100000"),
    ]:
        assert option in text
        assert f"(default: {default})" in text, option
    from vfido.cli import build_parser

    run = next(
        action.choices["run"]
        for action in build_parser()._actions
        if getattr(action, "choices", None) and "run" in action.choices
    )
    for action in run._actions:
        assert action.help, f"vfido run {action.option_strings} has no help"


def test_the_readme_shows_python_fido2_over_udp() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "open_udp_device(port=8111, peer_port=7112)" in readme


def test_info_and_metadata_of_a_running_ephemeral_key(tmp_path: Path) -> None:
    """Through the control socket: the running key's own keystore, config and getInfo."""
    import base64
    import json

    from tests.rp import RelyingParty, register

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    where = {"XDG_RUNTIME_DIR": str(runtime)}
    with udp_service(["--ephemeral", "--uv"], extra_env=where) as service:
        with service.client() as client:
            aaguid = bytes(client.info.aaguid).hex()
            result = vfido(["metadata"], **where)
            assert result.returncode == 0, result.stderr
            statement = json.loads(result.stdout)  # stdout: the statement alone
            # Which key it describes, on stderr (a newcomer's keystore is not the running key).
            assert result.stderr.count("\n") == 1, result.stderr
            assert f"the running key udp-{service.port} (pid " in result.stderr
            assert "keystore (ephemeral)" in result.stderr
            assert statement["aaguid"].replace("-", "") == aaguid
            assert statement["authenticatorGetInfo"]["options"]["uv"] is True  # its own config
            root = base64.b64decode(statement["attestationRootCertificates"][0])
            # Both verifiers trust the key's packed attestation up to the statement's root.
            register(client, RelyingParty(root_der=root), rk=True)
        name = f"udp-{service.port}"
        for args in (["info"], ["info", "--name", name]):
            result = vfido(args, **where)
            assert result.returncode == 0, result.stderr
            assert f"{name} (running" in result.stdout
            assert "(ephemeral)" in result.stdout and aaguid in result.stdout
            assert "1 discoverable" in result.stdout
    one_line_error(vfido(["info", "--name", name], **where), "no vfido key")


def test_run_help_shows_each_default_once_and_only_a_real_one() -> None:
    """`vfido run --help` said "(default: from the AAGUID) (default: None)" and
    "(default: [])": a default is shown where it says something, once."""
    import re

    result = vfido(["run", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for noise in ("(default: None)", "(default: False)", "(default: [])"):
        assert noise not in text
    assert not re.search(r"\(default:[^()]*(\([^()]*\))?[^()]*\) \(default:", text)
    assert "(default: 8111)" in text


def test_a_path_under_a_file_or_a_missing_directory_is_named(tmp_path: Path) -> None:
    """`init --keystore FILE/x` said only "File exists"; `export MISSING/b.bundle` named the
    hidden temporary file it could not make, after the slow key derivation."""
    a_file = tmp_path / "notes"
    a_file.write_text("notes\n")
    one_line_error(
        vfido(["init", "--keystore", str(a_file / "ks")]), f"{a_file} is not a directory"
    )
    assert a_file.read_text() == "notes\n"
    keystore = tmp_path / "ks"
    assert vfido(["init", "--keystore", str(keystore)]).returncode == 0
    missing = tmp_path / "missing" / "b.bundle"
    result = vfido(
        ["export", str(missing), "--keystore", str(keystore), "--force"],
        VFIDO_BUNDLE_PASSPHRASE="bundle passphrase",
    )
    one_line_error(result, f"{missing.parent} does not exist")
    assert ".tmp" not in result.stderr
    # A file named where a keystore's directory goes: that, not "run vfido init first"
    # (which then failed with "is not a directory").
    one_line_error(
        vfido(["credentials", "list", "--keystore", str(a_file)]),
        f"{a_file} is not a directory: --keystore names a keystore's directory",
    )


def test_a_wrong_socket_is_named_as_given(tmp_path: Path) -> None:
    """`info --socket /tmp` said "/ is accessible by other users", and `--socket k.sock`
    named the working directory: each error named a directory the user never typed. It
    names the socket as given first (and a directory given as the socket is said to be one:
    "no vfido key answers" there sent the user to start one)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    for command in (["info"], ["status"], ["ctl"]):
        tail = ["status"] if command == ["ctl"] else []
        # Nothing there: said so, not what is wrong with a directory it is not in (a
        # session 19 newcomer: `--socket /nonexistent.sock` blamed "/").
        one_line_error(
            vfido([*command, "--socket", "k.sock", *tail], cwd=shared),
            "vfido: error: no vfido key answers on k.sock: start one with `vfido run`\n",
        )
        (shared / "k.sock").touch()
        one_line_error(
            vfido([*command, "--socket", "k.sock", *tail], cwd=shared),
            f"control socket k.sock: {shared} is accessible by other users (mode 755)",
        )
        (shared / "k.sock").unlink()
        one_line_error(
            vfido([*command, "--socket", str(shared), *tail]),
            f"vfido: error: {shared} is a directory, not a control socket\n",
        )
    a_file = tmp_path / "notes"
    a_file.write_text("notes\n")
    one_line_error(
        vfido(["info", "--socket", str(a_file / "k.sock")]),
        f"control socket {a_file / 'k.sock'}: {a_file} is not a directory",
    )


def _every_command() -> list[tuple[list[str], list[str]]]:
    """(its words, the arguments it requires, filled in) of every `vfido` command."""
    import argparse

    from vfido.cli.main import build_parser

    found: list[tuple[list[str], list[str]]] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in commands:
            for name, sub in action.choices.items():
                walk(sub, [*words, name])
        if commands:
            return
        required: list[str] = []
        for action in parser._actions:
            if action.required:
                value = str(next(iter(action.choices))) if action.choices else "1"
                required += [*action.option_strings[:1], value]
        found.append((words, required))

    walk(build_parser(), [])
    return found


def test_an_option_given_after_its_command_says_where_it_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vfido status -v` got only argparse's "unrecognized arguments: -v". Each option is
    taken where its group is named, for every command alike (`vfido -v status`, `vfido ctl
    --name K status`): one given after a command of its group is a usage error that says
    where it goes."""
    from vfido.cli.main import main

    commands = _every_command()
    assert len(commands) > 40 and (["status"], []) in commands
    cases = [
        ([*words, *required, "-v"], f"-v goes before the command: vfido -v {' '.join(words)}")
        for words, required in commands
    ]
    cases += [
        (
            ["ctl", "status", "--name", "k"],
            "--name goes before the command: vfido ctl --name NAME status",
        ),
        (
            ["ctl", "log", "--socket=s"],
            "--socket goes before the command: vfido ctl --socket PATH log",
        ),
        (
            ["status", "--verbose", "--bogus"],
            "--verbose goes before the command: vfido --verbose status; "
            "unrecognized arguments: --bogus",
        ),
        # A diff review: an abbreviated group option (argparse takes --sock for --socket) cut
        # the command short; an option after a misplaced one was taken for its value;
        # after "--" nothing is an option.
        (
            ["ctl", "--sock", "s", "status", "-v"],
            "-v goes before the command: vfido -v ctl status",
        ),
        (
            ["ctl", "status", "--name", "--bogus"],
            "--name goes before the command: vfido ctl --name NAME status; "
            "unrecognized arguments: --bogus",
        ),
        # An outer group's option between a group and its command (a second diff review).
        (["ctl", "-v", "status"], "-v goes before the command: vfido -v ctl status"),
        (
            ["ctl", "--name", "k", "-v", "status"],
            "-v goes before the command: vfido -v ctl status",
        ),
    ]
    for argv, said in cases:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        assert capsys.readouterr().err == f"vfido: error: {said} (see `vfido --help`)\n", argv
    # Only arguments nobody takes: the command's own help, not the top one (`vfido
    # credentials list --json` pointed at `vfido --help`, a session 19 newcomer).
    for argv, command, said in (
        (["ctl", "status", "--", "-v"], "vfido ctl status", "-- -v"),
        (["credentials", "list", "--json"], "vfido credentials list", "--json"),
        (["pin", "set", "--pin-file", "x"], "vfido pin set", "--pin-file x"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        assert capsys.readouterr().err == (
            f"{command}: error: unrecognized arguments: {said} (see `{command} --help`)\n"
        ), argv


_INTERRUPTIONS = {
    # Ctrl-C while a module of the command loads (vfido.entry's handler)...
    "import": """
        import builtins
        real_import = builtins.__import__
        def interrupting_import(name, *args, **kwargs):
            if name == "vfido.cli.common":
                os.kill(os.getpid(), signal.SIGINT)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = interrupting_import
    """,
    # ... and while the parser is built, after the imports (vfido.cli.main's try).
    "parser": """
        import argparse
        real_add, calls = argparse.ArgumentParser.add_argument, [0]
        def interrupting_add(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 50:
                os.kill(os.getpid(), signal.SIGINT)
            return real_add(self, *args, **kwargs)
        argparse.ArgumentParser.add_argument = interrupting_add
    """,
}


@pytest.mark.parametrize("where", list(_INTERRUPTIONS))
def test_ctrl_c_while_the_command_loads_is_quiet(where: str) -> None:
    """SIGINT in the first 0.1 s, while Python imports the command's modules and builds its
    parser, printed a KeyboardInterrupt traceback from inside importlib (a newcomer trial,
    with `kill -INT` 50 ms after the start). Here the signal arrives there, every time."""
    code = (
        "import os, signal, sys\n"
        + textwrap.dedent(_INTERRUPTIONS[where])
        + textwrap.dedent(
            """
        from vfido.entry import main
        sys.argv = ["vfido", "personas"]
        sys.exit(main())
        """
        )
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_an_ignored_sigint_stays_ignored_while_the_command_loads() -> None:
    """`vfido run &` from a script inherits SIGINT ignored: the start-up handler must not
    turn a Ctrl-C meant for the script into the key's end."""
    code = "import os, signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    code += textwrap.dedent(_INTERRUPTIONS["import"]) + textwrap.dedent(
        """
        from vfido.entry import main
        sys.argv = ["vfido", "personas"]
        sys.exit(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ctap21" in result.stdout
