"""`vfido run` loads X.509 only when it makes or sends a certificate (#16: idle RSS).

``cryptography.x509`` costs an idle ``vfido run`` about 2 MB of memory. An ephemeral key
makes its attestation material on first use (``AttestationMaterial`` in
:mod:`vfido.keystore.store`), so a key that answers INIT and getInfo never imports the
module; the first packed makeCredential does, and from then on every attestation carries
the same batch certificate, which chains to the root the key publishes (``vfido
metadata``). A persistent key reads its material as bytes and never needs the module, not
even to attest.

What the process imported is read from its own ``-X importtime`` report on stderr
(``PYTHONPROFILEIMPORTTIME``): one line per module, written when the module is first
imported. The process is stopped before its report is read, so every import it ever made
is there (none can still be in the pipe).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fido2.ctap2.base import Ctap2

from tests.rp import RelyingParty, register
from tests.service_helpers import PASSPHRASE, Service, udp_service, vfido
from vfido.keystore import kdf
from vfido.keystore.sqlite_store import SqliteKeyStore
from vfido.transports.udp import open_udp_device

pytestmark = pytest.mark.slow

X509 = "cryptography.x509"
IMPORT_REPORT = {"PYTHONPROFILEIMPORTTIME": "1"}


def _imported(service: Service) -> set[str]:
    """Every module the service imported in its life (it is stopped first)."""
    assert service.stop() == 0, service.stderr_lines[-20:]
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in service.stderr_lines
        if line.startswith("import time:")
    }
    assert "vfido.cli.run" in names, "no import report: the check would prove nothing"
    return names


def _init_and_get_info(service: Service) -> None:
    device = open_udp_device(port=service.port, peer_port=service.peer_port)  # CTAPHID_INIT
    try:
        assert "FIDO_2_0" in Ctap2(device).get_info().versions
    finally:
        device.close()


def _batch_certificate(service: Service, root: bytes | None) -> bytes:
    """A packed makeCredential through python-fido2, verified by a new relying party (both
    RP libraries; the trust path to ``root`` if given); the batch certificate it carried."""
    with service.client() as client:
        response = register(client, RelyingParty(root_der=root))
    statement = response.response.attestation_object
    assert statement.fmt == "packed"
    x5c = statement.att_stmt["x5c"]
    assert len(x5c) == 1  # the batch certificate; the root is the RP's anchor
    return bytes(x5c[0])


def test_idle_ephemeral_key_never_imports_x509(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with udp_service(["--ephemeral"], passphrase=None, extra_env=IMPORT_REPORT) as service:
        _init_and_get_info(service)
        imported = _imported(service)
    assert X509 not in imported
    assert not any(name.startswith(X509 + ".") for name in imported)


def test_ephemeral_key_makes_one_batch_certificate_on_first_attestation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    name = "lazy"
    args = ["--ephemeral", "--name", name]
    with udp_service(args, passphrase=None, extra_env=IMPORT_REPORT) as service:
        _init_and_get_info(service)
        first = _batch_certificate(service, None)  # no anchor yet: none is made
        published = vfido(["metadata", "--name", name], passphrase=None)
        assert published.returncode == 0, published.stderr
        roots = json.loads(published.stdout)["attestationRootCertificates"]
        assert len(roots) == 1
        root = base64.b64decode(roots[0])
        second = _batch_certificate(service, root)  # the trust path to the published root
        third = _batch_certificate(service, root)
        assert first == second == third
        imported = _imported(service)
    assert X509 in imported  # made on first use, by the process itself


def test_persistent_key_attests_from_its_bytes_without_x509(tmp_path: Path) -> None:
    """A persistent keystore holds its certificates as bytes: attesting signs with the
    batch key and sends the stored DER, so X.509 is never loaded at all."""
    directory = tmp_path / "ks"
    with SqliteKeyStore.create(
        directory, PASSPHRASE, kdf_params=kdf.insecure_test_params()
    ) as store:
        batch, root = store.identity().attestation_chain
    with udp_service(["--keystore", str(directory)], extra_env=IMPORT_REPORT) as service:
        _init_and_get_info(service)
        assert _batch_certificate(service, root) == batch
        assert _batch_certificate(service, root) == batch
        assert X509 not in _imported(service)
