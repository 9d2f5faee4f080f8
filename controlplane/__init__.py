"""A real Kubernetes control plane, built from Go modules and run on loopback.

``controlplane.build`` compiles etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl and kwok at the versions pinned in ``go.mod`` into a
cache directory outside the repository; ``controlplane.harness`` starts them
as local processes for end-to-end tests and the demo.
"""

from __future__ import annotations
