"""A tiny plain-Python training loop that honours spotguard's checkpoint contract.

It fits ``y = 3x + 2`` by SGD on data derived from the step number, so a run that is
preempted and resumed ends with exactly the weights of an uninterrupted run. It is what
the contract tests run as a real process; it also shows the helper's use without PyTorch.

    PYTHONPATH=trainer SPOTGUARD_CHECKPOINT_DIR=/tmp/ckpt python examples/train_tiny.py

Each completed step, save, resume and exit is a line in ``--log``; the helper's own
messages (request seen, checkpoint saved, request acknowledged) go to stderr. Flags for
tests and the preemption drill (``make drill``) make it misbehave as real trainers do:
``--ignore-hook`` (it only handles SIGTERM), ``--hang-in-final-save`` (the save a
preemption asks for never finishes), ``--hang-after`` (a stuck step that stops polling),
``--slow-save-at`` (one slow save).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import BinaryIO, TextIO

from spotguard_checkpoint import Checkpointer


@dataclass
class State:
    step: int = 0  # completed steps
    w: float = 0.0
    b: float = 0.0


def train_step(state: State, lr: float = 0.1) -> None:
    i = state.step
    x = ((i * 7919) % 1000) / 1000.0
    y = 3.0 * x + 2.0 + ((i * 104729) % 97) / 970.0 - 0.05
    error = state.w * x + state.b - y
    state.w -= lr * error * x
    state.b -= lr * error
    state.step += 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="total steps to train")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="simulated work")
    parser.add_argument("--every-steps", type=int, default=0, help="periodic checkpoints")
    parser.add_argument("--every-seconds", type=float, default=0.0, help="periodic checkpoints")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--log", default="-", help="event log file ('-': stdout)")
    parser.add_argument(
        "--ignore-hook",
        action="store_true",
        help="do not announce to the preStop hook: save on SIGTERM only",
    )
    parser.add_argument(
        "--hang-in-final-save",
        action="store_true",
        help="the preemption's save never finishes (SIGKILL ends it)",
    )
    parser.add_argument("--hang-after", type=int, default=None, help="test: hang at step N")
    parser.add_argument("--slow-save-at", type=int, default=None, help="test: slow save at N")
    parser.add_argument("--slow-save-seconds", type=float, default=30.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log: TextIO = sys.stdout if args.log == "-" else open(args.log, "a", buffering=1)  # noqa: SIM115

    def event(text: str) -> None:
        log.write(text + "\n")
        log.flush()

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ckpt = Checkpointer.from_env(
        default_directory="./checkpoints",
        every_steps=args.every_steps,
        every_seconds=args.every_seconds,
        keep=args.keep,
        listen=False,
    )
    ckpt.listen(announce=not args.ignore_hook)
    latest = ckpt.resume()
    if latest is None:
        state = State()
        event("fresh 0")
    else:
        state = State(**json.loads(latest.read_bytes()))
        event(f"resume {state.step}")

    def save(reason: str) -> None:
        payload = json.dumps(asdict(state)).encode()
        slow = args.slow_save_at == state.step
        hang = args.hang_in_final_save and reason == "preempted"

        def write(file: BinaryIO) -> None:
            file.write(payload[: len(payload) // 2])
            if slow:
                file.flush()
                event(f"slow-save {state.step}")
                time.sleep(args.slow_save_seconds)
            while hang:  # a stuck write (a lost storage server, say): SIGKILL ends it
                event(f"hang-in-save {state.step}")
                time.sleep(3600)
            file.write(payload[len(payload) // 2 :])

        ckpt.save(state.step, write)
        event(f"save {state.step} {reason}")

    while state.step < args.steps and not ckpt.should_stop():
        if args.hang_after is not None and state.step >= args.hang_after:
            event(f"hang {state.step}")
            while True:  # a stuck step: never polls, ignores the SIGTERM flag
                time.sleep(1)
        train_step(state)
        time.sleep(args.step_seconds)
        event(f"step {state.step}")
        if ckpt.should_checkpoint(state.step):
            save("preempted" if ckpt.preempted else "periodic")
    if ckpt.latest_step != state.step:  # training done: keep the final state too
        save("preempted" if ckpt.preempted else "final")
    code = ckpt.finish()
    event(f"exit {code} step={state.step} w={state.w!r} b={state.b!r}")
    return code


if __name__ == "__main__":
    sys.exit(main())
