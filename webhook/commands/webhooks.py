"""``spotguard policy webhooks``: the webhook registrations a policy needs.

Rules for every kind the policy reviews and match conditions (CEL) so the API server calls
spotguard only for reviews that can change or deny something under it
(:mod:`webhook.registration` renders them; the shipped manifests are this command's
output for each provider's policy).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import yaml

from webhook.commands.common import EXIT_OK, CLIError, add_policy_options, load_policy
from webhook.registration import Endpoint, registration_header, render


def cmd_policy_webhooks(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy, args.policy_key)
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


def add_webhooks_command(policy_commands: Any) -> None:
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
    add_policy_options(webhooks)
    webhooks.add_argument("--service", default="spotguard", help="(default %(default)s)")
    webhooks.add_argument(
        "--namespace",
        default="spotguard-system",
        help="the Service's namespace (default %(default)s)",
    )
    webhooks.add_argument(
        "--url", type=str, help="call this URL instead of the Service (local runs)"
    )
    webhooks.add_argument(
        "--ca-bundle",
        type=Path,
        help="PEM file to set as caBundle (default: none, as `spotguard certs ensure` or "
        "cert-manager fill it in)",
    )
    webhooks.add_argument(
        "--no-conditions",
        action="store_true",
        help="leave out the match conditions: every review the rules match is sent",
    )
    webhooks.set_defaults(handler=cmd_policy_webhooks)
