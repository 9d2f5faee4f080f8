"""``spotguard certs generate`` and ``certs ensure``: the webhook's certificates."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from certs.kube import Target, ensure
from certs.lifecycle import Wanted
from certs.pki import generate_pair, service_dns_names
from webhook.commands.common import EXIT_OK, CLIError, ip_address, load_kube_config


def cmd_certs_generate(args: argparse.Namespace) -> int:
    names = [*service_dns_names(args.service, args.namespace), "localhost", *args.dns]
    paths = generate_pair(args.out, names, ["127.0.0.1", *args.ip])
    print(f"wrote CA {paths.ca_cert}, certificate {paths.cert} and key {paths.key}")
    return EXIT_OK


def cmd_certs_ensure(args: argparse.Namespace) -> int:
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    load_kube_config(args.kubeconfig)
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


def add_certs_commands(commands: Any) -> None:
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
    generate.add_argument(
        "--ip", action="append", default=[], type=ip_address,
        help="extra IP address (repeatable)",
    )  # fmt: skip
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
    ensure_cmd.add_argument(
        "--ip", action="append", default=[], type=ip_address,
        help="IP address SAN (repeatable)",
    )  # fmt: skip
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
