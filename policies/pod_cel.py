"""Match-condition CEL for the pod under review: cheap, because the API server types it.

Every pod the API server hands to admission was decoded with the Pod schema, so each field
has its schema's type and an unset optional field is simply absent: ``has()`` tests are
the only guards needed (``has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity)``).
The API server evaluates these conditions for every pod in a reviewed namespace, so they
avoid what costs there: no comprehension to bind a value (:mod:`policies.template_cel`
needs them for custom resources), constants as literals (planned once), and short-circuits
that stop an ordinary pod after a few presence tests.
"""

from __future__ import annotations

from policies import cel
from policies.annotations import INJECTED
from policies.cel import Names, all_of, any_of, negate
from policies.relevance import STEERING_PREFIX, Relevance

POD = "object"
SPEC = f"{POD}.spec"
METADATA = f"{POD}.metadata"


def _has_chain(root: str, *steps: str) -> tuple[str, str]:
    """(the guard that every step is set, the value at the last step)."""
    guards: list[str] = []
    value = root
    for step in steps:
        value = cel.field(value, step)
        guards.append(f"has({value})")
    return all_of(*guards), value


class PodQuestions:
    """The per-pod predicates, as CEL over a typed pod, for one relevance."""

    def __init__(self, relevance: Relevance, names: Names) -> None:
        self.r = relevance
        self.names = names
        self.spot_labels = cel.string_lists(dict(relevance.spot_labels))

    # -- who the pod is ------------------------------------------------------------------

    def fault_tolerant(self) -> str:
        labels = f"{METADATA}.labels"
        has_labels = f"has({labels})"
        options = []
        for selector in self.r.fault_tolerant:
            matches = cel.selector_matches(
                labels, selector.match_labels, selector.match_expressions
            )
            empty = cel.selector_matches_nothing_set(
                selector.match_labels, selector.match_expressions
            )
            options.append(
                any_of(
                    all_of(has_labels, matches),
                    all_of(negate(has_labels), cel.TRUE if empty else cel.FALSE),
                )
            )
        return any_of(*options)

    # -- where it can go -----------------------------------------------------------------

    @staticmethod
    def names_node() -> str:
        """``spec.nodeName`` set (typed: a string, absent when empty)."""
        return f"has({SPEC}.nodeName)"

    def tolerates_spot(self) -> str:
        """Some toleration may match a spot taint: its key is a spot taint's, or it has
        none (with operator Exists it tolerates every taint)."""
        if not self.r.spot_taint_keys:
            return cel.FALSE
        t = self.names("t")
        keys = cel.strings(self.r.spot_taint_keys)
        return (
            f"has({SPEC}.tolerations) && {SPEC}.tolerations.exists({t}, "
            f"!has({t}.key) || {t}.key in {keys})"
        )

    def selects_spot(self) -> str:
        """A nodeSelector entry or a required node-affinity term that may reach spot."""
        if not self.r.spot_labels:
            return cel.FALSE
        spot = self.spot_labels
        k = self.names("k")
        selector = f"{SPEC}.nodeSelector"
        by_selector = (
            f"has({selector}) && {selector}.exists({k}, "
            f"{k} in {spot} && {selector}[{k}] in {spot}[{k}])"
        )
        guard, terms = _has_chain(
            SPEC, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
        )
        term, e, v = self.names("term"), self.names("e"), self.names("v")
        values = f"{spot}[{e}.key]"
        rules_out = any_of(
            f'{e}.operator == "DoesNotExist"',
            all_of(
                f'{e}.operator == "NotIn"',
                f"has({e}.values)",
                f"{values}.all({v}, {v} in {e}.values)",
            ),
            all_of(
                f'{e}.operator == "In"',
                any_of(f"!has({e}.values)", f"{e}.values.all({v}, !({v} in {values}))"),
            ),
        )
        reaches = all_of(f"{e}.key in {spot}", negate(rules_out))
        by_affinity = all_of(
            guard,
            f"{terms}.nodeSelectorTerms.exists({term}, "
            + any_of(
                f"has({term}.matchExpressions) && {term}.matchExpressions.exists({e}, {reaches})",
                f"has({term}.matchFields)",
            )
            + ")",
        )
        return any_of(by_selector, by_affinity)

    # -- what a fault-tolerant pod may get checked for -----------------------------------

    def poor(self) -> str:
        """A trait of a poor spot candidate (stateful owner, latency-critical, local data)."""
        p = self.r.poor
        parts: list[str] = []
        if p.owner_kinds:
            o = self.names("o")
            owners = f"{METADATA}.ownerReferences"
            parts.append(
                f"has({owners}) && {owners}.exists({o}, {o}.kind in {cel.strings(p.owner_kinds)})"
            )
        for key in p.latency_keys:
            for where in ("labels", "annotations"):
                mapping = f"{METADATA}.{where}"
                parts.append(f"has({mapping}) && {cel.string(key)} in {mapping}")
        if p.priority_classes:
            classes = cel.strings(p.priority_classes)
            parts.append(f"has({SPEC}.priorityClassName) && {SPEC}.priorityClassName in {classes}")
        kinds = (["hostPath"] if p.host_path else []) + (
            ["persistentVolumeClaim", "ephemeral"] if p.claims else []
        )
        if kinds:
            v = self.names("vol")
            parts.append(
                f"has({SPEC}.volumes) && {SPEC}.volumes.exists({v}, "
                + any_of(*(f"has({v}.{kind})" for kind in kinds))
                + ")"
            )
        return any_of(*parts)

    def grace_above_notice(self) -> str:
        limit = self.r.grace_above_seconds
        if limit is None:
            return cel.FALSE
        grace = f"{SPEC}.terminationGracePeriodSeconds"
        return f"has({grace}) && {grace} > {limit}"

    def steering(self) -> str:
        """A spotguard annotation other than spotguard's own record of what it injected."""
        if not self.r.steering_annotations:
            return cel.FALSE
        a = self.names("a")
        annotations = f"{METADATA}.annotations"
        prefix, record = cel.string(STEERING_PREFIX), cel.string(INJECTED)
        return (
            f"has({annotations}) && {annotations}.exists({a}, "
            f"{a}.startsWith({prefix}) && {a} != {record})"
        )

    # -- the two questions ---------------------------------------------------------------

    def needs_mutation(self) -> str:
        """Not bound to a node, and fault-tolerant (injected, or kept off spot as a poor
        candidate) or, for the others, possibly reaching spot (keep-off-spot)."""
        r = self.r
        others = {"none": cel.FALSE, "tolerating": self.tolerates_spot(), "all": cel.TRUE}[
            r.mutate_others
        ]
        if r.mutate_fault_tolerant:
            decided = any_of(self.fault_tolerant(), others)
        else:
            decided = all_of(negate(self.fault_tolerant()), others)
        return all_of(negate(self.names_node()), decided)

    def needs_validation(self) -> str:
        """Bound to a node; or fault-tolerant with something to check (for a poor
        candidate, the spot tolerations and selection it must not have are checked too,
        but a poor candidate is sent anyway); or not, and tolerating or selecting spot."""
        r = self.r
        poor = self.poor()
        fault_tolerant = any_of(self.grace_above_notice(), self.steering(), poor)
        placement = any_of(self.tolerates_spot(), self.selects_spot())
        others = all_of(placement, cel.TRUE if r.check_others else poor)
        ft = self.fault_tolerant()
        if ft == cel.FALSE:
            decided = others
        elif ft == cel.TRUE:
            decided = fault_tolerant
        else:
            decided = f"{ft} ? {cel.group(fault_tolerant)} : {cel.group(others)}"
        return any_of(self.names_node() if r.node_name else cel.FALSE, decided)
