"""A small WebAuthn relying party (Flask + python-fido2's Fido2Server), to be tested with vfido.

Run it by hand with ``flask --app webauthn_app run`` (in this directory) and open
http://localhost:5000/; its tests drive the same HTTP endpoints with python-fido2 against an
in-process vfido key (test_webauthn_app.py) and with Chromium against a vfido key on UHID
(test_chromium.py).

Endpoints (JSON; binary values are base64url strings, as ``PublicKeyCredential.toJSON()``):

* ``POST /api/register/begin`` ``{"username"}`` -> ``{"publicKey": creation options}``
* ``POST /api/register/complete`` the credential -> ``{"status": "ok", "credential_id"}``
* ``POST /api/login/begin`` ``{"username"}`` -> ``{"publicKey": request options}``
* ``POST /api/login/complete`` the assertion -> ``{"status": "ok", "username", "sign_count"}``
* ``GET /api/me`` -> ``{"username": the signed-in user or null}``

Accounts live in memory; the ceremony state in Flask's signed session cookie.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fido2.server import Fido2Server
from fido2.utils import websafe_encode
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticationResponse,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from flask import Flask, Response, abort, jsonify, request, session

PAGE = Path(__file__).with_name("page.html")


@dataclass
class Account:
    user_id: bytes
    credentials: list[AttestedCredentialData] = field(default_factory=list)
    sign_counts: dict[bytes, int] = field(default_factory=dict)


class RelyingPartyError(Exception):
    """A ceremony the RP refuses (answered with HTTP 400 and the reason)."""


def create_app(
    rp_id: str = "localhost",
    rp_name: str = "vfido example RP",
    *,
    resident_key: str = "discouraged",
    user_verification: str = "discouraged",
    algorithms: Sequence[int] = (-7, -8, -257),
) -> Flask:
    """The RP for ``rp_id``. fido2's default origin check accepts ``https://rp_id[:port]``
    (and ``http://localhost:port`` for ``localhost``). ``algorithms``: the COSE algorithms
    offered, in order of preference (ES256, EdDSA, RS256)."""
    app = Flask(__name__)
    app.secret_key = os.urandom(32)
    server = Fido2Server(PublicKeyCredentialRpEntity(id=rp_id, name=rp_name))
    server.allowed_algorithms = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
        for alg in algorithms
    ]
    accounts: dict[str, Account] = {}
    app.config["ACCOUNTS"] = accounts
    uv = UserVerificationRequirement(user_verification)

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise RelyingPartyError("expected a JSON object")
        return data

    def username_of(data: dict[str, Any]) -> str:
        name = data.get("username")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise RelyingPartyError("username: 1-64 characters")
        return name

    @app.errorhandler(RelyingPartyError)
    def refused(exc: RelyingPartyError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.get("/")
    def page() -> Response:
        return Response(PAGE.read_text(encoding="utf-8"), mimetype="text/html")

    @app.post("/api/register/begin")
    def register_begin() -> Response:
        name = username_of(body())
        account = accounts.get(name) or Account(os.urandom(16))
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(id=account.user_id, name=name, display_name=name),
            account.credentials,  # excludeCredentials: one registration per key
            resident_key_requirement=ResidentKeyRequirement(resident_key),
            user_verification=uv,
        )
        session["register"] = {"state": state, "username": name, "user_id": account.user_id.hex()}
        return jsonify(dict(options))

    @app.post("/api/register/complete")
    def register_complete() -> Response:
        pending = session.pop("register", None)
        if pending is None:
            raise RelyingPartyError("no registration in progress")
        try:
            auth_data = server.register_complete(pending["state"], body())
        except Exception as exc:  # fido2 raises ValueError & co. for every bad response
            raise RelyingPartyError(f"registration refused: {exc}") from None
        credential = auth_data.credential_data
        assert credential is not None
        name = pending["username"]
        account = accounts.setdefault(name, Account(bytes.fromhex(pending["user_id"])))
        account.credentials.append(credential)
        account.sign_counts[credential.credential_id] = auth_data.counter
        return jsonify(status="ok", credential_id=websafe_encode(credential.credential_id))

    @app.post("/api/login/begin")
    def login_begin() -> Response:
        name = username_of(body())
        account = accounts.get(name)
        if account is None or not account.credentials:
            raise RelyingPartyError(f"no account {name!r}")
        options, state = server.authenticate_begin(account.credentials, user_verification=uv)
        session["login"] = {"state": state, "username": name}
        return jsonify(dict(options))

    @app.post("/api/login/complete")
    def login_complete() -> Response:
        pending = session.pop("login", None)
        if pending is None:
            raise RelyingPartyError("no login in progress")
        account = accounts[pending["username"]]
        data = body()
        try:
            credential = server.authenticate_complete(pending["state"], account.credentials, data)
            counter = AuthenticationResponse.from_dict(data).response.authenticator_data.counter
        except Exception as exc:
            raise RelyingPartyError(f"login refused: {exc}") from None
        previous = account.sign_counts[credential.credential_id]
        if (counter or previous) and counter <= previous:  # WebAuthn section 7.2 step 21
            raise RelyingPartyError("signature counter did not increase: a cloned key?")
        account.sign_counts[credential.credential_id] = counter
        session["user"] = pending["username"]
        return jsonify(status="ok", username=pending["username"], sign_count=counter)

    @app.get("/api/me")
    def me() -> Response:
        return jsonify(username=session.get("user"))

    @app.post("/api/logout")
    def logout() -> Response:
        session.pop("user", None)
        return jsonify(status="ok")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        abort(404)

    return app


app = create_app()  # for `flask --app webauthn_app run`
