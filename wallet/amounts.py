"""Amounts: exact decimal text <-> integer minor units.

The genesis `decimals` says how many minor units make one unit (10 ** decimals). Parsing is exact
and strict, and never goes through a float:

- accepted: ASCII digits, optionally one `.` followed by 1..`decimals` digits (`12`, `12.5`,
  `12.50`); surrounding whitespace is ignored.
- refused, each with its own `AmountError.kind`:
  `garbage` (empty, signs other than a leading `-`, exponents, `,` or `_` separators, a bare or
  trailing `.`, non-ASCII digits, `nan`/`inf`), `negative`, `zero`, `too_many_decimals` (more
  digits after the point than `decimals`, *even zeros*: `1.000` is refused with 2 decimals, because
  in many locales it means one thousand) and `too_large` (more than 2**63-1 minor units, the most
  an order can carry).

Formatting is the inverse: `format_amount(parse_amount(t, d), d)` is `t` with exactly `d` digits
after the point (and no point when `d` is 0).
"""

from __future__ import annotations

import re

from crypto.errors import MeshpayError
from crypto.messages import MAX_AMOUNT

MAX_DECIMALS = 18  # the genesis schema's bound
MAX_TEXT = 64  # longer text cannot be a valid amount (2**63-1 has 19 digits); refuse before parsing

# [0-9] and re.ASCII: str.isdigit() would accept Arabic-Indic or full-width digits.
_AMOUNT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?", re.ASCII)
_NEGATIVE = re.compile(r"-\s*[0-9]+(?:\.[0-9]+)?", re.ASCII)


class AmountError(MeshpayError, ValueError):
    """Text that is not an acceptable amount; `kind` says why (see the module docstring)."""

    KINDS = ("garbage", "negative", "zero", "too_many_decimals", "too_large")

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown amount error kind {kind!r}")
        super().__init__(message)
        self.kind = kind


def _check_decimals(decimals: int) -> None:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals must be an integer in 0..{MAX_DECIMALS}, got {decimals!r}")


def parse_amount(text: str, decimals: int) -> int:
    """The number of minor units `text` denotes; raises `AmountError` for anything not exact."""
    _check_decimals(decimals)
    if not isinstance(text, str):
        raise AmountError("garbage", "an amount must be text such as 12.50")
    candidate = text.strip()
    if len(candidate) > MAX_TEXT:
        digits_only = candidate.isascii() and candidate.replace(".", "", 1).isdigit()
        kind = "too_large" if digits_only else "garbage"
        raise AmountError(kind, f"amount {candidate[:20]}... is far too long")
    if _NEGATIVE.fullmatch(candidate):
        raise AmountError("negative", f"amount {candidate!r} is negative; amounts must be positive")
    match = _AMOUNT.fullmatch(candidate)
    if match is None:
        hint = " (use '.' as the decimal point and no thousands separators)" if "," in candidate else ""
        example = "12" if decimals == 0 else "12.5" if decimals == 1 else "12.5" + "0" * (decimals - 1)
        raise AmountError("garbage", f"amount {candidate!r} is not a decimal number like {example}{hint}")
    whole, frac = match["whole"], match["frac"] or ""
    if len(frac) > decimals:
        allowed = "no decimals" if decimals == 0 else f"at most {decimals} decimal{'s' if decimals > 1 else ''}"
        raise AmountError("too_many_decimals", f"amount {candidate!r} has {len(frac)} decimals; "
                          f"this network allows {allowed}")
    minor = int(whole) * 10**decimals + (int(frac) * 10 ** (decimals - len(frac)) if frac else 0)
    if minor == 0:
        raise AmountError("zero", f"amount {candidate!r} is zero; a payment must move something")
    if minor > MAX_AMOUNT:
        raise AmountError("too_large", f"amount {candidate!r} is too large; the most one payment "
                          f"can carry is {format_amount(MAX_AMOUNT, decimals)}")
    return minor


def format_amount(minor: int, decimals: int) -> str:
    """Minor units as exact decimal text with exactly `decimals` digits after the point."""
    _check_decimals(decimals)
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"an amount in minor units is an int, got {type(minor).__name__}")
    sign = "-" if minor < 0 else ""  # balances are never negative, but never hide it if one is
    whole, frac = divmod(abs(minor), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{decimals}d}"
