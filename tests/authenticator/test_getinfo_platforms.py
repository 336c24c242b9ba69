"""The default getInfo parses in the platforms people use; ML-DSA is opt-in (issue #14).

Firefox (authenticator-rs) parses getInfo's ``algorithms`` into a closed enum of COSE
algorithms. One value it does not know makes the whole getInfo fail to parse; Firefox then
treats the key as U2F-only: only ES256 non-discoverable credentials, no EdDSA, no RS256, no
discoverable credentials, and no CTAP2 request ever reaches the key (reported in issue #14 with
Firefox ESR 153 and ML-DSA -48/-49 in getInfo). So an algorithm authenticator-rs's enum lacks
must not be in the default getInfo: it is opt-in, like ML-DSA (``Config(mldsa=True)``,
``vfido run --mldsa``, ``VirtualKey(mldsa=True)``, ``@pytest.mark.vfido(mldsa=True)``).
"""

from __future__ import annotations

import hashlib
import os

import pytest
from fido2.ctap2.base import Ctap2

from tests.vkey import running_key
from vfido.api import ServiceKey, VirtualKey
from vfido.authenticator.config import Config
from vfido.authenticator.cose import MLDSA44, MLDSA65, MLDSA_ALGORITHMS, mldsa_unavailable_reason
from vfido.cli import build_parser
from vfido.cli.run import config as run_config

# Every value authenticator-rs's `impl TryFrom<i64> for COSEAlgorithm` accepts (anything else
# is CryptoError::UnknownAlgorithm and getInfo does not parse). Source: mozilla/authenticator-rs,
# src/crypto/mod.rs at commit 57fedd00ab06157646edbcb59d3239cc1a854dd5 (the version Firefox ESR
# 153 builds on). Written out by hand on purpose: a new algorithm in vfido's default getInfo
# must be one of these, or be opt-in until Firefox can parse it. Not in it, for example:
# ML-DSA -48/-49/-50 and the fully-specified ESP256 -9, Ed25519 -19.
AUTHENTICATOR_RS_ALGORITHMS = frozenset(
    {
        -65535,  # INSECURE_RS1
        -259,  # RS512
        -258,  # RS384
        -257,  # RS256
        *range(-47, -24),  # ES256K -47, HSS_LMS, SHAKE256, SHA512, SHA384, RSAES_OAEP x3,
        # PS512 -39, PS384, PS256 -37, ES512 -36, ES384 -35, ECDH_* -34..-25
        *range(-18, -9),  # SHAKE128 -18, SHA512_256, SHA256, SHA256_64, SHA1, Direct_HKDF_*
        -8,  # EDDSA
        -7,  # ES256
        *range(-6, -2),  # Direct -6, A256KW, A192KW, A128KW -3
        *range(1, 8),  # A128GCM .. HMAC512_512
        *range(10, 16),  # AES_CCM_* 10..13, AES_MAC_128_64, AES_MAC_256_64
        24,  # ChaCha20_Poly1305
        25,  # AES_MAC_128_128
        26,  # AES_MAC_256_128
        *range(30, 35),  # AES_CCM_*_128_* 30..33, IV_GENERATION 34
    }
)


def test_the_allow_list_is_the_one_written_down() -> None:
    assert len(AUTHENTICATOR_RS_ALGORITHMS) == 63
    assert {-7, -8, -35, -36, -37, -47, -257} <= AUTHENTICATOR_RS_ALGORITHMS
    assert not {-9, -19, -48, -49, -50} & AUTHENTICATOR_RS_ALGORITHMS


def _get_info_algorithms(config: Config | None = None) -> list[int]:
    with running_key(config=config) as key:
        info = Ctap2(key.device).get_info()
    return [entry["alg"] for entry in info.algorithms]


def test_default_get_info_lists_only_algorithms_firefox_can_parse() -> None:
    algorithms = _get_info_algorithms()
    assert algorithms, "getInfo lists no algorithm"
    unknown = [a for a in algorithms if a not in AUTHENTICATOR_RS_ALGORITHMS]
    assert unknown == [], (
        f"the default getInfo lists {unknown}, which Firefox's authenticator-rs cannot parse "
        "(it would treat the key as U2F-only): make them opt-in like ML-DSA"
    )
    assert MLDSA44 not in algorithms and MLDSA65 not in algorithms
    assert Config().mldsa is False


def test_default_virtual_key_and_vfido_run_do_not_offer_mldsa() -> None:
    with VirtualKey() as key:
        assert not set(MLDSA_ALGORITHMS) & set(key.config.algorithms)
    assert run_config(build_parser().parse_args(["run"])) == Config()


mldsa_here = pytest.mark.skipif(
    mldsa_unavailable_reason() is not None,
    reason=f"ML-DSA unavailable here: {mldsa_unavailable_reason()}",
)


@mldsa_here
def test_vfido_run_mldsa_turns_it_on() -> None:
    config = run_config(build_parser().parse_args(["run", "--mldsa"]))
    assert isinstance(config, Config) and config.mldsa
    assert config.algorithms[-3:] == MLDSA_ALGORITHMS
    assert _get_info_algorithms(config)[-3:] == list(MLDSA_ALGORITHMS)


def _make_mldsa_credential(key: VirtualKey | ServiceKey) -> int:
    made = Ctap2(key.device).make_credential(
        hashlib.sha256(b"pq").digest(),
        {"id": "pq.example"},
        {"id": os.urandom(8), "name": "pq"},
        [{"type": "public-key", "alg": MLDSA65}],
    )
    assert made.auth_data.credential_data is not None
    alg: int = made.auth_data.credential_data.public_key[3]
    return alg


@mldsa_here
@pytest.mark.parametrize(
    "options",
    [{"mldsa": True}, {"mldsa": True, "config": Config(attestation="self")}],
    ids=["mldsa", "config-and-mldsa"],
)
def test_virtual_key_mldsa_makes_credentials(options: dict[str, object]) -> None:
    with VirtualKey(**options) as key:  # type: ignore[arg-type]
        assert key.config.algorithms[-3:] == MLDSA_ALGORITHMS
        assert _make_mldsa_credential(key) == MLDSA65


@mldsa_here
@pytest.mark.vfido(mldsa=True)
def test_plugin_marker_turns_mldsa_on(vfido_key: VirtualKey) -> None:
    info = Ctap2(vfido_key.device).get_info()
    assert [a["alg"] for a in info.algorithms][-3:] == list(MLDSA_ALGORITHMS)
    assert _make_mldsa_credential(vfido_key) == MLDSA65


@mldsa_here
def test_service_key_mldsa_over_udp() -> None:
    """`vfido run --mldsa` as a process: getInfo lists ML-DSA and makeCredential makes one."""
    with VirtualKey.service(mldsa=True) as key:
        assert "--mldsa" in key.argv
        info = Ctap2(key.device).get_info()
        assert [a["alg"] for a in info.algorithms][-3:] == list(MLDSA_ALGORITHMS)
        assert _make_mldsa_credential(key) == MLDSA65
