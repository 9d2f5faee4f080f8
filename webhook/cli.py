"""The ``spotguard`` command line: the parser, and dispatch to the commands.

- ``serve`` (:mod:`webhook.commands.serve`): the webhook over TLS;
- ``validate``, ``mutate``, ``policy check`` (:mod:`webhook.commands.offline`): the
  webhooks' answers offline, for CI;
- ``audit`` (:mod:`webhook.commands.audit`): what already in a cluster breaks the policy;
- ``certs`` (:mod:`webhook.commands.certs`): the webhook's certificates.

Every error a user can cause prints one line, ``spotguard: <problem> (<fix>)``, and exits
with status 2; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from policies.loader import PolicyError
from webhook.commands.audit import add_audit_command
from webhook.commands.certs import add_certs_commands
from webhook.commands.common import EXIT_ERROR, CLIError, cluster_error
from webhook.commands.offline import add_offline_commands
from webhook.commands.serve import add_serve_command


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the usage itself is a --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def package_version() -> str:
    """spotguard's version from the installed package's metadata (pyproject.toml's
    ``version``): the one version the image tag, the manifests and the Helm chart carry."""
    try:
        return importlib.metadata.version("spotguard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (spotguard is not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spotguard",
        description="Admission webhook that puts fault-tolerant ML training on spot capacity "
        "and keeps other workloads off it.",
    )
    parser.add_argument("--version", action="version", version=f"spotguard {package_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    policy_help = "policy document (YAML); default: the built-in policy"

    add_serve_command(commands, policy_help)
    add_offline_commands(commands)
    add_audit_command(commands)
    add_certs_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (PolicyError, CLIError) as error:
        print(f"spotguard: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as error:
        problem = cluster_error(error)
        if problem is None:
            raise
        print(f"spotguard: {problem}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
