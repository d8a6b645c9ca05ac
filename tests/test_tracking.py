"""Tracking codes: Damm check digits catch typing mistakes; lookups accept Persian digits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sada.pipeline.domain.tracking import (
    damm_check_digit,
    is_valid_tracking_code,
    new_tracking_code,
    normalize_code,
    parse_tracking_code,
)

PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

codes = st.builds(
    new_tracking_code,
    st.builds(random.Random, st.integers()),
    st.integers(min_value=8, max_value=12),
)


def single_digit_errors(code: str) -> list[str]:
    return [
        code[:i] + other + code[i + 1 :]
        for i, digit in enumerate(code)
        for other in "0123456789"
        if other != digit
    ]


def adjacent_transpositions(code: str) -> list[str]:
    return [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(len(code) - 1)
        if code[i] != code[i + 1]
    ]


def test_published_damm_vectors() -> None:
    # Worked examples of the Damm algorithm: 572 -> 4, 11294 -> 6.
    assert damm_check_digit("572") == "4"
    assert damm_check_digit("11294") == "6"
    # Leading zeros leave a Damm check digit unchanged, which lets the short
    # published numbers stand as 8-digit tracking codes.
    assert is_valid_tracking_code("00005724")
    assert not is_valid_tracking_code("00005727")
    assert is_valid_tracking_code("00112946")
    assert not is_valid_tracking_code("00112949")


@pytest.mark.parametrize("bad", ["", "57a", "۵۷۲", " 572", "5.7"])
def test_check_digit_needs_ascii_digits(bad: str) -> None:
    with pytest.raises(ValueError):
        damm_check_digit(bad)


def test_every_single_digit_error_and_adjacent_swap_is_caught_exhaustively() -> None:
    # All 10,000 four-digit bodies, written as 8-digit codes.
    for n in range(10_000):
        body = f"000{n:04d}"
        code = body + damm_check_digit(body)
        assert is_valid_tracking_code(code)
        for typo in single_digit_errors(code) + adjacent_transpositions(code):
            assert not is_valid_tracking_code(typo), (code, typo)


@given(codes)
def test_typos_in_generated_codes_are_caught(code: str) -> None:
    assert is_valid_tracking_code(code)
    for typo in single_digit_errors(code) + adjacent_transpositions(code):
        assert not is_valid_tracking_code(typo), (code, typo)


@given(st.text(alphabet="0123456789", min_size=7, max_size=11))
def test_exactly_one_last_digit_completes_a_code(body: str) -> None:
    completing = [d for d in "0123456789" if is_valid_tracking_code(body + d)]
    assert completing == [damm_check_digit(body)]


@pytest.mark.parametrize(
    "code",
    ["0000572", "0000000005724", "۰۰۰۰۵۷۲۴", "00005724\n", "0000 5724", "-0005724", ""],
)
def test_only_8_to_12_ascii_digits_are_codes(code: str) -> None:
    assert not is_valid_tracking_code(code)


@pytest.mark.parametrize("length", range(8, 13))
def test_new_codes_are_valid_and_have_the_requested_length(length: int) -> None:
    for seed in range(200):
        code = new_tracking_code(random.Random(seed), length)
        assert len(code) == length
        assert is_valid_tracking_code(code)
        assert code[0] != "0"


def test_new_codes_are_repeatable_with_a_seed_and_differ_without() -> None:
    assert new_tracking_code(random.Random(7)) == new_tracking_code(random.Random(7))
    fresh = {new_tracking_code() for _ in range(100)}
    assert len(fresh) >= 99  # a collision among 9e8 codes is a one-in-200,000 event
    assert all(is_valid_tracking_code(code) and len(code) == 10 for code in fresh)


@pytest.mark.parametrize("length", [0, 7, 13])
def test_new_code_length_outside_8_to_12_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        new_tracking_code(length=length)


def test_the_charter_number_in_persian_digits() -> None:
    # The tracking number printed in the Student Affairs e-participation charter.
    assert normalize_code("۷۸۱۶۸۳۸") == "7816838"
    assert normalize_code("٧٨١٦٨٣٨") == "7816838"
    # Seven digits: a number of that portal, not a Sada tracking code.
    assert parse_tracking_code("۷۸۱۶۸۳۸") is None


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("۷۸۱-۶۸۳ ۸", "7816838"),
        ("٧٨١ – ٦٨٣٨", "7816838"),
        ("\u200f۷۸۱۶۸۳۸\u200e", "7816838"),  # direction marks pasted from a chat
        ("۷۸۱\u200c۶۸۳۸", "7816838"),
        ("７８１６８３８", "7816838"),  # full-width digits
        ("78\u00a016\u2212838\n", "7816838"),
        ("code 7816838", "code7816838"),
    ],
)
def test_normalize_code(typed: str, expected: str) -> None:
    assert normalize_code(typed) == expected


@given(codes, st.sampled_from([PERSIAN, ARABIC_INDIC, str.maketrans({})]))
def test_a_code_typed_in_any_digits_is_found(code: str, digits: dict[int, str]) -> None:
    typed = code.translate(digits)
    spaced = " ".join(typed[i : i + 3] for i in range(0, len(typed), 3))
    assert parse_tracking_code(typed) == code
    assert parse_tracking_code(spaced) == code
    assert parse_tracking_code("-".join(spaced.split())) == code


@given(codes)
def test_a_mistyped_code_is_not_found(code: str) -> None:
    for typo in single_digit_errors(code)[:20]:
        assert parse_tracking_code(typo.translate(PERSIAN)) is None


@pytest.mark.parametrize("text", ["", "   ", "abc", "۷۸۱۶۸۳۸x", "12345678901234", "00005727"])
def test_malformed_lookups_give_none(text: str) -> None:
    assert parse_tracking_code(text) is None
