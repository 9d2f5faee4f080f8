"""The API-server benchmark's arithmetic: reading the allocation counter from the API
server's metrics, and pairing each phase with its round's baseline."""

from __future__ import annotations

import pytest

from benchmarks.bench_apiserver import Bench, Phase, metric_value, paired_ratios, spread

METRICS = """\
# HELP go_gc_heap_allocs_bytes_total Cumulative sum of memory allocated to the heap.
# TYPE go_gc_heap_allocs_bytes_total counter
go_gc_heap_allocs_bytes_total 3.52554944e+08
go_gc_heap_allocs_by_size_bytes_bucket{le="8.999999999999998"} 78149
go_gc_heap_allocs_bytes_total_other 7
"""


def test_metric_value_reads_the_unlabelled_sample() -> None:
    assert metric_value(METRICS, "go_gc_heap_allocs_bytes_total") == 352554944.0


def test_metric_value_names_a_missing_sample() -> None:
    with pytest.raises(ValueError, match="go_memstats_alloc_bytes_total"):
        metric_value(METRICS, "go_memstats_alloc_bytes_total")


def phase(cpu: float, alloc: float = 100.0) -> Phase:
    return Phase(
        rps=100.0,
        p50_ms=1.0,
        p99_ms=2.0,
        creates=100,
        failures=0,
        cpu_ms={"apiserver": cpu, "etcd": 0.1, "spotguard": 0.0},
        alloc_kib=alloc,
        reviews_per_pod=0.0,
    )


def bench_with(results: dict[tuple[str, ...], list[Phase]]) -> Bench:
    bench = Bench.__new__(Bench)
    bench.results = results
    return bench


def test_each_phase_is_paired_with_its_own_rounds_baseline() -> None:
    # Round 2 is slow for everything; pairing by round cancels it, pooling would not.
    bench = bench_with(
        {
            ("aks", "ordinary", "8", "none"): [phase(2.0), phase(4.0), phase(2.0)],
            ("aks", "ordinary", "8", "conditions"): [phase(2.1), phase(4.4), phase(2.4)],
        }
    )
    ratios = paired_ratios(
        bench, ("aks", "ordinary", "8", "conditions"), lambda p: p.cpu_ms["apiserver"]
    )
    assert ratios == pytest.approx([1.05, 1.10, 1.20])
    assert spread(ratios) == "1.10x (1.05-1.20)"


def test_pairing_against_another_configuration() -> None:
    bench = bench_with(
        {
            ("eks", "training", "8", "map"): [phase(5.0, alloc=200.0)],
            ("eks", "training", "8", "conditions"): [phase(4.0, alloc=150.0)],
        }
    )
    key = ("eks", "training", "8", "conditions")
    assert paired_ratios(bench, key, lambda p: p.alloc_kib, base="map") == [0.75]


def test_spread_of_nothing_says_so() -> None:
    assert spread([]) == "-"
