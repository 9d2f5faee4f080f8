"""What the drill claims about each preemption, checked against what happened.

A claim is a sentence and whether the timeline bears it out; the drill prints every claim
with its verdict, and `make drill` and tests/e2e/test_real_nodes.py fail on any false one.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.drill_timeline import Preemption

#: The hook polls every 0.2 s and its process needs a moment to end: slack on its budget.
HOOK_SLACK = 0.5


@dataclass(frozen=True)
class Claim:
    text: str
    ok: bool

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'FAIL'} {self.text}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def common_claims(p: Preemption, spot_nodes: set[str]) -> list[Claim]:
    return [
        Claim(f"the kubelet on {p.node} ran the injected preStop hook", p.at("hook") is not None),
        Claim(
            "SIGTERM came only after the hook had returned",
            (p.at("sigterm") or 0) >= (p.at("hook_done") or p.at("hook_cut") or float("inf")),
        ),
        Claim(
            f"the Job's new pod {p.new_pod} was scheduled on a spot node ({p.new_node})",
            p.new_node in spot_nodes,
        ),
    ]


def _lost_nothing(p: Preemption) -> list[Claim]:
    return [
        Claim(
            f"exactly one final save per preemption: {p.final_saves} (last completed step "
            f"{p.last_step})",
            p.final_saves == [p.last_step] and p.step_saved == p.last_step,
        ),
        Claim(
            f"the save was durable {_seconds(p.between('stop', 'durable'))} into the grace "
            f"period of {p.grace} s",
            (p.between("stop", "durable") or float("inf")) < p.grace,
        ),
        Claim(f"the trainer exited 143 (exit status {p.exit_code})", p.exit_code == 143),
        Claim(
            f"no completed step lost: resumed at step {p.resumed_step}, the last completed "
            f"step was {p.last_step}",
            p.resumed_step is not None and p.resumed_step == p.last_step,
        ),
    ]


def cooperative_claims(p: Preemption) -> list[Claim]:
    """A trainer that honours the hook: request, save, ack, SIGTERM, resume."""
    hook = p.between("hook", "hook_done")
    return [
        Claim("the trainer saw the hook's request and acknowledged it", p.at("ack") is not None),
        Claim(
            f"the hook returned {_seconds(hook)} after it started, inside its budget of "
            f"{p.budget} s = min(grace, usable notice) - SIGTERM reserve",
            hook is not None and hook <= p.budget + HOOK_SLACK,
        ),
        Claim(
            "the hook returned once the checkpoint was durable",
            (p.at("hook_done") or 0) >= (p.at("durable") or float("inf")),
        ),
        *_lost_nothing(p),
    ]


def sigterm_only_claims(p: Preemption) -> list[Claim]:
    """A trainer that does not announce itself: the hook is a no-op, SIGTERM saves."""
    hook = p.between("hook", "hook_done")
    return [
        Claim(
            f"the hook found no listening trainer, wrote no request and returned in "
            f"{_seconds(hook)}, leaving the grace period to SIGTERM",
            hook is not None and hook < 1.0 and p.at("request") is None,
        ),
        Claim(
            "the trainer saved after SIGTERM, at its next step boundary",
            (p.at("durable") or 0) >= (p.at("sigterm") or float("inf")),
        ),
        *_lost_nothing(p),
    ]


def hung_save_claims(p: Preemption, every_steps: int) -> list[Claim]:
    """A trainer stuck in its final save: killed at the grace period, periodic resume."""
    hook = p.between("hook", "hook_done")
    killed_after = p.between("stop", "exited")
    last_periodic = max((s for s in p.periodic_before if s <= (p.last_step or 0)), default=None)
    lost = None if p.last_step is None or p.resumed_step is None else p.last_step - p.resumed_step
    return [
        Claim("the trainer saw the request and began its final save", p.at("hang") is not None),
        Claim(
            f"the hook gave up after {_seconds(hook)}, at its budget of {p.budget} s",
            hook is not None and p.budget - 1 - 0.05 <= hook <= p.budget + HOOK_SLACK,
        ),
        Claim(
            f"no final save finished and nothing was acknowledged ({p.final_saves})",
            not p.final_saves and p.at("ack") is None,
        ),
        Claim(
            f"SIGTERM did not end it: the kubelet killed it {_seconds(killed_after)} after it "
            f"began stopping the pod, at the grace period of {p.grace} s (exit status "
            f"{p.exit_code})",
            p.exit_code == 137
            and killed_after is not None
            and p.grace - 0.5 <= killed_after <= p.grace + 3,
        ),
        Claim(
            f"the new pod resumed from the previous periodic checkpoint (step "
            f"{p.resumed_step}; periodic saves {p.periodic_before})",
            p.resumed_step is not None and p.resumed_step == last_periodic,
        ),
        Claim(
            f"{lost} completed steps lost (steps {p.resumed_step} to {p.last_step}), bounded "
            f"by the checkpoint interval of {every_steps} steps",
            lost is not None and 0 <= lost <= every_steps,
        ),
    ]
