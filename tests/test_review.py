"""The domain's entry point: malformed input, strict annotations, the honest-user faults,
growth bounds and phases. (Exemptions: test_exemptions.py; every rule: the golden cases.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from policies.decisions import ClusterFacts, PodContext
from policies.growth import MAX_OBJECT_BYTES, TOTAL_ANNOTATION_BYTES, annotation_bytes, object_bytes
from policies.loader import default_policy, parse_policy_text
from policies.model import Mode, Rule
from policies.review import (
    POD_KIND,
    GroupVersionKind,
    Malformed,
    Operation,
    Phase,
    Request,
    Verdict,
    requester_from_user_info,
    review,
)
from policies.shapes import MAX_NESTING
from policies.validate import validate_pod
from testsupport.reviews import plain_pod, training_pod


def pod_request(pod: Any, operation: Operation = Operation.CREATE, old: Any = None) -> Request:
    return Request(POD_KIND, operation, "ml", pod, old)


def judge(pod: Any, policy_text: str = "", phases: Phase = Phase.BOTH, **request: Any) -> Verdict:
    policy = parse_policy_text(policy_text) if policy_text else default_policy()
    return review(pod_request(pod, **request), policy, phases=phases)


def malformed(obj: Any, kind: GroupVersionKind = POD_KIND) -> list[str]:
    with pytest.raises(Malformed) as error:
        review(Request(kind, Operation.CREATE, "ml", obj), default_policy())
    return error.value.problems


# --- what cannot be interpreted is refused, naming the field ----------------------------


def with_spec(**fields: Any) -> dict[str, Any]:
    pod = training_pod()
    pod["spec"].update(fields)
    return pod


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({**training_pod(), "spec": None}, "object.spec: must be a mapping, not null"),
        ({**training_pod(), "metadata": None}, "object.metadata: must be a mapping, not null"),
        ({**training_pod(), "spec": []}, "object.spec: must be a mapping"),
        ({**training_pod(), "metadata": ["x"]}, "object.metadata: must be a mapping"),
        (with_spec(containers={"name": "x"}), "object.spec.containers: must be a list"),
        (with_spec(containers=[None]), "object.spec.containers[0]: must be a mapping"),
        (with_spec(tolerations=[{"key": 5}]), "object.spec.tolerations[0].key: must be a string"),
        (with_spec(nodeSelector=["spot"]), "object.spec.nodeSelector: must be a mapping"),
        (with_spec(terminationGracePeriodSeconds=True), "must be an integer"),
        (with_spec(nodeName=["spot-1"]), "object.spec.nodeName: must be a string"),
        (
            with_spec(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "a", "values": "b"}]}
                            ]
                        }
                    }
                }
            ),
            "nodeSelectorTerms[0].matchExpressions[0].values: must be a list",
        ),
        (
            {**training_pod(), "metadata": {"annotations": {"spotguard.dev/injected": 5}}},
            "object.metadata.annotations[spotguard.dev/injected]: must be a string",
        ),
        (
            {
                **training_pod(),
                "metadata": {"ownerReferences": [{"kind": "DaemonSet", "controller": "yes"}]},
            },
            "object.metadata.ownerReferences[0].controller: must be a boolean",
        ),
        ("a pod", "object: must be a mapping"),
    ],
)
def test_what_the_rules_cannot_read_is_malformed_with_its_path(obj: Any, problem: str) -> None:
    assert any(problem in found for found in malformed(obj)), malformed(obj)


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": [value]}
    return value


@pytest.mark.parametrize("levels", [MAX_NESTING, 5_000, 200_000])
def test_absurd_nesting_is_refused_before_anything_recurses(levels: int) -> None:
    pod = training_pod()
    pod["status"] = deep(levels // 2)  # a field no rule reads: only copying would walk it
    assert malformed(pod) == [f"object: nested deeper than {MAX_NESTING} levels"]


def test_nesting_within_the_bound_is_reviewed() -> None:
    pod = training_pod()
    pod["status"] = deep(MAX_NESTING // 2 - 3)
    verdict = judge(pod)
    assert verdict.mutation is not None and verdict.mutation.patched is not None
    assert verdict.mutation.patched["status"] == pod["status"]


def nested_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


KINDS = {
    "Pod": POD_KIND,
    "Job": GroupVersionKind("batch", "v1", "Job"),
    "Binding": GroupVersionKind("", "v1", "Binding"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("field", ["name", "generateName", "kind"])
def test_a_name_nested_as_deep_as_a_review_body_allows_is_no_exception(
    kind: str, field: str
) -> None:
    """The description quotes names before the shapes are checked; ``str()`` of a list
    1000 levels deep (orjson decodes up to 1024) raised RecursionError there."""
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}}
    (obj if field == "kind" else obj["metadata"])[field] = nested_list(1000)
    assert malformed(obj, KINDS[kind]) == [f"object: nested deeper than {MAX_NESTING} levels"]
    # DELETE is not reviewed, so nothing is shape-checked, but it is still described.
    request = Request(KINDS[kind], Operation.DELETE, "ml", None, obj)
    assert review(request, default_policy()).exemption == "DELETE requests are not reviewed"


def test_a_description_quotes_a_name_no_longer_than_kubernetes_allows() -> None:
    pod = training_pod(name="n" * 1_000_000)
    verdict = judge(pod)
    assert verdict.description == f"pod {'n' * 253}..."


def test_malformed_workloads_and_bindings_name_the_field() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": [], "spec": {}}
    assert malformed(job, GroupVersionKind("batch", "v1", "Job")) == [
        "object.metadata: must be a mapping"
    ]
    annotated = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"annotations": True}}
    assert malformed(annotated, GroupVersionKind("batch", "v1", "Job")) == [
        "object.metadata.annotations: must be a mapping"
    ]  # found by make fuzz: the growth bound read them unchecked
    binding = {"kind": "Binding", "metadata": {"name": "p"}, "target": "node-1"}
    assert malformed(binding, GroupVersionKind("", "v1", "Binding")) == [
        "object.target: must be a mapping"
    ]


@pytest.mark.parametrize(
    ("user_info", "problem"),
    [
        ([], "userInfo: must be a mapping"),
        ({"username": 7}, "userInfo.username: must be a string"),
        ({"username": "a", "groups": "system:nodes"}, "userInfo.groups: must be a list"),
        ({"username": "a", "groups": [1]}, "userInfo.groups[0]: must be a string"),
    ],
)
def test_a_malformed_requester_is_malformed(user_info: Any, problem: str) -> None:
    with pytest.raises(Malformed, match=problem.replace("[", r"\[")):
        requester_from_user_info(user_info)


# --- annotations, strictly and within bounds -------------------------------------------


def annotated(pod: dict[str, Any], **annotations: str) -> dict[str, Any]:
    pod["metadata"]["annotations"] = {f"spotguard.dev/{k.replace('_', '-')}": v
                                      for k, v in annotations.items()}  # fmt: skip
    return pod


@pytest.mark.parametrize(
    "record",
    ["5", "[]", "null", '"x"', '{"injected": 5}', '{"injected": [1, "tolerations"]}',
     "[" * 3000 + "]" * 3000, "{" * 5000, "x" * 300_000],
)  # fmt: skip
def test_any_injected_record_is_tolerated_and_replaced(record: str) -> None:
    verdict = judge(annotated(plain_pod(), injected=record), phases=Phase.MUTATE)
    assert verdict.mutation is not None and verdict.mutation.patched is not None
    written = verdict.mutation.patched["metadata"]["annotations"]["spotguard.dev/injected"]
    kinds = ["nodeAffinity", "tolerations"] if "tolerations" in record else ["nodeAffinity"]
    assert json.loads(written)["injected"] == kinds


def test_a_400_digit_checkpoint_size_is_refused_cleanly() -> None:
    verdict = judge(annotated(training_pod(), checkpoint_size="9" * 400))
    assert verdict.mutation is not None and verdict.mutation.patched is not None  # still injected
    [violation] = verdict.violations
    assert violation.rule is Rule.CHECKPOINT_FITS_NOTICE and violation.mode is Mode.AUDIT
    assert "longer than 64 characters" in violation.problem
    enforce = judge(annotated(training_pod(), checkpoint_size="9" * 400),
                    "rules: {checkpointFitsNotice: {mode: enforce}}")  # fmt: skip
    assert [v.field for v in enforce.denials] == [
        "metadata.annotations[spotguard.dev/checkpoint-size]"
    ]


@pytest.mark.parametrize("size", ["1e12", "2Pi", ".5Gi", "16Gi"])
def test_checkpoint_sizes_in_any_kubernetes_notation_are_sizes(size: str) -> None:
    verdict = judge(annotated(training_pod(), checkpoint_size=size))
    assert all("not a size" not in v.problem for v in verdict.violations)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("[" * 3000, "looks like JSON but"),
        ('["python", 5]', "not a non-empty list of non-empty strings"),
        ("[]", "not a non-empty list"),
        ('{"cmd": "save"}', "not a non-empty list"),
        ("   ", "is empty"),
        ("save\x00now", "NUL"),
        ("x" * 5000, "longer than 4096 bytes"),
    ],
)
def test_a_hook_command_that_is_neither_a_json_list_nor_a_command_is_a_violation(
    command: str, problem: str
) -> None:
    pod = annotated(training_pod(), prestop_command=command)
    denied = judge(pod)
    [violation] = denied.denials
    assert violation.rule is Rule.INJECT
    assert violation.field == "metadata.annotations[spotguard.dev/prestop-command]"
    assert problem in violation.problem and "JSON list of strings" in violation.fix
    # Mutation falls back to the policy's hook and says so.
    assert denied.mutation is not None and denied.mutation.patched is not None
    hook = denied.mutation.patched["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert hook["exec"]["command"] == list(default_policy().inject.pre_stop.command)
    assert any("prestop-command" in warning for warning in denied.mutation.warnings)
    audited = judge(pod, "rules: {inject: {mode: audit}}")
    assert audited.allowed and [v.mode for v in audited.violations] == [Mode.AUDIT]


def test_valid_hook_commands_are_followed() -> None:
    for command, argv in (('["python", "/app/save.py"]', ["python", "/app/save.py"]),
                          ("kill -USR1 1", ["/bin/sh", "-c", "kill -USR1 1"])):  # fmt: skip
        verdict = judge(annotated(training_pod(), prestop_command=command))
        assert verdict.allowed and verdict.mutation and verdict.mutation.patched
        hook = verdict.mutation.patched["spec"]["containers"][0]["lifecycle"]["preStop"]
        assert hook["exec"]["command"] == argv


def test_checkpoint_containers_must_name_containers_of_the_pod() -> None:
    pod = annotated(training_pod(), checkpoint_containers="trainr")
    verdict = judge(pod)
    [violation] = verdict.denials
    assert violation.field == "metadata.annotations[spotguard.dev/checkpoint-containers]"
    assert "names trainr, which is not a container of the pod (its containers: trainer)" in (
        violation.problem
    )
    assert "(trainer)" in violation.fix
    # The hook still goes where the policy says, never nowhere.
    assert verdict.mutation is not None and verdict.mutation.patched is not None
    assert "lifecycle" in verdict.mutation.patched["spec"]["containers"][0]
    assert judge(annotated(training_pod(), checkpoint_containers=" , ")).denials[0].problem == (
        "names no container"
    )


@pytest.mark.parametrize(
    "listed",
    ["x" * 1_000_000, ",".join(f"c{i}" for i in range(100_000))],
    ids=["one 1 MB name", "100k names"],
)
def test_checkpoint_containers_messages_quote_a_bounded_part_of_the_annotation(
    listed: str,
) -> None:
    pod = annotated(training_pod(), checkpoint_containers=listed)
    pod["spec"]["containers"] += [{"name": f"side-{i}", "image": "x"} for i in range(50)]
    verdict = judge(pod)
    [violation] = verdict.denials
    assert len(violation.message()) < 2000 and len(violation.brief) < 200
    assert "and 41 more)" in violation.fix
    assert verdict.mutation is not None
    assert all(len(warning) < 2000 for warning in verdict.mutation.warnings)
    if "," in listed:
        assert "names c0, c1, c10, c100, c1000, " in violation.problem
        assert "and 99990 more, which are not containers" in violation.problem


def test_steering_annotations_of_pods_kept_off_spot_are_not_judged() -> None:
    pod = annotated(plain_pod(), checkpoint_containers="nothing", prestop_command="[")
    assert judge(pod).violations == ()


# --- honest users -------------------------------------------------------------------------


def job(grace: int | None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"spotguard.dev/fault-tolerant": "true"}},
        "spec": {"containers": [{"name": "trainer"}]},
    }
    if grace is not None:
        template["spec"]["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
            "spec": {"template": template}}  # fmt: skip


def test_the_api_default_grace_period_in_templates_counts_as_unset() -> None:
    policy = parse_policy_text("rules: {gracePeriodFitsNotice: {mode: enforce}}")
    for grace, allowed in ((30, True), (None, True), (60, False)):
        obj = job(grace)
        request = Request(GroupVersionKind.of(obj), Operation.CREATE, "ml", obj)
        verdict = review(request, policy, phases=Phase.VALIDATE)
        assert verdict.allowed is allowed, grace
        assert bool(verdict.violations) is not allowed, verdict.violations
    audit = review(Request(GroupVersionKind("batch", "v1", "Job"), Operation.CREATE, "ml", job(30)),
                   default_policy(), phases=Phase.VALIDATE)  # fmt: skip
    assert audit.validation_warnings == ()  # no spurious would-reject either


def test_a_null_grace_period_is_the_api_default_for_the_hook_budget() -> None:
    """Found by make fuzz: null (as absent) with grace periods left alone crashed the hook's
    timeout arithmetic, and a crash is an admission with failurePolicy Ignore."""
    pod = with_spec(terminationGracePeriodSeconds=None)
    mutation = judge(pod, "inject: {terminationGracePeriod: false}").mutation
    assert mutation is not None and mutation.patched is not None
    (container,) = mutation.patched["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["SPOTGUARD_PRESTOP_TIMEOUT_SECONDS"] == "25"  # the API's 30 s less the reserve


def test_pods_kept_off_spot_get_no_spot_window_warnings() -> None:
    for pod in (plain_pod(), training_pod()):
        pod["spec"]["terminationGracePeriodSeconds"] = 600
        annotated(pod, checkpoint_size="1Ti")
        if "labels" in pod["metadata"]:
            pod["metadata"]["labels"]["spotguard.dev/latency-critical"] = "true"  # poor
        verdict = judge(pod)
        assert verdict.violations == () and verdict.validation_warnings == (), verdict
    going = training_pod()
    going["spec"]["terminationGracePeriodSeconds"] = 600
    assert {v.rule for v in judge(going).violations} == {Rule.GRACE_PERIOD_FITS_NOTICE}


def test_updates_are_judged_on_what_they_change() -> None:
    admitted_before = plain_pod()
    admitted_before["spec"]["nodeSelector"] = {"eks.amazonaws.com/capacityType": "SPOT"}
    relabelled = json.loads(json.dumps(admitted_before))
    relabelled["metadata"]["labels"] = {"team": "web"}
    assert judge(relabelled, operation=Operation.UPDATE, old=admitted_before).violations == ()
    tolerating = json.loads(json.dumps(admitted_before))
    tolerating["spec"]["tolerations"] = [{"key": "spot", "operator": "Exists"}]
    verdict = judge(tolerating, operation=Operation.UPDATE, old=admitted_before)
    assert [v.field for v in verdict.denials] == ["spec.tolerations[0]"]  # not nodeSelector


class CountedToleration(dict[str, Any]):
    """A toleration that counts how often it is compared with another."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountedToleration.comparisons += 1
        return dict.__eq__(self, other)

    __hash__ = None


def test_an_update_finds_its_old_tolerations_without_comparing_each_pair() -> None:
    """Each added toleration was looked up by scanning every old one: quadratic, seconds
    for the thousands of tolerations a pod may list."""
    count = 2_000
    old = plain_pod()
    old["spec"]["tolerations"] = [
        CountedToleration(key="spot", operator="Equal", value="true", tolerationSeconds=i)
        for i in range(count)
    ]
    new = plain_pod()
    new["spec"]["tolerations"] = [dict(t) for t in old["spec"]["tolerations"]] + [
        {"key": "spot", "operator": "Exists"}
    ]
    assert [v.field for v in judge(new, operation=Operation.UPDATE, old=json_of(old)).denials] == [
        f"spec.tolerations[{count}]"
    ]
    # The rules themselves, as review() calls them: the shapes admit plain dicts only.
    CountedToleration.comparisons = 0
    decision = validate_pod(new, PodContext("ml", "UPDATE"), default_policy(), old)
    assert [v.field for v in decision.violations] == [f"spec.tolerations[{count}]"]
    assert CountedToleration.comparisons <= 2 * count


def json_of(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- growth bounds ------------------------------------------------------------------------


def test_the_record_is_dropped_when_annotations_would_pass_the_api_limit() -> None:
    pod = plain_pod()
    pod["metadata"]["annotations"] = {"big": "x" * (TOTAL_ANNOTATION_BYTES - 40)}
    verdict = judge(pod, phases=Phase.MUTATE)
    assert verdict.mutation is not None and verdict.mutation.patched is not None
    assert annotation_bytes(verdict.mutation.patched) <= TOTAL_ANNOTATION_BYTES
    assert "spotguard.dev/injected" not in verdict.mutation.patched["metadata"]["annotations"]
    assert "nodeAffinity" in str(verdict.mutation.patched["spec"])  # kept off spot all the same
    assert any("not injected: spotguard's injected record" in w for w in verdict.mutation.warnings)


def big_pod(containers: int, padding: int) -> dict[str, Any]:
    pod = training_pod()
    pod["spec"]["containers"] = [
        {"name": f"c{i}", "image": "x" * padding} for i in range(containers)
    ]
    return pod


def test_the_checkpoint_hook_is_dropped_when_the_object_would_pass_the_etcd_limit() -> None:
    pod = big_pod(200, 7_600)
    assert object_bytes(pod) < MAX_OBJECT_BYTES
    verdict = judge(pod, phases=Phase.MUTATE)
    assert verdict.mutation is not None and verdict.mutation.patched is not None
    patched = verdict.mutation.patched
    assert object_bytes(patched) <= MAX_OBJECT_BYTES
    assert "lifecycle" not in patched["spec"]["containers"][0]
    assert patched["spec"]["tolerations"]  # placement still injected
    assert any("the checkpoint hook" in warning for warning in verdict.mutation.warnings)


def test_nothing_is_injected_when_not_even_placement_fits() -> None:
    pod = big_pod(1, MAX_OBJECT_BYTES - 300)
    verdict = judge(pod, phases=Phase.MUTATE)
    assert verdict.mutation is not None and verdict.mutation.patched is None
    assert verdict.mutation.warnings[-1].endswith("nothing injected")


# --- phases and requests ------------------------------------------------------------------


def test_both_phases_judge_the_object_as_mutation_leaves_it() -> None:
    pod = training_pod()
    both = judge(pod, "spotNodes: {presets: [gke]}")
    assert both.mutation is not None and both.mutation.patched is not None
    assert both.mutation.patched["spec"]["terminationGracePeriodSeconds"] == 15
    assert both.allowed and both.violations == ()
    only_validate = judge(pod, "spotNodes: {presets: [gke]}", phases=Phase.VALIDATE)
    assert only_validate.mutation is None and only_validate.validation is not None


def test_requests_for_manifests_take_kind_and_namespace_from_the_object() -> None:
    pod = plain_pod()
    assert Request.for_object(pod).namespace == "ml"
    assert Request.for_object(pod, namespace="web").namespace == "web"
    del pod["metadata"]["namespace"]
    assert Request.for_object(pod).namespace == "default"
    binding = Request.for_object({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}})
    assert (binding.sub_resource, binding.name) == ("binding", "p")


def test_bindings_judge_the_stored_pod_from_the_cluster_facts() -> None:
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-0"},
               "target": {"name": "spot-1"}}  # fmt: skip
    request = Request.for_object(binding, namespace="ml")
    facts = ClusterFacts.from_data(
        {"spot-1": {"eks.amazonaws.com/capacityType": "SPOT"}}, pods={"ml/web-0": plain_pod()}
    )
    assert [v.rule for v in review(request, default_policy(), facts).denials] == [
        Rule.SPOT_NODE_BINDING
    ]
    unreadable = ClusterFacts.from_data(pods={"ml/web-0": {"spec": []}})
    verdict = review(request, default_policy(), unreadable)
    assert verdict.allowed and "unreadable" in verdict.validation_warnings[0]
