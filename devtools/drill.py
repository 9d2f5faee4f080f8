"""The preemption drill (``make drill``): a real kubelet runs spotguard's hook in a real
container, the trainer saves, SIGTERM ends it, and the Job resumes it from the checkpoint.

It starts the control plane with real nodes (controlplane/realnodes.py: two spot nodes,
one on-demand), spotguard with the policy below, and for each trainer variant applies
``examples/tiny-training-job.yaml`` (spotguard mutates its pods), lets it train, delivers
spot notices as the interruption handlers do (cordon + the Eviction API; then a NoExecute
taint), and prints what happened, in seconds from each notice, with every claim checked:

- a trainer that honours the hook: request, durable save, ack, SIGTERM, exit 143, resume
  at the last completed step; twice, once per kind of notice;
- a trainer that ignores the hook (SIGTERM only): it still saves, on SIGTERM;
- a trainer that hangs in its final save: the hook gives up at its budget, the kubelet
  kills it at the grace period, and the new pod resumes from the last periodic checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from controlplane.harness import ControlPlane
from controlplane.realnodes import REAL_NODES, RealNodes, containers_unavailable
from devtools import drill_checks as checks
from devtools.drill_cluster import (
    JOB_MANIFEST,
    JOB_NAME,
    PodRecord,
    PodWatcher,
    apply_training_job,
    cordon,
    evict,
    example_args,
    reference_weights,
    restore_node,
    start_spotguard,
    taint_no_execute,
)
from devtools.drill_timeline import (
    KUBELET_EXITED,
    KUBELET_HOOK_CUT,
    KUBELET_HOOK_DONE,
    KUBELET_HOOK_STARTS,
    KUBELET_SIGTERM,
    KUBELET_STOP_STARTS,
    Preemption,
    TrainerLog,
    format_timeline,
    kubelet_events,
)
from devtools.podlogs import PodLogFollower
from devtools.registration import INJECTED_ANNOTATION
from policies.loader import parse_policy_text

#: The built-in policy: grace = the shortest usable notice of the presets (GKE's 15 s),
#: SIGTERM reserve 5 s, so the hook's budget is 10 s.
POLICY = "mode: enforce\n"
SPOT_NODES = {n.name for n in REAL_NODES if n.spot}
#: Steps a pod trains after it (re)started before the notice: past a periodic checkpoint.
STEPS_BEFORE_NOTICE = 35

NOTICES = {
    "eviction": "{node} cordoned, {pod} evicted (Eviction API, as NTH and Karpenter drain)",
    "taint": "{node} tainted aws-node-termination-handler/spot-itn:NoExecute (NTH's taint)",
}


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    trainer_args: tuple[str, ...]
    notices: tuple[str, ...]


VARIANTS = (
    Variant("honours-hook", "a trainer that honours the hook", (), ("eviction", "taint")),
    Variant("sigterm-only", "a trainer that ignores the hook", ("--ignore-hook",), ("eviction",)),
    Variant(
        "hangs-in-save",
        "a trainer that hangs in its final save",
        ("--hang-in-final-save",),
        ("eviction",),
    ),
)


@dataclass
class Scene:
    """One variant's run: its namespace, pods and checkpoint volume."""

    namespace: str
    watcher: PodWatcher
    volume: Path
    gone: set[str] = field(default_factory=set)  # pods already preempted
    requests: dict[str, float] = field(default_factory=dict)  # pod: its hook's request


@dataclass
class Outcome:
    variant: Variant
    preemptions: list[Preemption] = field(default_factory=list)
    claims: list[checks.Claim] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(claim.ok for claim in self.claims)


class Drill:
    def __init__(self, cluster: ControlPlane, workdir: Path, out: TextIO = sys.stdout) -> None:
        if cluster.real is None:
            raise ValueError("the drill needs ControlPlane(real_nodes=True)")
        self.cluster = cluster
        self.real: RealNodes = cluster.real
        self.workdir = workdir
        self.out = out
        self.policy = parse_policy_text(POLICY)
        self.args = example_args()
        self.reference = reference_weights(self.args["steps"])
        pod_logs = [self.real.kubelet(n.name).pod_logs_dir for n in self.real.nodes]
        self.logs = PodLogFollower(pod_logs)
        self.logs.start()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def close(self) -> None:
        self.logs.stop()

    def run(self, variant: Variant) -> Outcome:
        namespace = f"drill-{variant.name}"
        outcome = Outcome(variant)
        self.say(f"\n=== {variant.title} (namespace {namespace}) " + "=" * 20)
        scene = Scene(namespace, PodWatcher(self.cluster, namespace), self.workdir / namespace)
        apply_training_job(self.cluster, namespace, scene.volume, list(variant.trainer_args))
        flags = " ".join(variant.trainer_args) or "none"
        self.say(f"applied examples/{JOB_MANIFEST.name}; extra trainer flags: {flags}")
        scene.watcher.start()
        try:
            pod = scene.watcher.wait("a trainer pod running", _running_pod(set()))
            self._describe(pod, outcome)
            for kind in variant.notices:
                preemption = self._preempt(scene, kind, pod)
                outcome.preemptions.append(preemption)
                self._report(variant, preemption, outcome)
                scene.gone.add(pod.name)
                pod = next(p for p in scene.watcher.snapshot() if p.name == preemption.new_pod)
            self._finish(scene, outcome)
        finally:
            scene.watcher.stop()
            for node in SPOT_NODES:
                restore_node(self.cluster, node)
            self.cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        return outcome

    def _describe(self, pod: PodRecord, outcome: Outcome) -> None:
        spec = pod.obj["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        annotations = pod.obj["metadata"].get("annotations") or {}
        self.say(
            f"{pod.name} on {pod.node}, as spotguard mutated it: grace period "
            f"{spec.get('terminationGracePeriodSeconds')} s, preStop hook with "
            f"SPOTGUARD_PRESTOP_TIMEOUT_SECONDS={env.get('SPOTGUARD_PRESTOP_TIMEOUT_SECONDS')}"
        )
        outcome.claims.append(
            checks.Claim(
                f"{pod.name} was mutated by spotguard on the way in (hook, grace, env)",
                INJECTED_ANNOTATION in annotations
                and "preStop" in container.get("lifecycle", {})
                and "SPOTGUARD_CHECKPOINT_DIR" in env,
            )
        )

    def _trainer(self, namespace: str, pod: str) -> TrainerLog:
        return TrainerLog.of(self.logs.lines(namespace, pod))

    def _wait_for_steps(self, namespace: str, pod: str) -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            log = self._trainer(namespace, pod)
            start, last = log.resumed_at(), log.last_step()
            if start is not None and last is not None and last >= start + STEPS_BEFORE_NOTICE:
                return
            self.cluster.check_alive()
            time.sleep(0.05)
        raise TimeoutError(f"{namespace}/{pod} did not train {STEPS_BEFORE_NOTICE} steps")

    def _preempt(self, scene: Scene, kind: str, pod: PodRecord) -> Preemption:
        self._wait_for_steps(scene.namespace, pod.name)
        for node in SPOT_NODES - {pod.node}:
            restore_node(self.cluster, node)  # spot capacity is back for the new pod
        notice = time.time()
        if kind == "eviction":
            cordon(self.cluster, pod.node)
            evict(self.cluster, scene.namespace, pod.name)
        else:
            taint_no_execute(self.cluster, pod.node, pod.name)
        running = _running_pod({*scene.gone, pod.name})
        requests: dict[str, float] = {}

        def new_pod_running(pods: list[PodRecord]) -> PodRecord | None:
            # The hook's request file, read while it exists: the next trainer removes it
            # once it has expired (deadline + reserve).
            _sample_request(scene.volume, pod.name, notice, requests)
            return running(pods)

        new = scene.watcher.wait("the new pod running", new_pod_running)
        end = time.monotonic() + 60
        while self._trainer(scene.namespace, new.name).resumed_at() is None:
            if time.monotonic() > end:
                raise TimeoutError(f"{new.name} never logged where it resumed")
            time.sleep(0.05)
        old = next(p for p in scene.watcher.snapshot() if p.name == pod.name)
        scene.requests = requests
        return self._collect(scene, Preemption(
            kind, old.node, old.name, notice,
            grace=int(old.obj["spec"]["terminationGracePeriodSeconds"]),
            budget=0, new_pod=new.name, new_node=new.node,
        ), old, new)  # fmt: skip

    def _collect(self, scene: Scene, p: Preemption, old: PodRecord, new: PodRecord) -> Preemption:
        """Fill in ``p`` from the kubelet's log, the volume, the trainers' logs, the pods."""
        notice, reserve = p.notice, self.policy.inject.pre_stop.sigterm_reserve_seconds
        p.budget = min(p.grace, self.policy.notice_seconds) - reserve
        kubelet = kubelet_events(
            self.cluster.logs_dir / f"kubelet-{old.node}.log", old.name, notice - 1
        )
        names = {
            KUBELET_STOP_STARTS: "stop",
            KUBELET_HOOK_STARTS: "hook",
            KUBELET_HOOK_DONE: "hook_done",
            KUBELET_HOOK_CUT: "hook_cut",
            KUBELET_SIGTERM: "sigterm",
            KUBELET_EXITED: "exited",
        }
        p.events = {"notice": notice, **{names[m]: t for m, t in kubelet.items()}}
        if old.name in scene.requests:
            p.events["request"] = scene.requests[old.name]
        before = self._trainer(scene.namespace, old.name)
        after = self._trainer(scene.namespace, new.name)
        for name, pattern in (
            ("seen", "preemption requested by the preStop hook"),
            ("ack", "acknowledged preemption request"),
            ("hang", r"^hang-in-save \d+$"),
            ("trainer_exit", r"^exit \d+ "),
        ):
            line = before.first(pattern, notice)
            if line is not None:
                p.events[name] = line.time
        p.final_saves = before.saves("preempted", notice)
        p.periodic_before = before.saves("periodic")
        p.last_step = before.last_step()
        if p.final_saves:
            p.step_saved = p.final_saves[0]
            saved = before.first(rf"checkpoint at step {p.step_saved} saved", notice)
            if saved is not None:
                p.events["durable"] = saved.time
        p.exit_code = old.exit_code
        exit_line = before.exit_line()
        if p.exit_code is None and exit_line is not None:
            p.exit_code = int(exit_line.text.split()[1])
        p.events["created"] = new.created
        if new.scheduled is not None:
            p.events["scheduled"] = new.scheduled
        resumed = after.first(r"^(resume|fresh) \d+$")
        if resumed is not None:
            p.events["resumed"] = resumed.time
            p.resumed_step = after.resumed_at()
        return p

    def _report(self, variant: Variant, p: Preemption, outcome: Outcome) -> None:
        text = NOTICES[p.kind].format(node=p.node, pod=p.pod)
        self.say(f"\npreemption by {p.kind}: seconds from the notice")
        for line in format_timeline(p, text):
            self.say(line)
        waited = p.between("exited", "created")
        if waited is not None and waited > 5:
            self.say(
                f"  (the Job controller's pod-failure backoff: {waited:.1f} s; it counts the "
                "failures podFailurePolicy ignores)"
            )
        claims = checks.common_claims(p, SPOT_NODES)
        if variant.name == "honours-hook":
            claims += checks.cooperative_claims(p)
        elif variant.name == "sigterm-only":
            claims += checks.sigterm_only_claims(p)
        else:
            claims += checks.hung_save_claims(p, self.args["every-steps"])
        outcome.claims += claims
        for claim in claims:
            self.say(claim.line())

    def _finish(self, scene: Scene, outcome: Outcome) -> None:
        last = scene.watcher.wait("the last pod done", _finished_pod, timeout=120)
        log = self._trainer(scene.namespace, last.name)
        exit_line = log.exit_line()
        weights = exit_line.text.split(" ", 3)[3] if exit_line else ""
        path = f"/apis/batch/v1/namespaces/{scene.namespace}/jobs/{JOB_NAME}"
        end = time.monotonic() + 30
        succeeded = 0
        while time.monotonic() < end and not succeeded:
            _, job = self.cluster.request("GET", path)
            succeeded = int((job or {}).get("status", {}).get("succeeded") or 0)
            time.sleep(0.2)
        claims = [
            checks.Claim(f"the Job completed ({succeeded} succeeded)", succeeded == 1),
            checks.Claim(
                f"the final weights equal an uninterrupted run's ({weights})",
                weights == self.reference,
            ),
        ]
        outcome.claims += claims
        self.say("")
        for claim in claims:
            self.say(claim.line())


def _running_pod(excluded: set[str]) -> Callable[[list[PodRecord]], PodRecord | None]:
    def check(pods: list[PodRecord]) -> PodRecord | None:
        return next((p for p in pods if p.name not in excluded and p.running), None)

    return check


def _sample_request(volume: Path, pod: str, since: float, found: dict[str, float]) -> None:
    """Note when ``pod``'s hook wrote its request (the file's mtime), if it has."""
    request = volume / ".spotguard-preempt"
    try:
        written, text = request.stat().st_mtime, request.read_text()
    except OSError:
        return
    if written >= since and f"host={pod}\n" in text:
        found.setdefault(pod, written)


def _finished_pod(pods: list[PodRecord]) -> PodRecord | None:
    return next((p for p in pods if p.exit_code == 0), None)


def run(workdir: Path, variants: Sequence[Variant], out: TextIO = sys.stdout) -> list[Outcome]:
    cluster = ControlPlane(workdir / "cluster", nodes=False, real_nodes=True)
    started = time.monotonic()
    cluster.start()
    try:
        nodes = ", ".join(f"{n.name} ({'spot' if n.spot else 'on-demand'})" for n in REAL_NODES)
        print(
            f"control plane and real nodes up in {time.monotonic() - started:.1f} s: {nodes}",
            file=out,
        )
        server = start_spotguard(cluster, workdir, POLICY)
        try:
            drill = Drill(cluster, workdir, out)
            try:
                return [drill.run(variant) for variant in variants]
            finally:
                drill.close()
        finally:
            server.stop()
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.drill", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and volumes here (default: a temporary directory)"
    )
    parser.add_argument(
        "--variant", action="append", choices=[v.name for v in VARIANTS], help="run only these"
    )
    args = parser.parse_args(argv)
    reason = containers_unavailable()
    if reason is not None:
        print(f"error: the drill needs real containers: {reason}", file=sys.stderr)
        return 1
    chosen = [v for v in VARIANTS if not args.variant or v.name in args.variant]
    with tempfile.TemporaryDirectory(prefix="spotguard-drill-") as scratch:
        outcomes = run(args.workdir or Path(scratch), chosen)
    failed = [c.text for o in outcomes for c in o.claims if not c.ok]
    print(
        f"\n{len(failed)} of {sum(len(o.claims) for o in outcomes)} claims failed"
        if failed
        else "\nevery claim holds"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
