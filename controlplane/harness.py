"""Run a real Kubernetes control plane as local processes on loopback.

Used by the end-to-end tests and by the demo::

    from controlplane.harness import ControlPlane

    with ControlPlane(workdir, controllers=True, scheduler=True, nodes=True) as cp:
        cp.kubectl("apply", "-f", "-", input=manifest, check=True)

Everything listens on 127.0.0.1 on free ports. ``workdir`` receives the
certificates, the kubeconfig, etcd's data and one log per component in
``<workdir>/logs/<component>.log``. Leaving the ``with`` block stops every
process (SIGTERM, then SIGKILL), newest first.

Components:

- etcd and kube-apiserver always. The admin authenticates with a bearer token
  from ``--token-auth-file`` and is in ``system:masters``; authorization is RBAC;
  the admission plugin list is left at its defaults, so mutating and validating
  webhooks are called.
- kube-controller-manager (``controllers=True``): Jobs, ReplicaSets, the
  ``default`` ServiceAccount of each namespace, node lifecycle, garbage
  collection. Without it the harness creates ``default/default`` itself.
- kube-scheduler (``scheduler=True``): the real scheduler places pods.
- simulated nodes (``nodes=True``): the Node objects of :data:`NODE_GROUPS`,
  kept Ready by kwok, which also moves pods bound to them to Running.
- real nodes (``real_nodes=True``): containerd and a kubelet per node of
  :data:`controlplane.realnodes.REAL_NODES`, running real containers
  (controlplane/realnodes.py); ``cp.real`` reaches them.

Certificates and keys are generated with the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

from controlplane.build import ensure_binaries, kwok_stages_dir

if TYPE_CHECKING:
    from controlplane.realnodes import RealNodes

T = TypeVar("T")

HOST = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "spotguard-admin"

# Well-known node labels and taints.
LIFECYCLE_LABEL = "node.kubernetes.io/lifecycle"
EKS_CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
AKS_PRIORITY_LABEL = "kubernetes.azure.com/scalesetpriority"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: Label put on every simulated node naming its :class:`NodeGroup`, for tests.
NODE_GROUP_LABEL = "spotguard.dev/node-group"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule, PreferNoSchedule or NoExecute

    def to_api(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


CRITICAL_ADDONS_ONLY = Taint("CriticalAddonsOnly", "true", "NoSchedule")
AKS_SPOT_TAINT = Taint(AKS_PRIORITY_LABEL, "spot", "NoSchedule")


@dataclass(frozen=True)
class SimulatedNode:
    name: str
    taints: tuple[Taint, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeGroup:
    """A group of identical simulated nodes, labelled like a cloud node group."""

    name: str
    spot: bool
    instance_type: str
    labels: Mapping[str, str]
    nodes: tuple[SimulatedNode, ...]
    allocatable: Mapping[str, str] = field(
        default_factory=lambda: {
            "cpu": "32",
            "memory": "128Gi",
            "pods": "110",
            "ephemeral-storage": "500Gi",
            "nvidia.com/gpu": "8",
        }
    )

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)


#: The simulated cluster: one place that says which nodes exist.
NODE_GROUPS: tuple[NodeGroup, ...] = (
    NodeGroup(
        name="on-demand",
        spot=False,
        instance_type="g5.xlarge",
        labels={LIFECYCLE_LABEL: "on-demand", EKS_CAPACITY_TYPE_LABEL: "ON_DEMAND"},
        nodes=(
            # Reserved for critical add-ons: tainted, and labelled as EKS add-on groups are.
            SimulatedNode(
                "on-demand-1",
                taints=(CRITICAL_ADDONS_ONLY,),
                labels={CRITICAL_ADDONS_ONLY.key: CRITICAL_ADDONS_ONLY.value},
            ),
            SimulatedNode("on-demand-2"),
            SimulatedNode("on-demand-3"),
        ),
    ),
    NodeGroup(  # as on AKS: spot nodes are always tainted
        name="spot-tainted",
        spot=True,
        instance_type="Standard_NC4as_T4_v3",
        labels={AKS_PRIORITY_LABEL: "spot"},
        nodes=(
            SimulatedNode("spot-tainted-1", taints=(AKS_SPOT_TAINT,)),
            SimulatedNode("spot-tainted-2", taints=(AKS_SPOT_TAINT,)),
        ),
    ),
    NodeGroup(  # as on EKS managed node groups: spot nodes carry no taint
        name="spot-untainted",
        spot=True,
        instance_type="g4dn.xlarge",
        labels={EKS_CAPACITY_TYPE_LABEL: "SPOT"},
        nodes=(SimulatedNode("spot-untainted-1"), SimulatedNode("spot-untainted-2")),
    ),
)


def node_group(name: str) -> NodeGroup:
    """The :class:`NodeGroup` called ``name``."""
    for group in NODE_GROUPS:
        if group.name == name:
            return group
    raise KeyError(name)


def group_of_node(node_name: str) -> NodeGroup:
    """The :class:`NodeGroup` that simulated node ``node_name`` belongs to."""
    for group in NODE_GROUPS:
        if node_name in group.node_names:
            return group
    raise KeyError(node_name)


def node_manifest(group: NodeGroup, node: SimulatedNode, kube_version: str) -> dict[str, Any]:
    """The Node object for one simulated node (kwok fills in conditions)."""
    labels = {
        **group.labels,
        INSTANCE_TYPE_LABEL: group.instance_type,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "type": "kwok",
        NODE_GROUP_LABEL: group.name,
        **node.labels,
    }
    resources = dict(group.allocatable)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                KWOK_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [t.to_api() for t in node.taints]},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": kube_version,
                "kubeProxyVersion": kube_version,
                "containerRuntimeVersion": "kwok",
            },
        },
    }


class ControlPlaneError(RuntimeError):
    """A component failed to start or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> T:
    """Call ``check`` every ``interval`` s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {result.stderr.strip()}")


_OPENSSL_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[serving]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
authorityKeyIdentifier = keyid
"""


def generate_pki(cert_dir: Path) -> None:
    """A CA, the apiserver's serving certificate and the service-account key pair."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    sans = ",".join(
        [
            f"IP:{HOST}",
            f"IP:{KUBERNETES_SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    (cert_dir / "openssl.cnf").write_text(_OPENSSL_REQ_CONFIG.format(sans=sans), encoding="utf-8")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    common = ["-config", "openssl.cnf", "-days", "3650"]
    _openssl(
        "req",
        "-x509",
        *ec,
        *common,
        "-extensions",
        "ca",
        "-subj",
        "/CN=spotguard-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=cert_dir,
    )
    _openssl(
        "req",
        "-x509",
        *ec,
        *common,
        "-extensions",
        "serving",
        "-subj",
        "/CN=kube-apiserver",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.crt",
        cwd=cert_dir,
    )
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "sa.key",
        cwd=cert_dir,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=cert_dir)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class ControlPlane:
    """etcd + kube-apiserver, and on demand controller-manager, scheduler, nodes."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        controllers: bool = True,
        scheduler: bool = True,
        nodes: bool = True,
        complete_job_pods: bool = False,
        bin_dir: Path | None = None,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        real_nodes: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.controllers = controllers
        self.scheduler = scheduler
        self.nodes = nodes
        self.complete_job_pods = complete_job_pods
        self._bin_dir = bin_dir
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.real_nodes = real_nodes
        self.real: RealNodes | None = None
        self.logs_dir = self.workdir / "logs"
        self.cert_dir = self.workdir / "pki"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.cert_dir / "ca.crt"
        self.token = secrets.token_hex(24)
        self.apiserver_port = 0
        self.server = ""
        self.etcd_url = ""
        self.startup_seconds: dict[str, float] = {}
        self._components: list[Component] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context()

    # -- public API -------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = ensure_binaries()
        return self._bin_dir

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` and the binaries on ``PATH``."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # same name as subprocess.run's
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; output is captured as text."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, cmd, output=result.stdout, stderr=result.stderr
            )
        return result

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One authenticated API call; returns (HTTP status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            content_type = "application/json"
            if method == "PATCH":
                content_type = "application/merge-patch+json"
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=10) as resp:
                status: int = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as err:
            status = err.code
            raw = err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ensure_namespace(self, name: str, timeout: float = 30.0) -> None:
        """Create namespace ``name`` if absent; make sure pods can be created in it."""
        status, _ = self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        if status not in (201, 409):
            raise ControlPlaneError(f"creating namespace {name}: HTTP {status}")
        self._ensure_default_service_account(name, timeout)

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every component's log."""
        parts = []
        for log in sorted(self.logs_dir.glob("*.log")):
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()
            parts.append(f"===== {log} (last {lines} lines) =====")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def print_log_tails(self, lines: int = 40, file: IO[str] | None = None) -> None:
        print(self.log_tails(lines), file=file if file is not None else sys.stderr)

    # -- lifecycle --------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the configured components and wait until they are ready."""
        t0 = time.monotonic()
        bin_dir = self.bin_dir  # build (or find) the binaries before timing starts
        self.startup_seconds["build-check"] = time.monotonic() - t0
        t0 = time.monotonic()
        atexit.register(self.stop)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            generate_pki(self.cert_dir)
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
            self._write_auth()
            self._start_etcd(bin_dir)
            self._start_apiserver(bin_dir)
            self.startup_seconds["etcd+apiserver"] = time.monotonic() - t0
            if self.controllers:
                self._start_controller_manager(bin_dir)
            if self.scheduler:
                self._start_scheduler(bin_dir)
            if self.nodes:
                self._start_kwok(bin_dir)
                self._create_nodes()
            if self.controllers:
                self._ensure_default_service_account("default", self.startup_timeout)
            else:
                self._ensure_default_service_account("default", 0)
            if self.scheduler:
                self._wait_healthy("kube-scheduler", self._scheduler_port)
            if self.nodes:
                self._wait_nodes_ready()
            if self.real_nodes:
                from controlplane.realnodes import RealNodes  # noqa: PLC0415 (imports us)

                self.real = RealNodes(self)
                self.real.start()
                self.startup_seconds["real nodes"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - t0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each component, newest first; SIGKILL it after ``timeout``."""
        real, self.real = self.real, None
        try:
            if real is not None:
                real.stop()  # kubelets and their containers first
        finally:
            self._stop_components(timeout)

    def _stop_components(self, timeout: float) -> None:
        with self._lock:
            components, self._components = self._components, []
        for comp in reversed(components):
            if comp.process.poll() is None:
                comp.process.terminate()
                try:
                    comp.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    comp.process.kill()
                    comp.process.wait()
        atexit.unregister(self.stop)

    # -- internals --------------------------------------------------------

    def _spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Component:
        log = self.logs_dir / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"$ {' '.join(args)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not them
            )
        comp = Component(name, process, log)
        with self._lock:
            self._components.append(comp)
        return comp

    def _alive(self, comp: Component) -> Callable[[], None]:
        def check() -> None:
            code = comp.process.poll()
            if code is not None:
                tail = "\n".join(comp.log.read_text(errors="replace").splitlines()[-30:])
                raise ControlPlaneError(
                    f"{comp.name} exited with code {code}; see {comp.log}:\n{tail}"
                )

        return check

    def pid(self, name: str) -> int:
        """The process id of component ``name`` (etcd, kube-apiserver, ...), for
        benchmarks that read its CPU time."""
        for comp in self._components:
            if comp.name == name:
                return comp.process.pid
        raise KeyError(name)

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` if a component has exited."""
        for comp in list(self._components):
            self._alive(comp)()
        if self.real is not None:
            self.real.check()

    def _write_auth(self) -> None:
        self.token_file = self.cert_dir / "tokens.csv"
        self.token_file.write_text(
            f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n',
            encoding="utf-8",
        )
        self.token_file.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            f"""\
apiVersion: v1
kind: Config
clusters:
- name: spotguard
  cluster:
    server: {self.server}
    certificate-authority: {self.ca_file}
users:
- name: {ADMIN_USER}
  user:
    token: {self.token}
contexts:
- name: spotguard
  context:
    cluster: spotguard
    user: {ADMIN_USER}
current-context: spotguard
""",
            encoding="utf-8",
        )
        self.kubeconfig.chmod(0o600)

    def _probe(self, url: str, context: ssl.SSLContext | None, token: str | None = None) -> bool:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=context, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def _start_etcd(self, bin_dir: Path) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://{HOST}:{client}"
        comp = self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=spotguard",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://{HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
                f"--initial-cluster=spotguard=http://{HOST}:{peer}",
                "--unsafe-no-fsync",  # throw-away data: skip fsync for speed
                "--log-level=warn",
            ],
        )
        wait_for(
            lambda: self._probe(f"{self.etcd_url}/health", None),
            self.startup_timeout,
            "etcd /health",
            alive=self._alive(comp),
        )

    def _start_apiserver(self, bin_dir: Path) -> None:
        self.apiserver_port = free_port()
        self.server = f"https://{HOST}:{self.apiserver_port}"
        certs = self.cert_dir
        comp = self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--token-auth-file={self.token_file}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # 1.37 refuses a loopback advertise address with the default
                # (lease) endpoint reconciler; envtest runs "none" too.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
        )
        wait_for(
            lambda: self._probe(f"{self.server}/readyz", self._ssl, self.token),
            self.startup_timeout,
            "kube-apiserver /readyz",
            alive=self._alive(comp),
        )
        self._write_kubeconfig()
        wait_for(
            lambda: self.request("GET", "/api/v1/namespaces/default")[0] == 200,
            self.startup_timeout,
            "namespace default",
            alive=self._alive(comp),
        )

    def _component_args(self, port: int) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            # Do not read the front-proxy CA from the cluster (there is none):
            # that only fills the logs with "missing content for CA bundle".
            "--authentication-skip-lookup=true",
            f"--bind-address={HOST}",
            f"--secure-port={port}",
            "--leader-elect=false",
        ]

    def _start_controller_manager(self, bin_dir: Path) -> None:
        certs = self.cert_dir
        self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                *self._component_args(free_port()),
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                f"--cluster-signing-cert-file={certs / 'ca.crt'}",
                f"--cluster-signing-key-file={certs / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ],
        )

    def _start_scheduler(self, bin_dir: Path) -> None:
        self._scheduler_port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                *self._component_args(self._scheduler_port),
            ],
        )

    def _wait_healthy(self, name: str, port: int) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed cert, on loopback
        wait_for(
            lambda: self._probe(f"https://{HOST}:{port}/readyz", insecure),
            self.startup_timeout,
            f"{name} /readyz",
            alive=self.check_alive,
        )

    def _start_kwok(self, bin_dir: Path) -> None:
        stages = sorted(kwok_stages_dir(bin_dir).glob("*.yaml"))
        if not self.complete_job_pods:
            stages = [s for s in stages if s.name != "pod-complete.yaml"]
        if not stages:
            raise ControlPlaneError(f"no kwok stages in {kwok_stages_dir(bin_dir)}")
        kwok_dir = self.workdir / "kwok"
        kwok_dir.mkdir(exist_ok=True)
        config = kwok_dir / "stages.yaml"
        config.write_text(
            "\n---\n".join(s.read_text(encoding="utf-8") for s in stages),
            encoding="utf-8",
        )
        env = dict(os.environ)
        env["HOME"] = str(kwok_dir)  # do not pick up a user's ~/.kwok/kwok.yaml
        self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--node-ip={HOST}",
                f"--cidr={POD_CIDR}",
            ],
            env=env,
        )

    def _create_nodes(self) -> None:
        version = self._server_version()
        for group in NODE_GROUPS:
            for node in group.nodes:
                status, body = self.request(
                    "POST", "/api/v1/nodes", node_manifest(group, node, version)
                )
                if status not in (201, 409):
                    raise ControlPlaneError(f"creating node {node.name}: HTTP {status} {body}")

    def _server_version(self) -> str:
        status, body = self.request("GET", "/version")
        if status == 200 and isinstance(body, dict):
            return str(body.get("gitVersion", "v0.0.0"))
        return "v0.0.0"

    def _wait_nodes_ready(self) -> None:
        wanted = {
            node.name: {(t.key, t.value, t.effect) for t in node.taints}
            for group in NODE_GROUPS
            for node in group.nodes
        }

        def pending() -> list[str]:
            status, body = self.request("GET", "/api/v1/nodes")
            if status != 200 or not isinstance(body, dict):
                return list(wanted)
            left = set(wanted)
            for item in body.get("items", []):
                name = item["metadata"]["name"]
                if name not in wanted:
                    continue
                conditions = item.get("status", {}).get("conditions") or []
                ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
                )
                taints = {
                    (t["key"], t.get("value", ""), t["effect"])
                    for t in item.get("spec", {}).get("taints") or []
                }
                if ready and taints != wanted[name] and not self.controllers:
                    # Without the node-lifecycle controller nobody removes the
                    # not-ready taint that admission put on the new node.
                    self.request(
                        "PATCH",
                        f"/api/v1/nodes/{name}",
                        {"spec": {"taints": [t.to_api() for t in _node(name).taints]}},
                    )
                if ready and taints == wanted[name]:
                    left.discard(name)
            return sorted(left)

        last: list[str] = []

        def done() -> bool:
            nonlocal last
            last = pending()
            return not last

        try:
            wait_for(
                done,
                self.startup_timeout,
                "simulated nodes",
                0.2,
                alive=self.check_alive,
            )
        except ControlPlaneError as err:
            raise ControlPlaneError(f"{err}: not Ready or tainted as expected: {last}") from None

    def _ensure_default_service_account(self, namespace: str, timeout: float) -> None:
        """Wait for the controller-manager to create it, or create it ourselves."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
        if self.controllers and timeout > 0:
            wait_for(
                lambda: self.request("GET", path)[0] == 200,
                timeout,
                f"ServiceAccount {namespace}/default",
                alive=self.check_alive,
            )
            return
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"metadata": {"name": "default"}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"creating ServiceAccount {namespace}/default: {status} {body}")


def _node(name: str) -> SimulatedNode:
    for node in group_of_node(name).nodes:
        if node.name == name:
            return node
    raise KeyError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a control plane in the foreground until Ctrl-C (demo, debugging)."""
    parser = argparse.ArgumentParser(prog="python -m controlplane.harness")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--no-controllers", action="store_true")
    parser.add_argument("--no-scheduler", action="store_true")
    parser.add_argument("--no-nodes", action="store_true")
    parser.add_argument("--complete-job-pods", action="store_true")
    parser.add_argument("--real-nodes", action="store_true", help="containerd + kubelets")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cp = ControlPlane(
        args.workdir,
        controllers=not args.no_controllers,
        scheduler=not args.no_scheduler,
        nodes=not args.no_nodes,
        complete_job_pods=args.complete_job_pods,
        real_nodes=args.real_nodes,
    )
    with cp:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in cp.startup_seconds.items())
        print(f"control plane ready ({times}); logs in {cp.logs_dir}", file=sys.stderr)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        try:
            while not stop.wait(1.0):
                cp.check_alive()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
