"""bench-webhook's reading of the steady phases (which rounds meet the targets) and its tables
(figures too wide for their columns still stay apart)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench_webhook import (
    print_designs,
    print_reference,
    print_steady,
    print_steady_summary,
    steady_target_met,
)


def phase(p99_ms: float, *, errors: int = 0, fresh_errors: int = 0, hs_p99_ms: float = 30.0) -> Any:
    return {
        "p99_ms": p99_ms,
        "server_cpu_us": 700.0,
        "errors": errors,
        "non200": 0,
        "wrong": 0,
        "fresh": {"errors": fresh_errors, "non200": 0},
        "handshakes": {"p99_ms": hs_p99_ms},
    }


@pytest.mark.parametrize(
    ("row", "met"),
    [
        (phase(19.9), True),
        (phase(20.0), False),  # under 20 ms is the target
        (phase(12.0, errors=1), False),
        (phase(12.0, fresh_errors=1), False),  # a new connection's request failed
        (phase(12.0, hs_p99_ms=100.0), False),
    ],
)
def test_a_round_meets_the_targets_only_when_all_hold(row: Any, met: bool) -> None:
    assert steady_target_met(row) is met


def test_the_summary_counts_rounds_per_design_and_phase(capsys: pytest.CaptureFixture[str]) -> None:
    steady = [
        ("new", "alone", 1, phase(12.0)),
        ("new", "bad clients", 1, phase(25.0)),
        ("new", "alone", 2, phase(14.0)),
        ("new", "bad clients", 2, phase(18.0)),
        ("old", "alone", 1, phase(30.0)),
        ("old", "bad clients", 1, phase(40.0, errors=3)),
    ]
    print_steady_summary(steady)
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["new", "new", "old", "old"]
    assert "p99  13.0 ms (12.0, 14.0)" in lines[0] and lines[0].endswith("met in 2 of 2")
    assert "p99  21.5 ms (25.0, 18.0)" in lines[1] and lines[1].endswith("met in 1 of 2")
    assert lines[3].endswith("met in 0 of 1")


def test_a_failed_rounds_wide_figures_stay_apart(capsys: pytest.CaptureFixture[str]) -> None:
    # The old design with the bad clients: every review timed out after the client's 20 s.
    row = {
        **phase(19910.52, errors=7575),
        "rps": 250.0,
        "p50_ms": 16235.75,
        "max_ms": 19999.1,
        "handshakes": {"p50_ms": 0.0, "p99_ms": 0.0},
        "bad_connections_open_avg": 107.6,
        "sample": {"rss": [46.0, 46.0]},
    }
    print_steady("old", "bad clients #1", row)
    fields = capsys.readouterr().out.split()
    assert fields[:10] == ["old", "bad", "clients", "#1", "250", "16235.75", "19910.52",
                           "19999.1", "7575", "0.0"]  # fmt: skip
    assert fields[-1] == "no"


def test_the_other_tables_keep_wide_figures_apart(capsys: pytest.CaptureFixture[str]) -> None:
    wide = {"rps": 12_345.0, "p50_ms": 16235.75, "p99_ms": 19910.52, "failures": 75_750,
            "server_cpu_us": 1_234_567.0, "spread": []}  # fmt: skip
    print_designs({"new": {"/mutate": wide}, "old": {"/mutate": wide}}, rounds=1)
    (new_line,) = [ln.split() for ln in capsys.readouterr().out.splitlines() if "/mutate" in ln]
    assert new_line[:7] == ["/mutate", "new", "12,345", "16235.75", "19910.52", "75750", "1234567"]
    print_reference({"server_cpu_us": 300.0, "p99_ms": 2.0},
                    [("same work", {**phase(19910.52, errors=7575), "p50_ms": 16235.75,
                                    "max_ms": 19999.1, "server_cpu_us": 1_234_567.0})])  # fmt: skip
    reference_line = capsys.readouterr().out.splitlines()[-1].split()
    assert reference_line == ["same", "work", "1,234,567", "16235.75", "19910.52",
                              "19999.1", "7575"]  # fmt: skip
