"""Kubernetes quantities, read as apimachinery reads them (its own test table's values)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from policies.quantity import MAX_LENGTH, QuantityError, parse_bytes, parse_quantity

NANO = Fraction(1, 10**9)

# (text, exact value): cases from k8s.io/apimachinery/pkg/api/resource's TestQuantityParse.
KUBERNETES_TABLE = [
    ("0", 0), ("0n", 0), ("0Ki", 0), ("0T", 0), ("1", 1),
    ("1Ki", 1024), ("7Mi", 7 * 2**20), ("5Ti", 5 * 2**40), ("4Pi", 4 * 2**50),
    ("3Ei", 3 * 2**60), ("5n", 5 * NANO), ("4u", Fraction(4, 10**6)), ("3m", Fraction(3, 1000)),
    ("50k", 50_000), ("7M", 7 * 10**6), ("6G", 6 * 10**9), ("300T", 300 * 10**12),
    ("2P", 2 * 10**15), ("1E", 10**18), ("1E-3", Fraction(1, 1000)), ("1e3", 1000),
    ("1E18", 10**18), ("100.035k", 100_035), ("0.0005k", Fraction(1, 2)),
    ("0.5e-2", Fraction(5, 1000)), ("1.3E+6", 1_300_000), ("1.7E18", 17 * 10**17),
    ("6.987654321G", 6_987_654_321), ("1.01E", 101 * 10**16),
    # rounded up to the nanounit
    ("3.001n", 4 * NANO), ("1.1E-9", 2 * NANO), ("0.0000000001", NANO), ("0.9n", NANO),
    ("0.00000012345", 124 * NANO), ("0.000000000001Ki", 2 * NANO),
    ("100.035Ki", Fraction(10243584, 100)), ("0.5Mi", 2**19), ("0.05Gi", Fraction(536870912, 10)),
    # written by trolls, still valid
    (".001", Fraction(1, 1000)), (".0001k", Fraction(1, 10)), ("1.", 1), ("1.G", 10**9),
    # the examples
    ("1e12", 10**12), ("2Pi", 2 * 2**50), (".5Gi", 2**29), ("16Gi", 16 * 2**30),
]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), KUBERNETES_TABLE)
def test_quantities_read_exactly_as_kubernetes_reads_them(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value
    assert parse_quantity("-" + text) == -value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("twelve gigs", "not a number"),
        ("16 Gi", "not a number"),
        (" 16Gi", "not a number"),
        ("16Gi ", "not a number"),
        ("1K", "unknown suffix 'K'"),  # 1Ki or 1k; K alone is no unit
        ("1e", "unknown suffix 'e'"),
        ("1ee3", "unknown suffix"),
        ("1.5.3", "not a number"),
        ("Infinity", "not a number"),
        ("NaN", "not a number"),
        ("1_000", "not a number"),
        ("9" * 400, f"longer than {MAX_LENGTH}"),
        ("9" * 20, "larger than 2^63-1"),
        ("8Ei", "larger than 2^63-1"),
        ("9223372036854775808", "larger than 2^63-1"),
        ("1e19", "larger than 2^63-1"),
        ("1e999999999", "larger than 2^63-1"),
        ("1e99999999999999999999", "out of range"),
    ],
)
def test_what_is_not_a_usable_quantity_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(QuantityError, match=reason.replace("^", r"\^")):
        parse_quantity(text)


def test_no_digit_is_zero_only_where_kubernetes_reads_zero() -> None:
    for text in ("+", ".", "-.", "Gi", "Ti", "n", "e-9"):
        assert parse_quantity(text) == 0
    for text in ("Pi", "+.Ei", "e-10"):  # Kubernetes' exact-decimal path needs a digit
        with pytest.raises(QuantityError, match="no digits"):
            parse_quantity(text)


def test_the_largest_quantity_and_tiny_ones() -> None:
    assert parse_quantity("9223372036854775807") == 2**63 - 1
    assert parse_quantity("7Ei") == 7 * 2**60
    assert parse_quantity("1e-999999999") == NANO  # rounds up to a nanounit, as Kubernetes
    assert parse_quantity("0e999999999") == 0


def test_huge_exponents_are_judged_by_magnitude_never_computed() -> None:
    # 10**2147483647 would take hours to compute; the order of magnitude settles it.
    with pytest.raises(QuantityError, match="larger"):
        parse_quantity("1e2147483647")
    assert parse_quantity("1e-2147483648") == NANO
    assert parse_quantity("0.00000000000000000001e30") == 10**10


def test_bytes_are_whole_and_never_negative() -> None:
    assert parse_bytes("1.5Ki") == 1536
    assert parse_bytes("100m") == 1  # a tenth of a byte takes a byte
    with pytest.raises(QuantityError, match="negative"):
        parse_bytes("-1Gi")
