"""cast_isolating_errors gives exactly the answer of bisecting Arrow's own cast, row by row.

The screen in beam_etl/casting.py is a hint: these tests generate text columns mixing
valid values with every kind of near miss (impossible calendar days, padded values, other
ISO shapes, overflow, locale decimals) and check values, failing rows and their messages
against :func:`isolate_row_errors` over the plain cast — the independent oracle here is
Arrow's cast itself, one bisection at a time.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.casting import MAX_DISTINCT_SUSPECTS, cast_isolating_errors, isolate_row_errors

TARGETS = [
    pa.int64(),
    pa.int32(),
    pa.uint8(),
    pa.float64(),
    pa.float32(),
    pa.timestamp("s"),
    pa.timestamp("us"),
    pa.timestamp("ms", tz="UTC"),
    pa.date32(),
]

NEAR_MISSES = [
    "", " ", "N/A", "12,50", "12.3.4", "two", "+5", "-3", " 42 ", "1e5", "1E-3", ".5", "5.", "inf", "-nan",
    "99999999999999999999999", "300", "-1", "2024-02-29", "2023-02-29", "2100-02-29", "2000-02-29",
    "2024-02-30 10:00:00", "2024-04-31", "2024-13-01", "2024-00-10", "2024-01-00", "2024-01-01 24:00:00",
    "2024-01-01 23:60:00", "2024-01-01 10:00:00.5", "2024-01-01T10:00:00Z", "2024-01-01 10:00:00+01:00",
    "2024-01-01 10:00", " 2024-01-01 ", "05/03/2024 12:34", "unknown", "2024-1-5", "٣", "１２",
]


def _valid_text(target: pa.DataType) -> st.SearchStrategy[str]:
    if pa.types.is_integer(target):
        return st.integers(-(10**12), 10**12).map(str)
    if pa.types.is_floating(target):
        return st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: f"{x:.3f}")
    day = st.dates().map(lambda d: d.isoformat())
    if pa.types.is_date(target):
        return day
    return st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat(sep=" "))


def _oracle(values: pa.Array, target: pa.DataType, convert) -> tuple[list, dict[int, str]]:
    batch = pa.RecordBatch.from_arrays([values], names=["v"])
    array, errors = isolate_row_errors(lambda b: convert(b.column(0)), batch, target)
    return _comparable(array), errors


def _comparable(array: pa.Array) -> list:
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in array.to_pylist()]


def _trimming_cast(target: pa.DataType):
    def convert(array: pa.Array) -> pa.Array:
        array = pc.utf8_trim_whitespace(array)
        return pc.cast(pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array), target)

    return convert


@settings(max_examples=60, deadline=None)
@given(data=st.data(), target=st.sampled_from(TARGETS), strip=st.booleans())
def test_same_values_and_errors_as_bisecting_the_cast(data, target: pa.DataType, strip: bool) -> None:
    texts = data.draw(
        st.lists(st.one_of(_valid_text(target), st.sampled_from(NEAR_MISSES), st.none()), min_size=1, max_size=80)
    )
    values = pa.array(texts, type=pa.string())
    convert = _trimming_cast(target) if strip else (lambda array: pc.cast(array, target))

    array, errors = cast_isolating_errors(values, target, convert, strip=strip)

    expected_values, expected_errors = _oracle(values, target, convert)
    assert array.type == target
    assert _comparable(array) == expected_values
    assert errors == expected_errors


def test_benchmark_shaped_column_takes_one_cast_per_distinct_bad_value() -> None:
    good = [f"2024-{m:02d}-{d:02d} 10:{d:02d}:00" for m in range(1, 13) for d in range(1, 29)] * 50
    bad = ["2024-02-30 10:00:00", "2024-13-01 00:00:00", "05/03/2024 12:34", "unknown"] * 40
    values = pa.array(good[:8000] + bad + good[8000:], type=pa.string())
    calls: list[int] = []

    def counting_cast(array: pa.Array) -> pa.Array:
        calls.append(len(array))
        return pc.cast(array, pa.timestamp("s"))

    array, errors = cast_isolating_errors(values, pa.timestamp("s"), counting_cast)

    assert sorted(errors) == list(range(8000, 8000 + len(bad)))
    assert array.null_count == len(bad)
    # the whole column, the screened rows once, each of the 4 distinct bad values once
    assert len(calls) == 1 + 1 + 4


def test_many_distinct_suspects_fall_back_to_bisection() -> None:
    bad = [f"bad-{i}" for i in range(MAX_DISTINCT_SUSPECTS + 10)]
    values = pa.array(["1", *bad, "2"], type=pa.string())

    array, errors = cast_isolating_errors(values, pa.int64())

    assert array.to_pylist() == [1, *([None] * len(bad)), 2]
    assert sorted(errors) == list(range(1, len(bad) + 1))
    assert "bad-0" in errors[1]


@pytest.mark.parametrize("target", [pa.int64(), pa.timestamp("s")])
def test_clean_column_is_one_cast(target: pa.DataType) -> None:
    values = pa.array(["1", None, "3"] if pa.types.is_integer(target) else ["2024-01-01", None], type=pa.string())

    array, errors = cast_isolating_errors(values, target)

    assert errors == {}
    assert array.null_count == 1
