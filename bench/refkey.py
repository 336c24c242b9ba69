"""A reference key for bench/entry.py ``reference``: the least a CTAPHID-over-UDP key can do.

    python3 bench/refkey.py PORT PEER_PORT

One thread, one socket: CTAPHID_INIT, PING and CBOR; makeCredential generates a P-256 key
and signs (packed self attestation), getAssertion signs authenticatorData + the request's
clientDataHash with one fixed key. No CANCEL, no keepalives, no presence, no keystore, no
checks of any kind: a calibration of what "the raw operation, measured from outside"
costs on this machine, in the same run as `vfido run`. Not a key to use.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

TYPE_INIT = 0x80
PING, INIT, CBOR, ERROR = 0x01, 0x06, 0x10, 0x3F
BROADCAST = b"\xff\xff\xff\xff"
RP_ID_HASH = hashlib.sha256(b"example.com").digest()
AAGUID = bytes(16)
ECDSA = ec.ECDSA(hashes.SHA256())


def frames(cid: bytes, command: int, data: bytes) -> list[bytes]:
    out = [(cid + bytes([TYPE_INIT | command]) + struct.pack(">H", len(data)) + data[:57])]
    rest, seq = data[57:], 0
    while rest:
        out.append(cid + bytes([seq]) + rest[:59])
        rest, seq = rest[59:], seq + 1
    return [r.ljust(64, b"\0") for r in out]


def cose_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    return bytes(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y}))


def main(port: int, peer: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    to = ("127.0.0.1", peer)
    key = ec.generate_private_key(ec.SECP256R1())
    cred_id = os.urandom(16)
    counter = 0
    next_cid = 1
    message: bytearray | None = None
    want = 0
    cid = command = 0
    head = b""
    while True:
        report = sock.recv(65535)
        if len(report) != 64:
            continue
        if report[4] & TYPE_INIT:
            head, command = report[:4], report[4] & 0x7F
            want = (report[5] << 8) | report[6]
            message = bytearray(report[7 : 7 + want])
        elif message is not None and report[:4] == head:
            message += report[5 : 5 + want - len(message)]
        else:
            continue
        if len(message) < want:
            continue
        data, message = bytes(message), None
        cid = int.from_bytes(head, "big")
        if command == INIT:
            new = next_cid.to_bytes(4, "big")
            next_cid += 1
            reply = data[:8] + new + bytes([2, 0, 1, 0, 0x05])
        elif command == PING:
            reply = data
        elif command == CBOR and data[:1] == b"\x01":  # makeCredential: keygen + sign
            request = cbor2.loads(data[1:])
            new_key = ec.generate_private_key(ec.SECP256R1())
            attested = AAGUID + struct.pack(">H", len(cred_id)) + cred_id + cose_key(new_key)
            auth_data = RP_ID_HASH + b"\x41" + struct.pack(">I", 0) + attested
            signature = new_key.sign(auth_data + request[1], ECDSA)
            statement = {"alg": -7, "sig": signature}
            reply = b"\0" + cbor2.dumps({1: "packed", 2: auth_data, 3: statement})
        elif command == CBOR and data[:1] == b"\x02":  # getAssertion: one sign
            request = cbor2.loads(data[1:])
            counter += 1
            auth_data = RP_ID_HASH + b"\x01" + struct.pack(">I", counter)
            signature = key.sign(auth_data + request[2], ECDSA)
            credential = {"id": cred_id, "type": "public-key"}
            reply = b"\0" + cbor2.dumps({1: credential, 2: auth_data, 3: signature})
        else:
            command, reply = ERROR, b"\x01"
        for out in frames(cid.to_bytes(4, "big"), command, reply):
            sock.sendto(out, to)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
