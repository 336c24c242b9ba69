"""Host tests of the Chromium benchmark's floor key (bench/floorkey.py) and of the bookkeeping
of bench/chromium.py, without a kernel: python-fido2's own CTAPHID client (``CtapHidDevice``
over a connection that feeds the floor key's reports) and its CTAP2 parsers check the key's
framing and answers; the signatures are verified with the fixed public key. The sized floor
(``--shape``) is compared with a real ``vfido run --ephemeral`` (UDP, driven by python-fido2)."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from fido2.cose import ES256
from fido2.ctap import CtapError
from fido2.ctap2 import AssertionResponse, AttestationResponse, Ctap2, Info
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import chromium  # noqa: E402
import floorkey  # noqa: E402

RP_ID = "localhost"


class FloorConnection(CtapHidConnection):
    """python-fido2's side of a hidraw node, the floor key's FloorDevice on the other."""

    def __init__(self, device: floorkey.FloorDevice) -> None:
        self.device = device
        self.pending: list[bytes] = []

    def write_packet(self, data: bytes) -> None:
        # A hidraw write: report ID 0, then the 64 bytes, as a UHID_OUTPUT event carries it.
        event = floorkey.uhid_event(
            floorkey.UHID_OUTPUT,
            (b"\0" + data).ljust(floorkey.UHID_DATA_MAX, b"\0") + struct.pack("<HB", 65, 1),
        )
        self.pending += self.device.receive(floorkey.output_report(event))

    def read_packet(self) -> bytes:
        return self.pending.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def lines(log: list[str]) -> list[str]:
    """The key's log lines without their trailing time ("... hit 0.412ms")."""
    return _Untimed(log)


class _Untimed(list[str]):
    def __init__(self, log: list[str]) -> None:
        self._log = log

    def __getitem__(self, index: Any) -> Any:
        untimed = [line.rsplit(" ", 1)[0] for line in self._log if line.startswith("cbor ")]
        return untimed[index]


@pytest.fixture
def device(log: list[str]) -> floorkey.FloorDevice:
    return floorkey.FloorDevice(floorkey.FloorKey(), log.append)


def _ctap2(device: floorkey.FloorDevice) -> Ctap2:
    descriptor = HidDescriptor("floor", 0x1209, 0x0001, 64, 64, "floor", "floor")
    return Ctap2(CtapHidDevice(descriptor, FloorConnection(device)))


@pytest.fixture
def ctap2(device: floorkey.FloorDevice) -> Ctap2:
    return _ctap2(device)


def make_credential(ctap2: Ctap2, **kw: Any) -> AttestationResponse:
    return ctap2.make_credential(
        hashlib.sha256(b"client data").digest(),
        {"id": RP_ID, "name": "bench"},
        {"id": b"\7" * 16, "name": "bench"},
        [{"type": "public-key", "alg": ES256.ALGORITHM}],
        **kw,
    )


ALLOW = [{"type": "public-key", "id": floorkey.CREDENTIAL_ID}]


# --- CTAPHID framing ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 57, 58, 116, 117, 1000, floorkey.MAX_MESSAGE])
def test_frames_reassemble_to_the_message(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    reports = floorkey.frames(0x01020304, floorkey.CBOR, data)
    assert all(len(r) == 64 for r in reports)
    assert len(reports) == 1 + max(0, -(-(size - 57) // 59))
    reader = floorkey.Reassembler()
    outs = [reader.feed(r) for r in reports]
    assert outs[:-1] == [None] * (len(reports) - 1)
    assert outs[-1] == floorkey.Message(0x01020304, floorkey.CBOR, data)


def test_a_continuation_out_of_sequence_is_an_invalid_seq_error() -> None:
    reports = floorkey.frames(7, floorkey.CBOR, bytes(200))
    reader = floorkey.Reassembler()
    assert reader.feed(reports[0]) is None
    error = reader.feed(reports[2])
    assert error == floorkey.Message(7, floorkey.ERROR, bytes([floorkey.ERR_INVALID_SEQ]))
    assert reader.feed(reports[3]) is None  # the broken message is dropped


def test_a_message_longer_than_the_maximum_is_an_invalid_len_error() -> None:
    report = (b"\0\0\0\7" + bytes([0x80 | floorkey.CBOR]) + struct.pack(">H", 7610)).ljust(64)
    message = floorkey.Reassembler().feed(report)
    assert message == floorkey.Message(7, floorkey.ERROR, bytes([floorkey.ERR_INVALID_LEN]))


def test_init_allocates_channels_and_announces_cbor_without_msg(
    device: floorkey.FloorDevice,
) -> None:
    nonce = b"12345678"
    (answer,) = device.receive(floorkey.frames(floorkey.BROADCAST, floorkey.INIT, nonce)[0])
    assert answer[:4] == b"\xff\xff\xff\xff" and answer[4] == 0x80 | floorkey.INIT
    assert answer[7:15] == nonce
    cid = answer[15:19]
    assert int.from_bytes(cid, "big") not in (0, floorkey.BROADCAST)
    assert answer[19] == 2 and answer[23] & 0x04 and answer[23] & 0x08  # CBOR, NMSG
    (again,) = device.receive(floorkey.frames(floorkey.BROADCAST, floorkey.INIT, nonce)[0])
    assert again[15:19] != cid
    (refused,) = device.receive(floorkey.frames(1, floorkey.MSG, b"\0\3\0\0")[0])
    assert refused[4] == 0x80 | floorkey.ERROR and refused[7] == floorkey.ERR_INVALID_CMD
    assert device.receive(floorkey.frames(1, floorkey.CANCEL, b"")[0]) == []


def test_python_fido2_pings_through_the_framing(ctap2: Ctap2) -> None:
    hid = ctap2.device
    assert isinstance(hid, CtapHidDevice)
    payload = bytes(range(256)) * 8
    assert hid.ping(payload) == payload


# --- CTAP2 answers ------------------------------------------------------------------------------


def test_get_info_parses_as_a_ctap2_0_key_without_pin_or_uv(ctap2: Ctap2) -> None:
    info = ctap2.info
    assert info.versions == ["FIDO_2_0"]
    assert info.aaguid == floorkey.AAGUID
    assert info.options == {"rk": False, "up": True, "plat": False}
    assert "clientPin" not in info.options and "uv" not in info.options
    raw = floorkey.get_info_response()
    assert raw[0] == 0 and Info.from_dict(cbor2.loads(raw[1:])) == info


def test_make_credential_is_the_fixed_credential_with_attestation_none(
    ctap2: Ctap2, lines: list[str]
) -> None:
    att = make_credential(ctap2)
    assert att.fmt == "none" and att.att_stmt == {}
    auth = att.auth_data
    assert auth.rp_id_hash == hashlib.sha256(RP_ID.encode()).digest()
    assert auth.is_user_present() and auth.is_attested()
    assert auth.credential_data is not None
    assert auth.credential_data.credential_id == floorkey.CREDENTIAL_ID
    assert auth.credential_data.aaguid == floorkey.AAGUID
    public = auth.credential_data.public_key
    assert isinstance(public, ES256)
    assert public.from_cryptography_key(floorkey.PUBLIC_KEY) == public
    # A request with another RP ID gets the same credential, bound to that RP.
    other = ctap2.make_credential(
        b"\1" * 32,
        {"id": "example.com"},
        {"id": b"u"},
        [{"type": "public-key", "alg": -7}],
    )
    assert other.auth_data.rp_id_hash == hashlib.sha256(b"example.com").digest()
    assert lines[-2:] == ["cbor makeCredential 00 miss", "cbor makeCredential 00 miss"]


def test_the_same_make_credential_request_is_answered_from_the_cache(
    ctap2: Ctap2, lines: list[str]
) -> None:
    first, second = make_credential(ctap2), make_credential(ctap2)
    assert first == second
    assert lines[-2:] == ["cbor makeCredential 00 miss", "cbor makeCredential 00 hit"]


def test_get_assertion_signature_verifies_with_the_fixed_public_key(ctap2: Ctap2) -> None:
    public = make_credential(ctap2).auth_data.credential_data.public_key  # type: ignore[union-attr]
    client_data_hash = hashlib.sha256(b"assert me").digest()
    assertion = ctap2.get_assertion(RP_ID, client_data_hash, ALLOW)
    assert isinstance(assertion, AssertionResponse)
    assertion.verify(client_data_hash, public)
    assert assertion.credential == {"type": "public-key", "id": floorkey.CREDENTIAL_ID}
    assert assertion.auth_data.rp_id_hash == hashlib.sha256(RP_ID.encode()).digest()
    assert assertion.auth_data.is_user_present()
    with pytest.raises(Exception):  # noqa: B017 (cryptography's InvalidSignature)
        assertion.verify(hashlib.sha256(b"something else").digest(), public)


def test_get_assertion_is_signed_once_per_request_then_served_from_the_cache(
    device: floorkey.FloorDevice,
    ctap2: Ctap2,
    lines: list[str],
    log: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = []
    sign = floorkey.get_assertion_response

    def counting(*args: Any) -> bytes:
        signed.append(args)
        return sign(*args)

    monkeypatch.setattr(floorkey, "get_assertion_response", counting)
    hash_a, hash_b = b"\1" * 32, b"\2" * 32
    a1 = ctap2.get_assertion(RP_ID, hash_a, ALLOW)
    a2 = ctap2.get_assertion(RP_ID, hash_a, ALLOW)
    b1 = ctap2.get_assertion(RP_ID, hash_b, ALLOW)
    assert a1 == a2 and a1.signature != b1.signature
    assert len(signed) == 2
    assert [line.rsplit(" ", 1)[1] for line in lines[-3:]] == ["miss", "hit", "miss"]
    assert all(re.fullmatch(r"cbor .* \d+\.\d{3}ms", line) for line in log if "cbor" in line)
    assert device.counts["cbor getAssertion 00 up=1"] == 3
    assert len(device.key.cache) == 2


def test_a_silent_probe_is_answered_without_user_presence(ctap2: Ctap2, lines: list[str]) -> None:
    public = make_credential(ctap2).auth_data.credential_data.public_key  # type: ignore[union-attr]
    probe = ctap2.get_assertion(RP_ID, b"\3" * 32, ALLOW, options={"up": False})
    assert not probe.auth_data.is_user_present()
    probe.verify(b"\3" * 32, public)
    assert lines[-1] == "cbor getAssertion 00 up=0 miss"


def test_requests_the_floor_cannot_serve_get_ctap_errors(ctap2: Ctap2) -> None:
    other = [{"type": "public-key", "id": b"\0" * 32}]
    for allow in (other, None):
        with pytest.raises(CtapError) as exc:
            ctap2.get_assertion(RP_ID, b"\4" * 32, allow)
        assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(CtapError) as exc:
        make_credential(ctap2, exclude_list=ALLOW)
    assert exc.value.code == CtapError.ERR.CREDENTIAL_EXCLUDED
    with pytest.raises(CtapError) as exc:
        ctap2.make_credential(
            b"\5" * 32, {"id": RP_ID}, {"id": b"u"}, [{"type": "public-key", "alg": -8}]
        )
    assert exc.value.code == CtapError.ERR.UNSUPPORTED_ALGORITHM
    with pytest.raises(CtapError) as exc:
        ctap2.send_cbor(0x06)  # clientPIN: not offered
    assert exc.value.code == CtapError.ERR.INVALID_COMMAND


# --- the sized floor (--shape FILE: vfido's shapes, answered from memory) ---------------------


MAKE_CREDENTIAL_REQUEST = {
    1: hashlib.sha256(b"sized client data").digest(),
    2: {"id": RP_ID, "name": "bench"},
    3: {"id": b"\7" * 16, "name": "bench"},
    4: [{"type": "public-key", "alg": ES256.ALGORITHM}],
}


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> floorkey.Shape:
    """The shape file as bench/chromium.py's run() makes it (another interpreter, the file)."""
    path = tmp_path_factory.mktemp("shape") / chromium.SHAPE_FILE
    made = chromium.write_shape(path, sys.executable)
    assert floorkey.Shape.from_json(path.read_text()) == made
    return made


@pytest.fixture(scope="module")
def vfido_run() -> dict[str, bytes]:
    """What a real `vfido run --ephemeral --presence auto` (UDP) answers python-fido2: the
    raw getInfo and makeCredential responses (status byte first)."""
    from vfido.api import VirtualKey

    request = bytes([floorkey.MAKE_CREDENTIAL]) + cbor2.dumps(
        MAKE_CREDENTIAL_REQUEST, canonical=True
    )
    with VirtualKey.service(transport="udp", uv=False) as key:
        return {
            "get_info": key.device.call(floorkey.CBOR, bytes([floorkey.GET_INFO])),
            "make_credential": key.device.call(floorkey.CBOR, request),
        }


@pytest.fixture
def sized(shape: floorkey.Shape, log: list[str]) -> floorkey.FloorDevice:
    return floorkey.FloorDevice(floorkey.FloorKey(shape=shape), log.append)


def test_the_shape_is_what_vfido_run_says(
    shape: floorkey.Shape, vfido_run: dict[str, bytes]
) -> None:
    # The same getInfo but for what differs from key to key (AAGUID, the random per-key
    # identifiers 0x19 and 0x1E), hence the same length.
    mine, theirs = cbor2.loads(shape.get_info[1:]), cbor2.loads(vfido_run["get_info"][1:])
    per_key = {0x03, 0x19, 0x1E}
    assert set(mine) == set(theirs)
    assert {k: v for k, v in mine.items() if k not in per_key} == {
        k: v for k, v in theirs.items() if k not in per_key
    }
    assert len(shape.get_info) == len(vfido_run["get_info"])
    assert "FIDO_2_1" in mine[1] and len(mine[10]) > 1  # a full key, not the floor's getInfo
    att = AttestationResponse.from_dict(cbor2.loads(vfido_run["make_credential"][1:]))
    assert att.fmt == "packed"
    assert att.auth_data.credential_data is not None
    assert len(att.auth_data.credential_data.credential_id) == shape.credential_id_length
    assert len(shape.x5c) == len(att.att_stmt["x5c"])
    x509.load_der_x509_certificate(shape.x5c[0])


def test_the_sized_floor_answers_vfidos_get_info_verbatim(
    shape: floorkey.Shape, sized: floorkey.FloorDevice, lines: list[str]
) -> None:
    ctap2 = _ctap2(sized)
    assert ctap2.get_info() == Info.from_dict(cbor2.loads(shape.get_info[1:]))
    hid = ctap2.device
    assert isinstance(hid, CtapHidDevice)
    raw = hid.call(floorkey.CBOR, bytes([floorkey.GET_INFO]))
    assert raw == shape.get_info
    assert raw != floorkey.get_info_response()
    assert lines[-2:] == ["cbor getInfo 00 hit"] * 2


def test_the_sized_floor_makes_a_packed_credential_with_vfidos_sizes(
    shape: floorkey.Shape,
    sized: floorkey.FloorDevice,
    vfido_run: dict[str, bytes],
    lines: list[str],
) -> None:
    ctap2 = _ctap2(sized)
    cdh = MAKE_CREDENTIAL_REQUEST[1]
    assert isinstance(cdh, bytes)
    att = make_credential(ctap2)
    assert att.fmt == "packed"
    assert att.att_stmt["alg"] == ES256.ALGORITHM
    assert att.att_stmt["x5c"] == list(shape.x5c)
    data = att.auth_data.credential_data
    assert data is not None
    assert data.credential_id == floorkey.credential_id(shape.credential_id_length)
    assert len(data.credential_id) == shape.credential_id_length
    assert data.credential_id[:32] == floorkey.CREDENTIAL_ID
    public = data.public_key
    assert isinstance(public, ES256)
    client_data_hash = hashlib.sha256(b"client data").digest()
    # The statement's signature: the floor's fixed key over authenticatorData || clientDataHash.
    public.verify(bytes(att.auth_data) + client_data_hash, att.att_stmt["sig"])
    with pytest.raises(InvalidSignature):
        public.verify(bytes(att.auth_data) + cdh, att.att_stmt["sig"])
    # As many bytes as vfido's answer to the same request (ECDSA signatures and certificates
    # vary by a few bytes), so as many reports on the wire.
    hid = ctap2.device
    assert isinstance(hid, CtapHidDevice)
    request = bytes([floorkey.MAKE_CREDENTIAL]) + cbor2.dumps(
        MAKE_CREDENTIAL_REQUEST, canonical=True
    )
    raw = hid.call(floorkey.CBOR, request)
    assert abs(len(raw) - len(vfido_run["make_credential"])) <= 6
    assert len(floorkey.frames(1, floorkey.CBOR, raw)) == len(
        floorkey.frames(1, floorkey.CBOR, vfido_run["make_credential"])
    )
    # Signed once per request, then from the cache.
    assert make_credential(ctap2) == att
    assert lines[-3:] == [
        "cbor makeCredential 00 miss",
        "cbor makeCredential 00 miss",
        "cbor makeCredential 00 hit",
    ]


def test_the_sized_floor_signs_assertions_for_its_longer_credential(
    shape: floorkey.Shape, sized: floorkey.FloorDevice
) -> None:
    ctap2 = _ctap2(sized)
    sized_id = floorkey.credential_id(shape.credential_id_length)
    public = make_credential(ctap2).auth_data.credential_data.public_key  # type: ignore[union-attr]
    client_data_hash = hashlib.sha256(b"assert me").digest()
    hid = ctap2.device
    assert isinstance(hid, CtapHidDevice)
    request = {1: RP_ID, 2: client_data_hash, 3: [{"type": "public-key", "id": sized_id}]}
    raw = hid.call(
        floorkey.CBOR, bytes([floorkey.GET_ASSERTION]) + cbor2.dumps(request, canonical=True)
    )
    assert raw[0] == 0 and list(cbor2.loads(raw[1:])) == [
        1,
        2,
        3,
    ]  # credential, authData, signature: vfido's
    assertion = ctap2.get_assertion(RP_ID, client_data_hash, request[3])
    assertion.verify(client_data_hash, public)
    assert assertion.credential == {"type": "public-key", "id": sized_id}
    assert assertion.auth_data.is_user_present()
    with pytest.raises(CtapError) as exc:  # the short floor's credential is not this key's
        ctap2.get_assertion(RP_ID, client_data_hash, ALLOW)
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(CtapError) as exc:
        make_credential(ctap2, exclude_list=request[3])
    assert exc.value.code == CtapError.ERR.CREDENTIAL_EXCLUDED


def test_credential_ids_are_fixed_prefixes_of_one_another() -> None:
    assert floorkey.credential_id() == floorkey.CREDENTIAL_ID
    assert len(floorkey.credential_id(67)) == 67
    assert floorkey.credential_id(67) == floorkey.credential_id(67)
    assert floorkey.credential_id(67)[:40] == floorkey.credential_id(40)


@pytest.mark.parametrize(
    "text, error",
    [
        ("not json", "not a shape file"),
        ('{"x5c": ["00"], "credential_id_length": 67}', "not a shape file"),
        ('{"get_info": "zz", "x5c": ["00"], "credential_id_length": 67}', "not a shape file"),
        ('{"get_info": "01", "x5c": ["00"], "credential_id_length": 67}', "getInfo"),
        ('{"get_info": "00a0", "x5c": [], "credential_id_length": 67}', "x5c"),
        ('{"get_info": "00a0", "x5c": ["00"], "credential_id_length": 0}', "1-1023"),
        ('{"get_info": "00a0", "x5c": ["00"], "credential_id_length": true}', "1-1023"),
    ],
)
def test_a_bad_shape_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    with pytest.raises(floorkey.ShapeError, match=error):
        floorkey.Shape.from_json(text)
    path = tmp_path / "shape.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        floorkey.main(["--shape", str(path)])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--shape {path}:" in last and error in last and "Traceback" not in last


# --- UHID events --------------------------------------------------------------------------------


def test_uhid_create2_layout() -> None:
    event = floorkey.uhid_create2("floor", "serial-9")
    assert len(event) == floorkey.UHID_EVENT_SIZE == 4380
    assert struct.unpack_from("<I", event)[0] == 11
    body = event[4:]
    assert body[192:256].rstrip(b"\0") == b"serial-9"
    rd_size, bus, vendor, product = struct.unpack_from("<HHII", body, 256)
    assert (bus, vendor, product) == (0x03, 0x1209, 0x0001)
    descriptor = body[276 : 276 + rd_size]
    assert descriptor == floorkey.REPORT_DESCRIPTOR
    assert descriptor[:5] == bytes([0x06, 0xD0, 0xF1, 0x09, 0x01])
    assert descriptor.count(bytes([0x95, 64])) == 2


def test_uhid_input2_and_output_layouts() -> None:
    report = bytes(range(64))
    event = floorkey.uhid_input2(report)
    assert len(event) == 4380 and struct.unpack_from("<IH", event) == (12, 64)
    assert event[6:70] == report
    out = floorkey.uhid_event(
        floorkey.UHID_OUTPUT, (b"\0" + report).ljust(4096, b"\0") + struct.pack("<HB", 65, 1)
    )
    assert floorkey.output_report(out) == report


# --- bench/chromium.py's bookkeeping ------------------------------------------------------------


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _page(n: int, raw_id: str, signatures: list[str]) -> dict[str, Any]:
    ceremonies: list[dict[str, Any]] = [
        {"kind": "warmup_create", "i": 0, "ok": True, "ms": 900.0, "rawId": raw_id},
        {"kind": "warmup_get", "i": 0, "ok": True, "ms": 700.0, "signature": signatures[0]},
    ]
    for i in range(n):
        ceremonies.append({"kind": "create", "i": i, "ok": True, "ms": 100.0, "rawId": raw_id})
        sig = signatures[(i + 1) % len(signatures)]
        ceremonies.append({"kind": "get", "i": i, "ok": True, "ms": 50.0, "signature": sig})
    return {"n": n, "ceremonies": ceremonies, "done": True}


def test_served_by_floor_counts_the_key_log_against_the_page() -> None:
    page = _page(2, chromium.FLOOR_CREDENTIAL, [_b64u(b"sig")])
    log = "\n".join(
        ["1.0 hidraw: /dev/hidraw0", "1.1 cbor getInfo 00 hit 0.1ms"]
        + ["1.2 cbor makeCredential 00 miss 1.0ms"]
        + ["1.3 cbor makeCredential 00 hit 0.2ms"] * 2
        + ["1.4 cbor getAssertion 00 up=0 miss 1.5ms"]
        + ["1.5 cbor getAssertion 00 up=1 miss 1.5ms"]
        + ["1.6 cbor getAssertion 00 up=1 hit 0.3ms"] * 2
    )
    served = chromium.served_by_floor(page, log)
    assert served["commands"]["cbor makeCredential 00"] == 3
    assert served["commands"]["cbor getAssertion 00 up=1"] == 3
    assert served["cache_hits"] == 4
    with pytest.raises(RuntimeError, match="floor key log"):
        chromium.served_by_floor(
            page, log.replace("1.6 cbor getAssertion 00 up=1 hit 0.3ms\n", "", 1)
        )
    with pytest.raises(RuntimeError, match="did not make"):
        chromium.served_by_floor(_page(2, _b64u(b"other"), [_b64u(b"sig")]), log)
    failed = _page(2, chromium.FLOOR_CREDENTIAL, [_b64u(b"sig")])
    failed["ceremonies"][3]["ok"] = False
    with pytest.raises(RuntimeError, match="failed"):
        chromium.served_by_floor(failed, log)


def _response(command: str, result: dict[str, Any], proto: str = "CBOR") -> dict[str, Any]:
    return {
        "type": "response",
        "proto": proto,
        "command": command,
        "status": "OK",
        "result": result,
    }


def test_served_by_vfido_finds_each_ceremony_in_the_trace() -> None:
    raws = [bytes([0x11 + i]) * 16 for i in range(3)]
    sigs = [bytes([0x21 + i]) * 8 for i in range(3)]
    page = _page(2, "", [_b64u(s) for s in sigs])
    creates = [c for c in page["ceremonies"] if c["kind"].endswith("create")]
    for c, raw in zip(creates, raws, strict=True):
        c["rawId"] = _b64u(raw)
    records = [_response("getInfo", {})]
    records += [
        _response("makeCredential", {"authData": {"credentialId": f"h'{raw.hex()}'"}})
        for raw in raws
    ]
    records += [_response("getAssertion", {"signature": f"h'{s.hex()}'"}) for s in sigs]
    served = chromium.served_by_vfido(page, records)
    assert served["u2f"] == 0 and served["commands"]["CBOR makeCredential"] == 3
    with pytest.raises(RuntimeError, match="served by"):
        chromium.served_by_vfido(page, records[:-1])  # one get() served by nothing
    with pytest.raises(RuntimeError, match="served by"):
        chromium.served_by_vfido(page, [*records, records[1]])  # one create() served twice
    u2f = [*records, _response("REGISTER", {"keyHandle": "h'00'"}, proto="MSG")]
    with pytest.raises(RuntimeError, match="trace"):
        chromium.served_by_vfido(page, u2f)


def test_vfido_key_ms_spans_first_report_in_to_last_report_out() -> None:
    def packet(t: float, direction: str, cmd: str | None = None) -> dict[str, Any]:
        return {"type": "packet", "t": t, "dir": direction, **({"cmd": cmd} if cmd else {})}

    records = [
        packet(1.000, "in", "INIT"),
        packet(1.001, "out", "INIT"),
        packet(2.000, "in", "CBOR"),
        packet(2.001, "in"),
        {
            "type": "response",
            "t": 2.003,
            "proto": "CBOR",
            "command": "getAssertion",
            "status": "OK",
        },
        packet(2.004, "out", "CBOR"),
        packet(2.006, "out"),
        packet(3.000, "in", "CBOR"),
        {
            "type": "response",
            "t": 3.010,
            "proto": "CBOR",
            "command": "getAssertion",
            "status": "OK",
        },
        packet(3.012, "out", "CBOR"),
    ]
    spans = chromium.vfido_key_ms(records)
    assert spans == {"getAssertion": pytest.approx(9.0)}  # median of 6 ms and 12 ms


def test_summarize_takes_the_median_of_per_round_ratios() -> None:
    blocks = []
    for r, (floor, vfido) in enumerate([(100.0, 110.0), (200.0, 200.0), (100.0, 150.0)]):
        for key, ms in (("floor", floor), ("vfido", vfido)):
            blocks.append(
                {"round": r, "key": key, "ms": {"create": [ms, ms + 1, ms - 1], "get": [ms / 2]}}
            )
    create, get = chromium.summarize(blocks)
    assert create["name"] == "create" and get["name"] == "get"
    assert create["round_ratios"] == pytest.approx([1.1, 1.0, 1.5])
    assert create["ratio"] == pytest.approx(1.1)
    assert create["ratio_p10"] == pytest.approx(1.02) and create["ratio_p90"] == pytest.approx(1.42)
    assert create["floor_ms"] == 101.0 and create["vfido_ms"] == 150.0  # pooled medians
    assert create["n"] == 9
    # Another key measured in the same rounds gets its own rows, after vfido's.
    for r, ms in enumerate([220.0, 200.0, 100.0]):
        blocks.append({"round": r, "key": "vfido_untraced", "ms": {"create": [ms], "get": [ms]}})
    names = [row["name"] for row in chromium.summarize(blocks)]
    assert names == ["create", "get", "create (vfido_untraced)", "get (vfido_untraced)"]
    untraced = chromium.summarize(blocks)[2]
    assert untraced["round_ratios"] == pytest.approx([2.2, 1.0, 1.0])


def test_served_by_floor_checks_the_sized_floors_credential() -> None:
    sized = _b64u(floorkey.credential_id(67))
    log = "\n".join(
        ["1.2 cbor makeCredential 00 miss 1.0ms"] * 3
        + ["1.5 cbor getAssertion 00 up=1 miss 1.5ms"] * 3
    )
    served = chromium.served_by_floor(_page(2, sized, [_b64u(b"sig")]), log, sized)
    assert served["commands"]["cbor makeCredential 00"] == 3
    with pytest.raises(RuntimeError, match="did not make"):  # the short floor's credential
        chromium.served_by_floor(_page(2, chromium.FLOOR_CREDENTIAL, [_b64u(b"sig")]), log, sized)
    with pytest.raises(RuntimeError, match="did not make"):
        chromium.served_by_floor(_page(2, sized, [_b64u(b"sig")]), log)


def _blocks(
    per_round: dict[str, list[float]], ms_of: Callable[[float], dict[str, list[float]]]
) -> list[dict[str, Any]]:
    """Benchmark blocks: one per key and round, its ceremonies' ms made from the round's."""
    return [
        {"round": r, "key": key, "ms": ms_of(ms)}
        for key, values in per_round.items()
        for r, ms in enumerate(values)
    ]


def test_summarize_gives_rows_against_floor_and_against_floor_sized() -> None:
    per_round = {
        "floor": [100.0, 100.0, 200.0],
        "floor_sized": [150.0, 120.0, 220.0],
        "vfido": [300.0, 180.0, 440.0],
        "vfido_untraced": [150.0, 240.0, 330.0],
    }
    blocks = _blocks(per_round, lambda ms: {"create": [ms, ms + 2], "get": [ms / 2]})
    rows = chromium.summarize(blocks)
    assert [row["name"] for row in rows] == [
        "create",
        "get",
        "create (floor_sized)",
        "get (floor_sized)",
        "create (vfido_untraced)",
        "get (vfido_untraced)",
        "create vfido / floor_sized",
        "get vfido / floor_sized",
        "create vfido_untraced / floor_sized",
        "get vfido_untraced / floor_sized",
    ]
    by_name = {row["name"]: row for row in rows}
    assert by_name["create"]["reference"] == "floor"
    assert by_name["create"]["round_ratios"] == pytest.approx(
        [3.01 / 1.01, 1.81 / 1.01, 4.41 / 2.01]
    )
    sized = by_name["get (floor_sized)"]
    assert (sized["key"], sized["reference"]) == ("floor_sized", "floor")
    assert sized["round_ratios"] == pytest.approx([1.5, 1.2, 1.1])
    vfido = by_name["get vfido / floor_sized"]
    assert (vfido["key"], vfido["reference"]) == ("vfido", "floor_sized")
    assert vfido["round_ratios"] == pytest.approx([2.0, 1.5, 2.0])
    assert vfido["ratio"] == pytest.approx(2.0)
    assert vfido["floor_ms"] == 75.0 and vfido["vfido_ms"] == 150.0  # pooled medians
    untraced = by_name["create vfido_untraced / floor_sized"]
    assert untraced["round_ratios"] == pytest.approx([1.0, 241 / 121, 331 / 221])
    assert untraced["n"] == 6
    # Without floor_sized, the rows are the floor's only (the old names).
    plain = [b for b in blocks if b["key"] != "floor_sized"]
    assert [row["name"] for row in chromium.summarize(plain)] == [
        "create",
        "get",
        "create (vfido_untraced)",
        "get (vfido_untraced)",
    ]


def test_run_refuses_a_key_it_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="floor_size"):
        chromium.run(tmp_path, lambda url: ["false"], keys=("floor", "floor_size"))
    assert list(tmp_path.iterdir()) == []


def test_summarize_puts_vfido_untraced_against_vfido_base() -> None:
    """``vfido_base`` (another checkout's `vfido run`) gets its rows against the floor like
    any key, and is the reference of ``vfido_untraced`` only: before / after per round."""
    per_round = {
        "floor": [100.0, 100.0],
        "vfido": [300.0, 200.0],
        "vfido_untraced": [150.0, 120.0],
        "vfido_base": [200.0, 100.0],
    }
    rows = chromium.summarize(_blocks(per_round, lambda ms: {"create": [ms], "get": [ms]}))
    assert [row["name"] for row in rows] == [
        "create",
        "get",
        "create (vfido_untraced)",
        "get (vfido_untraced)",
        "create (vfido_base)",
        "get (vfido_base)",
        "create vfido_untraced / vfido_base",
        "get vfido_untraced / vfido_base",
    ]
    assert rows[-1]["round_ratios"] == pytest.approx([0.75, 1.2])


def test_run_wants_a_base_tree_with_vfido_base(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base_tree"):
        chromium.run(tmp_path, lambda url: ["false"], keys=("floor", "vfido_base"))
    with pytest.raises(ValueError, match="base_tree"):
        chromium.run(tmp_path, lambda url: ["false"], keys=("floor", "vfido"), base_tree=tmp_path)
    with pytest.raises(ValueError, match="base_python"):
        chromium.run(tmp_path, lambda url: ["false"], keys=("floor", "vfido"), base_python="py")


def test_interpreter_names_the_build() -> None:
    """The record of an interpreter: its path, version and `configure` flags (two builds of
    one version differ: session 27)."""
    found = chromium.interpreter(sys.executable)
    assert found.startswith(f"{sys.executable} {sys.version.split()[0]} ")


def test_base_import_names_the_base_tree_or_refuses(tmp_path: Path) -> None:
    """``vfido_base`` must run the other checkout: an empty tree falls back to this one (an
    editable install) or to nothing, both refused; a tree with a `vfido` package is used."""
    with pytest.raises(RuntimeError, match="vfido_base would import"):
        chromium.base_import(sys.executable, tmp_path)
    (tmp_path / "vfido").mkdir()
    (tmp_path / "vfido" / "__init__.py").write_text("")
    assert chromium.base_import(sys.executable, tmp_path).startswith(str(tmp_path.resolve()))


def test_summarize_puts_vfido_against_vfido_cached() -> None:
    """``vfido_cached`` (vfido's process and transport, its authenticator answering from its
    first answers) is measured against both floors, and is the reference of the full
    vfido keys, of ``vfido_computed`` and of ``vfido_slept``: the authenticator's share, the
    computing's share, the waiting's share."""
    per_round = {
        "floor": [100.0, 100.0],
        "floor_sized": [110.0, 100.0],
        "vfido": [363.0, 220.0],
        "vfido_cached": [121.0, 110.0],
        "vfido_computed": [145.2, 132.0],
        "vfido_slept": [133.1, 121.0],
        "vfido_untraced": [242.0, 165.0],
    }
    rows = chromium.summarize(_blocks(per_round, lambda ms: {"create": [ms], "get": [ms]}))
    names = [row["name"] for row in rows]
    assert names == [
        "create",
        "get",
        "create (floor_sized)",
        "get (floor_sized)",
        "create (vfido_cached)",
        "get (vfido_cached)",
        "create (vfido_computed)",
        "get (vfido_computed)",
        "create (vfido_slept)",
        "get (vfido_slept)",
        "create (vfido_untraced)",
        "get (vfido_untraced)",
        "create vfido / floor_sized",
        "get vfido / floor_sized",
        "create vfido_computed / floor_sized",
        "get vfido_computed / floor_sized",
        "create vfido_slept / floor_sized",
        "get vfido_slept / floor_sized",
        "create vfido_untraced / floor_sized",
        "get vfido_untraced / floor_sized",
        "create vfido_cached / floor_sized",
        "get vfido_cached / floor_sized",
        "create vfido / vfido_cached",
        "get vfido / vfido_cached",
        "create vfido_computed / vfido_cached",
        "get vfido_computed / vfido_cached",
        "create vfido_slept / vfido_cached",
        "get vfido_slept / vfido_cached",
        "create vfido_untraced / vfido_cached",
        "get vfido_untraced / vfido_cached",
    ]
    by_name = {row["name"]: row for row in rows}
    assert by_name["get vfido_cached / floor_sized"]["round_ratios"] == pytest.approx([1.1, 1.1])
    assert by_name["create vfido / vfido_cached"]["round_ratios"] == pytest.approx([3.0, 2.0])
    assert by_name["get vfido_slept / vfido_cached"]["round_ratios"] == pytest.approx([1.1, 1.1])
    assert by_name["get vfido_computed / vfido_cached"]["round_ratios"] == pytest.approx([1.2, 1.2])
    assert by_name["create vfido_untraced / vfido_cached"]["round_ratios"] == pytest.approx(
        [2.0, 1.5]
    )


def test_handler_times_are_medians_per_ceremony_command(tmp_path: Path) -> None:
    """bench/chromium.py ``vfido_timed``: timed_key.py's records (what, first byte, start,
    wall s, cpu s, thread) become, per command of a ceremony, the number of handler calls
    and their median wall and CPU time in ms; what is not a handler call is left out."""
    records = [
        ["handler", "04", 0.0, 0.001, 0.0005, "t"],
        ["handler", "04", 0.0, 0.003, 0.0015, "t"],
        ["handler", "04", 0.0, 0.002, 0.0010, "t"],
        ["handler", "02", 0.0, 0.004, 0.0030, "t"],
        ["dispatch", "02", 0.0, 9.0, 9.0, "t"],
        ["handler", "0b", 0.0, 9.0, 9.0, "t"],
    ]
    path = tmp_path / "times.json"
    path.write_text(chromium.json.dumps({"rec": records, "cpu": [1.0, 0.5]}))
    kept = chromium.handler_records(path)
    assert [rec[0] for rec in kept] == ["handler"] * 5
    times = chromium.handler_times(kept)
    assert times == {
        "getInfo": {"calls": 3, "wall_ms": pytest.approx(2.0), "cpu_ms": pytest.approx(1.0)},
        "getAssertion": {"calls": 1, "wall_ms": pytest.approx(4.0), "cpu_ms": pytest.approx(3.0)},
    }


def _fake_proc(root: Path, cpu: list[int], processes: dict[int, tuple[int, int, int]]) -> Path:
    """A /proc with a ``stat`` (the cpu line, then one per CPU) and ``PID/stat`` for each
    process: (ppid, utime, stime), a comm with a space and a parenthesis in it."""
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(
        "cpu  " + " ".join(map(str, cpu)) + " 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nintr 5\n"
    )
    for pid, (ppid, utime, stime) in processes.items():
        (root / str(pid)).mkdir(exist_ok=True)
        fields = ["S", ppid, pid, pid, 0, -1, 0, 0, 0, 0, 0, utime, stime, 0, 0, 20, 0, 1]
        (root / str(pid) / "stat").write_text(f"{pid} (a) b) " + " ".join(map(str, fields)))
    return root


def test_cpu_sample_splits_the_machines_cpu_between_key_browser_and_idle(tmp_path: Path) -> None:
    """bench/chromium.py ``cpu_sample``: /proc/stat's first line is the machine (idle and
    iowait idle, the rest busy); the key is its own process; the browser is its process and
    every process below it, however deep, but not a process beside it."""
    ms = 1e3 / chromium.CLOCK_TICKS
    proc = _fake_proc(
        tmp_path / "proc",
        # user nice system idle iowait irq softirq steal
        [100, 1, 20, 500, 3, 4, 5, 6],
        {
            1: (0, 0, 0),
            2: (0, 0, 0),
            50: (2, 7, 7),  # a kernel thread
            100: (1, 30, 10),  # the key
            200: (1, 40, 2),  # the browser
            201: (200, 5, 1),  # its zygote
            202: (201, 8, 0),  # a renderer below the zygote
            300: (1, 900, 900),  # something else
        },
    )
    sample = chromium.cpu_sample(100, 200, proc)
    assert sample["busy"] == pytest.approx((100 + 1 + 20 + 4 + 5 + 6) * ms)
    assert sample["idle"] == pytest.approx((500 + 3) * ms)
    assert sample["key"] == pytest.approx(40 * ms)
    assert sample["browser"] == pytest.approx((42 + 6 + 8) * ms)
    assert sample["wall"] > 0


def test_cpu_per_pair_divides_what_ran_between_the_marks() -> None:
    """``cpu_per_pair``: each figure's growth from mark ``start`` to ``end`` per create() +
    get() pair, and ``other``, the busy time neither the key nor the browser took."""
    start = {"wall": 1000.0, "busy": 50.0, "idle": 10.0, "key": 5.0, "browser": 20.0}
    end = {"wall": 3000.0, "busy": 3050.0, "idle": 1010.0, "key": 405.0, "browser": 2020.0}
    per = chromium.cpu_per_pair({"start": start, "end": end}, 10)
    assert per == pytest.approx(
        {"wall": 200.0, "busy": 300.0, "idle": 100.0, "key": 40.0, "browser": 200.0, "other": 60.0}
    )


def test_cpu_summary_is_the_median_of_each_keys_blocks() -> None:
    blocks = [
        {"key": "floor", "cpu_ms": {"key": 1.0, "busy": 10.0}},
        {"key": "vfido", "cpu_ms": {"key": 5.0, "busy": 30.0}},
        {"key": "floor", "cpu_ms": {"key": 3.0, "busy": 20.0}},
        {"key": "floor", "cpu_ms": {"key": 2.0, "busy": 90.0}},
    ]
    assert chromium.cpu_summary(blocks) == {
        "floor": {"key": 2.0, "busy": 20.0},
        "vfido": {"key": 5.0, "busy": 30.0},
    }


def test_the_bench_server_samples_at_the_pages_marks() -> None:
    """The page's ``POST /mark?NAME`` makes the server call its sampler and keep the result
    under NAME; a ``/results`` POST is still the page's results."""
    import urllib.request

    server = chromium.BenchServer()
    calls = iter(range(100))
    server.sampler = lambda: {"n": float(next(calls))}
    try:
        base = f"http://127.0.0.1:{server.port}"
        for name in ("start", "end"):
            urllib.request.urlopen(
                urllib.request.Request(f"{base}/mark?{name}", b"", method="POST")
            )
        body = chromium.json.dumps({"done": True}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{base}/results", body, method="POST"))
    finally:
        server.close()
    assert server.marks == {"start": {"n": 0.0}, "end": {"n": 1.0}}
    assert server.results == {"done": True}
    assert server.done.is_set()


def test_cpu_sample_reads_this_machines_proc() -> None:
    """On the real /proc: this process, having computed, has CPU time; counted as a
    'browser' below its parent it is inside its parent's total, but not the init process's
    whole machine; and the machine's busy plus idle time grows by about the number of CPUs
    times the wall time (the /proc/stat line read as it is laid out)."""
    end = chromium.time.process_time() + 0.05
    while chromium.time.process_time() < end:
        pass
    first = chromium.cpu_sample(chromium.os.getpid(), chromium.os.getppid())
    chromium.time.sleep(0.5)
    second = chromium.cpu_sample(chromium.os.getpid(), chromium.os.getppid())
    assert first["key"] > 0
    assert first["browser"] >= first["key"]
    assert first["browser"] < first["busy"]
    cpus = chromium.os.cpu_count() or 1
    grown = second["busy"] + second["idle"] - first["busy"] - first["idle"]
    assert 0.6 * cpus < grown / (second["wall"] - first["wall"]) < 1.4 * cpus


def test_summarize_puts_the_niced_keys_against_their_references() -> None:
    """``vfido_niced`` (`vfido run` at a higher priority than the browser) is measured as every
    full vfido key is, against the floors and ``vfido_cached``, and against
    ``floor_sized_niced`` (both keys at the same priority); ``floor_sized_niced`` against
    ``floor_sized`` (what the priority gives a floor)."""
    per_round = {
        "floor_sized": [100.0, 100.0],
        "floor_sized_niced": [100.0, 95.0],
        "vfido_cached": [100.0, 110.0],
        "vfido_niced": [105.0, 121.0],
        "vfido_untraced": [120.0, 132.0],
    }
    rows = chromium.summarize(_blocks(per_round, lambda ms: {"create": [ms], "get": [ms]}))
    by_name = {row["name"]: row for row in rows}
    assert by_name["get vfido_niced / floor_sized"]["round_ratios"] == pytest.approx([1.05, 1.21])
    assert by_name["create vfido_niced / vfido_cached"]["round_ratios"] == pytest.approx(
        [1.05, 1.1]
    )
    assert by_name["get vfido_niced / floor_sized_niced"]["round_ratios"] == pytest.approx(
        [1.05, 121.0 / 95.0]
    )
    assert by_name["create floor_sized_niced / floor_sized"]["round_ratios"] == pytest.approx(
        [1.0, 0.95]
    )
    assert not any(
        row["reference"] == "floor_sized_niced" for row in rows if row["key"] != "vfido_niced"
    )
    assert "create vfido_untraced / vfido_cached" in by_name


def test_key_argv_starts_each_key_as_its_block_needs(tmp_path: Path) -> None:
    """``key_argv``: vfido_niced is the untraced `vfido run`, floor_sized_niced the sized
    floor, under ``nice`` at a priority above the browser's (nice execs, so the pid stays
    the key's); only ``vfido`` is traced; the cached keys are cached_handler.py, with the
    flags of the slept and computed ones; vfido_base imports the base tree; the floors name
    their serials."""
    py = "/usr/bin/python3"
    untraced, env = chromium.key_argv("vfido_untraced", "t", tmp_path, py)
    niced, niced_env = chromium.key_argv("vfido_niced", "t", tmp_path, py)
    assert env is None and niced_env is None
    assert niced == ["nice", "-n", str(chromium.NICED), *untraced]
    assert chromium.NICED < 0
    sized_niced, _ = chromium.key_argv("floor_sized_niced", "t", tmp_path, py)
    assert sized_niced == [
        "nice",
        "-n",
        str(chromium.NICED),
        *chromium.key_argv("floor_sized", "t", tmp_path, py)[0],
    ]
    assert untraced[:4] == [py, "-m", "vfido", "run"] and "--trace" not in untraced
    traced, _ = chromium.key_argv("vfido", "t", tmp_path, py)
    assert traced[-2:] == ["--trace", str(tmp_path / "trace-t.jsonl")]
    cached, _ = chromium.key_argv("vfido_cached", "t", tmp_path, py)
    assert cached[1:3] == [str(chromium.HERE / "cached_handler.py"), "--by-command"]
    timed, timed_env = chromium.key_argv("vfido_timed", "t", tmp_path, py)
    assert timed[1] == str(chromium.HERE / "timed_key.py")
    assert timed_env is not None and timed_env["WRAP_OUT"] == str(tmp_path / "times-t.json")
    slept, _ = chromium.key_argv("vfido_slept", "t", tmp_path, py)
    assert slept[1:5] == [
        str(chromium.HERE / "cached_handler.py"),
        "--by-command",
        "--sleep-ms",
        chromium.SLEPT_MS,
    ]
    computed, _ = chromium.key_argv("vfido_computed", "t", tmp_path, py)
    assert computed[1:4] == [str(chromium.HERE / "cached_handler.py"), "--by-command", "--compute"]
    base, base_env = chromium.key_argv("vfido_base", "t", tmp_path, py, tmp_path / "old")
    assert base[:5] == [py, "-P", "-m", "vfido", "run"]
    assert base_env is not None and base_env["PYTHONPATH"] == str(tmp_path / "old")
    other, other_env = chromium.key_argv(
        "vfido_base", "t", tmp_path, py, tmp_path / "old", "/opt/py/bin/python"
    )
    assert other[:5] == ["/opt/py/bin/python", "-P", "-m", "vfido", "run"]
    assert other_env is not None and other_env["PYTHONPATH"] == str(tmp_path / "old")
    for key in ("vfido_untraced", "vfido_niced", "floor_sized", "vfido"):  # only vfido_base
        with_base, _ = chromium.key_argv(key, "t", tmp_path, py, tmp_path / "old", "/opt/py/bin/x")
        assert with_base == chromium.key_argv(key, "t", tmp_path, py)[0]
    for argv in (untraced, slept, computed, base, timed):
        assert argv[-6:] == [
            "--presence",
            "auto",
            "--serial",
            "vfido-bench",
            "--control-socket",
            str(tmp_path / "ctl-t.sock"),
        ]
    sized, _ = chromium.key_argv("floor_sized", "t", tmp_path, py)
    assert sized[-4:] == [
        "--serial",
        "vfido-floor-sized",
        "--shape",
        str(tmp_path / "floor-sized-shape.json"),
    ]
    floor, _ = chromium.key_argv("floor", "t", tmp_path, py)
    assert floor[-2:] == ["--serial", "vfido-floor"]


def test_cpu_per_pair_refuses_a_block_whose_marks_did_not_arrive() -> None:
    """A page whose ``mark()`` fetch failed leaves a mark out: one clear error, not a
    KeyError."""
    with pytest.raises(RuntimeError, match=r"marks \['end'\] did not reach the server"):
        chromium.cpu_per_pair({"start": {"wall": 0.0}}, 10)


def test_cpu_sample_survives_a_parent_loop(tmp_path: Path) -> None:
    """Two pids each the other's parent (a pid reused while /proc was read) end the walk
    instead of looping; neither is the browser's."""
    proc = _fake_proc(
        tmp_path / "proc",
        [1, 0, 0, 1, 0, 0, 0, 0],
        {100: (1, 1, 0), 200: (1, 3, 0), 300: (301, 5, 0), 301: (300, 7, 0)},
    )
    assert chromium.cpu_sample(100, 200, proc)["browser"] == pytest.approx(
        3 * 1e3 / chromium.CLOCK_TICKS
    )


def test_key_priority_reads_nice_and_autogroup(tmp_path: Path) -> None:
    """``key_priority``: the nice value is the 17th field after the comm; the group's line
    and the kernel's switch come from /proc; ``set_priority`` writes the group's nice."""
    proc = _fake_proc(tmp_path / "proc", [1] * 8, {100: (1, 0, 0)})
    stat = proc / "100" / "stat"
    head, _ = stat.read_text().rsplit(")", 1)
    fields = [
        "S", "1", "100", "100", "0", "-1", "0", "0", "0", "0", "0",
        "5", "6", "0", "0", "10", "-10", "1",
    ]  # fmt: skip
    stat.write_text(head + ") " + " ".join(fields))
    assert chromium.key_priority(100, proc) == {
        "nice": -10,
        "autogroup": None,
        "autogroup_enabled": None,
    }
    (proc / "100" / "autogroup").write_text("/autogroup-7 nice 0\n")
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "sched_autogroup_enabled").write_text("1\n")
    chromium.set_priority(100, -10, proc)
    assert (proc / "100" / "autogroup").read_text() == "-10"
    (proc / "100" / "autogroup").write_text("/autogroup-7 nice -10\n")
    assert chromium.key_priority(100, proc) == {
        "nice": -10,
        "autogroup": "/autogroup-7 nice -10",
        "autogroup_enabled": True,
    }


@pytest.mark.parametrize(
    ("key", "priority", "ok"),
    [
        ("vfido_niced", {"nice": -10, "autogroup": "/autogroup-7 nice -10"}, True),
        ("vfido_niced", {"nice": -10, "autogroup": "/autogroup-7 nice 0"}, False),
        ("vfido_niced", {"nice": 0, "autogroup": None}, False),
        ("floor_sized_niced", {"nice": -10, "autogroup": None}, True),
        ("vfido_untraced", {"nice": 0, "autogroup": "/autogroup-8 nice 0"}, True),
        ("floor_sized", {"nice": -10, "autogroup": "/autogroup-8 nice -10"}, False),
    ],
)
def test_check_priority_refuses_a_key_not_at_its_priority(
    key: str, priority: dict[str, Any], ok: bool
) -> None:
    """A niced key runs at ``NICED``, its autogroup too when the kernel's autogroup is on;
    any other key at 0."""
    priority = {**priority, "autogroup_enabled": priority["autogroup"] is not None}
    if ok:
        chromium.check_priority(key, priority)
    else:
        with pytest.raises(RuntimeError, match=f"{key} should run at nice"):
            chromium.check_priority(key, priority)


def test_key_waited_sums_the_run_queue_wait_of_the_keys_threads(tmp_path: Path) -> None:
    """``key_waited``: the second figure (ns) of each thread's schedstat, summed, in ms; a
    thread gone meanwhile or a line without it is left out; no schedstat at all is 0."""
    proc = _fake_proc(tmp_path / "proc", [1] * 8, {100: (1, 0, 0)})
    for tid, line in (("100", "900 2000000 3"), ("101", "5 500000 1"), ("102", "7")):
        (proc / "100" / "task" / tid).mkdir(parents=True)
        (proc / "100" / "task" / tid / "schedstat").write_text(line + "\n")
    assert chromium.key_waited(100, proc) == pytest.approx(2.5)
    assert chromium.cpu_sample(100, 1, proc)["key_waited"] == pytest.approx(2.5)
    assert chromium.key_waited(999, proc) == 0.0


def test_a_uv_run_starts_vfido_run_with_built_in_uv_and_only_keys_that_verify(
    tmp_path: Path,
) -> None:
    """``uv``: `vfido run --uv` for every key of :data:`chromium.UV_KEYS` (niced too); a floor
    or cached key cannot verify a user and is refused before anything starts."""
    py = "/usr/bin/python3"
    plain, _ = chromium.key_argv("vfido_untraced", "t", tmp_path, py)
    with_uv, _ = chromium.key_argv("vfido_untraced", "t", tmp_path, py, uv=True)
    assert with_uv == [*plain, "--uv"]
    niced, _ = chromium.key_argv("vfido_niced", "t", tmp_path, py, uv=True)
    assert niced == ["nice", "-n", str(chromium.NICED), *with_uv]
    base, _ = chromium.key_argv("vfido_base", "t", tmp_path, py, tmp_path / "old", uv=True)
    assert base[-1] == "--uv"
    for key in ("floor", "floor_sized", "vfido_cached", "floor_sized_niced"):
        with pytest.raises(ValueError, match="cannot verify a user"):
            chromium.key_argv(key, "t", tmp_path, py, uv=True)
    with pytest.raises(ValueError, match="verify a user"):
        chromium.run(tmp_path, lambda url: ["false"], keys=("floor", "vfido"), uv=True)
    assert list(tmp_path.iterdir()) == []


def test_a_uv_run_wants_every_ceremony_user_verified() -> None:
    """``all_user_verified``: the page's UV flags, every ceremony's; one without it (or a
    page from before the flag was noted) is an error, not a row."""
    ceremonies = [
        {"kind": kind, "i": i, "ok": True, "uv": True} for i in range(2) for kind in chromium.KINDS
    ]
    page = {"n": 2, "ceremonies": ceremonies}
    assert chromium.all_user_verified(page) == 4
    for unverified in (False, None):
        page = {"n": 2, "ceremonies": [*ceremonies[:-1], {**ceremonies[-1], "uv": unverified}]}
        if unverified is None:
            del page["ceremonies"][-1]["uv"]
        with pytest.raises(RuntimeError, match="without the UV flag"):
            chromium.all_user_verified(page)
