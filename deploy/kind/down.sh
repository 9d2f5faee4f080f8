#!/usr/bin/env bash
# Delete the kind cluster made by deploy/kind/up.sh (images and everything in it go too).
set -euo pipefail
cluster=${SPOTGUARD_KIND_CLUSTER:-spotguard}
command -v kind >/dev/null 2>&1 || { echo "down.sh: kind not found" >&2; exit 1; }
kind delete cluster --name "$cluster"
