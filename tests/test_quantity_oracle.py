"""policies/quantity.py agrees with Kubernetes' own parser, resource.ParseQuantity.

A tiny Go program (tests/quantity_oracle) runs apimachinery's parser, pinned to the
version of the control plane, on generated strings: every one it refuses, spotguard
refuses; every value it returns, spotguard returns exactly, unless the value is beyond
spotguard's stated bounds (more than 64 characters, a magnitude over 2^63-1, an exponent
outside int32, which Kubernetes silently wraps), which spotguard refuses instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.load import build_go_program
from policies.quantity import MAX_LENGTH, MAX_MAGNITUDE, QuantityError, parse_quantity
from tests.properties import CI
from tests.test_quantity import KUBERNETES_TABLE

pytestmark = pytest.mark.toolchain

ORACLE_DIR = Path(__file__).parent / "quantity_oracle"


def build_oracle() -> Path:
    """The oracle, built once per source version (Go module proxy needed once)."""
    return build_go_program(ORACLE_DIR, "quantity-oracle")


@pytest.fixture(scope="module")
def oracle() -> Iterator[Path]:
    if shutil.which("go") is None:
        pytest.skip("comparing with Kubernetes' parser needs Go to build it (make controlplane)")
    yield build_oracle()


def kubernetes_reads(oracle: Path, texts: list[str]) -> list[Fraction | None]:
    """What ParseQuantity makes of each text: its exact value, or None (an error)."""
    result = subprocess.run(
        [str(oracle)], input="\n".join(texts) + "\n", capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert len(lines) == len(texts)
    return [None if line == "error" else Fraction(Decimal(line)) for line in lines]


_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)$")


def beyond_bounds(text: str, kubernetes: Fraction) -> bool:
    """Where spotguard refuses what Kubernetes reads: longer than 64 characters, a magnitude
    at or over 2^63-1 (Kubernetes caps binary ones there), an exponent beyond int32 (which
    Kubernetes wraps: 1e4294967297 is 10)."""
    exponent = _EXPONENT.search(text)
    wrapped = exponent is not None and not -(2**31) <= int(exponent[1]) < 2**31
    return len(text) > MAX_LENGTH or abs(kubernetes) >= MAX_MAGNITUDE or wrapped


def agree(text: str, kubernetes: Fraction | None) -> None:
    try:
        ours: Fraction | None = parse_quantity(text)
    except QuantityError:
        ours = None
    if kubernetes is None:
        assert ours is None, f"{text!r}: Kubernetes refuses it, spotguard reads {ours}"
    elif ours is None:
        assert beyond_bounds(text, kubernetes), (
            f"{text!r}: Kubernetes reads {kubernetes}, spotguard refuses it"
        )
    else:
        assert ours == kubernetes, f"{text!r}: Kubernetes reads {kubernetes}, spotguard {ours}"


SUFFIXES = ["", "n", "u", "m", "k", "K", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti",
            "Pi", "Ei", "ki", "e", "E3", "e-2", "e+9", "E18", "e19", "i", "mi", "KiB", "e3.5",
            "e4294967297"]  # fmt: skip
NUMBERS = st.builds(
    lambda sign, whole, point, fraction: f"{sign}{whole}{point}{fraction}",
    st.sampled_from(["", "", "+", "-"]),
    st.sampled_from(["", "0", "1", "5", "16", "007", "999999999999", "9223372036854775807"]),
    st.sampled_from(["", "", ".", "."]),
    st.sampled_from(["", "5", "001", "000000000001", "123456789"]),
)
QUANTITIES = st.builds(lambda number, suffix: number + suffix, NUMBERS, st.sampled_from(SUFFIXES))
NOISE = st.text(alphabet="0123456789.+-eEikKmMGTPn x", max_size=12)


def test_the_kubernetes_table_agrees(oracle: Path) -> None:
    texts = [text for text, _ in KUBERNETES_TABLE]
    for text, kubernetes in zip(texts, kubernetes_reads(oracle, texts), strict=True):
        agree(text, kubernetes)


def test_generated_quantities_agree(oracle: Path) -> None:
    texts: list[str] = []

    @settings(CI, max_examples=3000)
    @given(QUANTITIES | NOISE)
    def collect(text: str) -> None:
        texts.append(text)

    collect()
    for text, kubernetes in zip(texts, kubernetes_reads(oracle, texts), strict=True):
        agree(text, kubernetes)
