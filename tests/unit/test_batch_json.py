"""``rows_as_json``'s columnar encoder against the per-row ``json.dumps`` reference.

The DLQ ``record`` text must not depend on which path encoded it, so the property is
byte equality with ``_rows_as_json_per_row`` for every column type the columnar path
takes, and that the columnar path really takes them (else the equality is vacuous).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.json_rows import _rows_as_json_columnar, _rows_as_json_per_row, rows_as_json

# Text with the characters json.dumps treats specially mixed into ordinary and non-ASCII
# ones (surrogates excluded: Arrow strings are valid UTF-8).
_SPECIAL = ['"', "\\", "\n", "\t", "\r", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "\u2028", "é", "日", "😀", "/"]
_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(_SPECIAL), st.characters(exclude_categories=("Cs",))), max_size=12
)

_FLOAT_EDGES = [
    0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, 100.0, 0.1 + 0.2, 1e15, 1e16, 1e16 - 2, 1e-4, 1e-5,
    9999999999999998.0, 123456789012345.6, 1000000000000000.5, 5e-324, 1.7976931348623157e308, 1e21, 1e22,
]

_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _int_values(kind: pa.DataType) -> st.SearchStrategy[int]:
    bits = kind.bit_width
    if pa.types.is_signed_integer(kind):
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


def _datetimes(unit: str) -> st.SearchStrategy[dt.datetime]:
    """Naive datetimes over the whole datetime range, truncated to ``unit``."""
    keep = {"s": 0, "ms": 1000, "us": 1}[unit]
    return st.datetimes().map(
        lambda d: d.replace(microsecond=0 if keep == 0 else d.microsecond // keep * keep)
    )


@st.composite
def _supported_column(draw: st.DrawFn) -> pa.Array:
    """One column of a type the columnar path handles, with nulls."""
    choice = draw(st.sampled_from(
        ["null", "bool", "int", "float16", "float32", "float64", "string", "large_string",
         "dict_string", "date32", "date64", "timestamp"]
    ))
    size = draw(st.integers(1, 8))

    def values(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(st.one_of(st.none(), strategy), min_size=size, max_size=size))

    if choice == "null":
        return pa.nulls(size)
    if choice == "bool":
        return pa.array(values(st.booleans()), pa.bool_())
    if choice == "int":
        kind = draw(st.sampled_from(_INT_TYPES))
        return pa.array(values(_int_values(kind)), kind)
    if choice == "float16":
        return pa.array(values(st.floats(width=16)), pa.float64()).cast(pa.float16())
    if choice == "float32":
        return pa.array(values(st.floats(width=32)), pa.float32())
    if choice == "float64":
        return pa.array(values(st.one_of(st.floats(), st.sampled_from(_FLOAT_EDGES))), pa.float64())
    if choice in ("string", "large_string"):
        return pa.array(values(_TEXT), pa.string() if choice == "string" else pa.large_string())
    if choice == "dict_string":
        return pa.array(values(_TEXT), pa.string()).dictionary_encode()
    if choice in ("date32", "date64"):
        return pa.array(values(st.dates()), pa.date32() if choice == "date32" else pa.date64())
    unit = draw(st.sampled_from(["s", "ms", "us"]))
    tz = draw(st.sampled_from([None, "UTC", "Etc/UTC", "+00:00"]))
    return pa.array(values(_datetimes(unit)), pa.timestamp(unit)).cast(pa.timestamp(unit, tz=tz))


@st.composite
def _supported_batches(draw: st.DrawFn) -> pa.RecordBatch:
    """A batch of 1-5 supported columns with unique (possibly odd) names, maybe sliced."""
    names = draw(st.lists(_TEXT, min_size=1, max_size=5, unique=True))
    columns = [draw(_supported_column()) for _ in names]
    rows = min(len(c) for c in columns)
    batch = pa.RecordBatch.from_arrays([c.slice(0, rows) for c in columns], names=names)
    start = draw(st.integers(0, rows))  # sliced arrays carry an offset into their buffers
    return batch.slice(start)


@given(_supported_batches())
@settings(max_examples=400)
def test_columnar_json_matches_per_row_json(batch: pa.RecordBatch) -> None:
    fast = _rows_as_json_columnar(batch)
    assert fast is not None, batch.schema
    assert fast.type == pa.string()
    assert fast.to_pylist() == _rows_as_json_per_row(batch).to_pylist()
    assert rows_as_json(batch).equals(fast)


@given(st.lists(st.one_of(st.none(), st.floats(), st.sampled_from(_FLOAT_EDGES)), min_size=1, max_size=64))
@settings(max_examples=300)
def test_float_text_is_repr(values: list[float | None]) -> None:
    batch = pa.RecordBatch.from_pydict({"f": pa.array(values, pa.float64())})
    assert _rows_as_json_columnar(batch).to_pylist() == _rows_as_json_per_row(batch).to_pylist()


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=32))
def test_float_bit_patterns_are_repr(bits: list[int]) -> None:
    # Every double, not only the "nice" ones hypothesis' floats() favours.
    values = pa.array(bits, pa.int64()).view(pa.float64())
    batch = pa.RecordBatch.from_arrays([values], names=["f"])
    assert _rows_as_json_columnar(batch).to_pylist() == _rows_as_json_per_row(batch).to_pylist()


def test_unsupported_types_use_the_per_row_path() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "m": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
            "l": pa.array([[1, 2], None]),
            "s": pa.array([{"a": 1}, None]),
            "b": pa.array([b"\x00\xff", None]),
            "ns": pa.array([1, None], pa.timestamp("ns")),
            "ny": pa.array([0, None], pa.timestamp("s", tz="America/New_York")),
        }
    )
    for name in batch.schema.names:
        single = batch.select([name])
        assert _rows_as_json_columnar(single) is None, name
        assert rows_as_json(single).to_pylist() == _rows_as_json_per_row(single).to_pylist()


def test_duplicate_names_and_empty_batches() -> None:
    dup = pa.RecordBatch.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    assert rows_as_json(dup).to_pylist() == ['{"a": 2}']
    empty = pa.RecordBatch.from_pydict({"a": pa.array([], pa.int64())})
    assert rows_as_json(empty).to_pylist() == []
    assert rows_as_json(empty).type == pa.string()


def test_out_of_range_dates_and_times_fail_as_before() -> None:
    # datetime cannot hold these; the per-row path raises and the columnar path must not
    # quietly print them instead.
    for array in (
        pa.array([2**31 - 1], pa.date32()),
        pa.array([2_932_897], pa.date32()),  # 10000-01-01, one day past date.max
        pa.array([-719_163], pa.date32()),  # 0000-12-31, one day before date.min
        pa.array([253_402_300_800_000_000], pa.timestamp("us")),  # 10000-01-01T00:00:00
        pa.array([-62_135_596_800_000_001], pa.timestamp("us")),  # just before 0001-01-01
        pa.array([2**62], pa.timestamp("us")),
        pa.array([2**62], pa.timestamp("s")),  # µs cast overflows
        pa.array([86_400_000 + 5], pa.date64()),  # not whole days: as_py floors
    ):
        batch = pa.RecordBatch.from_arrays([array], names=["x"])
        assert _rows_as_json_columnar(batch) is None
        try:
            expected = _rows_as_json_per_row(batch).to_pylist()
        except (ValueError, OverflowError) as exc:
            with pytest.raises(type(exc)):
                rows_as_json(batch)
        else:
            assert rows_as_json(batch).to_pylist() == expected


def test_tables_with_chunks() -> None:
    table = pa.Table.from_batches(
        [
            pa.RecordBatch.from_pydict({"i": [1, 2], "s": ['a"', "b"]}),
            pa.RecordBatch.from_pydict({"i": [None, 4], "s": ["c\n", None]}),
        ]
    )
    assert rows_as_json(table).to_pylist() == _rows_as_json_per_row(table).to_pylist()
