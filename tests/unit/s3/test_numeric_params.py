"""The one number parser (buckets.s3.params) and the Range parsers built on it.

Property tests run under the suite's hypothesis profile (derandomized in `make test`).
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buckets.engine.store import resolve_range
from buckets.errors import InvalidArgument, InvalidRange
from buckets.s3.params import (
    BEYOND,
    INT32_MAX,
    MAX_DIGITS,
    decimal,
    int_argument,
    part_number,
    signed_decimal,
)
from buckets.s3.ranges import parse_copy_source_range, parse_range

HUGE = "9" * 5000

# What int() accepts or half-accepts and a request number must not be.
NOT_NUMBERS = ["", " ", "+5", "-5", " 5", "5 ", "1 0", "1_0", "5.0", "0x10", "1e3", "\u00b2", "\u0663",
               "\uff15", "5\n", "\t5", "abc", "--5", "-", "+"]


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_decimal_refuses_what_int_would_bend(text):
    assert decimal(text) is None


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("7", 7), ("007", 7), ("0" * 5000, 0), ("0" * 5000 + "42", 42),
    ("9" * MAX_DIGITS, 10**MAX_DIGITS - 1), ("1" + "0" * MAX_DIGITS, BEYOND), (HUGE, BEYOND),
    (str(2**63 - 1), 2**63 - 1),
])
def test_decimal_values(text, value):
    assert decimal(text) == value


def test_beyond_is_above_every_bound():
    assert BEYOND > 2**63 - 1 > 5 * 1024**4  # any object size, any int64
    assert decimal(HUGE) == decimal("1" * 4301) == BEYOND  # no ValueError at the int() limit


@given(st.text(max_size=60))
def test_decimal_never_raises_and_matches_int_on_ascii_digits(text):
    value = decimal(text)
    if text and text.isascii() and text.isdigit():
        exact = int(text)
        assert value == (exact if exact < BEYOND else BEYOND)
    else:
        assert value is None


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_signed_decimal_round_trips(n):
    expected = n if abs(n) < BEYOND else (BEYOND if n > 0 else -BEYOND)
    assert signed_decimal(str(n)) == expected


@pytest.mark.parametrize("raw,message", [
    (HUGE, "not an integer"), (str(2**31), "not an integer"), (str(-(2**31) - 1), "not an integer"),
    ("abc", "not an integer"), ("+5", "not an integer"), (" 5", "not an integer"), ("\u0663", "not an integer"),
    ("-1", "must be an integer between 0 and 2147483647"),
])
def test_int_argument_refusals(raw, message):
    with pytest.raises(InvalidArgument) as exc:
        int_argument(raw, "max-keys", default=1000, cap=1000)
    assert message in exc.value.message
    assert exc.value.extra == {"ArgumentName": "max-keys", "ArgumentValue": raw}
    assert exc.value.status == 400 and exc.value.code == "InvalidArgument"


def test_int_argument_values():
    assert int_argument(None, "max-keys", default=1000) == 1000
    assert int_argument("", "max-keys", default=1000) == 1000
    assert int_argument("0", "max-keys", default=1000) == 0
    assert int_argument(str(INT32_MAX), "max-keys", default=1000, cap=1000) == 1000
    assert int_argument("0" * 5000 + "12", "max-keys", default=1000) == 12
    assert int_argument("10000", "max-buckets", default=10000, minimum=1, maximum=10000) == 10000
    with pytest.raises(InvalidArgument) as exc:
        int_argument("10001", "max-buckets", default=10000, minimum=1, maximum=10000)
    assert "between 1 and 10000" in exc.value.message


@pytest.mark.parametrize("raw", [None, "", "0", "10001", HUGE, "-1", "+1", " 1", "1.0", "\u00b2", "\u0661"])
def test_part_number_refusals(raw):
    with pytest.raises(InvalidArgument) as exc:
        part_number(raw)
    assert exc.value.message == "Part number must be an integer between 1 and 10000, inclusive"
    assert exc.value.extra == {"ArgumentName": "partNumber", "ArgumentValue": raw or ""}


def test_part_number_values():
    assert [part_number(raw) for raw in ("1", "10000", "0007")] == [1, 10000, 7]


# --- Range -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header,expected", [
    ("bytes=0-9", (0, 9)),
    ("bytes=5-", (5, None)),
    ("bytes=-5", (None, 5)),
    ("BYTES = 1 - 2", (1, 2)),
    ("bytes=-0", (None, 0)),
    (f"bytes={HUGE}-", (BEYOND, None)),
    (f"bytes=0-{HUGE}", (0, BEYOND)),
    (f"bytes=-{HUGE}", (None, BEYOND)),
    (f"bytes={HUGE}-{HUGE}", (BEYOND, BEYOND)),
    (f"bytes={'0' * 5000}5-", (5, None)),
    # unusable: ignored (None), the whole object is served
    ("bytes=9-3", None), (f"bytes={HUGE}-5", None), (f"bytes=9{HUGE}-{HUGE}", None),
    ("bytes=0-1,5-6", None), ("bytes=abc", None), ("items=0-5", None), ("bytes=-", None), ("", None),
    (None, None), ("bytes=+5-", None), ("bytes=-+5", None), ("bytes=--5", None), ("bytes=\u0663-", None),
    ("bytes=\u00b2-", None), ("bytes=1_0-", None), ("bytes=1 0-", None), ("bytes=5.0-", None),
    ("bytes=0-5;x", None), ("bytes=0x10-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header) == expected


def _resolved(rng, size):
    try:
        r = resolve_range(rng, size)
    except InvalidRange:
        return "416"
    return r.start, r.end


digits = st.text(alphabet="0123456789", min_size=1, max_size=40)


@given(first=st.none() | digits, last=st.none() | digits, size=st.integers(0, 10**7))
def test_range_of_any_length_resolves_as_its_exact_value(first, last, size):
    """Clamping long numbers to BEYOND never changes the answer: the engine resolves the
    parsed range exactly as it resolves the exact (arbitrary precision) numbers."""
    if first is None and last is None:
        return
    header = f"bytes={first or ''}-{last or ''}"
    parsed = parse_range(header)
    exact = (None if first is None else int(first), None if last is None else int(last))
    if first is not None and last is not None and exact[1] < exact[0]:
        assert parsed is None  # RFC 9110: invalid, ignored
        return
    assert parsed is not None
    assert _resolved(parsed, size) == _resolved(exact, size)


@pytest.mark.parametrize("header", [
    f"bytes=0-{HUGE}", f"bytes={HUGE}-{HUGE}", "bytes=0-100", "bytes=5-1", "bytes=0-", "bytes=-5",
    "bytes=+0-5", "bytes=\u0660-5", "bytes=0-1_0", "bytes=0 -5", "bytes 0-5", "0-5", f"bytes={HUGE}-5",
])
def test_copy_source_range_refusals(header):
    with pytest.raises(InvalidArgument) as exc:
        parse_copy_source_range(header, 100)
    assert exc.value.extra["ArgumentName"] == "x-amz-copy-source-range"


def test_copy_source_range_values():
    assert parse_copy_source_range("bytes=0-99", 100) == (0, 99)
    assert parse_copy_source_range(" bytes=10-10 ", 100) == (10, 10)
    assert parse_copy_source_range(f"bytes={'0' * 5000}1-2", 100) == (1, 2)


def test_no_conversion_of_long_text():
    """Under the strictest int() digit limit Python allows, long request numbers still parse:
    nothing converts request text of unbounded length."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert decimal("1" * 100000) == BEYOND
        assert parse_range(f"bytes={'1' * 100000}-") == (BEYOND, None)
        assert parse_copy_source_range(f"bytes=0-{'0' * 100000}7", 8) == (0, 7)
        with pytest.raises(InvalidArgument):
            int_argument("1" * 100000, "max-keys", default=1000)
    finally:
        sys.set_int_max_str_digits(previous)
