"""Builders for AdmissionReview requests, as the API server sends them."""

from __future__ import annotations

import uuid
from typing import Any


def training_pod(name: str = "trainer-0", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"spotguard.dev/fault-tolerant": "true", **labels},
        },
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "trainer", "image": "registry.example/trainer:1"}],
        },
    }


def plain_pod(name: str = "web-0", tolerate_spot: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "registry.example/web:1"}]}
    if tolerate_spot:
        spec["tolerations"] = [
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": spec,
    }


def review(
    pod: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    namespace: str = "ml",
    api_version: str = "admission.k8s.io/v1",
    dry_run: bool = False,
    uid: str | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": pod,
            "oldObject": old,
            "dryRun": dry_run,
        },
    }


def configmap_review(data: dict[str, str]) -> dict[str, Any]:
    """An UPDATE of the policy ConfigMap with ``data``, as /validate-policy receives it."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "spotguard-policy", "namespace": "spotguard-system"},
        "data": data,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "namespace": "spotguard-system",
            "operation": "UPDATE",
            "object": configmap,
            "oldObject": configmap,
        },
    }
