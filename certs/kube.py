"""Applying a certificate plan to a cluster: the Secret and the webhooks' caBundle.

Order matters for a CA rotation: the caBundle (old and new CA) is patched into both
webhook configurations first, then the Secret gets the new serving certificate. The API
server reads webhook configurations within a second; the kubelet refreshes a mounted
Secret only after a minute or so; so it trusts the new CA long before the webhook
presents a certificate signed by it.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

from certs.lifecycle import CertBundle, Wanted, plan

log = logging.getLogger("spotguard.certs")


@dataclass(frozen=True)
class Target:
    namespace: str
    secret: str
    webhook_config: str


def _decode(data: dict[str, str] | None) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


#: The type of a Secret this command creates. An existing Secret keeps its own (a type
#: cannot change): the Helm chart creates spotguard-tls empty, as Opaque, so that
#: `helm uninstall` removes it.
SECRET_TYPE = "kubernetes.io/tls"


def read_bundle(core: Any, target: Target) -> tuple[CertBundle | None, str | None, str]:
    """(bundle, the Secret's resourceVersion or None when it does not exist, its type)."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        secret = core.read_namespaced_secret(target.secret, target.namespace)
    except ApiException as error:
        if error.status == 404:
            return None, None, SECRET_TYPE
        raise
    bundle = CertBundle.from_secret_data(_decode(secret.data))
    return bundle, secret.metadata.resource_version, secret.type or SECRET_TYPE


def patch_ca_bundles(admission: Any, name: str, bundle_pem: bytes) -> list[str]:
    """Set caBundle on every webhook of both configurations; return those changed."""
    encoded = base64.b64encode(bundle_pem).decode()
    changed = []
    for kind, read, patch in (
        ("mutating", admission.read_mutating_webhook_configuration,
         admission.patch_mutating_webhook_configuration),
        ("validating", admission.read_validating_webhook_configuration,
         admission.patch_validating_webhook_configuration),
    ):  # fmt: skip
        config = read(name)
        webhooks = config.webhooks or []
        if all(w.client_config.ca_bundle == encoded for w in webhooks):
            continue
        body = [
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded}
            for index in range(len(webhooks))
        ]
        patch(name, body)
        changed.append(f"{kind}webhookconfiguration/{name}")
    return changed


def ensure(
    core: Any,
    admission: Any,
    target: Target,
    wanted: Wanted,
    *,
    rotate_serving: bool = False,
    rotate_ca: bool = False,
) -> list[str]:
    """Create, renew or rotate as needed; idempotent. Returns what was done."""
    current, version, secret_type = read_bundle(core, target)
    bundle, actions = plan(current, wanted, rotate_serving=rotate_serving, rotate_ca=rotate_ca)
    for changed in patch_ca_bundles(admission, target.webhook_config, bundle.bundle_pem):
        actions.append(f"patched caBundle of {changed}")
    if current != bundle:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret_type,
            "metadata": {
                "name": target.secret,
                "namespace": target.namespace,
                "labels": {"app.kubernetes.io/name": "spotguard"},
            },
            "data": _encode(bundle.to_secret_data()),
        }
        if version is not None:
            # The resourceVersion makes a concurrent run (Job and CronJob) fail, not clobber.
            body["metadata"]["resourceVersion"] = version  # type: ignore[index]
            core.replace_namespaced_secret(target.secret, target.namespace, body)
        else:
            core.create_namespaced_secret(target.namespace, body)
        actions.append(f"wrote secret {target.namespace}/{target.secret}")
    return actions
