"""The protocol names a trace shows: CTAPHID commands and errors, CTAP commands and status
codes, CTAP1 instructions and status words (each generated from the enum that defines it), and
the CBOR field names of each command's request and response. Which fields are secret
(:data:`SECRET_FIELDS`, also what the dashboard hides) is said here once."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from vfido.authenticator.ctap1 import Ins, Sw
from vfido.authenticator.dispatch import Command as CtapCommand
from vfido.authenticator.env import KeepaliveStatus
from vfido.authenticator.errors import CtapStatus
from vfido.authenticator.responses import GET_INFO_MEMBERS
from vfido.transports.ctaphid import Command as HidCommand
from vfido.transports.ctaphid import HidError

#: Words the CTAP specification writes in capitals inside a camelCase name (clientPIN).
_ACRONYMS = frozenset({"PIN"})


def spec_name(member: IntEnum) -> str:
    """``MAKE_CREDENTIAL`` -> ``makeCredential``, ``CLIENT_PIN`` -> ``clientPIN``: the name
    the CTAP specification gives the command (authenticatorMakeCredential...)."""
    words = member.name.split("_")
    head, tail = words[0].lower(), words[1:]
    return head + "".join(w if w in _ACRONYMS else w.capitalize() for w in tail)


def _names(
    enum: type[IntEnum], namer: Callable[[IntEnum], str] = lambda member: member.name
) -> dict[int, str]:
    return {int(member): namer(member) for member in enum}


CTAPHID_COMMANDS = _names(HidCommand)
CTAPHID_ERRORS = _names(HidError)
KEEPALIVE_STATUS = _names(KeepaliveStatus)
CTAP_COMMANDS = _names(CtapCommand, spec_name)
CTAP_STATUS = _names(CtapStatus)
CTAP1_INS = _names(Ins)
CTAP1_STATUS = _names(Sw)

_CM = {
    1: "subCommand",
    2: "subCommandParams",
    3: "pinUvAuthProtocol",
    4: "pinUvAuthParam",
}
REQUEST_FIELDS: dict[int, dict[int, str]] = {
    0x01: {
        1: "clientDataHash",
        2: "rp",
        3: "user",
        4: "pubKeyCredParams",
        5: "excludeList",
        6: "extensions",
        7: "options",
        8: "pinUvAuthParam",
        9: "pinUvAuthProtocol",
        10: "enterpriseAttestation",
        11: "attestationFormatsPreference",
    },
    0x02: {
        1: "rpId",
        2: "clientDataHash",
        3: "allowList",
        4: "extensions",
        5: "options",
        6: "pinUvAuthParam",
        7: "pinUvAuthProtocol",
    },
    0x06: {
        1: "pinUvAuthProtocol",
        2: "subCommand",
        3: "keyAgreement",
        4: "pinUvAuthParam",
        5: "newPinEnc",
        6: "pinHashEnc",
        9: "permissions",
        10: "rpId",
    },
    0x09: {1: "modality", 2: "subCommand", 3: "subCommandParams", 4: "pinUvAuthProtocol"},
    0x0A: _CM,
    0x41: _CM,
    0x0C: {
        1: "get",
        2: "set",
        3: "offset",
        4: "length",
        5: "pinUvAuthParam",
        6: "pinUvAuthProtocol",
    },
    0x0D: _CM,
}
_ASSERTION = {
    1: "credential",
    2: "authData",
    3: "signature",
    4: "user",
    5: "numberOfCredentials",
    6: "userSelected",
    7: "largeBlobKey",
}
_CM_RESPONSE = {
    1: "existingResidentCredentialsCount",
    2: "maxPossibleRemainingResidentCredentialsCount",
    3: "rp",
    4: "rpIDHash",
    5: "totalRPs",
    6: "user",
    7: "credentialID",
    8: "publicKey",
    9: "totalCredentials",
    10: "credProtect",
    11: "largeBlobKey",
    12: "thirdPartyPayment",
}
RESPONSE_FIELDS: dict[int, dict[int, str]] = {
    0x01: {
        1: "fmt",
        2: "authData",
        3: "attStmt",
        4: "epAtt",
        5: "largeBlobKey",
        6: "unsignedExtensionOutputs",
    },
    0x02: _ASSERTION,
    0x08: _ASSERTION,
    0x04: GET_INFO_MEMBERS,
    0x06: {
        1: "keyAgreement",
        2: "pinUvAuthToken",
        3: "pinRetries",
        4: "powerCycleState",
        5: "uvRetries",
    },
    0x0A: _CM_RESPONSE,
    0x41: _CM_RESPONSE,
    0x0C: {1: "config"},
}
SUB_COMMANDS: dict[int, dict[int, str]] = {
    0x06: {
        1: "getPINRetries",
        2: "getKeyAgreement",
        3: "setPIN",
        4: "changePIN",
        5: "getPinToken",
        6: "getPinUvAuthTokenUsingUvWithPermissions",
        7: "getUVRetries",
        9: "getPinUvAuthTokenUsingPinWithPermissions",
    },
    0x0A: {
        1: "getCredsMetadata",
        2: "enumerateRPsBegin",
        3: "enumerateRPsGetNextRP",
        4: "enumerateCredentialsBegin",
        5: "enumerateCredentialsGetNextCredential",
        6: "deleteCredential",
        7: "updateUserInformation",
    },
    0x0D: {
        1: "enableEnterpriseAttestation",
        2: "toggleAlwaysUv",
        3: "setMinPINLength",
        0xFF: "vendorPrototype",
    },
}
SUB_COMMANDS[0x41] = SUB_COMMANDS[0x0A]
_CM_PARAMS = {1: "rpIDHash", 2: "credentialID", 3: "user"}
SUB_COMMAND_PARAMS: dict[int, dict[int, str]] = {
    0x0A: _CM_PARAMS,
    0x41: _CM_PARAMS,
    0x0D: {1: "newMinPINLength", 2: "minPinLengthRPIDs", 3: "forceChangePin"},
}
PERMISSIONS = {0x01: "mc", 0x02: "ga", 0x04: "cm", 0x08: "be", 0x10: "lbw", 0x20: "acfg"}

AUTH_DATA_FLAGS = (
    (0x01, "UP"),
    (0x04, "UV"),
    (0x08, "BE"),
    (0x10, "BS"),
    (0x40, "AT"),
    (0x80, "ED"),
)

#: Fields whose values are secrets: a trace shows "<redacted N bytes>", the dashboard hides
#: them whatever the log source says. Compared without case and spaces (:func:`is_secret`).
SECRET_FIELDS = frozenset(
    {
        "pin",
        "pinhash",
        "pinhashenc",
        "newpinenc",
        "pinuvauthparam",
        "pinuvauthtoken",
        "pinauth",
        "pintoken",
        "sharedsecret",
        "shared_secret",
        "salt",
        "saltenc",
        "saltauth",
        "hmac-secret",
        "hmac-secret-mc",
        "hmacsecret",
        "hmac_secret",
        "private_key",
        "privatekey",
        "credrandom",
        "credblob",
        "cred_blob",
        "largeblobkey",
        "large_blob_key",
        "set",  # largeBlobs request: a fragment of the large-blob array
        "config",  # largeBlobs response: the array
        "token",
        "passphrase",
        "secret",
    }
)


def is_secret(name: str) -> bool:
    """Whether a field called ``name`` holds a secret."""
    return name.lower().replace(" ", "") in SECRET_FIELDS


PUBLIC_BYTES_FIELDS = frozenset(
    {
        "clientDataHash",
        "rpIdHash",
        "rpIDHash",
        "id",
        "aaguid",
        "credentialId",
        "sig",
        "signature",
        "x5c",
        "challenge",
        "application",
        "keyHandle",
        "publicKey",
        "certificate",
    }
)
