"""The command line of each control-plane component, as data: what runs, on which ports,
with which files. The harness (:mod:`controlplane.harness`) starts them in order.

Everything listens on loopback. etcd keeps throw-away data (no fsync). kube-apiserver
authenticates static tokens and authorizes with Node and RBAC; its admission plugins are
left at their defaults, so mutating and validating webhooks are called.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.cluster_pki import ClusterPKI
from controlplane.loopback import HOST

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
#: What a kubelet sets (its default); kwok renews the lease every quarter of it.
NODE_LEASE_SECONDS = 40
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def etcd_argv(bin_dir: Path, data_dir: Path, client_url: str, peer_port: int) -> list[str]:
    peer_url = f"http://{HOST}:{peer_port}"
    return [
        str(bin_dir / "etcd"),
        "--name=spotguard",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=spotguard={peer_url}",
        "--unsafe-no-fsync",  # throw-away data: skip fsync for speed
        "--log-level=warn",
    ]


def apiserver_argv(
    bin_dir: Path,
    *,
    etcd_url: str,
    port: int,
    pki: ClusterPKI,
    token_file: Path,
    extra: tuple[str, ...] = (),
) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={port}",
        f"--cert-dir={pki.directory}",
        f"--tls-cert-file={pki.apiserver_cert}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--token-auth-file={token_file}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # 1.37 refuses a loopback advertise address with the default (lease) endpoint
        # reconciler; envtest runs "none" too.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        *extra,
    ]


def _serving_and_client_args(kubeconfig: Path, port: int) -> list[str]:
    """What the controller-manager and the scheduler share: their own kubeconfig for the
    API and for delegated authentication, a loopback port, no leader election."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # Do not read the front-proxy CA from the cluster (there is none): that only
        # fills the logs with "missing content for CA bundle".
        "--authentication-skip-lookup=true",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        "--leader-elect=false",
    ]


def controller_manager_argv(
    bin_dir: Path, kubeconfig: Path, port: int, pki: ClusterPKI
) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        *_serving_and_client_args(kubeconfig, port),
        # Each controller acts as its own service account, as in kubeadm and managed clusters.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
    ]


def scheduler_argv(bin_dir: Path, kubeconfig: Path, port: int) -> list[str]:
    return [str(bin_dir / "kube-scheduler"), *_serving_and_client_args(kubeconfig, port)]


def kwok_argv(bin_dir: Path, kubeconfig: Path, stages: Path, node_annotation: str) -> list[str]:
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        f"--manage-nodes-with-annotation-selector={node_annotation}=fake",
        f"--node-ip={HOST}",
        f"--cidr={POD_CIDR}",
        # Heartbeats by Lease, as a kubelet's (the stages' node-heartbeat-with-lease
        # expects them). Without a lease, kwok rewrites a node's status only every 10-20
        # minutes: the node-lifecycle controller found every node stale after its 50 s grace,
        # tainted it unreachable for a second or two, and did so again a minute later.
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
    ]
