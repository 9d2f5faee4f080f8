"""``make fuzz``: the property tests on a million random cases, on every core, bounded in time.

    python -m tests.fuzz [--cases 1000000] [--jobs 2] [--max-seconds 3600] [--chunk 200]

Each job runs the properties of :mod:`tests.properties` in chunks of ``--chunk`` batches,
each chunk with a fresh random seed (printed with any failure: ``run(..., seed=SEED)`` of
:mod:`tests.properties` replays it), until its share of the cases is done or the time is
up. The summary gives the cases run per kind, the rate, and every failure with its
falsifying example.
Exit status 1 if a property failed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.properties import check_binding, check_junk, check_pod, check_workload, run
from tests.strategies import Batch, Scenario, batches, junk_batches

#: What share of the cases each kind of review gets.
KINDS: dict[
    str, tuple[float, Callable[[], st.SearchStrategy[Batch]], Callable[[Scenario], None]]
] = {
    "pod": (0.5, lambda: batches("pod"), check_pod),
    "workload": (0.25, lambda: batches("workload"), check_workload),
    "binding": (0.15, lambda: batches("binding"), check_binding),
    "junk": (0.10, junk_batches, check_junk),
}
FUZZ = settings(
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class JobReport:
    cases: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def job(quota: int, deadline: float, chunk: int) -> JobReport:
    report = JobReport()
    started = time.monotonic()
    rng = random.Random(os.urandom(16))
    names = list(KINDS)
    weights = [KINDS[name][0] for name in names]
    while sum(report.cases.values()) < quota and time.monotonic() < deadline:
        name = rng.choices(names, weights)[0]
        _, strategy, check = KINDS[name]
        chunk_seed = rng.getrandbits(64)
        counter = [0]
        try:
            run(strategy(), check, chunk, FUZZ, counter=counter, seed=chunk_seed)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            notes = "\n".join(getattr(error, "__notes__", []))
            report.failures.append(
                f"[{name}, seed {chunk_seed}] {type(error).__name__}: {error}\n{notes}"
            )
        report.cases[name] += counter[0]
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--chunk", type=int, default=200, help="batches per seed (default 200)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.max_seconds
    share = -(-args.cases // args.jobs)
    print(f"fuzz: {args.cases} cases on {args.jobs} jobs, at most {args.max_seconds:.0f} s")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        reports = list(pool.map(job, [share] * args.jobs, [deadline] * args.jobs,
                                [args.chunk] * args.jobs))  # fmt: skip
    elapsed = time.monotonic() - started
    cases: Counter[str] = Counter()
    failures: list[str] = []
    for report in reports:
        cases.update(report.cases)
        failures += report.failures
    total = sum(cases.values())
    per_kind = ", ".join(f"{n} {kind}" for kind, n in cases.most_common())
    rate = total / elapsed
    print(
        f"fuzz: {total} cases in {elapsed:.0f} s ({rate:.0f} cases/s, {args.jobs} jobs): {per_kind}"
    )
    if total < args.cases:
        print(f"fuzz: stopped by the time bound before {args.cases} cases")
    print(f"fuzz: {len(failures)} failures")
    for failure in failures:
        print("-" * 80 + "\n" + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
