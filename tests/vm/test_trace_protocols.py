"""Host-side test of trace_protocols (no guest): a real `vfido run --trace` over UDP tells a
CTAP2 ceremony from a U2F one, which is what the guest's browser tests rely on."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from fido2.ctap1 import Ctap1
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from trace_protocols import protocol_counts, read_trace, served

from vfido.api import VirtualKey

DISCOURAGED = UserVerificationRequirement.DISCOURAGED


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_ctap2_and_u2f_ceremonies_are_told_apart(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    server = Fido2Server(PublicKeyCredentialRpEntity(id="example.com", name="Example"))
    with VirtualKey.service(extra_args=["--trace", str(trace)]) as key:
        client = key.client("https://example.com")
        user = PublicKeyCredentialUserEntity(id=b"user-1", name="alice")
        options, state = server.register_begin(user, user_verification=DISCOURAGED)
        registration = client.make_credential(options.public_key)
        credential = server.register_complete(state, registration).credential_data
        assert credential is not None
        options, state = server.authenticate_begin([credential], user_verification=DISCOURAGED)
        assertion = client.get_assertion(options.public_key).get_response(0)
        server.authenticate_complete(state, [credential], assertion)

        # The same key through CTAP1/U2F, as a browser that fell back would use it.
        ctap1 = Ctap1(key.device)
        app = hashlib.sha256(b"https://example.com").digest()
        challenge = hashlib.sha256(b"challenge").digest()
        u2f_registration = ctap1.register(challenge, app)
        u2f_signature = ctap1.authenticate(challenge, app, u2f_registration.key_handle)

    records = read_trace(trace)
    ctap2_create = {"rawId": b64url(credential.credential_id)}
    ctap2_get = {"response": {"signature": b64url(bytes(assertion.response.signature))}}
    u2f_create = {"rawId": b64url(u2f_registration.key_handle)}
    u2f_get = {"response": {"signature": b64url(u2f_signature.signature)}}
    assert served(records, "create", ctap2_create) == ["CBOR makeCredential"]
    assert served(records, "get", ctap2_get) == ["CBOR getAssertion"]
    assert served(records, "create", u2f_create) == ["MSG REGISTER"]
    assert served(records, "get", u2f_get) == ["MSG AUTHENTICATE"]
    # Something the key never produced is served by nothing (the test then fails).
    assert served(records, "create", {"rawId": b64url(b"not a credential")}) == []
    counts = protocol_counts(records)
    assert counts["CBOR makeCredential"] == 1 and counts["MSG REGISTER"] == 1
