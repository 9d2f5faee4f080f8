"""A PyTorch training script that honours spotguard's checkpoint contract.

It trains a small MLP on synthetic regression data (CPU or one GPU), resumes from the
newest durable checkpoint, checkpoints periodically, and when the injected preStop hook
asks (or SIGTERM arrives) finishes the current step, saves once, confirms, and exits 143.
Batches are drawn from a generator seeded by the step number, so a resumed run sees
exactly the data an uninterrupted one would have.

In a pod: see examples/pytorch-training-job.yaml. Locally, from a spotguard checkout:

    PYTHONPATH=trainer SPOTGUARD_CHECKPOINT_DIR=/tmp/ckpt python examples/train_pytorch.py

Only rank-0-style single-process training is shown; see docs/checkpoint-contract.md for
several processes per pod.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import torch
from spotguard_checkpoint import Checkpointer
from torch import nn

FEATURES = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every-steps", type=int, default=200, help="periodic checkpoints")
    parser.add_argument("--every-seconds", type=float, default=600.0, help="periodic too")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--log", default="-", help="event log file ('-': stdout)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def batch(step: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(size, FEATURES, generator=generator)
    true_w = torch.linspace(-1.0, 1.0, FEATURES)
    y = (x @ true_w).unsqueeze(1) + 0.01 * torch.randn(size, 1, generator=generator)
    return x.to(device), y.to(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log: TextIO = sys.stdout if args.log == "-" else open(args.log, "a", buffering=1)  # noqa: SIM115

    def event(text: str) -> None:
        log.write(text + "\n")
        log.flush()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    # Install the SIGTERM flag and announce the trainer before the slow part of startup.
    ckpt = Checkpointer.from_env(
        default_directory="./checkpoints",
        every_steps=args.every_steps,
        every_seconds=args.every_seconds,
        keep=args.keep,
    )
    step = 0
    latest = ckpt.resume()
    if latest is None:
        event("fresh 0")
    else:
        state = torch.load(latest.path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        event(f"resume {step}")

    def save(reason: str) -> None:
        state: dict[str, Any] = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        started = time.monotonic()
        ckpt.save(step, lambda file: torch.save(state, file))
        left = ckpt.seconds_left()
        budget = f" {left:.1f}s left" if left is not None else ""
        event(f"save {step} {reason} in {time.monotonic() - started:.2f}s{budget}")

    loss_fn = nn.MSELoss()
    while step < args.steps and not ckpt.should_stop():
        x, y = batch(step, args.batch_size, device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        step += 1
        event(f"step {step} loss={loss.item():.5f}")
        if ckpt.should_checkpoint(step):
            save("preempted" if ckpt.preempted else "periodic")
    if ckpt.latest_step != step:
        save("preempted" if ckpt.preempted else "final")
    code = ckpt.finish()
    event(f"exit {code} step={step}")
    return code


if __name__ == "__main__":
    sys.exit(main())
