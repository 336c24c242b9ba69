"""Which protocol served a browser's WebAuthn ceremony, read from the key's trace (issue #14).

A browser that cannot parse the key's getInfo falls back to CTAP1/U2F without a word (Firefox
did, when getInfo listed ML-DSA): ES256 create()/get() still succeed, through U2F REGISTER and
AUTHENTICATE. So a browser test that only checks the page's results cannot tell. The browser
keys in the guest run with ``vfido run --trace FILE``; this module finds, for one ceremony, the
trace response that produced it:

* a create(): the response whose credential ID is the new credential's ID (CTAP2
  makeCredential: ``authData.credentialId``; U2F REGISTER: ``keyHandle``);
* a get(): the response whose signature is the assertion's signature (CTAP2 getAssertion or
  getNextAssertion: ``signature``; U2F AUTHENTICATE: ``signature``).

The answer is a list of ``"<proto> <command>"`` strings (``"CBOR makeCredential"``,
``"MSG REGISTER"``...), normally exactly one. Standard library only (used on the host).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

#: What a ceremony served over CTAP2 looks like.
CTAP2_CREATE = ("CBOR makeCredential",)
CTAP2_GET = ("CBOR getAssertion", "CBOR getNextAssertion")
#: CTAP1/U2F commands that make or use credentials (VERSION is harmless).
U2F_CEREMONIES = ("MSG REGISTER", "MSG AUTHENTICATE")


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The records of a ``vfido run --trace`` file (a missing file is an error)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hex_field(data: bytes) -> str:
    """How the trace writes a public byte string."""
    return f"h'{data.hex()}'"


def _responses(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r for r in records if r.get("type") == "response" and r.get("status") in ("OK", "NO_ERROR")
    ]


def responses_of_create(records: list[dict[str, Any]], raw_id_b64url: str) -> list[dict[str, Any]]:
    """The trace responses that made the credential ``raw_id`` (base64url, the page's rawId)."""
    wanted = _hex_field(_b64url(raw_id_b64url))
    found = []
    for r in _responses(records):
        result = r.get("result") or {}
        auth_data = result.get("authData") if isinstance(result.get("authData"), dict) else {}
        if wanted in (auth_data.get("credentialId"), result.get("keyHandle")):
            found.append(r)
    return found


def responses_of_get(records: list[dict[str, Any]], signature_b64url: str) -> list[dict[str, Any]]:
    """The trace responses that produced the assertion signature (base64url, the page's)."""
    wanted = _hex_field(_b64url(signature_b64url))
    return [r for r in _responses(records) if (r.get("result") or {}).get("signature") == wanted]


def responses_of(
    records: list[dict[str, Any]], kind: str, credential: dict[str, Any]
) -> list[dict[str, Any]]:
    """``responses_of_create`` or ``responses_of_get`` for a page result (its ``credential``)."""
    if kind == "create":
        return responses_of_create(records, credential["rawId"])
    return responses_of_get(records, credential["response"]["signature"])


def _named(found: list[dict[str, Any]]) -> list[str]:
    return [f"{r.get('proto')} {r.get('command')}" for r in found]


def served_create(records: list[dict[str, Any]], raw_id_b64url: str) -> list[str]:
    """Which responses made the credential ``raw_id``, as ``"<proto> <command>"``."""
    return _named(responses_of_create(records, raw_id_b64url))


def served_get(records: list[dict[str, Any]], signature_b64url: str) -> list[str]:
    """Which responses produced the assertion signature, as ``"<proto> <command>"``."""
    return _named(responses_of_get(records, signature_b64url))


def served(records: list[dict[str, Any]], kind: str, credential: dict[str, Any]) -> list[str]:
    """``served_create`` or ``served_get`` for a page result (its ``credential`` JSON)."""
    return _named(responses_of(records, kind, credential))


def protocol_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many responses of each ``"<proto> <command>"`` the key gave (for the report)."""
    counts = Counter(
        f"{r.get('proto')} {r.get('command')}" for r in records if r.get("type") == "response"
    )
    return dict(sorted(counts.items()))
