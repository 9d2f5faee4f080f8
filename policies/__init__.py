"""spotguard policy engine: pure functions from (request, policy, cluster facts) to a verdict.

One entry point for every caller (the webhook, the CLI, the golden tests):
:func:`policies.review.review` takes a :class:`policies.review.Request` (what the API
server says about a request: the object, the old object, the operation, the namespace,
the kind and subresource, the requester's identity), the compiled policy and the
:class:`policies.decisions.ClusterFacts` (node labels, local claims, stored pods, owner
uids; lookups the transport backs with watch caches) and returns one
:class:`policies.verdict.Verdict`, or raises :class:`policies.review.Malformed`.
No Flask, no network.

Beneath it, the rules (:mod:`policies.mutate`, :mod:`policies.validate`,
:mod:`policies.objects`, :mod:`policies.binding`), what exempts a pod
(:mod:`policies.exemptions`), the shapes checked first (:mod:`policies.shapes`), the
annotations and quantities read strictly (:mod:`policies.annotations`,
:mod:`policies.quantity`), the API's size limits (:mod:`policies.growth`); the policy
document (:mod:`policies.loader`), the webhook registration
(:func:`policies.workloads.webhook_rules`) and JSON Patch (:func:`policies.patch.make_patch`).
"""
