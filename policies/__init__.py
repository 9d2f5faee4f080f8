"""spotguard policy engine: pure functions from (object, request, policy) to a decision.

Entry points for the transport (no Flask, no network; cluster facts are passed in through
``PodContext.cluster``, a :class:`policies.decisions.ClusterFacts`):

- pods: :func:`policies.mutate.mutate_pod`, :func:`policies.validate.validate_pod`
  (``spec.nodeName`` is checked against ``cluster.node_labels``);
- workload objects (Deployment, PyTorchJob, ... as the policy lists them):
  :func:`policies.objects.validate_object`, :func:`policies.objects.mutate_object`,
  :func:`policies.workloads.object_shape_problems`, :func:`policies.workloads.workload_of`;
- bindings (``pods/binding``): :func:`policies.binding.validate_binding`;
- webhook registration: :func:`policies.workloads.webhook_rules`;
- the policy document: :mod:`policies.loader`; JSON Patch: :func:`policies.patch.make_patch`.
"""
