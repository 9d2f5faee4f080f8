"""Hypothesis strategies for everything the domain's entry point reviews.

Reusable building blocks, for the property tests here and for anyone who must prove that
something agrees with :func:`policies.review.review` (e.g. that a webhook registration's
CEL match conditions never skip a review that matters):

- :func:`policy_documents` / :func:`policies`: every preset combination, custom spot
  labels and taints, every global and rule mode, operator presets, inject settings,
  template mutation, a CRD through ``workloads.extraKinds``, trusted identities;
- :func:`pods`, :func:`templates`, :func:`workloads` (every kind the policy reviews, with
  templates at each of its paths), :func:`bindings`: objects shaped as the API server
  sends them, built from the policy's own spot labels and taints so every rule is reached
  (tolerations of every form, node affinity with every operator and empty terms,
  steering annotations valid and not, forged exemptions, nodeName, local storage);
- :func:`requesters`: nobody (offline), users, the DaemonSet controller, kubelets, the
  scheduler;
- :func:`cluster_data`: nodes (spot and not), local claims, stored pods, owners;
- :func:`scenarios`: a whole review, :class:`Scenario` (policy, request, facts), and
  :func:`batches` of pod, workload or binding reviews under one policy (drawing a policy
  costs more than drawing a pod, so many cases are cheaper in batches);
- :func:`json_values` and :func:`junk_batches`: arbitrary JSON where the rules read.

Each ``foo(draw, ...)`` function draws one value inside a composite strategy, and its
``foos(...)`` twin is the strategy; strategies are built once (building one costs
hypothesis more than drawing from it).

Every strategy draws from small alphabets on purpose: collisions (the same key in a
toleration and a taint, a container name in an annotation) are where bugs live.
"""

from tests.strategies.objects import (
    CONTAINER_NAMES,
    NAMESPACE,
    affinity,
    decoded,
    json_values,
    node_selector_term,
    pod,
    pod_metadata,
    pod_spec,
    pods,
    requirements,
    template,
    templates,
    toleration_lists,
    tolerations,
    workload,
    workloads,
)
from tests.strategies.policies import (
    CRD_KIND,
    policies,
    policy,
    policy_document,
    policy_documents,
)
from tests.strategies.reviews import (
    Batch,
    ClusterData,
    Scenario,
    batches,
    binding,
    bindings,
    cluster,
    cluster_data,
    junk_batches,
    requester,
    requesters,
    scenarios,
)

__all__ = [
    "CONTAINER_NAMES", "CRD_KIND", "NAMESPACE", "Batch", "ClusterData", "Scenario", "affinity",
    "batches", "binding", "bindings", "cluster", "cluster_data", "decoded", "json_values",
    "junk_batches", "node_selector_term", "pod", "pod_metadata", "pod_spec", "pods",
    "policies", "policy", "policy_document", "policy_documents", "requester", "requesters",
    "requirements", "scenarios", "template", "templates", "toleration_lists", "tolerations",
    "workload", "workloads",
]  # fmt: skip
