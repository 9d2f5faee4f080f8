"""Operator presets: recognise training pods by the labels their operator puts on them.

Teams running training through an operator rarely label every manifest; the operator
labels every pod it creates, so a policy can opt a whole operator's workloads in with
``faultTolerant.operatorPresets``. The label keys are the operators' own (their API
constants), kept here as data like the spot presets. A preset is a list of selectors,
ORed: a pod matches if any one of them does.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.model import LabelSelector, SelectorRequirement


@dataclass(frozen=True)
class OperatorPreset:
    name: str
    description: str
    selectors: tuple[LabelSelector, ...]


def _exists(*keys: str) -> LabelSelector:
    return LabelSelector(
        match_labels=(),
        match_expressions=tuple(SelectorRequirement(k, "Exists", frozenset()) for k in keys),
    )


OPERATOR_PRESETS: dict[str, OperatorPreset] = {
    preset.name: preset
    for preset in (
        OperatorPreset(
            name="kubeflow",
            description=(
                "Kubeflow training-operator v1 (PyTorchJob, TFJob, MPIJob, ...: "
                "training.kubeflow.org/job-name) and Trainer v2 (TrainJob: "
                "trainer.kubeflow.org/trainjob-name)"
            ),
            selectors=(
                _exists("training.kubeflow.org/job-name"),
                _exists("trainer.kubeflow.org/trainjob-name"),
            ),
        ),
        OperatorPreset(
            name="jobset",
            description="JobSet (jobset.sigs.k8s.io/jobset-name); also every Trainer v2 pod",
            selectors=(_exists("jobset.sigs.k8s.io/jobset-name"),),
        ),
        OperatorPreset(
            name="ray",
            # Workers only: the head runs the GCS and, for a RayJob, the driver; losing it
            # loses the whole cluster's state, so a preempted head is not a restart but a
            # failure. Heads stay on on-demand capacity unless labelled explicitly.
            description="KubeRay worker pods (ray.io/cluster, ray.io/node-type=worker)",
            selectors=(
                LabelSelector(
                    match_labels=(("ray.io/node-type", "worker"),),
                    match_expressions=(
                        SelectorRequirement("ray.io/cluster", "Exists", frozenset()),
                    ),
                ),
            ),
        ),
        OperatorPreset(
            name="volcano",
            description="Volcano Jobs (volcano.sh/job-name)",
            selectors=(_exists("volcano.sh/job-name"),),
        ),
    )
}
