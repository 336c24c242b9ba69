"""Static configuration of the authenticator.

Everything authenticatorGetInfo reports is derived from a :class:`Config` and
the keystore; nothing there is written by hand. Optional features default to off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vfido.authenticator.attestation import max_make_credential_response_size
from vfido.authenticator.cose import (
    ALGORITHM_NAMES,
    ALL_ALGORITHMS,
    FULLY_SPECIFIED_ALGORITHMS,
    MLDSA_ALGORITHMS,
    mldsa_unavailable_reason,
)
from vfido.authenticator.model import ModelClass

ATTESTATION_FORMATS = ("packed", "self", "none")

#: The smallest maxMsgSize CTAP allows an authenticator to report (CTAP 2.1 section 6.4).
MIN_MSG_SIZE = 1024

#: Why ML-DSA is not offered when ``Config.mldsa`` is False (the default), for people.
MLDSA_OFF = "off by default (Firefox may not parse it in getInfo); on with vfido run --mldsa"


@dataclass(frozen=True)
class Config:
    #: "packed" (batch certificate, x5c), "self" (packed self attestation) or "none".
    attestation: str = "packed"
    #: Always report signCount 0 (privacy option; the RP then ignores counters).
    constant_zero_counter: bool = False
    #: Seconds to wait for the user's touch before USER_ACTION_TIMEOUT.
    presence_timeout: float = 30.0
    #: authenticatorReset only works this many seconds after power-up (CTAP 2.1 section 6.6).
    reset_window: float = 10.0
    #: maxMsgSize reported in getInfo; longer requests get CTAP2_ERR_REQUEST_TOO_LARGE.
    #: 7609 is the most a CTAPHID message over 64-byte reports can carry (57 + 128 * 59),
    #: and the bound for responses too: ML-DSA-65's makeCredential response (at most
    #: about 5.8 KB) fits; an ML-DSA algorithm whose largest response would not fit
    #: the configured value is not offered (see ``mldsa_unavailable``).
    max_msg_size: int = 7609
    #: firmwareVersion reported in getInfo (0x0E).
    firmware_version: int = 0x00010000
    #: Credential algorithms this key accepts, in order of getInfo's "algorithms". ML-DSA
    #: ones (-48, -49) are dropped here when they cannot be offered: ``mldsa=False`` (the
    #: default), runtime without ML-DSA, or a maxMsgSize too small for their responses.
    algorithms: tuple[int, ...] = ALL_ALGORITHMS
    #: maxCredentialCountInList reported in getInfo (0x07).
    max_credential_count_in_list: int = 32
    #: Seconds the state for authenticatorGetNextAssertion survives (CTAP 2.1 section 6.3).
    next_assertion_timeout: float = 30.0
    #: Built-in user verification through the presence front end's ``verify_user``
    #: (getInfo option "uv"; CTAP 2.1 section 6.1.2 step 11.2).
    builtin_uv: bool = False
    #: Enterprise attestation (CTAP 2.1 section 7.1): 0 = not supported (no "ep" in
    #: getInfo); 1 = vendor-facilitated only (mode 1, for ``enterprise_rp_ids``);
    #: 2 = both modes (mode 2, platform-managed, for any RP). Either way it is only
    #: given after authenticatorConfig enableEnterpriseAttestation.
    enterprise_attestation: int = 0
    #: RP IDs for which vendor-facilitated (mode 1) enterprise attestation is given.
    enterprise_rp_ids: tuple[str, ...] = ()
    #: Offer the fully-specified COSE identifiers (ESP256 -9, Ed25519 -19, ESP384 -51,
    #: ESP512 -52). Off by default: Firefox's authenticator-rs parses getInfo's
    #: "algorithms" into a closed enum without them and falls back to U2F.
    fully_specified_algorithms: bool = False
    #: CTAP 2.1-PRE compatibility: FIDO_2_1_PRE in versions, the credentialMgmtPreview
    #: option and command 0x41, for older Windows and libfido2 clients.
    ctap21_pre: bool = False
    #: CTAP 2.2 pinComplexityPolicy on from the start: setPIN/changePIN refuse trivial PINs
    #: (authenticator.pin_policy). Otherwise a platform turns it on with authenticatorConfig
    #: setMinPINLength. getInfo reports it, and the URL below (where it is described) if set.
    pin_complexity_policy: bool = False
    pin_complexity_policy_url: str | None = None
    #: A simulated fingerprint sensor (authenticatorBioEnrollment, uvModality fingerprint):
    #: built-in UV is a touch by an enrolled finger (authenticator.bio_enrollment). Implies
    #: ``builtin_uv``.
    fingerprint: bool = False
    #: Discoverable credentials this key is willing to hold (getInfo 0x14, credMgmt
    #: metadata). The keystore may still run out of space first.
    max_resident_credentials: int = 100_000
    #: Discoverable-credential storage (getInfo option ``rk``). False: a key without it, as
    #: WebDriver's ``hasResidentKey: false``: getInfo says ``rk`` false and makeCredential
    #: refuses ``rk`` with UNSUPPORTED_OPTION.
    resident_keys: bool = True
    #: Keep a record of every server-side credential this key makes (its sealed ID and RP
    #: ID, nothing secret in plaintext), so WebDriver's Get Credentials lists them and
    #: Remove Credential revokes one: a server-side ID without its record is then unknown.
    #: On for keys made through the virtual-authenticator API (vfido.virtual_authenticator).
    record_server_side_credentials: bool = False
    #: On a backup-eligible keystore, whether the credentials this key makes are backed up
    #: (BS): server-side ones at every assertion, discoverable ones from their creation (W3C
    #: WebAuthn L3 section 11, a virtual authenticator's ``defaultBackupState``). The key's
    #: setting for as long as it runs, never written to the keystore. None: BS follows
    #: `vfido export` (:mod:`vfido.authenticator.authdata`).
    default_backup_state: bool | None = None
    #: Offer ML-DSA-44/-65 credentials (where this process's ``cryptography``/OpenSSL provide
    #: them). Off by default: getInfo must parse in the platforms people use, and Firefox's
    #: authenticator-rs parses getInfo's "algorithms" into a closed enum without -48/-49, and
    #: a Firefox that cannot parse getInfo treats the key as U2F-only (no EdDSA, RS256 or
    #: discoverable credentials; reported in issue #14). Off leaves them out exactly as a
    #: runtime without ML-DSA does; credentials already made with ML-DSA keep signing.
    mldsa: bool = False
    #: Answer as a model class (authenticator.model; ``vfido run --persona``): its versions,
    #: commands, options, extensions and getInfo members only. None: the full key.
    model: ModelClass | None = None
    #: Why (some) ML-DSA algorithms are not offered, for people (``vfido info``, logs); None
    #: when every ML-DSA algorithm is. Derived, not a parameter.
    mldsa_unavailable: str | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        if self.attestation not in ATTESTATION_FORMATS:
            raise ValueError(f"attestation must be one of {', '.join(ATTESTATION_FORMATS)}")
        for name in ("presence_timeout", "reset_window", "next_assertion_timeout"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 < value < math.inf  # nan fails every comparison
            ):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not isinstance(self.max_msg_size, int) or self.max_msg_size < MIN_MSG_SIZE:
            raise ValueError(f"max_msg_size must be an integer >= {MIN_MSG_SIZE}")
        if not isinstance(self.firmware_version, int) or self.firmware_version < 0:
            raise ValueError("firmware_version must be a non-negative integer")
        if (
            not isinstance(self.max_credential_count_in_list, int)
            or self.max_credential_count_in_list < 1
        ):
            raise ValueError("max_credential_count_in_list must be a positive integer")
        if not isinstance(self.algorithms, tuple) or not self.algorithms:
            raise ValueError("algorithms must be a non-empty tuple")
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError("algorithms must not repeat")
        unknown = [a for a in self.algorithms if a not in ALL_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported algorithms: {unknown}")
        if not isinstance(self.mldsa, bool):
            raise ValueError("mldsa must be a bool")
        for flag in (
            "fully_specified_algorithms",
            "ctap21_pre",
            "pin_complexity_policy",
            "fingerprint",
            "resident_keys",
            "record_server_side_credentials",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool")
        if self.default_backup_state is not None and not isinstance(
            self.default_backup_state, bool
        ):
            raise ValueError("default_backup_state must be None or a bool")
        if self.fingerprint:
            object.__setattr__(self, "builtin_uv", True)
        if not (
            self.pin_complexity_policy_url is None
            or (isinstance(self.pin_complexity_policy_url, str) and self.pin_complexity_policy_url)
        ):
            raise ValueError("pin_complexity_policy_url must be a non-empty string or None")
        if not self.fully_specified_algorithms:
            kept = tuple(a for a in self.algorithms if a not in FULLY_SPECIFIED_ALGORITHMS)
            if not kept:
                raise ValueError("no usable algorithm left: fully_specified_algorithms=False")
            object.__setattr__(self, "algorithms", kept)
        self._drop_unavailable_mldsa()
        if not isinstance(self.constant_zero_counter, bool):
            raise ValueError("constant_zero_counter must be a bool")
        if not isinstance(self.builtin_uv, bool):
            raise ValueError("builtin_uv must be a bool")
        if self.enterprise_attestation not in (0, 1, 2) or isinstance(
            self.enterprise_attestation, bool
        ):
            raise ValueError("enterprise_attestation must be 0 (off), 1 or 2")
        if not isinstance(self.enterprise_rp_ids, tuple) or not all(
            isinstance(r, str) and r for r in self.enterprise_rp_ids
        ):
            raise ValueError("enterprise_rp_ids must be a tuple of RP IDs")
        if (
            not isinstance(self.max_resident_credentials, int)
            or isinstance(self.max_resident_credentials, bool)
            or not 1 <= self.max_resident_credentials <= 0xFFFFFFFF  # getInfo says it in CBOR
        ):
            raise ValueError("max_resident_credentials must be an integer from 1 to 4294967295")
        if self.model is not None and not isinstance(self.model, ModelClass):
            raise ValueError("model must be an authenticator.model.ModelClass or None")

    def _drop_unavailable_mldsa(self) -> None:
        """Leave out the ML-DSA algorithms this key cannot offer and record why."""
        # the runtime's ML-DSA self-test runs only for a key that offers ML-DSA
        runtime_reason = mldsa_unavailable_reason() if self.mldsa else None
        reasons: list[str] = []
        if not self.mldsa:
            reasons.append(MLDSA_OFF)
        elif runtime_reason is not None:
            reasons.append(runtime_reason)
        else:
            for alg in MLDSA_ALGORITHMS:
                needed = max_make_credential_response_size(alg)
                if alg in self.algorithms and needed > self.max_msg_size:
                    reasons.append(
                        f"{ALGORITHM_NAMES[alg]} needs maxMsgSize >= {needed} "
                        f"(configured {self.max_msg_size})"
                    )
        if not reasons:
            missing = [ALGORITHM_NAMES[a] for a in MLDSA_ALGORITHMS if a not in self.algorithms]
            if missing:
                object.__setattr__(
                    self, "mldsa_unavailable", f"{', '.join(missing)} not in the algorithms"
                )
            return
        kept = tuple(
            a
            for a in self.algorithms
            if a not in MLDSA_ALGORITHMS
            or (
                self.mldsa
                and runtime_reason is None
                and max_make_credential_response_size(a) <= self.max_msg_size
            )
        )
        note = "; ".join(reasons)
        if not kept:
            raise ValueError(f"no usable algorithm left: ML-DSA unavailable: {note}")
        object.__setattr__(self, "algorithms", kept)
        object.__setattr__(self, "mldsa_unavailable", note)


def mldsa_status(config: Config) -> str:
    """One line for people: which ML-DSA algorithms the key offers, or why none/some are not."""
    offered = [ALGORITHM_NAMES[a] for a in config.algorithms if a in MLDSA_ALGORITHMS]
    if not offered:
        return f"unavailable: {config.mldsa_unavailable}"
    text = f"{', '.join(offered)} offered"
    if config.mldsa_unavailable:
        text += f" (not the rest: {config.mldsa_unavailable})"
    return text
