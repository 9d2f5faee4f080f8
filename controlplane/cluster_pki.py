"""The local control plane's keys and certificates: a CA, kube-apiserver's serving
certificate and the service-account signing key pair.

Made with the same code as the webhook's own certificates (:mod:`certs.pki`), so one
implementation of "a CA and a certificate signed by it" serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import generate_ca, generate_serving
from controlplane.loopback import HOST

KUBERNETES_SERVICE_IP = "10.96.0.1"

#: The names clients use for kube-apiserver, in and out of the cluster.
APISERVER_DNS_NAMES = [
    "kubernetes",
    "localhost",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]


@dataclass(frozen=True)
class ClusterPKI:
    """Where the files are (all in one directory)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.directory / "sa.pub"


def generate_cluster_pki(directory: Path) -> ClusterPKI:
    """Write a new CA, apiserver certificate and service-account key pair to ``directory``
    (private keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPKI(directory)
    ca = generate_ca("spotguard-test-ca")
    apiserver = generate_serving(ca, APISERVER_DNS_NAMES, [HOST, KUBERNETES_SERVICE_IP])
    signing_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        pki.ca_cert: ca.cert_pem,
        pki.ca_key: ca.key_pem,
        pki.apiserver_cert: apiserver.cert_pem,
        pki.apiserver_key: apiserver.key_pem,
        pki.service_account_key: signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        pki.service_account_public_key: signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for path, data in files.items():
        path.write_bytes(data)
        os.chmod(path, 0o600 if path.suffix == ".key" else 0o644)
    return pki
