"""``spotguard serve``: its options, and turning them into a running server.

The server itself is :mod:`webhook.server`; this module only reads the options, checks
what a user may get wrong (addresses, files, cluster access) and builds the pieces.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from certs.pki import SERVING_CERT_FILE, SERVING_KEY_FILE, generate_pair, service_dns_names
from webhook.cluster import KubeCluster, WatchedCluster
from webhook.commands.audit import add_audit_serve_options, background_audit
from webhook.commands.common import EXIT_OK, CLIError, bind_address, load_kube_config
from webhook.logs import configure
from webhook.metrics import MULTIPROC_ENV
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY, ConfigMapPolicySource, FilePolicySource
from webhook.policy_store import PolicyState, PolicyStore
from webhook.registration_watch import RegistrationWatch, Sources
from webhook.server import DEFAULT_MAX_CONNECTIONS, PolicySource, ServerOptions, WebhookServer

serve_log = logging.getLogger("spotguard.serve")


def _policy_source(args: argparse.Namespace) -> tuple[PolicyStore, PolicySource | None]:
    """The master's policy store and what feeds it: the policy source (file, ConfigMap or
    none) and, with cluster access, the watch of the live webhook registration."""
    if args.policy_configmap:
        namespace, _, name = args.policy_configmap.partition("/")
        if not namespace or not name:
            raise CLIError("--policy-configmap must be NAMESPACE/NAME")
        from kubernetes import client  # noqa: PLC0415 - only needed with a ConfigMap

        load_kube_config(args.kubeconfig)
        store = PolicyStore(PolicyState(None, f"waiting for configmap {namespace}/{name}"))
        registration = _registration_watch(args, store)
        source = ConfigMapPolicySource(
            namespace, name, store, client.CoreV1Api(), key=args.policy_key
        )
        source.load_initial()
        return store, Sources(source, registration)
    if args.policy is not None and not args.policy.is_file():
        raise CLIError(f"--policy {args.policy}: no such file")
    store = PolicyStore.from_file(args.policy)  # a bad file fails here, before forking
    registration = _registration_watch(args, store)
    if registration is not None:
        store.gate_changed()  # judge the policy just loaded
    file_source = FilePolicySource(args.policy, store) if args.policy else None
    return store, Sources(file_source, registration)


def _registration_watch(args: argparse.Namespace, store: PolicyStore) -> RegistrationWatch | None:
    """With cluster access, follow the live webhook registration (--webhook-config)."""
    if not args.webhook_config or not (args.policy_configmap or args.kubeconfig):
        return None
    from kubernetes import client  # noqa: PLC0415

    load_kube_config(args.kubeconfig)
    watch = RegistrationWatch(args.webhook_config, store, client.AdmissionregistrationV1Api())
    watch.load_initial()
    return watch


def _cluster_factory(args: argparse.Namespace) -> Callable[[], WatchedCluster] | None:
    """With cluster access (a ConfigMap policy, or --kubeconfig), each worker keeps watch
    caches of nodes, volumes, claims, pending pods and DaemonSets."""
    if not (args.policy_configmap or args.kubeconfig):
        return None
    kubeconfig = args.kubeconfig

    def build() -> WatchedCluster:
        from kubernetes import client  # noqa: PLC0415

        load_kube_config(kubeconfig)
        cluster = KubeCluster(client.CoreV1Api(), client.AppsV1Api())
        cluster.start()
        return cluster

    return build


@contextmanager
def throwaway_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed when the server stops, by the process that made it
    only: gunicorn's workers are forked from it and leave through the same frames (their
    ``sys.exit`` unwinds this), and must not take the master's files with them."""
    owner = os.getpid()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def cmd_serve(args: argparse.Namespace) -> int:
    configure(args.log_level)
    with ExitStack() as throwaway:
        return _serve(args, throwaway)


def _serve(args: argparse.Namespace, throwaway: ExitStack) -> int:
    runtime_dir = args.runtime_dir or throwaway.enter_context(throwaway_dir("spotguard-run-"))
    if args.metrics_bind:
        # Must precede the first import of prometheus_client (see webhook.metrics).
        metrics_dir = runtime_dir / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    store, source = _policy_source(args)
    cert_dir: Path = args.cert_dir
    if cert_dir is None:
        cert_dir = throwaway.enter_context(throwaway_dir("spotguard-certs-"))
        names = [*service_dns_names("spotguard", args.namespace), "localhost"]
        generate_pair(cert_dir, names, ["127.0.0.1"])
        serve_log.warning(
            "no --cert-dir given, serving with a throwaway CA and certificate in %s, removed "
            "when the server stops (register its ca.crt as the webhooks' caBundle, or pass "
            "--cert-dir)",
            cert_dir,
        )
    for name in (SERVING_CERT_FILE, SERVING_KEY_FILE):
        if not (cert_dir / name).is_file():
            expected = f"{SERVING_CERT_FILE} and {SERVING_KEY_FILE}"
            raise CLIError(f"{cert_dir / name}: not found (expected {expected})")
    state = store.snapshot()
    revision = state.policy.revision if state.policy else "none yet"
    serve_log.info("policy %s from %s", revision, state.source)
    options = ServerOptions(
        bind=args.bind,
        cert_file=cert_dir / SERVING_CERT_FILE,
        key_file=cert_dir / SERVING_KEY_FILE,
        runtime_dir=runtime_dir,
        workers=args.workers,
        max_connections=args.max_connections,
        shutdown_delay=args.shutdown_delay,
        metrics_bind=args.metrics_bind,
        log_level=args.log_level.lower(),
        cluster_factory=_cluster_factory(args),
        background=tuple(task for task in [background_audit(args, store)] if task),
        policy_key=args.policy_key,
    )
    try:
        server = WebhookServer(options, store, source)
    except (OSError, ValueError) as error:  # the address is taken, or not an address
        raise CLIError(f"cannot listen on {args.bind}: {error}") from None
    server.run()
    return EXIT_OK


def add_serve_command(commands: Any, policy_help: str) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve /mutate and /validate over TLS with gunicorn",
        description="Serve the admission webhook over HTTPS (TLS 1.2+).",
    )
    serve.add_argument(
        "--bind", default="127.0.0.1:8443", type=bind_address,
        help="address:port (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--cert-dir",
        type=Path,
        help="directory with tls.crt and tls.key; default: generate a throwaway CA and certificate",
    )
    serve.add_argument("--policy", type=Path, help=policy_help + " (reloaded when it changes)")
    serve.add_argument(
        "--policy-configmap",
        metavar="NAMESPACE/NAME",
        help="watch this ConfigMap for the policy instead of a file",
    )
    serve.add_argument(
        "--policy-key",
        default=DEFAULT_CONFIGMAP_KEY,
        help="ConfigMap key holding the policy (default %(default)s)",
    )
    serve.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubeconfig for the ConfigMap watch and the cluster caches (default: in-cluster "
        "config)",
    )
    serve.add_argument(
        "--webhook-config",
        default="spotguard",
        help="with cluster access, check the webhook configurations of this name against "
        "the policy; refuse a policy revision they do not cover ('' to skip; default "
        "%(default)s)",
    )
    serve.add_argument(
        "--metrics-bind",
        metavar="ADDRESS:PORT",
        type=bind_address,
        help="serve Prometheus metrics here (e.g. 0.0.0.0:9090); default: off",
    )
    serve.add_argument(
        "--shutdown-delay",
        type=float,
        default=5.0,
        help="seconds between failing readiness and stopping, on SIGTERM (default %(default)s)",
    )
    serve.add_argument(
        "--runtime-dir",
        type=Path,
        help="scratch directory shared by the server's processes (default: a new "
        "temporary directory, removed when the server stops)",
    )
    serve.add_argument(
        "--namespace",
        default="spotguard-system",
        help="namespace the webhook runs in, for certificate names (default %(default)s)",
    )
    serve.add_argument(
        "--workers", type=int, default=2, help="worker processes (default %(default)s)"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections per worker; past it the longest-idle connection is closed "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default %(default)s)",
    )  # fmt: skip
    add_audit_serve_options(serve)
    serve.set_defaults(handler=cmd_serve)
