"""The `vfido` command line and service, run as real subprocesses.

The service is driven over the UDP simulation transport by python-fido2
(CTAP2 and CTAP1), exactly as an external test tool would.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fido2.ctap1 import Ctap1
from fido2.ctap2.base import Ctap2

from tests.rp import RelyingParty, register, sign_in
from tests.service_helpers import env as service_env
from tests.service_helpers import udp_service, vfido
from vfido.transports.udp import free_ports, open_udp_device

pytestmark = pytest.mark.slow


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    directory = tmp_path / "ks"
    result = vfido(["init", "--keystore", str(directory)])
    assert result.returncode == 0, result.stderr
    assert "created keystore" in result.stdout
    return directory


def test_init_makes_private_files(keystore: Path) -> None:
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o700
    files = [p for p in keystore.iterdir() if p.is_file()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_init_refuses_to_overwrite(keystore: Path) -> None:
    result = vfido(["init", "--keystore", str(keystore)])
    assert result.returncode == 1
    assert "already exists" in result.stderr


def test_wrong_passphrase_is_one_clear_line(keystore: Path) -> None:
    result = vfido(["info", "--keystore", str(keystore)], passphrase="not it")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "passphrase" in result.stderr.lower()


def test_missing_keystore_is_one_clear_line(tmp_path: Path) -> None:
    result = vfido(["info", "--keystore", str(tmp_path / "nothing")])
    assert result.returncode == 1
    assert "vfido init" in result.stderr and "Traceback" not in result.stderr
    # --ephemeral is offered only by the commands that have it (review, session 14).
    assert "(or use --ephemeral)" in result.stderr  # `vfido info --ephemeral` exists
    listing = vfido(["credentials", "list", "--keystore", str(tmp_path / "nothing")])
    assert listing.returncode == 1 and "--ephemeral" not in listing.stderr
    running = vfido(["run", "--transport", "udp", "--keystore", str(tmp_path / "nothing")])
    assert running.returncode == 1 and "(or use --ephemeral)" in running.stderr


def test_no_passphrase_without_terminal(keystore: Path) -> None:
    result = vfido(["info", "--keystore", str(keystore)], passphrase=None)
    assert result.returncode == 1
    assert "VFIDO_PASSPHRASE" in result.stderr


def test_info_shows_what_the_key_advertises(keystore: Path) -> None:
    result = vfido(["info", "--keystore", str(keystore)])
    assert result.returncode == 0, result.stderr
    assert "FIDO_2_0" in result.stdout and "U2F_V2" in result.stdout
    assert "ES256" in result.stdout and "EdDSA" in result.stdout and "RS256" in result.stdout


def test_passphrase_file_and_change(keystore: Path, tmp_path: Path) -> None:
    new_file = tmp_path / "new"
    new_file.write_text("a new passphrase\n")
    new_file.chmod(0o600)
    result = vfido(
        [
            "passphrase",
            "change",
            "--keystore",
            str(keystore),
            "--new-passphrase-file",
            str(new_file),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert vfido(["info", "--keystore", str(keystore)]).returncode == 1  # old one fails
    ok = vfido(["info", "--keystore", str(keystore), "--passphrase-file", str(new_file)])
    assert ok.returncode == 0, ok.stderr


def test_udp_service_ephemeral_ctap2_and_ctap1() -> None:
    with udp_service(["--ephemeral"]) as service:
        device = open_udp_device(port=service.port, peer_port=service.peer_port)
        try:
            info = Ctap2(device).get_info()
            assert "FIDO_2_0" in info.versions
            root = None  # attestation root is checked in the in-process tests
            # CTAP1 / U2F over the same UDP transport
            ctap1 = Ctap1(device)
            assert ctap1.get_version() == "U2F_V2"
            app, chal = os.urandom(32), os.urandom(32)
            reg = ctap1.register(chal, app)
            reg.verify(app, chal)
            sig = ctap1.authenticate(chal, app, reg.key_handle)
            sig.verify(app, chal, reg.public_key)
            sig2 = ctap1.authenticate(chal, app, reg.key_handle)
            assert sig2.counter > sig.counter
        finally:
            device.close()
        for rk in (False, True):
            rp = RelyingParty(root_der=root, attestation="none")
            with service.client() as client:
                register(client, rp, rk=rk)
                assert sign_in(client, rp) == 1
    assert service.process.returncode == 0


def test_persistent_keystore_across_restarts(keystore: Path) -> None:
    rp = RelyingParty(attestation="none")
    with udp_service(["--keystore", str(keystore)]) as service, service.client() as client:
        cred_id = register(client, rp, rk=True).raw_id
        first = sign_in(client, rp)
    listing = vfido(["credentials", "list", "--keystore", str(keystore)])
    assert listing.returncode == 0, listing.stderr
    assert "example.com" in listing.stdout and "ES256" in listing.stdout
    with udp_service(["--keystore", str(keystore)]) as service, service.client() as client:
        second = sign_in(client, rp)
    assert second > first
    # delete it by id prefix, then it is gone
    import base64

    prefix = base64.urlsafe_b64encode(cred_id).rstrip(b"=").decode()[:16]
    deleted = vfido(["credentials", "delete", "--keystore", str(keystore), prefix])
    assert deleted.returncode == 0, deleted.stderr
    listing = vfido(["credentials", "list", "--keystore", str(keystore)])
    assert "no discoverable credentials" in listing.stdout


def test_reset_voids_old_credentials(keystore: Path) -> None:
    rp = RelyingParty(attestation="none")
    with udp_service(["--keystore", str(keystore)]) as service, service.client() as client:
        register(client, rp, rk=False)
    assert vfido(["reset", "--keystore", str(keystore)]).returncode == 1  # needs --yes
    assert vfido(["reset", "--keystore", str(keystore), "--yes"]).returncode == 0
    from fido2.client import ClientError

    with (
        udp_service(["--keystore", str(keystore)]) as service,
        service.client() as client,
        pytest.raises(ClientError),
    ):
        sign_in(client, rp)


def test_service_stops_cleanly_on_sigint() -> None:
    with udp_service(["--ephemeral"]) as service:
        code = service.stop(signal.SIGINT)
    assert code == 0
    assert not any("Traceback" in line for line in service.stderr_lines)


def test_sighup_stops_the_key_as_cleanly_as_sigterm(tmp_path: Path) -> None:
    """A closed terminal or a dropped ssh session (SIGHUP) killed `vfido run` outright: no
    answer to the waiting request, the control socket left behind (outside review)."""
    socket_path = tmp_path / "ctl.sock"
    with udp_service(["--ephemeral", "--control-socket", str(socket_path)]) as service:
        assert socket_path.exists()
        code = service.stop(signal.SIGHUP)
    assert code == 0 and not socket_path.exists()
    assert any("signal 1: stopping" in line for line in service.stderr_lines)
    # Under nohup (SIGHUP ignored when it starts) it stays ignored.
    port, peer = free_ports(2)
    argv = [sys.executable, "-m", "vfido", "run", "--transport", "udp", "--ephemeral"]
    argv += ["--udp-port", str(port), "--udp-peer-port", str(peer)]
    process = subprocess.Popen(
        argv,
        env=service_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        assert process.stderr is not None
        while "listening on udp" not in process.stderr.readline():
            assert process.poll() is None
        process.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_second_service_on_same_keystore_is_refused(keystore: Path) -> None:
    with udp_service(["--keystore", str(keystore)]):
        result = vfido(["info", "--keystore", str(keystore)])
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0


def test_alg_names_agree_with_the_authenticator() -> None:
    """One table of algorithm names (#18): the command line and the dashboard show the
    authenticator's (they kept copies while importing it ran the ML-DSA self-test)."""
    import vfido.cli
    from vfido.authenticator import cose
    from vfido.dashboard import render

    assert not hasattr(vfido.cli, "ALG_NAMES")
    assert render.ALGORITHM_NAMES is cose.ALGORITHM_NAMES
    assert render._algorithm(cose.MLDSA65) == cose.ALGORITHM_NAMES[cose.MLDSA65] == "ML-DSA-65"


def test_credentials_list_columns_line_up_for_every_algorithm(keystore: Path) -> None:
    import time

    from tests.service_helpers import PASSPHRASE
    from vfido.authenticator.cose import MLDSA65, CredentialKey, can_sign
    from vfido.authenticator.provisioning import add_credential
    from vfido.keystore.sqlite_store import SqliteKeyStore

    algorithms = [-7, MLDSA65] if can_sign(MLDSA65) else [-7, -257]
    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        for i, alg in enumerate(algorithms):
            add_credential(
                store,
                CredentialKey.generate(alg),
                "columns.example",
                now=time.time(),
                user_id=bytes([i + 1]) * 8,
                user_name=f"user{i}",
                cred_protect=3,
            )
    listing = vfido(["credentials", "list", "--keystore", str(keystore)])
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert len(rows) == len(algorithms)
    column = header.index("prot")
    for row in rows:
        assert row[column] == "3", (header, row)  # credProtect under its heading


def test_a_keystore_in_use_is_said_first_with_what_to_do(keystore: Path) -> None:
    """With a key running on the keystore, `vfido credentials list` (export, pin, reset...)
    asked for the passphrase, then said only "in use by another process" (a newcomer). Now
    it says so first, and that `vfido ctl` talks to the running key."""
    from vfido.keystore.lock import DirectoryLock
    from vfido.keystore.sqlite_store import LOCK_NAME

    lock = DirectoryLock(keystore / LOCK_NAME)  # as a running `vfido run` holds it
    try:
        for argv in (["credentials", "list"], ["export", "x.bundle"], ["pin", "status"]):
            result = vfido([*argv, "--keystore", str(keystore)], passphrase=None)
            assert result.returncode == 1, (argv, result.stderr)
            assert result.stderr.count("\n") == 1, result.stderr
            assert "is in use by another process" in result.stderr
            assert "`vfido ctl credentials list`" in result.stderr
    finally:
        lock.release()
    assert vfido(["credentials", "list", "--keystore", str(keystore)]).returncode == 0


def test_credentials_list_shows_where_it_cut_a_name(keystore: Path) -> None:
    """An RP ID or user name longer than its column is cut with an ellipsis, an RP ID at
    its start (its end says whose it is): cut silently at its end,
    "login.microsoftonline.com.evil.example" read as the trusted site (a security review)."""
    import time

    from tests.service_helpers import PASSPHRASE
    from vfido.authenticator.cose import CredentialKey
    from vfido.authenticator.provisioning import add_credential
    from vfido.keystore.sqlite_store import SqliteKeyStore

    with SqliteKeyStore.open(keystore, PASSPHRASE) as store:
        add_credential(
            store,
            CredentialKey.generate(-7),
            "login.microsoftonline.com.evil.example",
            now=time.time(),
            user_id=b"\x01" * 8,
            user_name="administrator@contoso.example",
        )
    listing = vfido(["credentials", "list", "--keystore", str(keystore)])
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert " \u2026softonline.com.evil.example " in row
    assert "administrator@contoso.e\u2026 " in row
    assert row.index("ES256") == header.index("alg")  # the columns still line up


def _path_arguments() -> list[tuple[str, str]]:
    """(subcommand words, option or positional) of every path argument of `vfido`."""
    import argparse

    from vfido.cli.common import PATH_METAVARS
    from vfido.cli.main import build_parser

    found: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, words: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())
            elif action.metavar in PATH_METAVARS:
                found.append((words, action.option_strings[0] if action.option_strings else ""))

    walk(build_parser(), "")
    return found


def test_every_path_argument_refuses_an_empty_string() -> None:
    """`--keystore ""` once meant the default keystore (`args.keystore or default`): `vfido
    reset --yes --keystore ""` erased it. Every FILE/DIR/PATH argument refuses "" now."""
    from vfido.cli.main import build_parser

    arguments = _path_arguments()
    options = {option for _, option in arguments}
    assert {"--keystore", "--passphrase-file", "--control-socket", "--prefix", ""} <= options
    for words, option in arguments:
        argv = [*words.split(), *([option, ""] if option else [""])]
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2, argv


def test_reset_with_an_empty_keystore_path_erases_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = vfido(["init"], XDG_DATA_HOME=str(data))
    assert made.returncode == 0, made.stderr
    before = sorted((p.name, p.stat().st_size) for p in (data / "vfido").iterdir())
    result = vfido(["reset", "--yes", "--keystore", ""], XDG_DATA_HOME=str(data))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "an empty string names no file" in result.stderr
    assert sorted((p.name, p.stat().st_size) for p in (data / "vfido").iterdir()) == before
    assert vfido(["info"], XDG_DATA_HOME=str(data)).returncode == 0


def test_secrets_that_are_not_utf8_text_are_one_clear_line(keystore: Path, tmp_path: Path) -> None:
    """A passphrase file or variable that is not UTF-8, or a file far too long to be one
    (/dev/zero named by mistake is never read to the end): one line each, no traceback."""
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (64 * 1024 + 1))
    for secret in (binary, huge):
        secret.chmod(0o600)
    cases = [
        (
            ["info", "--keystore", str(keystore), "--passphrase-file", str(binary)],
            {},
            "is not UTF-8",
        ),
        (["info", "--keystore", str(keystore), "--passphrase-file", str(huge)], {}, "longer than"),
        (
            ["info", "--keystore", str(keystore), "--passphrase-file", "/dev/zero"],
            {},
            "longer than",
        ),
        (
            ["passphrase", "change", "--keystore", str(keystore)],
            {"VFIDO_NEW_PASSPHRASE": "\udcff"},  # what Python makes of the byte 0xff
            "$VFIDO_NEW_PASSPHRASE is not UTF-8",
        ),
        (["ctl", "credentials", "add", "--rp", "x", "--key", str(binary)], {}, "is not PEM"),
    ]
    for argv, extra, expected in cases:
        result = vfido(argv, **extra)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert vfido(["info", "--keystore", str(keystore)]).returncode == 0  # passphrase unchanged


def test_seconds_arguments_refuse_nan_inf_and_absurd_values() -> None:
    from vfido.cli.main import build_parser

    for argv in (
        ["run", "--presence-timeout", "nan"],
        ["run", "--presence-timeout", "inf"],
        ["run", "--presence-delay", "1e300"],
        ["ctl", "presence", "auto", "--delay", "inf"],
        ["ctl", "presence", "auto", "--delay", "-1"],
    ):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2, argv
    assert build_parser().parse_args(["run", "--presence-timeout", "2.5"]).presence_timeout == 2.5
    # 0 passes the range, and then gets the same words, not a contradiction of them.
    zero = vfido(["run", "--transport", "udp", "--ephemeral", "--presence-timeout", "0"])
    assert zero.returncode == 1 and "more than 0 seconds (up to 86400)" in zero.stderr
    # An approval that always comes after the timeout: every request would fail (a session
    # 15 newcomer's trial: accepted, then USER_ACTION_TIMEOUT for everything).
    late = ["--presence-delay", "2", "--presence-timeout", "1"]
    late_run = vfido(["run", "--transport", "udp", "--ephemeral", *late])
    assert late_run.returncode == 1
    assert late_run.stderr == (
        "vfido: error: a presence delay of 2 s is not shorter than the presence timeout (1 s): "
        "every request would time out\n"
    )


def test_error_lines_escape_what_they_quote(tmp_path: Path) -> None:
    """A path or value quoted in an error line is shown escaped, never as control sequences
    for the terminal: the one error printer of `vfido`, argparse's usage errors included."""
    hostile = "\x1b[31m\x1b]0;pwned\x07"
    for argv in (
        ["info", "--keystore", str(tmp_path / hostile)],
        ["trace", "show", str(tmp_path / hostile)],
        ["run", "--presence-timeout", hostile],
        ["info", hostile],  # argparse's own "unrecognized arguments: %s"
    ):
        result = vfido(argv)
        assert result.returncode in (1, 2), (argv, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "\x1b" not in result.stderr and "\x07" not in result.stderr, result.stderr
        assert "\\x1b[31m\\x1b]0;pwned\\x07" in result.stderr, result.stderr


def test_success_lines_escape_what_they_quote_too(tmp_path: Path) -> None:
    """`vfido init` printed the keystore path it was given raw, `info` too: every line a
    command writes goes through the same escaping (newlines kept)."""
    directory = tmp_path / "k\x1b]0;pwned\x07"
    made = vfido(["init", "--keystore", str(directory)])
    assert made.returncode == 0, made.stderr
    shown = vfido(["info", "--keystore", str(directory)])
    assert shown.returncode == 0, shown.stderr
    for output in (made.stdout, shown.stdout):
        assert "\x1b" not in output and "\x07" not in output
        assert "k\\x1b]0;pwned\\x07" in output
    assert shown.stdout.count("\n") > 5  # the lines are still lines


def test_names_and_serials_are_checked_where_they_are_given() -> None:
    """Every `--name` takes only what can name a key (it names a socket file and is shown in
    lines); a bad one was a traceback in `doctor`, `ctl` and `status`, and a raw escape
    sequence in `run`. `--serial` is checked whatever the transport."""
    import argparse

    from vfido.cli.main import build_parser

    commands: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*words, name])
            elif "--name" in action.option_strings:
                commands.append(words)

    walk(build_parser(), [])
    assert ["run"] in commands and ["doctor"] in commands and ["status"] in commands
    for words in commands:
        for bad in ("", "a/b", ".hidden", "\x1b[31m", "x" * 65, "caf\u00e9"):
            with pytest.raises(SystemExit) as exited:
                build_parser().parse_args([*words, "--name", bad])
            assert exited.value.code == 2, (words, bad)
    assert build_parser().parse_args(["doctor", "--name", "udp-8111"]).name == "udp-8111"
    for bad in ("\x1b[31m", "has space", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--serial", bad])


def test_a_new_pin_with_a_nul_is_refused_in_words() -> None:
    """The key ends a PIN at its zero padding (`1234\\0\\0` would set 1234) and no browser can
    type a NUL: `vfido pin set` refuses one instead of setting a PIN nobody can enter."""
    from vfido.cli.pin import PinCliError, check_new_pin

    for pin in ("12\x0034", "1234\x00\x00"):
        with pytest.raises(PinCliError, match="contains a NUL character"):
            check_new_pin(pin)
    check_new_pin("1234")


def test_a_key_that_fails_to_start_leaves_no_socket_behind(tmp_path: Path) -> None:
    """The unix transport binds its socket when made, before the control socket is checked:
    a control socket in a directory others can read failed the start and left the key's
    socket file behind."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    argv = ["run", "--ephemeral", "--transport", "unix", "--control-socket", str(shared / "k")]
    result = vfido(argv)
    assert result.returncode == 1 and "accessible by other users" in result.stderr
    assert list(shared.iterdir()) == []


def test_settings_that_would_break_the_key_are_refused_at_start() -> None:
    """Each was accepted and then broke the key: a UDP key replying to its own port answered
    itself in a loop; a resident-credential limit beyond a CBOR integer failed every getInfo
    (0x7F); an empty webdriver --host listened on every interface."""
    from vfido.authenticator.config import Config
    from vfido.cli.main import build_parser

    same = ["--udp-port", "18111", "--udp-peer-port", "18111"]
    result = vfido(["run", "--ephemeral", "--transport", "udp", *same])
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "--udp-port and --udp-peer-port are both 18111" in result.stderr
    one = str(Path(tempfile.mkdtemp()) / "k.sock")
    both = ["--unix-socket", one, "--control-socket", one]
    result = vfido(["run", "--ephemeral", "--transport", "unix", *both])
    assert (
        result.returncode == 1 and "--unix-socket and the control socket are both" in result.stderr
    )
    with pytest.raises(ValueError, match="from 1 to 4294967295"):
        Config(max_resident_credentials=10**23)
    Config(max_resident_credentials=0xFFFFFFFF)
    for host in ("", "\udcff", "a\x1bb"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["webdriver", "--upstream", "http://x", "--host", host])


def test_bytes_that_are_not_utf8_on_the_command_line_are_one_line(tmp_path: Path) -> None:
    """A keystore path or a --user-id-text that is not UTF-8 (Python holds such bytes as
    surrogates) was a UnicodeEncodeError traceback, and `init` left a directory behind."""
    odd = str(tmp_path / "k") + "\udcff"  # the byte 0xff in the path
    for argv in (
        ["init", "--keystore", odd],
        ["info", "--keystore", odd],
        ["ctl", "credentials", "add", "--rp", "example.com", "--user-id-text", "\udcff"],
        ["ctl", "credentials", "add", "--rp", "example.com", "--user-name", "\udcff"],
        ["ctl", "credentials", "add", "--rp", "example.com", "--rp-name", "\udcff"],
    ):
        result = vfido(argv)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert "is not UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_udp_keys_on_any_free_port_get_names_of_their_own() -> None:
    """`--udp-port 0` named every such key's control socket udp-0: a second one clashed."""
    from vfido.key import TransportOptions
    from vfido.keystore.sqlite_store import SqliteKeyStore
    from vfido.service import control_name

    with SqliteKeyStore.ephemeral() as store:
        any_port = control_name(TransportOptions(kind="udp", udp_port=0), store)
        fixed = control_name(TransportOptions(kind="udp", udp_port=8111), store)
    assert fixed == "udp-8111"
    assert any_port == f"udp-any-{os.getpid()}"


def test_files_are_read_up_to_a_limit_and_secrets_as_utf8(tmp_path: Path) -> None:
    """Key files, bundles and secrets are read at most one byte past their limit (/dev/zero
    named by mistake was read until memory ran out), and a PIN file that is not UTF-8 is one
    line like a passphrase file."""
    from vfido.cli.common import CliError, read_file
    from vfido.passphrase import PassphraseError, read_secret

    data = tmp_path / "data"
    data.write_bytes(b"x" * 11)
    assert read_file(data, "key file", 11) == b"x" * 11
    with pytest.raises(CliError, match=r"^key file .* is longer than 10 bytes$"):
        read_file(data, "key file", 10)
    with pytest.raises(CliError, match="longer than 1000 bytes"):
        read_file(Path("/dev/zero"), "bundle", 1000)
    pin = tmp_path / "pin"
    pin.write_bytes(b"12\xff4")
    pin.chmod(0o600)
    with pytest.raises(PassphraseError, match=r"PIN file .* is not UTF-8 text"):
        read_secret(pin, what="PIN", env="VFIDO_PIN", flag="--pin-file", prompt="PIN: ")


def test_a_secret_file_other_users_can_read_is_refused(keystore: Path, tmp_path: Path) -> None:
    """A passphrase (PIN, bundle passphrase) file is held to the keystore's own rule: one
    other users can read or write has given the secret away, so it is refused in one line
    and nothing is changed; a pipe (``<(pass show vfido)``) is read as it is."""
    from vfido import passphrase
    from vfido.passphrase import PassphraseError, read_secret

    secret = tmp_path / "passphrase"
    secret.write_text("a new passphrase\n")
    for mode in (0o644, 0o640, 0o620, 0o604):
        secret.chmod(mode)
        result = vfido(
            [
                "passphrase",
                "change",
                "--keystore",
                str(keystore),
                "--new-passphrase-file",
                str(secret),
            ]
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"accessible by other users (mode {mode:03o})" in result.stderr
        assert "chmod 600" in result.stderr
    assert vfido(["info", "--keystore", str(keystore)]).returncode == 0  # still the old one
    secret.chmod(0o600)
    assert read_secret(secret, what="PIN", env="X", flag="--pin-file", prompt="") == (
        "a new passphrase"
    )
    read, write = os.pipe()
    os.write(write, b"from a pipe\n")
    os.close(write)
    try:
        piped = Path(f"/proc/self/fd/{read}")
        os.fchmod(read, 0o666)  # a pipe's mode says nothing of who reads what is in it
        assert read_secret(piped, what="PIN", env="X", flag="--pin-file", prompt="") == (
            "from a pipe"
        )
    finally:
        os.close(read)
    if os.geteuid() == 0:  # a file of another user (made here as root: CI)
        os.chown(secret, 65534, 65534)
        with pytest.raises(PassphraseError, match="owned by another user; refusing it"):
            read_secret(secret, what="PIN", env="X", flag="--pin-file", prompt="")
    else:
        mine = os.stat_result((0o100600, 0, 0, 1, os.geteuid() + 1, 0, 0, 0, 0, 0))
        with pytest.raises(PassphraseError, match="owned by another user; refusing it"):
            passphrase._refuse_shared(mine, secret, "PIN")


def test_a_named_pipe_is_held_to_the_rules_of_a_file(tmp_path: Path) -> None:
    """A FIFO another user made (in /tmp, say) feeds the passphrase its maker writes into
    it: refused as that user's file would be. One of the user's own, closed to others, is
    read; one open to others is refused (they could open it and read the secret first)."""
    import threading

    from vfido import passphrase
    from vfido.passphrase import PassphraseError, read_secret

    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo, 0o600)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(b"through a fifo\n")

    def read_it() -> str:
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            return read_secret(fifo, what="passphrase", env="X", flag="--x", prompt="")
        finally:
            writer.join(10)

    assert read_it() == "through a fifo"
    fifo.chmod(0o644)
    with pytest.raises(PassphraseError, match=r"accessible by other users \(mode 644\)"):
        read_it()
    fifo.chmod(0o600)
    if os.geteuid() == 0:  # made here as root (CI): the FIFO of another user, as the attack
        os.chown(fifo, 65534, 65534)
        with pytest.raises(PassphraseError, match="owned by another user; refusing it"):
            read_it()
        # ... refused before it is opened: opening it would wait for a writer that never
        # comes (its owner decides).
        outcome: list[BaseException] = []

        def unwritten() -> None:
            try:
                read_secret(fifo, what="passphrase", env="X", flag="--x", prompt="")
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=unwritten, daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "vfido waited on another user's FIFO"
        assert "owned by another user" in str(outcome[0])
    else:
        theirs = os.stat_result((0o010600, 0, 0, 1, os.geteuid() + 1, 0, 0, 0, 0, 0))
        with pytest.raises(PassphraseError, match="owned by another user; refusing it"):
            passphrase._refuse_shared(theirs, fifo, "passphrase")


def _on_a_terminal(args: list[str], answers: list[bytes]) -> tuple[int, str]:
    """``vfido ARGS`` with a pseudo-terminal as its controlling terminal, stdin and output:
    each of ``answers`` is typed after the next prompt (a line ending in ": "). The exit
    code and everything the terminal showed."""
    import pty
    import select
    import sys
    import time

    from tests.service_helpers import env

    environment = env()
    environment.pop("VFIDO_PASSPHRASE", None)
    pid, master = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.execve(sys.executable, [sys.executable, "-m", "vfido", *args], environment)
    shown, pending = b"", list(answers)
    answered_at = 0  # how much the terminal had shown when the last answer was typed
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                # A new prompt since the last answer: the newline getpass writes after a line
                # is read is not one (typed then, an answer is echoed and then flushed).
                if pending and shown.endswith(b": ") and len(shown) > answered_at:
                    os.write(master, pending.pop(0))
                    answered_at = len(shown)
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_ctrl_d_at_a_passphrase_prompt_is_one_line(tmp_path: Path) -> None:
    """Ctrl-D (end of input) at `vfido init`'s passphrase prompt, on a real terminal: one
    line and exit 1, no traceback (getpass's EOFError was not caught), and no keystore."""
    code, shown = _on_a_terminal(["init", "--keystore", str(tmp_path / "ks")], [b"\x04"])
    assert code == 1, shown
    assert "Traceback" not in shown and "EOFError" not in shown, shown
    assert "vfido: error: no passphrase entered (end of input)" in shown, shown
    assert not (tmp_path / "ks" / "vfido.db").exists()


def test_a_new_passphrase_is_typed_twice_unseen_and_must_match(tmp_path: Path) -> None:
    """`vfido init` on a real terminal: the passphrase is not echoed (``read_secret``: "What
    the user types at prompt (not echoed)"), and the confirmation must equal it ("confirm:
    typed twice"); a mistyped repeat creates no keystore (a session 20 mutation sampling:
    neither was tested)."""
    typed = b"s3cret-passphrase"
    code, shown = _on_a_terminal(
        ["init", "--keystore", str(tmp_path / "typo")], [typed + b"\n", b"s3cret-passphrasf\n"]
    )
    assert code == 1, shown
    assert "vfido: error: the passphrases do not match" in shown, shown
    assert not (tmp_path / "typo" / "vfido.db").exists()
    code, shown = _on_a_terminal(
        ["init", "--keystore", str(tmp_path / "ks")], [typed + b"\n", typed + b"\n"]
    )
    assert code == 0, shown
    assert "Repeat:" in shown and typed.decode() not in shown, shown
    assert (tmp_path / "ks" / "vfido.db").exists()


def test_a_byte_that_is_not_utf8_at_a_prompt_is_one_line(tmp_path: Path) -> None:
    """An é typed on a Latin-1 terminal (one byte, 0xE9) at a passphrase prompt: getpass's
    UnicodeDecodeError was a traceback (a session 15 newcomer's trial); now one line, exit
    1, and no keystore."""
    code, shown = _on_a_terminal(["init", "--keystore", str(tmp_path / "ks")], [b"\xe9\n"])
    assert code == 1, shown
    assert "Traceback" not in shown and "codec" not in shown, shown
    assert "vfido: error: the passphrase typed is not UTF-8 text" in shown, shown
    assert not (tmp_path / "ks" / "vfido.db").exists()


@pytest.mark.parametrize("argv", [["personas"], ["--help"], ["--version"], ["run", "--help"]])
@pytest.mark.parametrize("buffered", [True, False])
def test_output_to_a_full_disk_is_one_line(buffered: bool, argv: list[str]) -> None:
    """`vfido personas > /dev/full`: one line and exit 1. With Python's usual buffered
    stdout (PYTHONUNBUFFERED unset, as on a user's machine) the error came at the final
    flush, uncaught: a traceback and exit 120. --help and --version are written by argparse
    while it parses, which dropped the failed write: exit 0 and nothing said (a session 19
    newcomer)."""
    import subprocess
    import sys

    from tests.service_helpers import env

    environment = env()
    environment.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "vfido", *argv],
            env=environment,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    # Unbuffered, the command's own print fails, in the command's error handler.
    said = "cannot write the output: " if buffered or argv != ["personas"] else ""
    assert result.stderr.splitlines() == [f"vfido: error: {said}No space left on device"]


def test_a_usage_error_that_cannot_be_written_still_exits_2() -> None:
    """Nowhere to say it (stderr on /dev/full): still the usage error's status, not 1 (and
    a closed pipe gave 0, a diff review)."""
    import subprocess
    import sys

    from tests.service_helpers import env

    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "vfido", "--bogus"], env=env(), stderr=full, timeout=60
        )
    assert result.returncode == 2
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "vfido", "--bogus"], env=env(), stderr=write, timeout=60
        )
    finally:
        os.close(write)
    assert result.returncode == 2


def test_vfido_run_exits_with_one_line_when_its_transport_stops_serving(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transport whose I/O failed left `vfido run` running and serving nothing (a UHID
    review: the hidraw node stayed, nobody answered it, and the service's Restart=on-failure
    never came). It now stops with one line and exit status 1. Here the process's UDP
    reading thread fails (the same `failure` as a failed read of /dev/uhid)."""
    import threading
    import time

    from vfido.cli import main
    from vfido.transports import udp

    port, peer = free_ports(2)
    broke = threading.Event()

    def break_the_reader() -> None:
        deadline = time.monotonic() + 20
        reader = udp._shared_reader()
        while time.monotonic() < deadline and not reader._has_transports():
            time.sleep(0.01)

        def failing_select(timeout: float | None = None) -> list[object]:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(reader._selector, "select", failing_select)
        reader._wake()
        broke.set()

    helper = threading.Thread(target=break_the_reader, daemon=True)
    helper.start()
    argv = ["run", "--transport", "udp", "--ephemeral", "--presence", "auto"]
    argv += ["--udp-port", str(port), "--udp-peer-port", str(peer)]
    argv += ["--control-socket", str(tmp_path / "k")]
    assert main(argv) == 1
    helper.join(5)
    assert broke.is_set()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last == (
        "vfido: error: the key stopped serving: waiting for its UDP sockets failed: "
        "[Errno 5] Input/output error"
    ), err
    assert "Traceback" not in err
    # The transport's own log line says it too: the only word of it for VirtualKey and
    # library users, who do not poll `failure` (a second diff review).
    assert any(
        r.levelname == "ERROR" and "waiting for its UDP sockets failed" in r.getMessage()
        for r in caplog.records
    )
    assert not (tmp_path / "k").exists()  # stopped as cleanly as by a signal
