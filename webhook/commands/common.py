"""What every command shares: exit statuses, the one-line user error, argument types,
the policy a command runs with, and access to a cluster.

A user error is a :class:`CLIError`: printed as ``spotguard: <problem> (<fix>)`` on one
line, exit status 2. Only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

import yaml

from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Policy
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2
#: The label of the policy ConfigMap (the policy webhook's objectSelector).
POLICY_LABEL = "spotguard.dev/policy"


class CLIError(Exception):
    """A problem the user can fix: one line on stderr, exit status 2."""


def bind_address(text: str) -> str:
    """``ADDRESS:PORT`` for --bind and --metrics-bind, checked before anything starts."""
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ADDRESS:PORT (e.g. 0.0.0.0:8443, 127.0.0.1:9090, [::]:8443)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host and not _is_host(host):
        raise argparse.ArgumentTypeError(f"{host!r} in {text!r} is not an IP address or host name")
    return text


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        return all(0 < len(label) < 64 and label.replace("-", "").isalnum() for label in labels)
    return True


def ip_address(text: str) -> str:
    """An IP address for a certificate's subject alternative names."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (e.g. 10.96.0.10 or fd00::1; DNS names go in --dns)"
        ) from None


def read_text(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text("utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise CLIError(f"cannot read {path}: {reason}") from None


def policy_texts(text: str, name: str, key: str = DEFAULT_CONFIGMAP_KEY) -> list[tuple[str, str]]:
    """The policy documents in a file: (where, text) for a plain policy document, or for
    each policy ConfigMap among manifests (a rendered install: ``kubectl kustomize
    deploy/overlays/eks``, ``helm template``): those labelled ``spotguard.dev/policy``,
    else every ConfigMap with the policy key (``data[key]``)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return [(name, text)]  # the loader names the line and the problem
    configmaps = [d for d in documents if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
    if not configmaps and len(documents) <= 1:
        return [(name, text)]  # a policy document (the loader says what is wrong with it)
    labelled = [d for d in configmaps if _labels(d).get(POLICY_LABEL) == "true"]
    keyed = [d for d in configmaps if isinstance(mapping_at(d, "data").get(key), str)]
    chosen = labelled or keyed
    if not chosen:
        raise CLIError(
            f"{name}: no policy ConfigMap (a ConfigMap with data key {key!r}; "
            "name another key with --policy-key)"
        )
    found: list[tuple[str, str]] = []
    for configmap in chosen:
        where = f"{name}: configmap/{mapping_at(configmap, 'metadata').get('name', '(unnamed)')}"
        policy_text = mapping_at(configmap, "data").get(key)
        if not isinstance(policy_text, str):
            raise CLIError(f"{where}: no data key {key!r} (name the key with --policy-key)")
        found.append((where, policy_text))
    return found


def mapping_at(obj: Any, key: str) -> dict[str, Any]:
    """``obj[key]`` when both are mappings, else an empty one (a manifest is user input:
    its metadata may be a number, its data a list)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    return mapping_at(mapping_at(obj, "metadata"), "labels")


def load_policy(path: Path | None, key: str = DEFAULT_CONFIGMAP_KEY) -> Policy:
    """The built-in policy, or the one in ``path`` (a policy document or its ConfigMap)."""
    if path is None:
        return default_policy()
    texts = policy_texts(read_text(path), str(path), key)
    if len(texts) != 1:
        raise CLIError(f"{path}: {len(texts)} policy ConfigMaps; give a file with one")
    where, text = texts[0]
    try:
        return parse_policy_text(text)
    except PolicyError as error:
        raise CLIError(f"{where}: {error}") from None


def add_policy_options(
    command: argparse.ArgumentParser, default: str = "the built-in policy"
) -> None:
    command.add_argument(
        "--policy",
        type=Path,
        help=f"policy document, or a manifest with its ConfigMap (YAML); default: {default}",
    )
    command.add_argument(
        "--policy-key",
        default=DEFAULT_CONFIGMAP_KEY,
        help="the ConfigMap's key holding the policy (default %(default)s)",
    )


def load_kube_config(kubeconfig: Path | None, *, in_cluster_fallback: bool = False) -> None:
    """Cluster credentials: ``kubeconfig``; else the pod's ServiceAccount, or, for commands
    people run (``in_cluster_fallback``), first $KUBECONFIG or ~/.kube/config as kubectl."""
    from kubernetes import config  # noqa: PLC0415 - only commands that talk to a cluster

    try:
        if kubeconfig:
            if not kubeconfig.is_file():
                raise CLIError(f"--kubeconfig {kubeconfig}: no such file")
            config.load_kube_config(str(kubeconfig))
            return
        if in_cluster_fallback:
            try:
                config.load_kube_config()
                return
            except config.ConfigException:
                pass
        config.load_incluster_config()
    except config.ConfigException as error:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "no kubeconfig, and in-cluster"
        raise CLIError(
            f"no cluster: {where}: {error} (pass --kubeconfig FILE, or run in a pod "
            "with a ServiceAccount)"
        ) from None


def cluster_error(error: BaseException) -> str | None:
    """One line for a failure to talk to the cluster; None for anything else (a bug)."""
    if "kubernetes" not in sys.modules:
        return None
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    if isinstance(error, ApiException):
        detail = _api_message(error.body) or str(error.reason)
        return f"Kubernetes API: {error.status} {detail}"
    if isinstance(error, HTTPError):
        reason = getattr(error, "reason", None) or error
        return f"cannot reach the Kubernetes API: {reason} (is the cluster up? --kubeconfig?)"
    return None


def _api_message(body: Any) -> str | None:
    import json  # noqa: PLC0415

    try:
        message = json.loads(body).get("message")
    except (TypeError, ValueError, AttributeError):
        return None
    return str(message) if message else None
