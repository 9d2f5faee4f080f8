"""The Helm install demo (``make demo-helm``): install, audit, enforce, uninstall.

On a local control plane (built from Go modules, like ``make demo``'s) it runs what a
platform team runs: ``helm install`` of deploy/helm/spotguard for an EKS cluster in audit
mode, ``kubectl apply`` of a pod that asks for spot without being fault-tolerant (a
warning), ``helm upgrade --set mode=enforce`` (a denial), a training pod (mutated, with
AWS's notice window), and ``helm uninstall`` (nothing left). The control plane has no
kubelet, so devtools.installed runs the certificate Job's command and the Deployment's
server here, with their ServiceAccounts; the API server reaches the server through the
chart's Service. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from controlplane.build import ensure_binaries
from controlplane.harness import ControlPlane
from devtools.demo import demo_main, heading, say
from devtools.helmcli import CHART, run_helm
from devtools.installed import (
    loopback_service_cidr,
    run_job,
    serve_deployment,
    service_port_flags,
    spotguard_objects,
)
from devtools.server import REPO
from tools.build import ensure_tools

NAMESPACE = "spotguard-system"
TEAM = "team-ml"
RELEASE = "spotguard"
ASKS_FOR_SPOT = REPO / "examples" / "web-on-eks-spot.yaml"
TRAINING_POD = REPO / "examples" / "training-pod.yaml"


def indented(text: str) -> None:
    for line in text.strip().splitlines():
        say(f"  {line}")


class Demo:
    def __init__(self, plane: ControlPlane, helm_bin: Path, workdir: Path) -> None:
        self.plane = plane
        self.helm_bin = helm_bin
        self.workdir = workdir

    def helm(self, *args: str) -> str:
        say("$ helm " + " ".join(args).replace(str(CHART), "deploy/helm/spotguard"))
        result = run_helm(self.helm_bin, *args, kubeconfig=self.plane.kubeconfig)
        indented(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"helm {args[0]} failed")
        return result.stdout

    def kubectl_apply(self, manifest: Path, *extra: str) -> tuple[bool, str]:
        say(f"$ kubectl apply -n {TEAM} -f examples/{manifest.name} {' '.join(extra)}".rstrip())
        result = self.plane.kubectl("apply", "-n", TEAM, "-f", str(manifest), *extra)
        indented(result.stderr + (result.stdout if not extra else ""))
        return result.returncode == 0, result.stdout

    def run_certs_job(self) -> None:
        jobs = self.plane.kubectl(
            "get", "jobs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=certs",
            "-o", "json", check=True,
        )  # fmt: skip
        (job,) = json.loads(jobs.stdout)["items"]
        say(f"(kubelet stand-in) job/{job['metadata']['name']}: spotguard certs ensure ...")
        result = run_job(self.plane, NAMESPACE, job, self.workdir)
        indented(result.stdout + result.stderr)

    def wait_for(self, manifest: Path, expected: str, timeout: float = 30.0) -> None:
        """Until a server-side dry run of ``manifest`` says ``expected``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.plane.kubectl(
                "apply", "--dry-run=server", "-n", TEAM, "-f", str(manifest)
            )
            if expected in result.stdout + result.stderr:
                return
            time.sleep(0.3)
        raise TimeoutError(f"no {expected!r} within {timeout:.0f} s")


def run(workdir: Path) -> None:
    heading("1. Control plane, helm and promtool (built from Go modules, cached)")
    bin_dir, helm_bin = ensure_binaries(), ensure_tools() / "helm"
    plane = ControlPlane(
        workdir / "plane", bin_dir=bin_dir, controllers=False, scheduler=False, nodes=False,
        extra_apiserver_args=[f"--service-cluster-ip-range={loopback_service_cidr()}"],
    )  # fmt: skip
    plane.start()
    try:
        plane.ensure_namespace(TEAM)
        say(f"kube-apiserver at {plane.server}; Service addresses on loopback")
        steps(Demo(plane, helm_bin, workdir))
    finally:
        plane.stop()
        say(f"control plane logs: {plane.logs_dir}")


def steps(demo: Demo) -> None:
    heading("2. helm install, audit mode (a dry run: warnings, nothing changed)")
    demo.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--set", "providers={eks,karpenter}", "--set", "mode=audit", *service_port_flags(),
    )  # fmt: skip
    demo.run_certs_job()
    server = serve_deployment(demo.plane, NAMESPACE, RELEASE, demo.workdir / "server")
    try:
        state = server.wait_ready()
        say(
            f"(kubelet stand-in) deployment/{RELEASE}: serving on the Service's address "
            f"{server.address}:{server.port}, policy {state['policyRevision']}"
        )
        demo.wait_for(ASKS_FOR_SPOT, "Warning: spotguard audit")

        heading("3. A pod that asks for spot without being fault-tolerant: a warning")
        ok, _ = demo.kubectl_apply(ASKS_FOR_SPOT)
        say(f"  => {'ADMITTED, with the warning above' if ok else 'REJECTED (unexpected)'}")
        demo.plane.kubectl("delete", "pod", "checkout-api", "-n", TEAM, "--wait=false")

        heading("4. helm upgrade to enforce mode (the policy reloads live)")
        demo.helm(
            "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
            "--set", "mode=enforce",
        )  # fmt: skip
        demo.run_certs_job()
        demo.wait_for(ASKS_FOR_SPOT, "denied the request")
        ok, _ = demo.kubectl_apply(ASKS_FOR_SPOT)
        say(f"  => {'ADMITTED (unexpected)' if ok else 'REJECTED, nothing stored'}")

        heading("5. A fault-tolerant training pod: mutated for EKS spot")
        ok, output = demo.kubectl_apply(TRAINING_POD, "--dry-run=server", "-o", "json")
        pod = json.loads(output)
        say(f"  injected: {pod['metadata']['annotations']['spotguard.dev/injected']}")
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        say(f"  terminationGracePeriodSeconds: {grace} (AWS's notice, not the 15 s of GKE)")
    finally:
        server.stop()

    heading("6. helm uninstall: nothing of spotguard's is left")
    demo.helm("uninstall", RELEASE, "--namespace", NAMESPACE)
    left = spotguard_objects(demo.plane, NAMESPACE)
    say(f"  => {'CLEAN: no object of spotguard left' if not left else 'LEFT: ' + ' '.join(left)}")


def main(argv: list[str] | None = None) -> int:
    return demo_main(run, "python -m devtools.demo_helm", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
