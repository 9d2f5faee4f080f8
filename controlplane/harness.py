"""Run a real Kubernetes control plane as local processes on loopback.

Used by the end-to-end tests, the demos and the benchmarks::

    from controlplane.harness import ControlPlane

    with ControlPlane(workdir, controllers=True, scheduler=True, nodes=True) as cp:
        cp.kubectl("apply", "-f", "-", input=manifest, check=True)

Everything listens on 127.0.0.1 on free ports. ``workdir`` receives the certificates, the
kubeconfigs, etcd's data and one log per component in ``<workdir>/logs/<component>.log``.
Leaving the ``with`` block stops every process (SIGTERM, then SIGKILL), newest first; so
does a failed start, whatever step failed.

This module composes the rooms that each do one job: the node groups as data
(:mod:`controlplane.nodegroups`), the keys and certificates (:mod:`controlplane.cluster_pki`),
who authenticates as whom (:mod:`controlplane.identities`), each component's command line
(:mod:`controlplane.components`), one process's lifecycle (:mod:`controlplane.process`).

Components:

- etcd and kube-apiserver always.
- kube-controller-manager (``controllers=True``): Jobs, ReplicaSets, DaemonSets, the
  ``default`` ServiceAccount of each namespace, node lifecycle, garbage collection; each
  controller under its own service account. Without it the harness creates
  ``default/default`` itself.
- kube-scheduler (``scheduler=True``): the real scheduler places pods.
- simulated nodes (``nodes=True``): the Node objects of
  :data:`controlplane.nodegroups.NODE_GROUPS`, kept Ready by kwok, which also moves pods
  bound to them to Running.
- real nodes (``real_nodes=True``): containerd and a kubelet per node of
  :data:`controlplane.realnodes.REAL_NODES`, running real containers; ``cp.real`` reaches
  them.
"""

from __future__ import annotations

import atexit
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from controlplane import components
from controlplane.build import ensure_binaries, kwok_stages_dir
from controlplane.cluster_pki import ClusterPKI, generate_cluster_pki
from controlplane.identities import Identities, Identity
from controlplane.loopback import HOST, free_port
from controlplane.nodegroups import KWOK_ANNOTATION
from controlplane.polling import WaitTimeout, wait_for
from controlplane.process import Process
from controlplane.simulated_nodes import (
    SimulatedNodeError,
    create_simulated_nodes,
    wait_simulated_nodes_ready,
)

if TYPE_CHECKING:
    from controlplane.realnodes import RealNodes


class ControlPlaneError(RuntimeError):
    """A component failed to start or did not become ready in time."""


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
        self.pki = ClusterPKI(self.cert_dir)
        self.ca_file = self.pki.ca_cert
        self.identities = Identities()
        self.kubeconfig = self.workdir / "kubeconfig"
        self.token = self.identities.admin.token
        self.apiserver_port = 0
        self.server = ""
        self.etcd_url = ""
        self.startup_seconds: dict[str, float] = {}
        self._processes: list[Process] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context()
        self._scheduler_port = 0

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
        """Run kubectl against this control plane as the admin; output captured as text."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, cmd, output=result.stdout, stderr=result.stderr
            )
        return result

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call as the admin; returns (HTTP status, decoded JSON or None)."""
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

    def pid(self, name: str) -> int:
        """The process id of component ``name`` (etcd, kube-apiserver, ...), for
        benchmarks that read its CPU time."""
        for process in self._processes:
            if process.name == name:
                return process.pid
        raise KeyError(name)

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
        """Start the configured components and wait until they are ready; on any failure
        stop whatever was started and re-raise."""
        t0 = time.monotonic()
        bin_dir = self.bin_dir  # build (or find) the binaries before timing starts
        self.startup_seconds["build-check"] = time.monotonic() - t0
        t0 = time.monotonic()
        atexit.register(self.stop)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            generate_cluster_pki(self.cert_dir)
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
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
            self._ensure_default_service_account(
                "default", self.startup_timeout if self.controllers else 0
            )
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
            with self._lock:
                processes, self._processes = self._processes, []
            for process in reversed(processes):
                process.stop(timeout)
            atexit.unregister(self.stop)

    def check_alive(self) -> None:
        """Raise :class:`controlplane.process.ProcessError` if a component has exited."""
        for process in list(self._processes):
            process.check()
        if self.real is not None:
            self.real.check()

    # -- the components, in start order ------------------------------------

    def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Process:
        process = Process.start(name, argv, self.logs_dir, cwd=self.workdir, env=env)
        with self._lock:
            self._processes.append(process)
        return process

    def _wait(self, check: Callable[[], object], what: str, alive: Callable[[], None]) -> None:
        try:
            wait_for(check, self.startup_timeout, what, alive=alive)
        except WaitTimeout as err:
            raise ControlPlaneError(str(err)) from None

    def _start_etcd(self, bin_dir: Path) -> None:
        self.etcd_url = f"http://{HOST}:{free_port()}"
        argv = components.etcd_argv(bin_dir, self.workdir / "etcd", self.etcd_url, free_port())
        etcd = self._spawn("etcd", argv)
        self._wait(lambda: _probe(f"{self.etcd_url}/health", None), "etcd /health", etcd.check)

    def _start_apiserver(self, bin_dir: Path) -> None:
        self.apiserver_port = free_port()
        self.server = f"https://{HOST}:{self.apiserver_port}"
        token_file = self.identities.write_token_file(self.cert_dir / "tokens.csv")
        argv = components.apiserver_argv(
            bin_dir,
            etcd_url=self.etcd_url,
            port=self.apiserver_port,
            pki=self.pki,
            token_file=token_file,
            extra=self.extra_apiserver_args,
        )
        apiserver = self._spawn("kube-apiserver", argv)
        self._wait(
            lambda: _probe(f"{self.server}/readyz", self._ssl, self.token),
            "kube-apiserver /readyz",
            apiserver.check,
        )
        self._kubeconfig_of(self.identities.admin, self.kubeconfig)
        self._wait(
            lambda: self.request("GET", "/api/v1/namespaces/default")[0] == 200,
            "namespace default",
            apiserver.check,
        )

    def _kubeconfig_of(self, who: Identity, path: Path) -> Path:
        return self.identities.write_kubeconfig(who, path, self.server, self.ca_file)

    def _start_controller_manager(self, bin_dir: Path) -> None:
        kubeconfig = self._kubeconfig_of(
            self.identities.controller_manager, self.cert_dir / "controller-manager.kubeconfig"
        )
        argv = components.controller_manager_argv(bin_dir, kubeconfig, free_port(), self.pki)
        self._spawn("kube-controller-manager", argv)

    def _start_scheduler(self, bin_dir: Path) -> None:
        kubeconfig = self._kubeconfig_of(
            self.identities.scheduler, self.cert_dir / "scheduler.kubeconfig"
        )
        self._scheduler_port = free_port()
        self._spawn(
            "kube-scheduler", components.scheduler_argv(bin_dir, kubeconfig, self._scheduler_port)
        )

    def _wait_healthy(self, name: str, port: int) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed cert, on loopback
        self._wait(
            lambda: _probe(f"https://{HOST}:{port}/readyz", insecure),
            f"{name} /readyz",
            self.check_alive,
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
            "\n---\n".join(s.read_text(encoding="utf-8") for s in stages), encoding="utf-8"
        )
        env = dict(os.environ)
        env["HOME"] = str(kwok_dir)  # do not pick up a user's ~/.kwok/kwok.yaml
        argv = components.kwok_argv(bin_dir, self.kubeconfig, config, KWOK_ANNOTATION)
        self._spawn("kwok", argv, env=env)

    def _create_nodes(self) -> None:
        try:
            create_simulated_nodes(self.request)
        except SimulatedNodeError as err:
            raise ControlPlaneError(str(err)) from None

    def _wait_nodes_ready(self) -> None:
        try:
            wait_simulated_nodes_ready(
                self.request, self.startup_timeout, fix_taints=not self.controllers,
                alive=self.check_alive,
            )  # fmt: skip
        except SimulatedNodeError as err:
            raise ControlPlaneError(str(err)) from None

    def _ensure_default_service_account(self, namespace: str, timeout: float) -> None:
        """Wait for the controller-manager to create it, or create it ourselves."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
        if self.controllers and timeout > 0:
            try:
                wait_for(
                    lambda: self.request("GET", path)[0] == 200,
                    timeout,
                    f"ServiceAccount {namespace}/default",
                    alive=self.check_alive,
                )
            except WaitTimeout as err:
                raise ControlPlaneError(str(err)) from None
            return
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"metadata": {"name": "default"}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"creating ServiceAccount {namespace}/default: {status} {body}")


def _probe(url: str, context: ssl.SSLContext | None, token: str | None = None) -> bool:
    """Whether ``url`` answers 200 now."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=context, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
