"""Arrow batches: row conversion and the IPC coder round trip (hypothesis-generated batches)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
from apache_beam import coders
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.batch import (
    ArrowBatchCoder,
    batch_to_rows,
    concat_batches,
    empty_batch,
    rebatch,
    rows_to_batch,
    split_batch,
)
from beam_etl.json_rows import rows_as_json

CODER = ArrowBatchCoder()

ints = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
texts = st.one_of(st.none(), st.text(max_size=12))
floats = st.one_of(st.none(), st.floats(allow_nan=False))
stamps = st.one_of(st.none(), st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)))
decimals = st.one_of(st.none(), st.decimals(min_value=-(10**8), max_value=10**8, places=2, allow_nan=False, allow_infinity=False))


@st.composite
def batches(draw):
    n = draw(st.integers(min_value=0, max_value=30))
    columns = {
        "i": pa.array(draw(st.lists(ints, min_size=n, max_size=n)), pa.int64()),
        "s": pa.array(draw(st.lists(texts, min_size=n, max_size=n)), pa.string()),
        "f": pa.array(draw(st.lists(floats, min_size=n, max_size=n)), pa.float64()),
        "ts": pa.array(draw(st.lists(stamps, min_size=n, max_size=n)), pa.timestamp("us", tz="Europe/Berlin")),
        "d": pa.array(draw(st.lists(decimals, min_size=n, max_size=n)), pa.decimal128(12, 2)),
        "l": pa.array(draw(st.lists(st.one_of(st.none(), st.lists(ints, max_size=3)), min_size=n, max_size=n)), pa.list_(pa.int64())),
        "st": pa.array(
            draw(st.lists(st.one_of(st.none(), st.fixed_dictionaries({"x": ints, "y": texts})), min_size=n, max_size=n)),
            pa.struct([("x", pa.int64()), ("y", pa.string())]),
        ),
        "dict": pa.array(draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n, max_size=n))).dictionary_encode(),
    }
    return pa.RecordBatch.from_pydict(columns)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_coder_round_trip_keeps_schema_and_values(batch):
    decoded = CODER.decode(CODER.encode(batch))
    assert decoded.schema == batch.schema  # time zones, decimal precision, dictionary type kept
    assert decoded.equals(batch)


def test_zero_row_batch_round_trips():
    schema = pa.schema([("a", pa.int64()), ("b", pa.timestamp("ms", tz="UTC"))])
    decoded = CODER.decode(CODER.encode(empty_batch(schema)))
    assert decoded.num_rows == 0 and decoded.schema == schema


def test_coder_is_registered_for_record_batches():
    assert isinstance(coders.registry.get_coder(pa.RecordBatch), ArrowBatchCoder)


def test_rows_round_trip_and_missing_keys_are_null():
    rows = [{"a": 1, "b": "x"}, {"a": 2}]
    batch = rows_to_batch(rows)
    assert batch_to_rows(batch) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    schema = pa.schema([("b", pa.string()), ("a", pa.int32())])
    assert rows_to_batch(rows, schema).schema == schema


def test_split_and_rebatch_keep_every_row_in_order():
    batch = pa.RecordBatch.from_pydict({"i": list(range(1000))})
    parts = list(split_batch(batch, 64))
    assert max(p.num_rows for p in parts) == 64
    merged = list(rebatch(parts, 300))
    assert [b.num_rows for b in merged] == [300, 300, 300, 100]
    assert concat_batches(merged).column("i").to_pylist() == list(range(1000))


def test_rows_as_json_handles_dates_decimals_and_nan():
    batch = pa.RecordBatch.from_pydict(
        {
            "d": pa.array([dt.date(2024, 1, 2)]),
            "m": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)),
            "f": [float("nan")],
        }
    )
    assert rows_as_json(batch).to_pylist() == ['{"d": "2024-01-02", "m": "1.50", "f": null}']


def test_arrow_allocates_with_jemalloc_unless_the_user_chose_a_pool():
    """beam_etl/memory.py: mimalloc kept freed pages and added ~150-200 MB to the 10M benchmark's peak."""
    import os
    import subprocess
    import sys

    probe = "import beam_etl.batch, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    chosen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert chosen == "jemalloc"
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    kept = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert kept == "system"
