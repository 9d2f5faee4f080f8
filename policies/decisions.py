"""What the rules are told about a request and what they answer: plain, transport-free data."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from policies.model import Mode, Rule
from policies.pods import JSONObject

#: A node's labels by node name; None when the node is unknown (not in the cache yet).
NodeLabels = Callable[[str], Mapping[str, str] | None]
#: Whether the PVC (namespace, name) is bound to a node-local PersistentVolume.
LocalClaims = Callable[[str, str], bool]
#: The stored pod (namespace, name), e.g. the one a Binding names; None when unknown.
PodLookup = Callable[[str, str], JSONObject | None]
#: The uid of the object (kind, namespace, name) as the cluster has it; None when there is
#: none or it is unknown. Verifies an owner reference instead of trusting the pod's word.
OwnerLookup = Callable[[str, str, str], str | None]


def _unknown_node(name: str) -> Mapping[str, str] | None:
    return None


def _no_local_claims(namespace: str, claim: str) -> bool:
    return False


def _unknown_pod(namespace: str, name: str) -> JSONObject | None:
    return None


def _unknown_owner(kind: str, namespace: str, name: str) -> str | None:
    return None


@dataclass(frozen=True)
class ClusterFacts:
    """What the rules may know of the cluster beyond the request; the transport supplies it.

    The rules stay pure: a pod does not say whether the node it names is spot, whether its
    claim is bound to a local volume, which pod a Binding binds or whether the owner it
    names exists, so the transport passes lookups (backed by watch caches, never an API
    call while a review waits). The defaults know nothing: every node, pod and owner is
    unknown and no claim is local.
    """

    node_labels: NodeLabels = _unknown_node
    local_claims: LocalClaims = _no_local_claims
    pod: PodLookup = _unknown_pod
    owner_uid: OwnerLookup = _unknown_owner

    def is_local_claim(self, namespace: str, claim: str) -> bool:
        return self.local_claims(namespace, claim)

    @classmethod
    def from_data(
        cls,
        nodes: Mapping[str, Mapping[str, str]] | None = None,
        local_claims: Iterable[str] = (),
        pods: Mapping[str, JSONObject] | None = None,
        owners: Mapping[str, str] | None = None,
    ) -> ClusterFacts:
        """Facts from plain data: node name to labels, ``namespace/name`` of local claims,
        ``namespace/name`` to stored pod, and ``Kind/namespace/name`` to an owner's uid."""
        known = dict(nodes or {})
        local = frozenset(local_claims)
        stored = dict(pods or {})
        uids = dict(owners or {})
        return cls(
            node_labels=known.get,
            local_claims=lambda namespace, claim: f"{namespace}/{claim}" in local,
            pod=lambda namespace, name: stored.get(f"{namespace}/{name}"),
            owner_uid=lambda kind, namespace, name: uids.get(f"{kind}/{namespace}/{name}"),
        )


NO_CLUSTER_FACTS = ClusterFacts()


@dataclass(frozen=True)
class PodContext:
    """The request facts a rule may use besides the pod itself."""

    namespace: str
    operation: str = "CREATE"
    cluster: ClusterFacts = NO_CLUSTER_FACTS


@dataclass(frozen=True)
class Change:
    """One injection. ``kind`` is a stable category (for metrics), ``detail`` says what."""

    kind: str
    detail: str


@dataclass(frozen=True)
class MutationDecision:
    """The outcome of the mutating rules for one pod.

    ``mutated`` is the changed copy whenever ``changes`` is non-empty, whatever the mode:
    the transport applies it only in enforce mode and merely reports it in audit mode.
    """

    rule: Rule | None
    mode: Mode
    changes: tuple[Change, ...] = ()
    mutated: JSONObject | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Violation:
    """A rule the pod breaks: where, why, and how to fix the manifest."""

    rule: Rule
    mode: Mode
    field: str
    problem: str
    fix: str
    brief: str

    def message(self) -> str:
        return f"[{self.rule.value}] {self.field}: {self.problem}. Fix: {self.fix}."

    def short(self) -> str:
        """A kubectl warning: one line, at most 120 characters; the audit log has the rest."""
        text = f"spotguard {self.mode} [{self.rule.value}]: {self.brief}"
        return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class ValidationDecision:
    violations: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def denials(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is Mode.ENFORCE)

    @property
    def audited(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is Mode.AUDIT)


@dataclass(frozen=True)
class TemplateMutation:
    """The pod rules' mutation decision for one template, at its path in the object."""

    path: str
    decision: MutationDecision


@dataclass(frozen=True)
class ObjectMutation:
    """The outcome of the mutating rules for a workload object's templates.

    Templates may be decided differently (a Ray head kept off spot, its workers injected;
    one rule enforced, another audited), so each keeps its own decision. ``mutated`` is the
    object with every enforce-mode template change applied, None when there is none:
    the transport patches from it and reports the audit-mode ones as warnings.
    """

    templates: tuple[TemplateMutation, ...] = ()
    mutated: JSONObject | None = None

    @property
    def changes(self) -> tuple[Change, ...]:
        """What the patch injects (enforce mode only)."""
        return tuple(
            change
            for template in self.templates
            if template.decision.mode is Mode.ENFORCE
            for change in template.decision.changes
        )

    @property
    def audited(self) -> tuple[TemplateMutation, ...]:
        """Templates that would change in enforce mode but are only reported (audit mode)."""
        return tuple(
            t for t in self.templates if t.decision.mode is Mode.AUDIT and t.decision.changes
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        """The templates' own warnings, each naming its template."""
        return tuple(
            f"{warning} (in {template.path})"
            for template in self.templates
            for warning in template.decision.warnings
        )
