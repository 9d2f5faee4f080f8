"""The webhook registrations shipped in deploy/, rendered from the policies shipped beside them.

``python -m testsupport.shipped_registrations`` rewrites them; ``--check`` exits 1 naming the
files that differ from what ``spotguard policy webhooks`` renders (a test runs the same
comparison).

- ``deploy/base/webhooks.yaml``: whole configurations for the base policy with every
  preset, so they cover any provider's policy (the base names none itself).
- each provider overlay: JSON patches over those (``webhooks-mutating.yaml``,
  ``webhooks-validating.yaml``) replacing the webhooks and the relevance annotation with
  the rendering of the overlay's own policy (the base's with the provider's presets line),
  so its API server is sent only what that policy needs.
- the Helm chart's data block (``files/webhooks.yaml``): the base's configurations and
  each provider's, keyed by its presets, for the chart to pick from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies.loader import parse_policy_text
from testsupport.server import REPO
from webhook.registration import RELEVANCE_ANNOTATION, render

DEPLOY = REPO / "deploy"
BASE_POLICY = DEPLOY / "base" / "policy-configmap.yaml"
BASE_WEBHOOKS = DEPLOY / "base" / "webhooks.yaml"
CHART_WEBHOOKS = DEPLOY / "helm" / "spotguard" / "files" / "webhooks.yaml"
PROVIDER_OVERLAYS = ("eks", "gke", "aks", "generic")
#: Line (0-based) of the base policy that a provider overlay's presets replace (the base
#: kustomization's replacement; policy-configmap.yaml says which lines are filled in).
PRESETS_LINE = 4
EVERY_PRESET = "  presets: [eks, karpenter, gke, aks, generic]"

BASE_HEADER = """\
# spotguard's webhook registrations, rendered from the policy in policy-configmap.yaml with
# every preset (so they cover any provider; each provider overlay patches in the rendering
# of its own policy) by `spotguard policy webhooks --policy FILE`
# (python -m testsupport.shipped_registrations rewrites every shipped copy; a test keeps them
# equal). The caBundle is filled in by `spotguard certs ensure` (or cert-manager's CA
# injector); the test harness and the demo register the same objects with a url
# clientConfig pointing at 127.0.0.1.
#
# failurePolicy: Ignore on both, deliberately. spotguard is a cost and reliability guard,
# not a security boundary: if it is down, a pod admitted without it is what the cluster
# would have admitted before spotguard existed (an unmutated training pod simply runs on
# on-demand capacity). Failing closed would instead block every pod creation in every
# matched namespace, Deployments' replacement pods included, for as long as the webhook
# is unreachable. The 5 s timeout bounds the delay an unresponsive webhook adds to each
# pod creation (the API server's default is 10 s); spotguard answers in milliseconds.
#
# namespaceSelector: the policy's excluded namespaces (the control plane's and
# spotguard's own, so the cluster and spotguard can always start) are never reviewed; a
# namespace labelled spotguard.dev/ignore=true opts out entirely. An objectSelector is not
# used for exclusion: whoever writes a pod's labels could bypass the policy with it.
#
# matchConditions: CEL the API server evaluates before calling, so it calls spotguard only
# when a review can change or deny something under the policy (README, "Registrations").
# Every expression is total: an error would make the API server skip the webhook.
# The spotguard.dev/relevance annotation records what they were rendered from; the
# server checks it against the policy it serves and refuses a policy revision that
# needs a broader registration. Render and apply again after changing the policy's spot
# nodes, fault-tolerant selector, rules or workload kinds.
#
# policy.spotguard.dev checks spotguard's own policy ConfigMap (labelled
# spotguard.dev/policy=true, in spotguard-system only): `kubectl apply` of a bad policy
# fails with the schema error before it is stored. The server refuses bad revisions anyway.
"""

CHART_PRESETS_ANNOTATION = "spotguard.dev/chart-presets"
CHART_HEADER = """\
# The Helm chart's webhook registrations (templates/webhooks.yaml picks from them): the
# rendering of the base policy with every preset ("*", which covers any provider) and of
# each provider overlay's policy, keyed by its presets. Rewritten by
# python -m testsupport.shipped_registrations; a test keeps it equal to the renderer.
"""

OVERLAY_HEADER = """\
# The webhook registrations for this overlay's policy (the base's with provider.yaml's
# presets), as JSON patches over the base's: rendered by `spotguard policy webhooks`,
# rewritten by python -m testsupport.shipped_registrations, kept equal by a test. They send
# the API server only the reviews that can matter under this provider's spot nodes.
"""


@dataclass(frozen=True)
class Shipped:
    path: Path
    text: str


def _base_policy_text() -> str:
    document = yaml.safe_load(BASE_POLICY.read_text())
    text: str = document["data"]["policy.yaml"]
    return text


def _with_presets(presets_line: str) -> str:
    """The base policy with its presets line replaced, as the base kustomization does."""
    lines = _base_policy_text().split("\n")
    lines[PRESETS_LINE] = presets_line
    return "\n".join(lines)


def provider_presets_line(overlay: str) -> str:
    provider = yaml.safe_load((DEPLOY / "overlays" / overlay / "provider.yaml").read_text())
    line: str = provider["data"]["presets"]
    return line


def overlay_policy_text(overlay: str) -> str:
    """The policy a provider overlay installs."""
    return _with_presets(provider_presets_line(overlay))


def base_policy_text() -> str:
    """The base policy with every preset: what the base's registrations are rendered for."""
    return _with_presets(EVERY_PRESET)


def _dump(documents: list[Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, width=1_000_000)


def base_registration() -> Shipped:
    policy = parse_policy_text(base_policy_text())
    return Shipped(BASE_WEBHOOKS, BASE_HEADER + _dump(render(policy)))


def overlay_registrations(overlay: str) -> list[Shipped]:
    """One JSON patch file per configuration (kustomization.yaml names their targets)."""
    directory = DEPLOY / "overlays" / overlay
    policy = parse_policy_text(overlay_policy_text(overlay))
    annotation = RELEVANCE_ANNOTATION.replace("~", "~0").replace("/", "~1")
    files = []
    for config in render(policy):
        operations = [
            {
                "op": "replace",
                "path": f"/metadata/annotations/{annotation}",
                "value": config["metadata"]["annotations"][RELEVANCE_ANNOTATION],
            },
            {"op": "replace", "path": "/webhooks", "value": config["webhooks"]},
        ]
        name = "mutating" if config["kind"].startswith("Mutating") else "validating"
        files.append(
            Shipped(directory / f"webhooks-{name}.yaml", OVERLAY_HEADER + _dump([operations]))
        )
    return files


def chart_registrations() -> Shipped:
    """One document per (presets, configuration), each labelled with its presets in the
    annotation spotguard.dev/chart-presets ("*" for the base's, which covers any)."""
    documents = []
    sets = [("*", base_policy_text())] + [
        (
            ",".join(sorted(yaml.safe_load(provider_presets_line(o))["presets"])),
            overlay_policy_text(o),
        )
        for o in PROVIDER_OVERLAYS
    ]
    for key, text in sets:
        for config in render(parse_policy_text(text)):
            config["metadata"]["annotations"] = {
                CHART_PRESETS_ANNOTATION: key,
                **config["metadata"]["annotations"],
            }
            documents.append(config)
    return Shipped(CHART_WEBHOOKS, CHART_HEADER + _dump(documents))


def shipped() -> list[Shipped]:
    return [
        base_registration(),
        *(f for o in PROVIDER_OVERLAYS for f in overlay_registrations(o)),
        chart_registrations(),
    ]


def stale() -> list[Path]:
    """Shipped files whose content is not what rendering gives now."""
    return [s.path for s in shipped() if not s.path.is_file() or s.path.read_text() != s.text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testsupport.shipped_registrations")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        return 1 if paths else 0
    for item in shipped():
        item.path.write_text(item.text)
        print(f"wrote {item.path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
