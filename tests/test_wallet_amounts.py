"""wallet.amounts: decimal text <-> minor units, exactly, and every refusal with its kind."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.messages import MAX_AMOUNT
from wallet.amounts import AmountError, format_amount, parse_amount

decimals_st = st.integers(min_value=0, max_value=18)
minor_st = st.integers(min_value=1, max_value=MAX_AMOUNT)


@given(minor=minor_st, decimals=decimals_st)
def test_format_then_parse_is_identity(minor: int, decimals: int) -> None:
    text = format_amount(minor, decimals)
    assert parse_amount(text, decimals) == minor
    # The text is the exact value: Decimal (arbitrary precision, no float) agrees with it.
    assert Decimal(text) * (10**decimals) == minor
    if decimals:
        assert len(text.split(".")[1]) == decimals
    else:
        assert "." not in text


@given(whole=st.integers(min_value=0, max_value=10**12), frac=st.text("0123456789", min_size=1, max_size=2))
def test_parse_then_format_pads_to_the_decimals(whole: int, frac: str) -> None:
    text = f"{whole}.{frac}"
    if Decimal(text) == 0:
        return
    assert format_amount(parse_amount(text, 2), 2) == f"{whole}.{frac.ljust(2, '0')}"


@given(minor=minor_st, decimals=decimals_st, pad=st.sampled_from(["", " ", "\t", "  "]))
def test_surrounding_whitespace_is_ignored(minor: int, decimals: int, pad: str) -> None:
    assert parse_amount(pad + format_amount(minor, decimals) + pad, decimals) == minor


@pytest.mark.parametrize(("text", "decimals", "minor"), [
    ("12.50", 2, 1250), ("12.5", 2, 1250), ("12", 2, 1200), ("0.01", 2, 1), ("007.10", 2, 710),
    ("5", 0, 5), ("0.1", 1, 1), ("0.000000000000000001", 18, 1),
    ("92233720368547758.07", 2, MAX_AMOUNT), ("9223372036854775807", 0, MAX_AMOUNT),
])
def test_known_values(text: str, decimals: int, minor: int) -> None:
    assert parse_amount(text, decimals) == minor


def test_no_float_rounding() -> None:
    # float("0.29") * 100 == 28.999999999999996: an implementation through float would give 28.
    assert parse_amount("0.29", 2) == 29
    assert parse_amount("1.15", 2) == 115
    assert parse_amount("92233720368547758.07", 2) == MAX_AMOUNT  # float cannot even hold it


@pytest.mark.parametrize(("text", "decimals", "kind"), [
    ("0", 2, "zero"), ("0.00", 2, "zero"), ("000", 0, "zero"), ("0.0", 1, "zero"),
    ("-1", 2, "negative"), ("-0.01", 2, "negative"), ("- 5", 2, "negative"),
    ("1.001", 2, "too_many_decimals"), ("1.000", 2, "too_many_decimals"), ("1.5", 0, "too_many_decimals"),
    ("0.0000000000000000001", 18, "too_many_decimals"),
    ("92233720368547758.08", 2, "too_large"), ("9223372036854775808", 0, "too_large"),
    ("99999999999999999999999", 2, "too_large"), ("9" * 100, 2, "too_large"),
    ("", 2, "garbage"), ("   ", 2, "garbage"), ("abc", 2, "garbage"), ("1e3", 2, "garbage"),
    ("1E-2", 2, "garbage"), ("+5", 2, "garbage"), ("12.", 2, "garbage"), (".5", 2, "garbage"),
    ("1,5", 2, "garbage"), ("1,000.00", 2, "garbage"), ("1_000", 2, "garbage"), ("1.2.3", 2, "garbage"),
    ("nan", 2, "garbage"), ("inf", 2, "garbage"), ("0x10", 2, "garbage"), ("١٢", 2, "garbage"),
    ("\uff11\uff12", 2, "garbage"), ("1 000", 2, "garbage"), ("12 50", 2, "garbage"), ("x" * 100, 2, "garbage"),
])
def test_refusals_have_their_kind(text: str, decimals: int, kind: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(text, decimals)
    assert caught.value.kind == kind
    assert str(caught.value)  # a message for people, never empty


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(AmountError, match="at most 2 decimals"):
        parse_amount("1.001", 2)
    with pytest.raises(AmountError, match="no decimals"):
        parse_amount("1.5", 0)
    with pytest.raises(AmountError, match=r"92233720368547758\.07"):
        parse_amount("92233720368547758.08", 2)
    with pytest.raises(AmountError, match="thousands separators"):
        parse_amount("1,000", 2)


def test_non_text_and_bad_decimals_are_refused() -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(12.5, 2)  # type: ignore[arg-type]
    assert caught.value.kind == "garbage"
    for bad in (-1, 19, True, 2.0):
        with pytest.raises(ValueError):
            parse_amount("1", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_amount(1.5, 2)  # type: ignore[arg-type]


def test_format_shapes() -> None:
    assert format_amount(1250, 2) == "12.50"
    assert format_amount(1, 2) == "0.01"
    assert format_amount(0, 2) == "0.00"
    assert format_amount(7, 0) == "7"
    assert format_amount(100000000, 2) == "1000000.00"
    assert format_amount(-5, 2) == "-0.05"  # never hides a sign, should one ever appear
