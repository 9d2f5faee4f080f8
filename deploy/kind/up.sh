#!/usr/bin/env bash
# One command from a clone to spotguard running in a local kind cluster, with the demo:
#
#   deploy/kind/up.sh [KUSTOMIZATION]     # default deploy/kind; e.g. deploy/overlays/aks
#
# Creates the kind cluster "spotguard" from deploy/kind/cluster.yaml (kept if it already
# exists), builds the image spotguard:<version> (the tag the manifests use), loads it into
# the nodes, applies the kustomization, waits for the certificates and the Deployment,
# then applies the examples in namespace spotguard-demo and prints which node each pod
# landed on. Run it again at any time (it rebuilds and reloads the image and restarts the
# Deployment). Needs docker (a running engine), kind and kubectl. deploy/kind/down.sh
# deletes the cluster.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${SPOTGUARD_KIND_CLUSTER:-spotguard}
context=kind-$cluster
target=${1:-deploy/kind}
system_ns=spotguard-system
demo_ns=spotguard-demo

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "$context" "$@"; }

command -v docker >/dev/null 2>&1 ||
    die "docker not found: kind runs each Kubernetes node as a Docker container; install Docker first"
if ! docker_error=$(docker info 2>&1 >/dev/null); then
    die "no Docker engine reachable (docker info: $(printf '%s\n' "$docker_error" | grep -v '^\s*$' | tail -n 1)); start Docker and retry"
fi
command -v kind >/dev/null 2>&1 ||
    die "kind not found: install kind (see the kind project's Quick Start), then retry"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found: install kubectl, then retry"
cd "$repo"
[[ -f "$target/kustomization.yaml" ]] || die "$target: no kustomization.yaml there"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[[ -n "$version" ]] || die "pyproject.toml: no version"
image=spotguard:$version # deploy/base tags the image with this version

say "kind cluster $cluster"
clusters=$(kind get clusters 2>/dev/null || true)
if grep -qx "$cluster" <<<"$clusters"; then
    echo "exists; keeping it"
else
    kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml --wait 180s
fi
k get nodes -L node.kubernetes.io/lifecycle,eks.amazonaws.com/capacityType,kubernetes.azure.com/scalesetpriority

say "image $image"
docker build --tag "$image" .
kind load docker-image "$image" --name "$cluster"

manifests=$(kubectl kustomize "$target")
if grep -q '^kind: Certificate$' <<<"$manifests"; then
    k get crd certificates.cert-manager.io >/dev/null 2>&1 ||
        die "$target uses cert-manager, which is not installed in $cluster: install it first"
fi

say "kubectl apply -k $target"
existed=$(k -n "$system_ns" get deployment spotguard -o name 2>/dev/null || true)
k apply -k "$target"

say "certificates"
if k -n "$system_ns" get job spotguard-certs >/dev/null 2>&1; then
    if ! k -n "$system_ns" wait --for=condition=complete job/spotguard-certs --timeout=180s; then
        k -n "$system_ns" logs job/spotguard-certs --tail=50 || true
        die "job spotguard-certs did not complete"
    fi
    k -n "$system_ns" logs job/spotguard-certs --tail=20 || true
else
    k -n "$system_ns" wait --for=condition=Ready certificate/spotguard-serving --timeout=180s
fi

say "deployment spotguard"
if [[ -n "$existed" ]]; then
    # A re-run rebuilt the image under the same tag: restart so the pods use it.
    k -n "$system_ns" rollout restart deployment/spotguard
fi
if ! k -n "$system_ns" rollout status deployment/spotguard --timeout=180s; then
    k -n "$system_ns" describe pods -l app.kubernetes.io/name=spotguard | tail -n 40
    die "deployment spotguard did not become ready"
fi
k -n "$system_ns" get pods -l app.kubernetes.io/component=webhook -o wide

say "demo namespace $demo_ns"
k create namespace "$demo_ns" --dry-run=client -o yaml | k apply -f -
# The API server may take a moment to call a freshly registered webhook: wait until a
# server-side dry run of a fault-tolerant pod comes back mutated.
canary='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"spotguard-canary","labels":{"spotguard.dev/fault-tolerant":"true"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}'
for attempt in $(seq 1 60); do
    injected=$(printf '%s' "$canary" |
        k -n "$demo_ns" create --dry-run=server -f - -o jsonpath='{.metadata.annotations.spotguard\.dev/injected}' 2>/dev/null || true)
    [[ -n "$injected" ]] && break
    [[ $attempt -eq 60 ]] && die "the API server does not call spotguard (no injection after 60 s)"
    sleep 1
done
echo "webhook live: $injected"

say "examples/training-job.yaml (fault-tolerant: mutated, prefers spot)"
k -n "$demo_ns" apply -f examples/training-job.yaml

say "examples/web-on-spot.yaml (tolerates spot but is not fault-tolerant: rejected)"
if output=$(k -n "$demo_ns" apply -f examples/web-on-spot.yaml 2>&1); then
    printf '%s\n' "$output"
    policy=$(k -n "$system_ns" get configmap spotguard-policy -o jsonpath='{.data.policy\.yaml}')
    grep -Eq '^mode:[[:space:]]*audit' <<<"$policy" ||
        die "web-on-spot was admitted, but spotguard should have rejected it"
    echo "=> admitted with a warning: the policy is in audit mode"
else
    printf '%s\n' "$output"
    grep -q 'denied the request' <<<"$output" || die "web-on-spot failed, but not because of spotguard"
    echo "=> rejected, as expected"
fi

say "examples/web-deployment.yaml (an ordinary service: kept off spot)"
k -n "$demo_ns" apply -f examples/web-deployment.yaml

say "where the pods ran"
pods() { k -n "$demo_ns" get pods -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{.spec.nodeName}{"\n"}{end}'; }
for _ in $(seq 1 60); do # until every pod is bound to a node, or 60 s
    unbound=$(pods | grep -c '|$' || true)
    [[ $unbound -eq 0 ]] && break
    sleep 1
done
declare -A capacity=()
while IFS='|' read -r node eks karpenter aks lifecycle; do
    capacity[$node]=on-demand
    if [[ $eks == SPOT || $karpenter == spot || $aks == spot || $lifecycle == spot ]]; then
        capacity[$node]=SPOT
    fi
done < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{.metadata.labels.eks\.amazonaws\.com/capacityType}{"|"}{.metadata.labels.karpenter\.sh/capacity-type}{"|"}{.metadata.labels.kubernetes\.azure\.com/scalesetpriority}{"|"}{.metadata.labels.node\.kubernetes\.io/lifecycle}{"\n"}{end}')
while IFS='|' read -r pod node; do
    if [[ -n $node ]]; then
        printf '  %-36s %-28s %s\n' "$pod" "$node" "${capacity[$node]:-?}"
    else
        printf '  %-36s %s\n' "$pod" "(not scheduled yet)"
    fi
done < <(pods)

cat <<MSG

spotguard runs in $system_ns; the demo in $demo_ns (kubectl --context $context -n $demo_ns get pods -o wide).
The training pods' containers are placeholders (their script is not in the image): what
matters is where they were scheduled. Clean up: kubectl --context $context delete namespace $demo_ns
Delete the cluster: deploy/kind/down.sh
MSG
