"""``python -m controlplane --workdir DIR``: run a control plane in the foreground until
Ctrl-C, for the demo and for debugging; prints the ``KUBECONFIG`` to use."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from controlplane.harness import ControlPlane


def main(argv: Sequence[str] | None = None) -> int:
    """Run a control plane in the foreground until Ctrl-C (demo, debugging)."""
    parser = argparse.ArgumentParser(prog="python -m controlplane")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--no-controllers", action="store_true")
    parser.add_argument("--no-scheduler", action="store_true")
    parser.add_argument("--no-nodes", action="store_true")
    parser.add_argument("--complete-job-pods", action="store_true")
    parser.add_argument("--real-nodes", action="store_true", help="containerd + kubelets")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cp = ControlPlane(
        args.workdir,
        controllers=not args.no_controllers,
        scheduler=not args.no_scheduler,
        nodes=not args.no_nodes,
        complete_job_pods=args.complete_job_pods,
        real_nodes=args.real_nodes,
    )
    with cp:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in cp.startup_seconds.items())
        print(f"control plane ready ({times}); logs in {cp.logs_dir}", file=sys.stderr)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        try:
            while not stop.wait(1.0):
                cp.check_alive()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
