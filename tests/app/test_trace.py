"""Traces (vfido.trace): a real PIN + hmac-secret registration and authentication traced,
every secret of the exchange absent from the file, `vfido trace show`, `vfido run --trace`
and the control socket's `log` command."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fido2.cose import ES256
from fido2.ctap1 import ApduError, Ctap1
from fido2.ctap2.base import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.hid import CtapHidDevice
from fido2.webauthn import AuthenticatorData

from tests.service_helpers import udp_service
from vfido.authenticator.config import Config
from vfido.authenticator.device import Authenticator
from vfido.cli import main
from vfido.control import ControlClient
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.presence import AutoPresence
from vfido.trace import TraceRecorder, format_trace, read_trace
from vfido.transports.inprocess import InProcessKey
from vfido.transports.udp import open_udp_device

PIN = "4711-secret-pin"
RP_ID = "example.com"
SALT1 = bytes(range(100, 132))
SALT2 = bytes(range(200, 232))


@dataclass
class Exchange:
    """What a PIN + hmac-secret registration and authentication produced, secrets included."""

    secrets: dict[str, bytes]
    credential_id: bytes
    user_id: bytes


def _run_exchange(ctap: Ctap2, store: SqliteKeyStore) -> Exchange:
    client_pin = ClientPin(ctap, PinProtocolV2())
    client_pin.set_pin(PIN)
    permissions = ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.GET_ASSERTION
    token = client_pin.get_pin_token(PIN, permissions, RP_ID)
    protocol = client_pin.protocol

    user_id = b"user-handle-alice"
    cdh1 = hashlib.sha256(b"client data 1").digest()
    mc_param = protocol.authenticate(token, cdh1)
    attestation = ctap.make_credential(
        cdh1,
        {"id": RP_ID, "name": "Example"},
        {"id": user_id, "name": "alice", "displayName": "Alice"},
        [{"type": "public-key", "alg": ES256.ALGORITHM}],
        extensions={"hmac-secret": True},
        options={"rk": True},
        pin_uv_param=mc_param,
        pin_uv_protocol=protocol.VERSION,
    )
    assert attestation.auth_data.credential_data is not None
    credential_id = attestation.auth_data.credential_data.credential_id

    # A fresh token for the assertion (the first one's permissions were used up).
    token2 = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    key_agreement, shared_secret = client_pin._get_shared_secret()  # type: ignore[no-untyped-call]
    salt_enc = protocol.encrypt(shared_secret, SALT1 + SALT2)
    salt_auth = protocol.authenticate(shared_secret, salt_enc)
    cdh2 = hashlib.sha256(b"client data 2").digest()
    ga_param = protocol.authenticate(token2, cdh2)
    assertion = ctap.get_assertion(
        RP_ID,
        cdh2,
        [{"type": "public-key", "id": credential_id}],
        extensions={
            "hmac-secret": {1: key_agreement, 2: salt_enc, 3: salt_auth, 4: protocol.VERSION}
        },
        pin_uv_param=ga_param,
        pin_uv_protocol=protocol.VERSION,
    )
    auth_data = AuthenticatorData(assertion.auth_data)
    assert auth_data.extensions is not None
    encrypted_output = auth_data.extensions["hmac-secret"]
    output = protocol.decrypt(shared_secret, encrypted_output)
    assert len(output) == 64

    (summary,) = store.list_credentials()
    identity = store.identity()
    secrets = {
        "PIN": PIN.encode(),
        "PIN hash": hashlib.sha256(PIN.encode()).digest()[:16],
        "PIN token": token,
        "second PIN token": token2,
        "shared secret": shared_secret,
        "makeCredential pinUvAuthParam": mc_param,
        "getAssertion pinUvAuthParam": ga_param,
        "salt 1": SALT1,
        "salt 2": SALT2,
        "saltEnc": salt_enc,
        "saltAuth": salt_auth,
        "hmac-secret output 1": output[:32],
        "hmac-secret output 2": output[32:],
        "hmac-secret encrypted output": encrypted_output,
        "credential private key": summary.record.private_key,
        "credRandom (uv)": summary.record.cred_random_uv or b"",
        "credRandom (no uv)": summary.record.cred_random_no_uv or b"",
        "device credential key": identity.credential_key,
        "attestation private key": identity.attestation_key,
    }
    return Exchange({k: v for k, v in secrets.items() if v}, credential_id, user_id)


def _encodings(secret: bytes) -> list[str]:
    """Ways a secret could appear in a text file."""
    b64 = base64.b64encode(secret).decode().rstrip("=")
    b64url = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    found = [secret.hex(), secret.hex().upper(), b64[:-1] or b64, b64url[:-1] or b64url]
    with suppress(UnicodeDecodeError):
        found.append(secret.decode("ascii"))
    return found


def _assert_no_secret(text: str, data: bytes, secrets: dict[str, bytes]) -> None:
    for name, secret in secrets.items():
        assert secret not in data, f"{name} appears raw in the trace"
        for encoded in _encodings(secret):
            assert encoded not in text, f"{name} appears ({encoded[:8]}...) in the trace"


@contextmanager
def traced_key(path: Path) -> Iterator[tuple[CtapHidDevice, SqliteKeyStore, TraceRecorder]]:
    """An in-process key whose requests and packets are traced to ``path``: its python-fido2
    device, its store and the recorder (closed afterwards)."""
    store = SqliteKeyStore.ephemeral()
    recorder = TraceRecorder(path)
    key = InProcessKey(recorder.wrap(Authenticator(store, AutoPresence(), Config())))
    key.runner.packet_observer = recorder.packet
    device = CtapHidDevice(key.descriptor, key.connect(owns_key=True))
    try:
        yield device, store, recorder
    finally:
        device.close()
        recorder.close()
        store.close()


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Path, Exchange, TraceRecorder]]:
    path = tmp_path / "trace.jsonl"
    with traced_key(path) as (device, store, recorder):
        exchange = _run_exchange(Ctap2(device), store)
        yield path, exchange, recorder


def _records(path: Path) -> list[dict[str, Any]]:
    return list(read_trace(path))


def _response(records: list[dict[str, Any]], command: str, **params: Any) -> dict[str, Any]:
    for record in records:
        if (
            record["type"] == "response"
            and record["command"] == command
            and all(record["params"].get(k) == v for k, v in params.items())
        ):
            return record
    raise AssertionError(f"no {command} response {params} in the trace")


def test_trace_file_is_private_and_holds_packets_and_decoded_transactions(
    traced: tuple[Path, Exchange, TraceRecorder],
) -> None:
    path, exchange, _ = traced
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    records = _records(path)
    assert records[0]["type"] == "start"
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(records) + 1))

    # Packets: INIT on the broadcast channel answered with a new channel, then CBOR
    # requests (in) and responses (out) on that channel, continuation packets numbered.
    packets = [r for r in records if r["type"] == "packet"]
    init_in = next(p for p in packets if p.get("cmd") == "INIT" and p["dir"] == "in")
    assert init_in["cid"] == "ffffffff"
    init_out = next(p for p in packets if p.get("cmd") == "INIT" and p["dir"] == "out")
    cid = init_out["new_cid"]
    assert re.fullmatch(r"[0-9a-f]{8}", cid) and cid != "ffffffff"
    cbor_in = [p for p in packets if p.get("cmd") == "CBOR" and p["dir"] == "in"]
    cbor_out = [p for p in packets if p.get("cmd") == "CBOR" and p["dir"] == "out"]
    assert {p["cid"] for p in cbor_in + cbor_out} == {cid}
    assert "makeCredential" in {p.get("ctap") for p in cbor_in}
    assert any("cont" in p for p in packets if p["dir"] == "out")  # the attestation is long
    assert all(p["size"] == 64 for p in packets)
    assert all("payload" not in p and "data" not in p for p in packets)

    # Requests and responses, decoded with field names.
    mc = _response(records, "makeCredential")
    assert mc["cid"] == cid and mc["proto"] == "CBOR" and mc["status"] == "OK"
    assert mc["params"]["rp"] == {"id": RP_ID, "name": "Example"}
    assert mc["params"]["user"]["name"] == "alice"
    assert mc["params"]["user"]["id"] == f"h'{exchange.user_id.hex()}'"
    assert mc["params"]["pubKeyCredParams"] == [{"type": "public-key", "alg": -7}]
    assert mc["params"]["options"] == {"rk": True}
    assert mc["params"]["extensions"] == {"hmac-secret": True}
    assert mc["params"]["pinUvAuthParam"] == "<redacted 32 bytes>"
    assert mc["result"]["fmt"] == "packed"
    auth = mc["result"]["authData"]
    assert auth["flags"] == ["UP", "UV", "AT", "ED"]
    assert auth["credentialId"] == f"h'{exchange.credential_id.hex()}'"
    assert auth["publicKey"]["alg"] == -7
    assert auth["extensions"] == {"hmac-secret": True}
    assert mc["result"]["attStmt"]["alg"] == -7
    assert "makeCredential rp=example.com user=alice alg=[-7] rk=true" in mc["summary"]

    ga = _response(records, "getAssertion")
    assert ga["status"] == "OK" and ga["params"]["rpId"] == RP_ID
    hmac_in = ga["params"]["extensions"]["hmac-secret"]
    assert hmac_in["saltEnc"].startswith("<redacted ")
    assert hmac_in["saltAuth"] == "<redacted 32 bytes>"
    assert set(hmac_in["keyAgreement"]) >= {"kty", "alg", "crv"}
    assert hmac_in["keyAgreement"]["x"] == "<32 bytes>"
    assert ga["result"]["authData"]["extensions"]["hmac-secret"].startswith("<redacted ")
    assert ga["result"]["authData"]["signCount"] == 1
    assert ga["result"]["credential"]["id"] == f"h'{exchange.credential_id.hex()}'"

    set_pin = _response(records, "clientPIN", subCommand="setPIN")
    assert set_pin["params"]["newPinEnc"].startswith("<redacted ")
    assert set_pin["params"]["pinUvAuthParam"].startswith("<redacted ")
    token = _response(records, "clientPIN", subCommand="getPinUvAuthTokenUsingPinWithPermissions")
    assert token["params"]["pinHashEnc"].startswith("<redacted ")
    assert token["params"]["permissions"] == ["mc", "ga"]
    assert token["params"]["rpId"] == RP_ID
    assert token["result"]["pinUvAuthToken"].startswith("<redacted ")
    info = _response(records, "getInfo")
    assert "FIDO_2_1" in info["result"]["versions"]


def test_no_secret_reaches_the_trace(traced: tuple[Path, Exchange, TraceRecorder]) -> None:
    path, exchange, recorder = traced
    data = path.read_bytes()
    assert len(exchange.secrets) >= 15
    _assert_no_secret(data.decode(), data, exchange.secrets)
    # Nor the in-memory ring buffer the control socket serves.
    ring = json.dumps(recorder.recent(10_000)).encode()
    _assert_no_secret(ring.decode(), ring, exchange.secrets)


def test_a_leak_would_be_found(traced: tuple[Path, Exchange, TraceRecorder]) -> None:
    """The secret check itself works: a trace line with the token in hex is caught."""
    path, exchange, _ = traced
    text = path.read_text() + exchange.secrets["PIN token"].hex()
    with pytest.raises(AssertionError, match="PIN token"):
        _assert_no_secret(text, text.encode(), exchange.secrets)


def test_trace_show(traced: tuple[Path, Exchange, TraceRecorder]) -> None:
    path, _, _ = traced
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["trace", "show", str(path)]) == 0
    lines = out.getvalue().splitlines()
    stamp = r"\d\d:\d\d:\d\d\.\d{3}"
    cid = r"cid 0x[0-9a-f]{8}"
    assert re.fullmatch(rf"{stamp} trace started \(vfido .+, pid \d+\)", lines[0])
    assert any(re.fullmatch(rf"{stamp} cid 0xffffffff INIT -> new {cid}", ln) for ln in lines)
    patterns = [
        rf"{stamp} {cid} CBOR getInfo -> OK \d+ bytes versions=.*FIDO_2_1.*",
        rf"{stamp} {cid} CBOR clientPIN setPIN pinUvAuth=v2 -> OK 1 bytes.*",
        rf"{stamp} {cid} CBOR clientPIN getPinUvAuthTokenUsingPinWithPermissions "
        r"rp=example\.com permissions=mc,ga -> OK \d+ bytes.*",
        rf"{stamp} {cid} CBOR makeCredential rp=example\.com user=alice alg=\[-7\] rk=true "
        r"ext=\[hmac-secret\] pinUvAuth=v2 -> OK \d+ bytes fmt=packed flags=UP,UV,AT,ED "
        r"count=0 cred=h'[0-9a-f]{16}\.\.' \(\d+\.\d{3} s\).*",
        rf"{stamp} {cid} CBOR getAssertion rp=example\.com allowList=1 ext=\[hmac-secret\] "
        r"pinUvAuth=v2 -> OK \d+ bytes flags=UP,UV,ED count=1 cred=h'[0-9a-f]{16}\.\.'.*",
    ]
    for pattern in patterns:
        assert any(re.fullmatch(pattern, ln) for ln in lines), pattern
    # One line per transaction: no packets without --details.
    assert not any("->" in ln and " cont " in ln for ln in lines)

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["trace", "show", "--details", str(path)]) == 0
    detailed = out.getvalue()
    assert re.search(
        rf"{stamp}   -> cid 0x[0-9a-f]{{8}} CBOR bcnt=\d+ ctap=makeCredential", detailed
    )
    assert re.search(rf"{stamp}   <- cid 0x[0-9a-f]{{8}} cont 0", detailed)
    assert '"pinUvAuthParam": "<redacted 32 bytes>"' in detailed


def test_show_survives_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('not json\n{"type": "response", "summary": "CBOR getInfo -> OK"}\n[1]\n')
    lines = list(format_trace(read_trace(path)))
    assert lines == ["??:??:??.??? cid ? CBOR getInfo -> OK"]


def test_trace_file_refuses_a_symlink_and_tightens_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError, match="is a symbolic link: name the file itself"):
        TraceRecorder(link)
    existing = tmp_path / "old.jsonl"
    existing.write_text('{"type": "start", "seq": 1}\n')  # an earlier run's trace
    existing.chmod(0o644)
    TraceRecorder(existing).close()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert existing.read_text().startswith('{"type": "start", "seq": 1}\n')  # appended


def test_vfido_run_trace_and_control_log(tmp_path: Path) -> None:
    path = tmp_path / "run-trace.jsonl"
    control = tmp_path / "ctl.sock"
    with udp_service(
        ["--ephemeral", "--trace", str(path), "--control-socket", str(control)]
    ) as service:
        device = open_udp_device(service.port, service.peer_port)
        try:
            Ctap2(device).make_credential(  # Ctap2() sends getInfo
                hashlib.sha256(b"cd").digest(),
                {"id": RP_ID},
                {"id": b"u1", "name": "bob"},
                [{"type": "public-key", "alg": -7}],
            )
        finally:
            device.close()
        with ControlClient(control) as client:
            answer = client.call("log", limit=50)
            later = client.call("log", since=answer["last"])
    records = answer["records"]
    assert later["records"] == []
    assert [r["command"] for r in records if r["type"] == "response"] == [
        "getInfo",
        "makeCredential",
    ]
    assert any(r["type"] == "packet" and r.get("cmd") == "INIT" for r in records)
    assert not any(r["type"] == "packet" and r.get("cmd") == "CBOR" for r in records)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    in_file = [r for r in read_trace(path) if r["type"] == "response"]
    assert [r["summary"] for r in in_file] == [
        r["summary"] for r in records if r["type"] == "response"
    ]
    assert "makeCredential rp=example.com user=bob alg=[-7] -> OK" in in_file[1]["summary"]


def test_ctap1_messages_are_traced(tmp_path: Path) -> None:
    path = tmp_path / "u2f.jsonl"
    with traced_key(path) as (device, _store, _recorder):
        ctap1 = Ctap1(device)
        challenge, app = hashlib.sha256(b"c").digest(), hashlib.sha256(b"app").digest()
        registration = ctap1.register(challenge, app)
        signature = ctap1.authenticate(challenge, app, registration.key_handle)
        with pytest.raises(ApduError):
            ctap1.authenticate(challenge, hashlib.sha256(b"other").digest(), b"\x00" * 64)
    records = _records(path)
    register = _response(records, "REGISTER")
    assert register["proto"] == "MSG" and register["status"] == "NO_ERROR"
    assert register["params"]["application"] == f"h'{app.hex()}'"
    assert register["result"]["keyHandle"] == f"h'{registration.key_handle.hex()}'"
    ok, refused = [r for r in records if r["type"] == "response" and r["command"] == "AUTHENTICATE"]
    assert ok["result"]["counter"] == signature.counter == 1
    assert refused["status"] == "WRONG_DATA"
    lines = list(format_trace(records))
    assert any(re.search(r" MSG REGISTER app=h'[0-9a-f]{16}\.\.' -> NO_ERROR", ln) for ln in lines)
    assert any(" MSG AUTHENTICATE " in ln and "-> WRONG_DATA 2 bytes" in ln for ln in lines)


def test_traced_key_keeps_its_protocols(tmp_path: Path) -> None:
    """The trace wrapper passes the key's protocols through, so a traced U2F-only key
    is still advertised without CTAPHID's CBOR capability (and a plain handler: both)."""
    from vfido.authenticator.behaviours import Behaviours

    recorder = TraceRecorder(tmp_path / "trace.jsonl")
    store = SqliteKeyStore.ephemeral()
    inner = Authenticator(
        store, AutoPresence(), Config(), behaviours=Behaviours.from_assignments(["versions=U2F_V2"])
    )
    key = InProcessKey(recorder.wrap(inner))
    device = key.open()
    try:
        assert recorder.wrap(inner).supported_protocols() == frozenset({"u2f"})
        assert not device.capabilities & 0x04  # CAPABILITY.CBOR
        assert Ctap1(device).get_version() == "U2F_V2"

        class Plain:  # a handler without supported_protocols
            pass

        assert recorder.wrap(Plain()).supported_protocols() == frozenset({"ctap2", "u2f"})  # type: ignore[arg-type]
    finally:
        device.close()
        key.close()
        recorder.close()
        store.close()


def test_protocol_names_come_from_the_enums_that_define_them() -> None:
    """#18: the trace's tables are generated from the protocol enums, so a command or status
    added there is named in traces too (the trace used to keep copies)."""
    from vfido.authenticator.ctap1 import Sw
    from vfido.authenticator.dispatch import Command
    from vfido.authenticator.errors import CtapStatus
    from vfido.trace import names
    from vfido.transports.ctaphid import Command as HidCommand
    from vfido.transports.ctaphid import HidError

    for table, enum in (
        (names.CTAPHID_COMMANDS, HidCommand),
        (names.CTAPHID_ERRORS, HidError),
        (names.CTAP_COMMANDS, Command),
        (names.CTAP_STATUS, CtapStatus),
        (names.CTAP1_STATUS, Sw),
    ):
        assert set(table) == {int(member) for member in enum}, enum
    # the names the CTAP specification uses (authenticatorClientPIN...)
    assert names.CTAP_COMMANDS[0x01] == "makeCredential"
    assert names.CTAP_COMMANDS[0x06] == "clientPIN"
    assert names.CTAP_COMMANDS[0x41] == "credentialManagementPreview"
    assert names.CTAPHID_COMMANDS[0x3B] == "KEEPALIVE"
    assert names.CTAP_STATUS[0x31] == "PIN_INVALID"


def test_one_list_of_secret_fields_for_the_trace_and_the_dashboard() -> None:
    """#18: the trace and the dashboard kept two lists of secret field names with different
    contents; the one list has both (the stricter), and both redact what either did."""
    from vfido.dashboard.common import REDACTED
    from vfido.dashboard.render import redact
    from vfido.trace import decode
    from vfido.trace.names import is_secret

    trace_only = ("hmac-secret-mc", "set", "config")
    dashboard_only = ("pin", "pinToken", "sharedSecret", "credRandom", "token", "passphrase")
    for name in trace_only + dashboard_only + ("pinUvAuthParam", "largeBlobKey"):
        assert is_secret(name), name
        assert decode._bytes(name, b"\x01\x02") == "<redacted 2 bytes>"
        assert redact({name: "c2VjcmV0"}) == {name: REDACTED}
    assert not is_secret("clientDataHash") and redact({"rpId": "a.example"}) == {
        "rpId": "a.example"
    }


def test_trace_show_refuses_what_cannot_be_a_trace_and_survives_odd_times(tmp_path: Path) -> None:
    """A file without newlines (/dev/zero was read into memory until it ran out) is refused
    after one long line; a record's time the clock cannot show (1e999, NaN, 1e20) prints as
    ??:??:??.??? instead of a traceback."""
    from tests.service_helpers import vfido

    long_line = tmp_path / "long"
    long_line.write_bytes(b"\x00" * (2 << 20))
    result = vfido(["trace", "show", str(long_line)])
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "is not a vfido trace (a line is longer than" in result.stderr

    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        '{"type":"start","t":1e999,"version":"x","pid":1}\n'
        '{"type":"event","t":NaN,"event":"power cycle"}\n'
        '{"type":"event","t":1e20,"event":"power cycle"}\n'
    )
    result = vfido(["trace", "show", str(odd)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("??:??:??.???") == 3


def test_trace_appends_only_to_a_trace(tmp_path: Path) -> None:
    """`vfido run --trace` naming the keystore's database or any other file appended trace
    lines to it while the key served; a file that is not a trace already is refused, as is,
    and a trace (its first record: start) or an empty file takes more lines."""
    from vfido.trace.recorder import open_trace_file

    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\n")
    notes.chmod(0o644)
    with pytest.raises(OSError, match="is not a vfido trace: refusing to append"):
        open_trace_file(notes)
    assert notes.read_bytes() == b"my notes\n" and stat.S_IMODE(notes.stat().st_mode) == 0o644
    deep = tmp_path / "deep"
    deep.write_bytes(b"[" * 4000)  # json's RecursionError, not ValueError
    with pytest.raises(OSError, match="is not a vfido trace: refusing to append"):
        open_trace_file(deep)
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"type": "start", "version": "x", "pid": 1}\n')
    with open_trace_file(trace) as f:
        f.write('{"type": "event", "event": "power cycle"}\n')
    with open_trace_file(tmp_path / "new.jsonl") as f:
        f.write("{}\n")
    assert trace.read_text().count("\n") == 2


def test_trace_is_never_a_file_another_user_made(tmp_path: Path) -> None:
    """Another user pre-created the trace file (a trace's first line, 0600, in a shared
    directory): a root `vfido run --trace` appended to it, and the file stayed theirs to
    read (found by a security review)."""
    from tests.other_user import OTHER_UID, require_root
    from vfido.trace.recorder import open_trace_file

    require_root()
    planted = tmp_path / "trace.jsonl"
    planted.write_text('{"type": "start", "version": "x", "pid": 1}\n')
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(OSError, match="belongs to another user"):
        open_trace_file(planted)
    assert planted.read_text().count("\n") == 1
    # Under sudo, the file of the user who ran sudo is theirs to have appended to.
    os.environ["SUDO_UID"] = str(OTHER_UID)
    try:
        with open_trace_file(planted) as f:
            f.write('{"type": "event", "event": "power cycle"}\n')
    finally:
        del os.environ["SUDO_UID"]
    assert planted.read_text().count("\n") == 2


def test_trace_show_and_import_survive_json_nested_too_deep(tmp_path: Path) -> None:
    """json raises RecursionError, not ValueError, on `[[[[...`: trace show and a bundle's
    header were tracebacks; now a line that deep is no record, and the header is damaged."""
    from tests.service_helpers import vfido
    from vfido.backup import MAGIC, BackupError, bundle_header

    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 200_000 + "\n")
    result = vfido(["trace", "show", str(deep)])
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "no trace records" in result.stderr
    header = b"[" * 4000
    with pytest.raises(BackupError, match="damaged"):
        bundle_header(MAGIC + len(header).to_bytes(4, "big") + header)


def test_a_trace_cut_off_mid_line_gets_its_next_run_on_a_line_of_its_own(tmp_path: Path) -> None:
    """A run that stopped mid-line (a crash) left no newline: the next run's start record was
    glued to the cut-off line, and trace show skipped both."""
    from vfido.trace.recorder import open_trace_file

    trace = tmp_path / "t.jsonl"
    trace.write_text('{"type": "start", "version": "x", "pid": 1}\n{"type": "ev')
    with open_trace_file(trace) as f:
        f.write('{"type": "start", "version": "x", "pid": 2}\n')
    lines = trace.read_text().splitlines()
    assert lines[-1] == '{"type": "start", "version": "x", "pid": 2}'


def test_trace_show_shows_every_record_and_names_each_bad_line(tmp_path: Path) -> None:
    """One line that was not UTF-8 text (a damaged byte) or longer than a trace's longest
    refused the whole file ("not a vfido trace"); junk lines were one note, exit 0. Every
    record is shown (host text escaped), then each bad line is one error line with its
    number and why, and the exit status is 1."""
    from tests.service_helpers import vfido
    from vfido.trace.format import MAX_LINE

    too_long = b"x" * (MAX_LINE + 10) + b"\n"
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(
        b'{"type": "start", "version": "x", "pid": 1, "t": 1}\n'
        b"not json\n"
        b'{"type": "event", "t": 2, "event": "power_cycle \xff"}\n'  # a damaged byte
        b"[1, 2]\n"
        b'{"type": "event", "t": 3, "event": "\\u001b[2Jwiped"}\n'  # host text, escaped
        b'{"some": "json"}\n' + too_long + b'{"type": "event", "t": 4, "event": "power_cycle"}\n'
        b'{"type": "ev'  # a run cut off mid-line
    )
    result = vfido(["trace", "show", str(trace)])
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "00:00:01.000 trace started (vfido x, pid 1)",
        "00:00:03.000 \\x1b[2Jwiped",
        "00:00:04.000 power_cycle",
    ]
    assert result.stderr.splitlines() == [
        f"vfido: error: {trace} line 2: not JSON",
        f"vfido: error: {trace} line 3: not UTF-8 text",
        f"vfido: error: {trace} line 4: not a trace record",
        f"vfido: error: {trace} line 6: not a trace record",
        f"vfido: error: {trace} line 7: longer than {MAX_LINE} bytes",
        f"vfido: error: {trace} line 9: not JSON (the file ends mid-line)",
    ]
    from vfido.trace.format import SkippedLine

    skipped: list[SkippedLine] = []
    assert len(list(read_trace(trace, skipped))) == 3
    assert [line.number for line in skipped] == [2, 3, 4, 6, 7, 9]


def test_a_summary_quotes_host_text_that_could_pass_for_its_own_words() -> None:
    """A user name is text; a byte string, a redaction and the line's own words are not. A
    name that looks like one of them, or that holds spaces, is shown in quotes: a trace line
    cannot be made to show a byte-string user ID, a redaction or a status it does not have."""
    from vfido.trace.decode import request_summary

    def user(name: str | None) -> str:
        entity = {"id": "h'007531'", **({"name": name} if name is not None else {})}
        return request_summary("makeCredential", {"rp": {"id": "evil.example"}, "user": entity})

    assert user("alice") == "makeCredential rp=evil.example user=alice"
    assert user(None) == "makeCredential rp=evil.example user=h'007531'"
    assert user("h'deadbeef'") == "makeCredential rp=evil.example user=\"h'deadbeef'\""
    assert user("<redacted 32 bytes>").endswith('user="<redacted 32 bytes>"')
    assert user("alice -> OK 9 bytes").endswith('user="alice -> OK 9 bytes"')
    assert user('a"b').endswith('user="a\\"b"')
    spoofed = request_summary("getAssertion", {"rpId": "a.example ext=[x]"})
    assert spoofed == 'getAssertion rp="a.example ext=[x]"'
    # Every other value a host chooses: extension identifiers, option keys and values, the
    # algorithms, the protocol, a subCommand the decoder could not name.
    forged = "x] -> CBOR_UNEXPECTED_TYPE 1 bytes"
    line = request_summary(
        "makeCredential",
        {
            "extensions": {"credProtect": 1, forged: True},
            "options": {"rk": True, "a b": "c d"},
            "pubKeyCredParams": [{"alg": -7}, {"alg": "-8 x"}],
            "pinUvAuthParam": "<redacted 16 bytes>",
            "pinUvAuthProtocol": "2 -> OK",
            "subCommand": "set PIN",
        },
    )
    assert f'ext=[credProtect,"{forged}"]' in line
    assert 'rk=true "a b"="c d"' in line and 'alg=[-7,"-8 x"]' in line
    assert 'pinUvAuth=v"2 -> OK"' in line and line.startswith('makeCredential "set PIN"')
