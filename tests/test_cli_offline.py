"""``spotguard validate`` / ``mutate`` / ``policy check`` as CI tools: every kind the webhooks
review, multi-document files, lists, directories, stdin, machine output, exit statuses,
and one-line errors. Run in-process through ``main`` (the entry point's own code) where
no stdin is involved, as a subprocess where it is."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testsupport.server import REPO
from webhook.cli import main

MIXED = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: spot, operator: Equal, value: "true", effect: NoSchedule}]
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: bert}
spec:
  pytorchReplicaSpecs:
    Worker:
      template:
        metadata: {labels: {spotguard.dev/fault-tolerant: "true"}}
        spec: {containers: [{name: pytorch, image: trainer}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    return path


def test_every_document_gets_a_line_like_kubectl(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    code, out, err = run(capsys, "validate", "-f", str(mixed))
    assert code == 1
    results = [line.split(": ", 2)[:2] for line in lines(out)]
    assert results == [
        [f"deployment.apps/web ({mixed}#1)", "denied"],
        [f"service/web ({mixed}#2)", "skipped"],
        [f"pytorchjob.kubeflow.org/bert ({mixed}#3)", "allowed"],
        [f"configmap/settings ({mixed}#4)", "skipped"],
    ]
    assert (
        "denied: spotguard denied Deployment web: [spot-requires-fault-tolerance] "
        "spec.template.spec.tolerations[0]: " in out
    )
    assert "skipped: spotguard does not review v1 Service" in out
    assert err.strip() == "spotguard: 1 denied, 2 skipped, 1 allowed"


def test_json_output_is_one_record_per_object(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    code, out, _ = run(capsys, "validate", "-f", str(mixed), "-o", "json", "-n", "team-a")
    assert code == 1
    records = [json.loads(line) for line in lines(out)]
    assert [(r["resource"], r["namespace"], r["result"]) for r in records] == [
        ("deployment.apps/web", "team-a", "denied"),
        ("service/web", "team-a", "skipped"),
        ("pytorchjob.kubeflow.org/bert", "team-a", "allowed"),
        ("configmap/settings", "team-a", "skipped"),
    ]
    (violation,) = records[0]["violations"]
    assert violation["rule"] == "spot-requires-fault-tolerance"
    assert violation["field"] == "spec.template.spec.tolerations[0]"
    assert records[0]["message"].startswith("spotguard denied Deployment web: ")


def test_yaml_output_and_mutate_records_carry_the_patch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pod = REPO / "examples" / "training-pod.yaml"
    code, out, _ = run(capsys, "mutate", "-f", str(pod), "-o", "yaml")
    assert code == 0
    (record,) = [d for d in yaml.safe_load_all(out) if d]
    assert record["result"] == "allowed"
    assert {c["kind"] for c in record["changes"]} >= {"tolerations", "preStop"}
    assert any(op["path"] == "/spec/tolerations" for op in record["patch"])
    assert record["object"]["spec"]["terminationGracePeriodSeconds"] == 15


def test_lists_nested_lists_and_typed_lists(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c"}]}}
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {**pod, "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "PodList", "items": [{**pod, "metadata": {"name": "b"}}]},
        ],
    }
    path = tmp_path / "pods.json"
    path.write_text(json.dumps(listing))
    code, out, _ = run(capsys, "validate", "-f", str(path))
    assert code == 0
    assert [line.split(": ")[0] for line in lines(out)] == [
        f"pod/a ({path}#1.items[0])",
        f"pod/b ({path}#1.items[1].items[0])",
    ]


def test_directories_several_files_and_recursion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mixed: Path
) -> None:
    nested = tmp_path / "team" / "apps"
    nested.mkdir(parents=True)
    (nested / "pod.yml").write_text((REPO / "examples" / "web-on-spot.yaml").read_text())
    (tmp_path / "README.md").write_text("not a manifest")
    _, flat, _ = run(capsys, "validate", "-f", str(tmp_path))
    assert len(lines(flat)) == 4  # mixed.yaml only: no -R, README ignored
    code, deep, _ = run(capsys, "validate", "-R", "-f", str(tmp_path), "-f", str(mixed))
    assert code == 1
    assert len(lines(deep)) == 9
    assert f"pod/checkout-api ({nested / 'pod.yml'}#1): denied" in deep
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "validate", "-f", str(empty))
    assert (code, err) == (2, f"spotguard: {empty}: no .yaml, .yml or .json files (use -R to "
                                "read subdirectories)\n")  # fmt: skip


def spotguard(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], input=stdin, capture_output=True, text=True,
        cwd=REPO, timeout=60, check=False, env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip


@pytest.mark.processes
def test_stdin_mixed_with_files_as_kubectl_get_pipes_it() -> None:
    stored_pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "namespace": "shop"},
                "spec": {"containers": [{"name": "web"}], "tolerations": tolerations},
            }
            for i, tolerations in enumerate([[], [{"key": "spot", "operator": "Exists"}]])
        ],
    }
    result = spotguard(
        "validate", "-f", "-", "-f", "examples/training-job.yaml", stdin=yaml.safe_dump(stored_pods)
    )
    assert result.returncode == 1, result.stderr
    assert [line.split(": ")[:2] for line in lines(result.stdout)] == [
        ["pod/web-0 ((stdin)#1.items[0])", "allowed (spotguard injects nodeAffinity)"],
        ["pod/web-1 ((stdin)#1.items[1])", "denied"],
        ["job.batch/resnet-train (examples/training-job.yaml#1)", "allowed"],
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": '
         '{"containers": "oops"}}', "spec.containers: must be a list"),
        ('{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": '
         '{"template": {"spec": {"tolerations": {"key": "spot"}}}}}',
         "spec.template.spec.tolerations: must be a list"),
        ("[1, 2]", "not a Kubernetes object: apiVersion and kind are required"),
        ('{"apiVersion": 1, "kind": ["Pod"], "metadata": {"name": "p"}}',
         "not a Kubernetes object: apiVersion and kind are strings"),
        ('{"apiVersion": "v1", "kind": "Pod", "metadata": 5, "spec": {"containers": []}}',
         "metadata: must be a mapping"),
        ('{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["a"], "spec": {}}',
         "metadata: must be a mapping"),
    ],
)  # fmt: skip
def test_malformed_objects_are_refused_not_allowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, document: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(document)
    code, out, _ = run(capsys, "validate", "-f", str(path))
    assert code == 1
    assert out.strip().endswith(f"#1): invalid: {problem}")


def _alias_bomb(levels: int) -> str:
    """A Pod whose annotations YAML aliases multiply ninefold per level ("billion laughs")."""
    text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n"
    text += '    l0: &l0 "lol"\n'
    for level in range(1, levels + 1):
        text += f"    l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]\n"
    return text + "spec: {containers: [{name: c, image: i}]}\n"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (_alias_bomb(7), "#1: YAML aliases expand it to "),
        ("apiVersion: v1\nkind: Pod\nmetadata: &m {name: p, labels: {self: *m}}\n",
         "#1: a YAML alias refers to the value that contains it"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {a: !!binary aGk=}}\n",
         "#1: a !!binary value; manifests hold JSON values"),
        ("apiVersion: v1\nkind: List\nitems: !!set {a, b}\n", "#1: a !!set value"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
         ": not valid YAML at line 4, column 1: "),
    ],
    ids=["alias bomb", "recursive alias", "binary", "set", "unreadable, with its place"],
)  # fmt: skip
def test_yaml_that_json_cannot_hold_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, document: str, problem: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    code, out, err = run(capsys, "mutate", "-o", "json", "-f", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"spotguard: {path}{problem}"), err
    assert err.count("\n") == 1


def test_a_few_aliases_and_unquoted_times_read_as_kubectl_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: p, creationTimestamp: 2020-01-01T00:00:00Z, labels: &l {app: a},"
        " annotations: {day: 2020-01-02}}\n"
        "spec: {containers: [{name: c, image: i, env: [{name: L, value: x}]}],"
        " nodeSelector: *l}\n"
    )
    code, out, _ = run(capsys, "mutate", "-o", "json", "-f", str(path))
    assert code == 0
    admitted = json.loads(out)["object"]
    assert admitted["metadata"]["creationTimestamp"] == "2020-01-01T00:00:00Z"
    assert admitted["metadata"]["annotations"]["day"] == "2020-01-02"
    assert admitted["spec"]["nodeSelector"] == {"app": "a"}


def test_namespace_must_agree_with_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {}\n")
    code, out, _ = run(capsys, "validate", "-f", str(path), "-n", "b")
    assert code == 1
    assert "invalid: its namespace 'a' does not match --namespace 'b'" in out
    _, excluded, _ = run(capsys, "validate", "-f", str(path), "-n", "a", "--policy", str(
        _policy(tmp_path, "namespaces: {exclude: [a]}\n")))  # fmt: skip
    assert "skipped: namespace a is not reviewed" in excluded


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_mutate_prints_every_object_admitted_in_order(
    capsys: pytest.CaptureFixture[str], mixed: Path
) -> None:
    code, out, _ = run(capsys, "mutate", "-f", str(REPO / "examples" / "training-pod.yaml"),
                       "-f", str(mixed))  # fmt: skip
    assert code == 1  # the Deployment would be denied by the validating webhook
    documents: list[dict[str, Any]] = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in documents] == ["Pod", "Deployment", "Service", "PyTorchJob",
                                              "ConfigMap"]  # fmt: skip
    assert "spotguard.dev/injected" in documents[0]["metadata"]["annotations"]
    assert documents[2] == yaml.safe_load(MIXED.split("---\n")[1])


def policy_configmap(text: str, name: str = "spotguard-policy") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "spotguard-system",
            "labels": {"spotguard.dev/policy": "true"},
        },
        "data": {"policy.yaml": text},
    }


def test_the_policy_configmap_is_reviewed_like_the_policy_webhook_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "policy-cm.yaml"
    path.write_text(yaml.safe_dump(policy_configmap("spotNodes: {presets: [azure]}\n")))
    code, out, _ = run(capsys, "validate", "-f", str(path))
    assert code == 1
    refused = "denied: spotguard refused policy ConfigMap spotguard-policy: spotNodes.presets[0]"
    assert refused in out
    path.write_text(yaml.safe_dump(policy_configmap("spotNodes: {presets: [aks]}\n")))
    code, out, _ = run(capsys, "validate", "-f", str(path))
    assert (code, out) == (0, f"configmap/spotguard-policy ({path}#1): allowed\n")
    # The base's ConfigMap alone names no provider: refused, as its kustomization refuses it.
    code, out, _ = run(capsys, "validate", "-f", str(REPO / "deploy" / "base"))
    assert code == 1
    assert "spotguard refused policy ConfigMap spotguard-policy: spotNodes: name at least" in out


def test_policy_check_picks_the_policy_configmap_among_manifests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A rendered install: the labelled ConfigMap is the policy, other objects are not."""
    provider = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                "data": {"presets": "eks"}}  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spotguard"}}
    rendered = tmp_path / "install.yaml"
    rendered.write_text(yaml.safe_dump_all(
        [service, provider, policy_configmap("mode: audit\nspotNodes: {presets: [gke]}\n")]
    ))  # fmt: skip
    code, out, _ = run(capsys, "policy", "check", str(rendered))
    assert code == 0
    assert out.startswith(f"{rendered}: configmap/spotguard-policy: policy OK: revision ")
    assert "mode audit" in out
    rendered.write_text(yaml.safe_dump_all([service, provider]))
    code, _, err = run(capsys, "policy", "check", str(rendered))
    assert code == 2
    assert err == (f"spotguard: {rendered}: no policy ConfigMap (a ConfigMap with data key "
                   "'policy.yaml'; name another key with --policy-key)\n")  # fmt: skip


@pytest.mark.parametrize(
    ("broken", "code", "expected"),
    [
        ({"data": 5}, 2, "configmap/spotguard-policy: no data key 'policy.yaml'"),
        ({"metadata": 7}, 0, "configmap/(unnamed): policy OK: "),
        ({"metadata": {"name": "p", "labels": ["x"]}, "data": 5}, 2, "no policy ConfigMap"),
    ],
    ids=["data not a mapping", "metadata not a mapping", "labels and data not mappings"],
)
def test_policy_check_reads_a_malformed_configmap_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, broken: dict[str, Any], code: int,
    expected: str,
) -> None:  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spotguard"}}
    rendered = tmp_path / "install.yaml"
    rendered.write_text(yaml.safe_dump_all([service, policy_configmap("mode: audit\n") | broken]))
    status, out, err = run(capsys, "policy", "check", str(rendered))
    assert status == code, err
    assert (out if code == 0 else err).startswith(
        f"{'' if code == 0 else 'spotguard: '}{rendered}: {expected}"
    )
    assert (out + err).count("\n") == 1


def test_policy_options_take_a_configmap_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.yaml"
    audit.write_text(yaml.safe_dump(policy_configmap("mode: audit\n")))
    code, out, err = run(capsys, "validate", "-f", str(REPO / "examples" / "web-on-spot.yaml"),
                         "--policy", str(audit))  # fmt: skip
    assert code == 0
    assert ": allowed" in out
    assert "spotguard audit [spot-requires-fault-tolerance]" in err


USER_ERRORS = {
    "bad --bind": (["serve", "--bind", "8443"], "argument --bind: '8443' is not ADDRESS:PORT"),
    "address taken": (["serve", "--bind", "127.0.0.1:{busy}"], "cannot listen on 127.0.0.1:"),
    "bad --metrics-bind port": (
        ["serve", "--metrics-bind", "0.0.0.0:99999"],
        "argument --metrics-bind: '0.0.0.0:99999' is not ADDRESS:PORT",
    ),
    "bad --ip": (["certs", "generate", "--out", "x", "--ip", "10.0.0.300"],
                 "argument --ip: '10.0.0.300' is not an IP address"),
    "missing manifest": (["validate", "-f", "nope.yaml"], "nope.yaml: no such file or directory"),
    "missing policy": (["validate", "-f", "examples", "--policy", "nope.yaml"],
                       "nope.yaml: no such file"),
    "missing serve policy": (["serve", "--policy", "x.yaml"], "--policy x.yaml: no such file"),
    "missing kubeconfig": (["audit", "--kubeconfig", "nope"], "--kubeconfig nope: no such file"),
    "no cluster (audit)": (["audit"], "no cluster: "),
    "no cluster (certs)": (["certs", "ensure"], "no cluster: "),
    "no cluster (serve)": (["serve", "--policy-configmap", "a/b"], "no cluster: "),
    "cluster down": (
        ["audit", "--kubeconfig", "{dead}", "--policy", "policies/default_policy.yaml"],
        "cannot reach the Kubernetes API: ",
    ),
    "a worker class (gone)": (["serve", "--worker-class", "sync"],
                              "unrecognized arguments: --worker-class sync"),
    "bad --max-connections": (["serve", "--max-connections", "many"],
                              "argument --max-connections: invalid int value: 'many'"),
    "unknown log level": (["serve", "--log-level", "loud"], "argument --log-level: invalid choice"),
    "bad audit interval": (["serve", "--audit-interval", "0.1"], "argument --audit-interval"),
    "bad policy": (["policy", "check", "tests/e2e/manifests/job-on-spot.yaml"],
                   "invalid policy: apiVersion: must be spotguard.dev/v1alpha1; kind: must be "),
    "no policy among manifests": (["policy", "check", "tests/e2e/manifests/mixed-kinds.yaml"],
                                  "mixed-kinds.yaml: no policy ConfigMap"),
    "unknown command": (["lint"], "argument COMMAND: invalid choice: 'lint'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(USER_ERRORS), ids=str)
@pytest.mark.processes
def test_user_errors_are_one_line_with_the_problem(case: str, tmp_path: Path) -> None:
    args, expected = USER_ERRORS[case]
    dead = tmp_path / "dead.kubeconfig"  # a cluster that is not there
    dead.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    busy = socket.socket()  # a port someone else listens on
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    args = [arg.replace("{dead}", str(dead)).replace("{busy}", port) for arg in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "none"))  # no cluster here
    result = subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False, env=env,
    )  # fmt: skip
    busy.close()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
