"""Kubernetes quantities (``16Gi``, ``500M``, ``1e12``, ``.5Gi``), read exactly.

The grammar is apimachinery's (``k8s.io/apimachinery/pkg/api/resource``): an optional
sign, digits with an optional decimal point (either side may be empty: ``.5``, ``5.``),
then one suffix: a binary one (``Ki`` ... ``Ei``), a decimal one (``n u m "" k M G T P E``)
or a decimal exponent (``e`` or ``E`` and a signed integer). No whitespace. The value is
exact (a fraction, never a float), rounded up to the nanounit as Kubernetes rounds it.

Two bounds Kubernetes does not have keep a hostile value cheap and meaningful: the text
is at most :data:`MAX_LENGTH` characters, and a value whose magnitude exceeds 2^63-1 (the
largest quantity Kubernetes keeps in canonical form) is refused rather than computed, so
neither ``1e999999999`` nor a 400-digit number costs more than reading it; an exponent
beyond int32 is refused too (Kubernetes wraps it: ``1e4294967297`` is 10 there). The
kubernetes client's ``parse_quantity`` is not used: it reads through ``decimal`` with its
28-digit context, accepts whitespace, ``K`` and ``Infinity``, and rounds what it cannot
hold. tests/test_quantity_oracle.py checks this module against apimachinery's own parser.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_LENGTH = 64
#: The largest magnitude Kubernetes represents canonically (int64).
MAX_MAGNITUDE = 2**63 - 1
_NANO = Fraction(1, 10**9)

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?"
    r"(?P<suffix>[eEinumkKMGTP]*[+-]?[0-9]*)"
)
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                     "P": 15, "E": 18}  # fmt: skip
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_INT32 = 2**31


class QuantityError(ValueError):
    """Not a quantity, or not one spotguard can use; the message says why, for a user."""


def _scale(suffix: str) -> tuple[int, int]:
    """(base, exponent) a suffix stands for: ``Gi`` is (2, 30), ``e3`` and ``k`` (10, 3)."""
    if suffix in _DECIMAL_SUFFIXES:
        return 10, _DECIMAL_SUFFIXES[suffix]
    if suffix in _BINARY_SUFFIXES:
        return 2, _BINARY_SUFFIXES[suffix]
    if len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        exponent = int(suffix[1:])
        if -_INT32 <= exponent < _INT32:
            return 10, exponent
        raise QuantityError(f"the exponent {suffix[1:]} is out of range")
    raise QuantityError(f"unknown suffix {suffix!r} (use Ki, Mi, Gi, ..., k, M, G, ... or e<n>)")


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity; QuantityError saying what is wrong."""
    if not text:
        raise QuantityError("it is empty")
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"it is longer than {MAX_LENGTH} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError("it is not a number with an optional unit, such as 16Gi or 500M")
    base, exponent = _scale(match["suffix"])
    if not (match["whole"] or match["fraction"]):
        # No digit at all ("+", ".", "Gi"): Kubernetes reads 0 where its int64 fast path
        # applies, and refuses it where it falls back to exact decimals, which need a
        # digit (binary suffixes from Pi up, decimal exponents below -9).
        if (base == 2 and exponent >= 50) or (base == 10 and exponent < -9):
            raise QuantityError("it has no digits")
        return Fraction(0)
    fraction = match["fraction"] or ""
    mantissa = int((match["whole"] or "0") + fraction)
    if mantissa == 0:
        return Fraction(0)
    # A decimal exponent may be huge: bound the order of magnitude (the value is below
    # 10^magnitude) before computing anything. Binary suffixes go up to 2^60 only.
    magnitude = len(str(mantissa)) - len(fraction) + (exponent if base == 10 else 0)
    if magnitude > 20:
        raise QuantityError("it is larger than 2^63-1, the largest quantity Kubernetes keeps")
    if magnitude < -12:
        value = _NANO  # below a nanounit: rounded up to one, as Kubernetes does
    else:
        value = Fraction(mantissa, 10 ** len(fraction)) * Fraction(base) ** exponent
        value = math.ceil(value / _NANO) * _NANO
    if value > MAX_MAGNITUDE:
        raise QuantityError("it is larger than 2^63-1, the largest quantity Kubernetes keeps")
    return -value if match["sign"] == "-" else value


def parse_bytes(text: str) -> int:
    """A quantity of bytes, rounded up to a whole byte; QuantityError if not one."""
    value = parse_quantity(text)
    if value < 0:
        raise QuantityError("it is negative")
    return math.ceil(value)
