"""Play the kubelet for spotguard as installed in a local control plane (Helm or kustomize).

The test control plane has no kubelet to run the image, so this runs what the installed
objects say, on this machine, the way a node would:

- the certificate Job's container arguments, as the Job's ServiceAccount (a token of it);
- the Deployment's container arguments, as the Deployment's ServiceAccount, with the TLS
  Secret's files kept in sync like a mounted Secret (devtools.secret_sync), listening on
  the Service's ClusterIP and port, so the API server reaches it through the Service
  exactly as the webhook registrations say (kube-apiserver resolves a webhook's Service to
  its ClusterIP). This needs a control plane whose service CIDR is on loopback:
  :func:`loopback_service_cidr` gives one for ``ControlPlane(extra_apiserver_args=...)``.

Only the addresses (the bind address, the metrics port, the runtime and certificate
directories) differ from what the pod runs.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.harness import ControlPlane
from devtools.secret_sync import SecretSync
from devtools.server import REPO, free_port, stop_process_group

Manifest = dict[str, Any]


def loopback_service_cidr() -> str:
    """A /24 of 127.0.0.0/8 for Service ClusterIPs, random so that parallel runs differ."""
    return f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"


def privileged_ports_problem() -> str | None:
    """Why this process cannot listen on port 443 (the Services' https port), or None."""
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    unprivileged = int(start.read_text()) if start.exists() else 1024
    if os.geteuid() == 0 or unprivileged <= 443:
        return None
    return (
        f"this user may not listen on ports below {unprivileged} (run as root, or lower "
        "net.ipv4.ip_unprivileged_port_start)"
    )


def service_port_flags() -> list[str]:
    """Helm flags for the chart's Service port: the default 443 where this process may
    listen on it, else a free high port (the API server calls whatever the chart says)."""
    return [] if privileged_ports_problem() is None else ["--set", f"service.port={free_port()}"]


def kubeconfig_for(plane: ControlPlane, namespace: str, account: str, directory: Path) -> Path:
    """A kubeconfig holding a one-hour token of ServiceAccount ``namespace/account``."""
    token = plane.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h", check=True
    ).stdout.strip()
    path = directory / f"{namespace}.{account}.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "plane",
                "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "plane", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def get(plane: ControlPlane, kind: str, name: str, namespace: str | None = None) -> Manifest:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    document: Manifest = json.loads(plane.kubectl(*args, check=True).stdout)
    return document


def run_job(
    plane: ControlPlane, namespace: str, job: Manifest, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """The Job's one container's command (the image's entrypoint is `spotguard`), as the
    Job's ServiceAccount."""
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    kubeconfig = kubeconfig_for(plane, namespace, spec["serviceAccountName"], workdir)
    return subprocess.run(
        [sys.executable, "-m", "webhook", *container["args"], "--kubeconfig", str(kubeconfig)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` while verifying the certificate for ``server_name``, as the API
    server does when it calls a Service."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext):
        super().__init__(server_name, port, timeout=5, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass
class ServedDeployment:
    """The Deployment's server, running here."""

    process: subprocess.Popen[bytes]
    address: str
    port: int
    server_name: str
    metrics_port: int
    log_file: Path
    secret_sync: SecretSync
    context: ssl.SSLContext

    def readyz(self) -> Manifest | None:
        """The /readyz body (None while it does not answer)."""
        if self.process.poll() is not None:
            raise RuntimeError(f"spotguard serve exited:\n{self.log_file.read_text()}")
        connection = PinnedHTTPSConnection(self.address, self.port, self.server_name, self.context)
        try:
            connection.request("GET", "/readyz")
            body: Manifest = json.loads(connection.getresponse().read())
            return body
        except OSError:
            return None
        finally:
            connection.close()

    def wait_until(
        self, condition: Callable[[Manifest], bool], what: str, timeout: float = 30.0
    ) -> Manifest:
        """The first /readyz body that meets ``condition``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.readyz()
            if body and condition(body):
                return body
            time.sleep(0.2)
        raise TimeoutError(f"/readyz: {what} not within {timeout:.0f} s; log {self.log_file}")

    def wait_for_state(self, key: str, timeout: float = 30.0) -> Manifest:
        """The /readyz body once ``key`` is set in it."""
        return self.wait_until(lambda body: bool(body.get(key)), key, timeout)

    def wait_ready(self, timeout: float = 30.0) -> Manifest:
        return self.wait_until(lambda body: body.get("status") == "ready", "ready", timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self.secret_sync.stop()
        stop_process_group(self.process, timeout)


def serve_deployment(
    plane: ControlPlane,
    namespace: str,
    name: str,
    workdir: Path,
    *,
    service: str | None = None,
    bind: tuple[str, int] | None = None,
) -> ServedDeployment:
    """Run Deployment ``name``'s server as its pod would, reachable through Service
    ``service`` (default: the same name): bound to its ClusterIP and its https port, or to
    ``bind``. Its Secret volume's items are the files it gets, kept in sync."""
    workdir.mkdir(parents=True, exist_ok=True)
    pod = get(plane, "deployment", name, namespace)["spec"]["template"]["spec"]
    svc = get(plane, "service", service or name, namespace)
    address = svc["spec"]["clusterIP"]
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "https")
    if bind is not None:
        address, port = bind
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    items = volume["secret"].get("items")
    files = {item["key"]: item["path"] for item in items} if items else None
    certs = workdir / "certs"
    sync = SecretSync(plane, namespace, volume["secret"]["secretName"], certs, files)
    deadline = time.monotonic() + 30
    while not sync.sync_once():  # the pod waits for its Secret, as a kubelet would
        if time.monotonic() > deadline:
            raise TimeoutError("the TLS Secret was never filled: did the certificate Job run?")
        time.sleep(0.2)
    sync.start()

    metrics_port = free_port()
    local = {
        "--bind": f"{address}:{port}",
        "--metrics-bind": f"127.0.0.1:{metrics_port}",
        "--cert-dir": str(certs),
        "--runtime-dir": str(workdir / "run"),
    }
    args = list(pod["containers"][0]["args"])
    for index, arg in enumerate(args[:-1]):
        args[index + 1] = local.get(arg, args[index + 1])
    kubeconfig = kubeconfig_for(plane, namespace, pod["serviceAccountName"], workdir)
    command = [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(kubeconfig),
               "--workers", "1", "--shutdown-delay", "0"]  # fmt: skip
    log_file = workdir / "serve.log"
    with log_file.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    # Trust exactly what the API server trusts: the validating webhook's caBundle.
    configs = plane.kubectl("get", "validatingwebhookconfiguration", "-o", "json", check=True)
    bundles = [
        hook["clientConfig"]["caBundle"]
        for config in json.loads(configs.stdout)["items"]
        for hook in config["webhooks"]
        if hook["clientConfig"].get("service", {}).get("namespace") == namespace
        and hook["clientConfig"].get("caBundle")
    ]
    if not bundles:
        process.terminate()
        sync.stop()
        raise RuntimeError("no webhook registration with a caBundle points at this namespace")
    context = ssl.create_default_context(cadata=base64.b64decode(bundles[0]).decode())
    server_name = f"{svc['metadata']['name']}.{namespace}.svc"
    return ServedDeployment(
        process, address, port, server_name, metrics_port, log_file, sync, context
    )


def spotguard_objects(plane: ControlPlane, namespace: str) -> list[str]:
    """Every object of spotguard's in the cluster: its namespace's contents (Events aside,
    which expire on their own) and cluster-scoped objects named for it."""
    cluster_scoped = plane.kubectl(
        "get", "mutatingwebhookconfigurations,validatingwebhookconfigurations,clusterroles,"
        "clusterrolebindings,customresourcedefinitions", "-o", "name", check=True,
    ).stdout.split()  # fmt: skip
    namespaced = plane.kubectl(
        "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,resourcequotas,"
        "poddisruptionbudgets,networkpolicies", "-n", namespace, "-o", "name", check=True,
    ).stdout.split()  # fmt: skip
    return [name for name in cluster_scoped if "spotguard" in name] + namespaced
