"""Who is who on the local control plane: each component authenticates as itself.

kube-apiserver reads static bearer tokens (``--token-auth-file``); each identity gets a
kubeconfig of its own. The admin (tests, kubectl, kwok) is in ``system:masters``; the
controller-manager and the scheduler use the user names the API server's bootstrap RBAC
binds (``system:kube-controller-manager``, ``system:kube-scheduler``), and the
controller-manager runs each controller with its own service account
(``--use-service-account-credentials``), as kubeadm and the managed clouds do. So a
DaemonSet's pods are created by ``system:serviceaccount:kube-system:daemon-set-controller``
here as in a real cluster, and the admin is not mistaken for a controller.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USER = "spotguard-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"


@dataclass(frozen=True)
class Identity:
    """A user the API server knows by a bearer token."""

    user: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(24))

    def kubeconfig(self, server: str, ca_file: Path) -> str:
        """A kubeconfig that reaches ``server`` as this user."""
        return f"""\
apiVersion: v1
kind: Config
clusters:
- name: spotguard
  cluster:
    server: {server}
    certificate-authority: {ca_file}
users:
- name: {self.user}
  user:
    token: {self.token}
contexts:
- name: spotguard
  context:
    cluster: spotguard
    user: {self.user}
current-context: spotguard
"""


@dataclass(frozen=True)
class Identities:
    admin: Identity = field(default_factory=lambda: Identity(ADMIN_USER, ("system:masters",)))
    controller_manager: Identity = field(default_factory=lambda: Identity(CONTROLLER_MANAGER_USER))
    scheduler: Identity = field(default_factory=lambda: Identity(SCHEDULER_USER))

    def all(self) -> tuple[Identity, ...]:
        return (self.admin, self.controller_manager, self.scheduler)

    def write_token_file(self, path: Path) -> Path:
        """The API server's ``--token-auth-file``: token,user,uid,"groups" (mode 0600)."""
        lines = []
        for who in self.all():
            groups = f',"{",".join(who.groups)}"' if who.groups else ""
            lines.append(f"{who.token},{who.user},{who.user}{groups}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def write_kubeconfig(self, who: Identity, path: Path, server: str, ca_file: Path) -> Path:
        """``who``'s kubeconfig at ``path`` (mode 0600)."""
        path.write_text(who.kubeconfig(server, ca_file), encoding="utf-8")
        path.chmod(0o600)
        return path
