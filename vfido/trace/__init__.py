"""Traces: every CTAPHID packet and every decoded CTAP request/response, as JSON lines.

``vfido run --trace FILE`` appends one JSON object per line to FILE (created 0600, never
followed through a symlink); ``vfido trace show FILE`` prints it readably, one transaction per
block. The running key also keeps the recent records in memory (a ring buffer), which the
control socket's ``log`` command returns (``vfido ctl log``, the dashboard).

Records (every one has ``seq``, a number increasing by one, and ``t``, unix time in seconds):

``{"type": "start", "version", "pid"}``
    the recorder started (one per ``vfido run``).
``{"type": "packet", "dir": "in"|"out", "cid": "1a2b3c4d", "size": 64, ...}``
    one CTAPHID report. An initialization packet has ``"cmd"`` (``INIT``, ``CBOR``, ``MSG``,
    ``KEEPALIVE``...) and ``"bcnt"``; a continuation packet has ``"cont"`` (its sequence
    number). Payloads are never recorded, only: the CTAP command of a CBOR/MSG request, the
    new channel of an INIT response, the status of a KEEPALIVE, the code of an ERROR.
``{"type": "request", "tx", "cid", "proto": "CBOR"|"MSG", "command", "params", "bytes"}``
    a complete request handed to the authenticator, decoded (CBOR maps with field names).
``{"type": "response", "tx", "cid", "proto", "command", "status", "result", "bytes",
"duration", "summary"}``
    its answer: the status name (``OK``, ``PIN_INVALID``...; for CTAP1 the status word), the
    decoded result (authenticator data decoded too), and a one-line ``summary``.
``{"type": "event", "event": "power_cycle"}``
    the device was power-cycled.

Byte strings appear as ``"h'<hex>'"`` only for fields that are identifiers or public data
(clientDataHash, rpIdHash, user and credential IDs, AAGUID, credential public keys,
signatures, certificates, CTAP1 challenge/application/key handle). Every other byte string
is replaced by ``"<N bytes>"``, and these secrets by ``"<redacted N bytes>"``:

* ``pinUvAuthParam`` (every command), ``pinHashEnc``, ``newPinEnc`` (clientPIN);
* ``pinUvAuthToken`` (the encrypted PIN/UV token in clientPIN responses);
* ``keyAgreement`` public keys of the ECDH exchanges (clientPIN, hmac-secret): only their
  type is shown; the shared secrets never cross the wire;
* hmac-secret / hmac-secret-mc ``saltEnc``, ``saltAuth`` and their outputs in authData;
* ``credBlob`` (the blob sent at makeCredential and returned by getAssertion);
* ``largeBlobKey`` (makeCredential, getAssertion, credentialManagement responses) and the
  large-blob array itself (``set`` in largeBlobs requests, ``config`` in responses).

Raw payloads are never written, so what is not decoded cannot leak.

The package: :mod:`~vfido.trace.names` (protocol names, generated from the enums that define
them; which fields are secret), :mod:`~vfido.trace.decode` (requests and responses to JSON,
redacted), :mod:`~vfido.trace.recorder` (the recorder a running key feeds, the ``log``
control command), :mod:`~vfido.trace.format` (reading and printing a trace file). The
command line is :mod:`vfido.cli.trace`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfido.trace.decode import (
        decode_auth_data,
        decode_cbor_request,
        decode_cbor_response,
        decode_msg_request,
        decode_msg_response,
    )
    from vfido.trace.format import RECORD_TYPES, format_trace, read_trace
    from vfido.trace.names import (
        CTAP1_INS,
        CTAP1_STATUS,
        CTAP_COMMANDS,
        CTAP_STATUS,
        CTAPHID_COMMANDS,
        CTAPHID_ERRORS,
        KEEPALIVE_STATUS,
        PUBLIC_BYTES_FIELDS,
        SECRET_FIELDS,
    )
    from vfido.trace.recorder import (
        DEFAULT_RING_SIZE,
        TraceRecorder,
        TracingHandler,
        add_trace_commands,
        open_trace_file,
    )

# Each name from the submodule that defines it, imported on first use: `vfido run` (which
# imports the recorder) does not load the decoder or the formatter unless it records.
_WHERE = {
    "decode": (
        "decode_auth_data",
        "decode_cbor_request",
        "decode_cbor_response",
        "decode_msg_request",
        "decode_msg_response",
    ),
    "format": ("RECORD_TYPES", "format_trace", "read_trace"),
    "names": (
        "CTAP1_INS",
        "CTAP1_STATUS",
        "CTAP_COMMANDS",
        "CTAP_STATUS",
        "CTAPHID_COMMANDS",
        "CTAPHID_ERRORS",
        "KEEPALIVE_STATUS",
        "PUBLIC_BYTES_FIELDS",
        "SECRET_FIELDS",
    ),
    "recorder": (
        "DEFAULT_RING_SIZE",
        "TraceRecorder",
        "TracingHandler",
        "add_trace_commands",
        "open_trace_file",
    ),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "CTAP1_INS",
    "CTAP1_STATUS",
    "CTAPHID_COMMANDS",
    "CTAPHID_ERRORS",
    "CTAP_COMMANDS",
    "CTAP_STATUS",
    "DEFAULT_RING_SIZE",
    "KEEPALIVE_STATUS",
    "PUBLIC_BYTES_FIELDS",
    "RECORD_TYPES",
    "SECRET_FIELDS",
    "TraceRecorder",
    "TracingHandler",
    "add_trace_commands",
    "decode_auth_data",
    "decode_cbor_request",
    "decode_cbor_response",
    "decode_msg_request",
    "decode_msg_response",
    "format_trace",
    "open_trace_file",
    "read_trace",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"vfido.trace.{module}"), name)
