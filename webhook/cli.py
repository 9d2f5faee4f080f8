"""The ``spotguard`` command line: serve the webhook, or apply the policy offline.

Offline commands (``mutate``, ``validate``, ``policy check``) run the same rules as the
server, so a manifest can be checked in CI before it reaches a cluster. Errors print one
line and exit non-zero; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from certs.kube import Target, ensure
from certs.lifecycle import Wanted
from certs.pki import generate_pair, service_dns_names
from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Policy
from policies.review import Malformed, Phase, Request, Verdict, review
from webhook.cluster import KubeCluster, WatchedCluster
from webhook.logs import configure
from webhook.metrics import MULTIPROC_ENV
from webhook.policy_sources import ConfigMapPolicySource, FilePolicySource
from webhook.policy_store import PolicyState, PolicyStore
from webhook.registration import Endpoint, registration_header, render
from webhook.registration_watch import RegistrationWatch, Sources
from webhook.server import DEFAULT_MAX_CONNECTIONS, PolicySource, ServerOptions, WebhookServer

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2
serve_log = logging.getLogger("spotguard.serve")


class CLIError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def _load_policy(path: Path | None) -> Policy:
    if path is None:
        return default_policy()
    return parse_policy_text(_read(path))


def _read(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text("utf-8")
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}") from None


def _pods(path: Path) -> list[dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(_read(path)) if d is not None]
    except yaml.YAMLError as error:
        raise CLIError(f"{path}: not valid YAML: {error}") from None
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "Pod":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise CLIError(f"{path}: only Pod manifests are supported, got {kind}")
    if not documents:
        raise CLIError(f"{path}: no manifest found")
    return documents


def _review(pod: dict[str, Any], args: argparse.Namespace, policy: Policy, phase: Phase) -> Verdict:
    """The verdict on one manifest, as the webhooks would give it (no requester: offline)."""
    try:
        verdict = review(Request.for_object(pod, namespace=args.namespace), policy, phases=phase)
    except Malformed as error:
        raise CLIError(f"{args.filename}: {error}") from None
    if verdict.exemption:
        print(f"spotguard: {verdict.description}: {verdict.exemption}", file=sys.stderr)
    return verdict


def cmd_mutate(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    outputs: list[Any] = []
    for pod in _pods(args.filename):
        verdict = _review(pod, args, policy, Phase.MUTATE)
        for warning in verdict.mutation_warnings:
            print(f"Warning: {warning}", file=sys.stderr)
        mutation = verdict.mutation
        if args.patch:
            outputs.append(mutation.patch() if mutation else [])
        else:
            outputs.append(mutation.patched if mutation and mutation.patched else pod)
    if args.patch:
        print(json.dumps(outputs[0] if len(outputs) == 1 else outputs, indent=2))
    else:
        print(yaml.safe_dump_all(outputs, sort_keys=False), end="")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Judge each pod as the cluster would: mutated first, then validated."""
    policy = _load_policy(args.policy)
    status = EXIT_OK
    for pod in _pods(args.filename):
        name = (pod.get("metadata") or {}).get("name", "(unnamed)")
        verdict = _review(pod, args, policy, Phase.BOTH)
        for warning in verdict.validation.warnings if verdict.validation else ():
            print(f"Warning: {name}: {warning}", file=sys.stderr)
        for violation in verdict.validation.audited if verdict.validation else ():
            print(f"Warning: {name}: {violation.message()} (audit mode)", file=sys.stderr)
        if verdict.denials:
            status = EXIT_DENIED
            for violation in verdict.denials:
                print(f"DENIED {name}: {violation.message()}")
        else:
            print(f"ALLOWED {name}")
    return status


def cmd_policy_check(args: argparse.Namespace) -> int:
    policy = parse_policy_text(_read(args.file))
    print(
        f"policy OK: revision {policy.revision}, mode {policy.mode}, "
        f"{len(policy.spot_labels)} spot labels, {len(policy.spot_taints)} spot taints, "
        f"notice window {policy.notice_seconds}s"
    )
    return EXIT_OK


def _policy_document_text(path: Path) -> str:
    """A policy document, or the one inside a policy ConfigMap manifest (key policy.yaml)."""
    text = _read(path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # parse_policy_text names the problem
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        data = document.get("data") or {}
        if not isinstance(data.get("policy.yaml"), str):
            raise CLIError(f"{path}: the ConfigMap has no data key policy.yaml")
        return str(data["policy.yaml"])
    return text


def cmd_policy_webhooks(args: argparse.Namespace) -> int:
    policy = (
        parse_policy_text(_policy_document_text(args.policy)) if args.policy else default_policy()
    )
    ca_bundle = None
    if args.ca_bundle:
        try:
            ca_bundle = base64.b64encode(args.ca_bundle.read_bytes()).decode()
        except OSError as error:
            raise CLIError(f"cannot read {args.ca_bundle}: {error.strerror}") from None
    endpoint = Endpoint(
        service=args.service, namespace=args.namespace, url=args.url, ca_bundle=ca_bundle
    )
    documents = render(policy, endpoint, conditions=not args.no_conditions)
    print(registration_header(policy), end="")
    print(yaml.safe_dump_all(documents, sort_keys=False, width=1_000_000), end="")
    return EXIT_OK


def cmd_certs_generate(args: argparse.Namespace) -> int:
    names = [*service_dns_names(args.service, args.namespace), "localhost", *args.dns]
    paths = generate_pair(args.out, names, ["127.0.0.1", *args.ip])
    print(f"wrote CA {paths.ca_cert}, certificate {paths.cert} and key {paths.key}")
    return EXIT_OK


def _policy_source(args: argparse.Namespace) -> tuple[PolicyStore, PolicySource | None]:
    """The master's policy store and what feeds it: the policy source (file, ConfigMap or
    none) and, with cluster access, the watch of the live webhook registration."""
    if args.policy_configmap:
        namespace, _, name = args.policy_configmap.partition("/")
        if not namespace or not name:
            raise CLIError("--policy-configmap must be NAMESPACE/NAME")
        from kubernetes import client  # noqa: PLC0415 - only needed with a ConfigMap

        _load_kube_config(args.kubeconfig)
        store = PolicyStore(PolicyState(None, f"waiting for configmap {namespace}/{name}"))
        registration = _registration_watch(args, store)
        source = ConfigMapPolicySource(
            namespace, name, store, client.CoreV1Api(), key=args.policy_key
        )
        source.load_initial()
        return store, Sources(source, registration)
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

    _load_kube_config(args.kubeconfig)
    watch = RegistrationWatch(args.webhook_config, store, client.AdmissionregistrationV1Api())
    watch.load_initial()
    return watch


def _load_kube_config(kubeconfig: Path | None) -> None:
    from kubernetes import config  # noqa: PLC0415 - only commands that talk to a cluster

    if kubeconfig:
        config.load_kube_config(str(kubeconfig))
    else:
        config.load_incluster_config()


def cmd_certs_ensure(args: argparse.Namespace) -> int:
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    _load_kube_config(args.kubeconfig)
    names = [*service_dns_names(args.service, args.namespace), *args.dns]
    wanted = Wanted(
        dns_names=tuple(names),
        ip_addresses=tuple(args.ip),
        renew_serving_before=timedelta(days=args.renew_before_days),
        renew_ca_before=timedelta(days=args.ca_renew_before_days),
    )
    target = Target(args.namespace, args.secret, args.webhook_config)
    try:
        actions = ensure(
            client.CoreV1Api(),
            client.AdmissionregistrationV1Api(),
            target,
            wanted,
            rotate_serving=args.rotate == "serving",
            rotate_ca=args.rotate == "ca",
        )
    except ApiException as error:
        raise CLIError(f"Kubernetes API: {error.status} {error.reason}") from None
    for action in actions or ["certificates are current; nothing to do"]:
        print(f"spotguard certs: {action}")
    return EXIT_OK


def _cluster_factory(args: argparse.Namespace) -> Callable[[], WatchedCluster] | None:
    """With cluster access (a ConfigMap policy, or --kubeconfig), each worker keeps watch
    caches of nodes, volumes, claims, pending pods and DaemonSets."""
    if not (args.policy_configmap or args.kubeconfig):
        return None
    kubeconfig = args.kubeconfig

    def build() -> WatchedCluster:
        from kubernetes import client  # noqa: PLC0415

        _load_kube_config(kubeconfig)
        cluster = KubeCluster(client.CoreV1Api(), client.AppsV1Api())
        cluster.start()
        return cluster

    return build


def cmd_serve(args: argparse.Namespace) -> int:
    configure(args.log_level)
    runtime_dir = args.runtime_dir or Path(tempfile.mkdtemp(prefix="spotguard-run-"))
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
        cert_dir = Path(tempfile.mkdtemp(prefix="spotguard-certs-"))
        names = [*service_dns_names("spotguard", args.namespace), "localhost"]
        generate_pair(cert_dir, names, ["127.0.0.1"])
        serve_log.warning(
            "no --cert-dir given, serving with a throwaway CA and certificate in %s "
            "(register its ca.crt as the webhooks' caBundle, or pass --cert-dir)",
            cert_dir,
        )
    for name in ("tls.crt", "tls.key"):
        if not (cert_dir / name).is_file():
            raise CLIError(f"{cert_dir / name}: not found (expected tls.crt and tls.key)")
    state = store.snapshot()
    revision = state.policy.revision if state.policy else "none yet"
    serve_log.info("policy %s from %s", revision, state.source)
    options = ServerOptions(
        bind=args.bind,
        cert_file=cert_dir / "tls.crt",
        key_file=cert_dir / "tls.key",
        runtime_dir=runtime_dir,
        workers=args.workers,
        max_connections=args.max_connections,
        shutdown_delay=args.shutdown_delay,
        metrics_bind=args.metrics_bind,
        log_level=args.log_level.lower(),
        cluster_factory=_cluster_factory(args),
    )
    try:
        server = WebhookServer(options, store, source)
    except (OSError, ValueError) as error:  # the address is taken, or not an address
        raise CLIError(f"cannot listen on {args.bind}: {error}") from None
    server.run()
    return EXIT_OK


def _add_serve_command(commands: Any, policy_help: str) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve /mutate and /validate over TLS with gunicorn",
        description="Serve the admission webhook over HTTPS (TLS 1.2+).",
    )
    serve.add_argument(
        "--bind", default="127.0.0.1:8443", help="address:port (default %(default)s)"
    )
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
        default="policy.yaml",
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
        "temporary directory)",
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
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    serve.set_defaults(handler=cmd_serve)


def _add_certs_commands(commands: Any) -> None:
    certs = commands.add_parser("certs", help="manage the webhook's certificates")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    generate = certs_commands.add_parser(
        "generate",
        help="write a new CA and serving certificate",
        description="Write ca.crt, ca.key, tls.crt and tls.key.",
    )
    generate.add_argument("--out", type=Path, required=True, help="directory to write to")
    generate.add_argument(
        "--service", default="spotguard", help="Service name (default %(default)s)"
    )
    generate.add_argument(
        "--namespace", default="spotguard-system", help="Service namespace (default %(default)s)"
    )
    generate.add_argument("--dns", action="append", default=[], help="extra DNS name (repeatable)")
    generate.add_argument("--ip", action="append", default=[], help="extra IP address (repeatable)")
    generate.set_defaults(handler=cmd_certs_generate)
    ensure_cmd = certs_commands.add_parser(
        "ensure",
        help="create, renew or rotate the certificates in a Secret and the webhooks' caBundle",
        description="Idempotent (run it as a Job and a daily CronJob): creates a CA and serving "
        "certificate in the Secret if missing, renews the serving certificate before it "
        "expires, rotates the CA with an overlap (old and new CA both trusted until the old "
        "one expires), and patches the caBundle of both webhook configurations.",
    )
    ensure_cmd.add_argument("--namespace", default="spotguard-system", help="(default %(default)s)")
    ensure_cmd.add_argument("--secret", default="spotguard-tls", help="(default %(default)s)")
    ensure_cmd.add_argument("--service", default="spotguard", help="(default %(default)s)")
    ensure_cmd.add_argument(
        "--webhook-config",
        default="spotguard",
        help="name of both webhook configurations (default %(default)s)",
    )
    ensure_cmd.add_argument(
        "--dns", action="append", default=[], help="extra DNS name (repeatable)"
    )
    ensure_cmd.add_argument("--ip", action="append", default=[], help="IP address SAN (repeatable)")
    ensure_cmd.add_argument(
        "--renew-before-days",
        type=int,
        default=30,
        help="renew the serving certificate this long before expiry (default %(default)s)",
    )
    ensure_cmd.add_argument(
        "--ca-renew-before-days",
        type=int,
        default=90,
        help="rotate the CA this long before expiry (default %(default)s)",
    )
    ensure_cmd.add_argument(
        "--rotate", choices=["serving", "ca"], help="rotate now, whatever the expiry dates"
    )
    ensure_cmd.add_argument("--kubeconfig", type=Path, help="default: in-cluster configuration")
    ensure_cmd.set_defaults(handler=cmd_certs_ensure)


def package_version() -> str:
    """spotguard's version from the installed package's metadata (pyproject.toml's
    ``version``): the one version the image tag, the manifests and the Helm chart carry."""
    try:
        return importlib.metadata.version("spotguard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (spotguard is not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotguard",
        description="Admission webhook that puts fault-tolerant ML training on spot capacity "
        "and keeps other workloads off it.",
    )
    parser.add_argument("--version", action="version", version=f"spotguard {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy_help = "policy document (YAML); default: the built-in policy"

    _add_serve_command(commands, policy_help)

    for name, handler, text in (
        ("mutate", cmd_mutate, "print the pod as the mutating webhook would admit it"),
        (
            "validate",
            cmd_validate,
            "check pods against the validating rules; exit 1 if one is denied",
        ),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument(
            "-f",
            "--filename",
            type=Path,
            required=True,
            help="Pod manifest (YAML, several documents allowed; - for stdin)",
        )
        command.add_argument("--policy", type=Path, help=policy_help)
        command.add_argument(
            "-n", "--namespace", help="namespace to assume (default: the manifest's, or default)"
        )
        if name == "mutate":
            command.add_argument(
                "--patch", action="store_true", help="print the JSON Patch instead of the object"
            )
        command.set_defaults(handler=handler)

    policy = commands.add_parser("policy", help="work with policy documents")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = policy_commands.add_parser(
        "check",
        help="validate a policy document; exit 2 if invalid",
        description="Validate a policy document and print its revision.",
    )
    check.add_argument("file", type=Path, help="policy document (YAML; - for stdin)")
    check.set_defaults(handler=cmd_policy_check)
    webhooks = policy_commands.add_parser(
        "webhooks",
        help="print the webhook registrations for a policy (kubectl apply -f -)",
        description="Print the MutatingWebhookConfiguration and ValidatingWebhookConfiguration "
        "for a policy: rules for every kind it reviews, and match conditions so the API server "
        "calls spotguard only for reviews that can change or deny something under it. Apply "
        "the output whenever the policy's spot nodes, fault-tolerant selector, rules or "
        "workload kinds change; the server refuses a policy revision the live registration "
        "does not cover.",
    )
    webhooks.add_argument(
        "--policy",
        type=Path,
        help="policy document, or the policy ConfigMap manifest (- for stdin); "
        "default: the built-in policy",
    )
    webhooks.add_argument("--service", default="spotguard", help="(default %(default)s)")
    webhooks.add_argument(
        "--namespace",
        default="spotguard-system",
        help="the Service's namespace (default %(default)s)",
    )
    webhooks.add_argument("--url", help="call this URL instead of the Service (local runs)")
    webhooks.add_argument(
        "--ca-bundle",
        type=Path,
        help="PEM file to set as caBundle (default: none, as "
        "`spotguard certs ensure` or cert-manager fill it in)",
    )
    webhooks.add_argument(
        "--no-conditions",
        action="store_true",
        help="leave out the match conditions: every review the rules match is sent",
    )
    webhooks.set_defaults(handler=cmd_policy_webhooks)

    _add_certs_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except PolicyError as error:
        print(f"spotguard: {error}", file=sys.stderr)
        return EXIT_ERROR
    except CLIError as error:
        print(f"spotguard: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
