"""dedupe: the vectorized mask, and generated tables through one DirectRunner pipeline against
DuckDB's DISTINCT / row_number() OVER (PARTITION BY ... ORDER BY ...) = 1."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from beam_etl.transforms.aggregate_functions import parse_order_by
from beam_etl.transforms.dedupe import Dedupe, dedupe_mask
from test_aggregate_functions import TABLES, _sort_key, duckdb_query, values_equal

BATCH_ROWS = 6
CASES = 30


def _canonical(row: dict) -> tuple:
    return tuple(_sort_key(value) for value in row.values())


def _same_rows(got: list[dict], want: list[dict], context: str) -> None:
    got, want = sorted(got, key=_canonical), sorted(want, key=_canonical)
    assert len(got) == len(want), f"{context}: {len(got)} rows, DuckDB {len(want)}"
    for mine, theirs in zip(got, want):
        assert set(mine) == set(theirs), context
        assert all(values_equal(mine[name], theirs[name]) for name in theirs), f"{context}: {mine} != {theirs}"


def _order_sql(order: list[tuple[str, bool, bool]], reverse: bool) -> str:
    parts = []
    for name, descending, nulls_first in order:
        if reverse:
            descending, nulls_first = not descending, not nulls_first
        parts.append(f'"{name}" {"DESC" if descending else "ASC"} NULLS {"FIRST" if nulls_first else "LAST"}')
    return ", ".join(parts)


def duckdb_dedupe(table: pa.Table, key: list[str] | None, order_by: list[str], keep: str) -> list[dict]:
    """The same dedupe in DuckDB: DISTINCT, or the first row of each key in our documented order."""
    if not key:
        return duckdb_query(table, "SELECT DISTINCT * FROM t")
    order = [(k.sql.strip('"'), k.descending, k.nulls_first) for k in parse_order_by(order_by)]
    used = set(key) | {name for name, _, _ in order}
    order += [(name, False, False) for name in table.schema.names if name not in used]  # the tiebreak
    partition = ", ".join(f'"{name}"' for name in key)
    return duckdb_query(
        table,
        f"SELECT * EXCLUDE (rn__) FROM (SELECT *, row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY {_order_sql(order, keep == 'last')}) AS rn__ FROM t) WHERE rn__ = 1",
    )


def _matches(table, key, order_by, keep, context):
    def check(batches):
        _same_rows([row for batch in batches for row in batch.to_pylist()], duckdb_dedupe(table, key, order_by, keep), context)

    return check


# --------------------------------------------------------------------------- vectorized


def test_mask_semantics_nulls_nan_negative_zero_and_ties():
    nan = float("nan")
    batch = pa.RecordBatch.from_pydict({"k": [1, 1, None, None, 2, 1], "v": [nan, 2.0, -0.0, 0.0, None, 2.0]})
    assert dedupe_mask(batch).to_pylist() == [True, True, True, False, True, False]  # -0.0 == 0.0, duplicates
    assert dedupe_mask(batch, ["k"]).to_pylist() == [False, True, True, False, True, False]  # tiebreak v ASC: 2.0 < NaN
    assert dedupe_mask(batch, ["k"], keep="last").to_pylist() == [True, False, True, False, True, False]
    assert dedupe_mask(batch, ["k"], parse_order_by("v DESC")).to_pylist() == [True, False, True, False, True, False]
    assert dedupe_mask(batch, ["v"]).to_pylist() == [True, True, True, False, True, False]


def test_mask_refuses_nested_columns_with_a_fix():
    batch = pa.RecordBatch.from_pydict({"id": [1, 1], "tags": [["a"], ["a"]]})
    with pytest.raises(ValueError, match="cannot compare column 'tags' .* name scalar key columns with key:"):
        dedupe_mask(batch)
    assert dedupe_mask(batch, ["id"]).to_pylist() == [True, False]


# --------------------------------------------------------------------------- one pipeline vs DuckDB


def _tagged(tables: list[pa.Table]) -> pa.Table:
    parts = []
    for index, table in enumerate(tables):
        table = pa.concat_tables([table, table.slice(0, table.num_rows // 2)])  # exact duplicates
        parts.append(table.append_column("case_id", pa.array([index] * table.num_rows, pa.int64())))
    return pa.concat_tables(parts)


VARIANTS = {
    "exact": (None, [], "first"),
    "key_first": (["case_id", "k"], ["t"], "first"),
    "key_last": (["case_id", "f"], ["t DESC NULLS FIRST", "s"], "last"),
    "key_no_order": (["case_id", "j"], [], "first"),
    "float_key_last": (["case_id", "f", "j"], [], "last"),
}


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each example is a pipeline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tables=st.lists(TABLES, min_size=CASES, max_size=CASES))
def test_dedupe_pipeline_matches_duckdb(tables):
    table = _tagged(tables)
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | beam.Create(table.to_batches(max_chunksize=BATCH_ROWS)).with_output_types(pa.RecordBatch)
        for name, (key, order_by, keep) in VARIANTS.items():
            out = rows | name >> Dedupe(name, key, order_by, keep, keep_duplicates=True, shards=4, batch_rows=5)
            assert_that(out.main, _matches(table, key, order_by, keep, name), label=f"check {name}")
            if name == "exact":
                removed = table.num_rows - len(duckdb_dedupe(table, None, [], "first"))
                assert_that(
                    out.side["duplicates"] | "count duplicates" >> beam.Map(lambda batch: batch.num_rows) | beam.CombineGlobally(sum),
                    lambda got, removed=removed: got == [removed] or pytest.fail(f"{got} duplicates, want {removed}"),
                    label="check duplicates",
                )


# --------------------------------------------------------------------------- the spec


ROWS = [
    {"id": 1, "v": 10, "updated_at": "2024-01-02"},
    {"id": 1, "v": 11, "updated_at": "2024-03-01"},
    {"id": 2, "v": 20, "updated_at": None},
    {"id": 2, "v": 21, "updated_at": "2024-01-01"},
    {"id": 1, "v": 11, "updated_at": "2024-03-01"},
    {"id": None, "v": 30, "updated_at": "2024-01-01"},
    {"id": None, "v": 31, "updated_at": "2024-02-01"},
]


def _spec(step: dict, sinks: dict | None = None) -> dict:
    return {
        "name": "dedupe",
        "sources": {"rows": {"type": "inline", "rows": ROWS}},
        "steps": [{"name": "latest", "type": "dedupe", "input": "rows", **step}],
        "sinks": sinks or {"out": {"type": "ndjson", "input": "latest", "path": "out/"}},
        "settings": {"batch_rows": 2},
    }


def _read(directory) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


def test_spec_run_keeps_latest_per_key_and_balances(tmp_path):
    spec = load_spec(
        _spec(
            {"key": "id", "order_by": ["updated_at DESC"], "keep_duplicates": True},
            sinks={
                "out": {"type": "ndjson", "input": "latest", "path": "out/"},
                "dups": {"type": "ndjson", "input": "latest.duplicates", "path": "dups/"},
            },
        )
    )
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    assert sorted((row["id"] is None, row["id"] or 0, row["v"]) for row in _read(tmp_path / "out")) == [
        (False, 1, 11),
        (False, 2, 21),  # a NULL updated_at sorts last even with DESC
        (True, 0, 31),  # NULL ids are one key
    ]
    assert len(_read(tmp_path / "dups")) == 4
    step = next(row for row in report.summary["steps"] if row["name"] == "latest")
    assert (step["rows_in"], step["rows_merged"], step["rows_filtered"], step["rows_out"]) == (7, 3, 4, 3)
    assert step["balanced"]


@pytest.mark.parametrize(
    "step, message",
    [
        ({"key": ["idd"]}, "steps[0].key: unknown column 'idd' (did you mean 'id'?)"),
        ({"key": ["id"], "order_by": ["updatedat"]}, "steps[0].order_by: unknown column 'updatedat' (did you mean 'updated_at'?)"),
        ({"key": ["id"], "order_by": ["v + 1"]}, "steps[0].order_by: order_by 'v + 1' must be a column name"),
        ({"keep": "middle"}, "steps[0].keep"),
    ],
)
def test_spec_errors_have_paths(step, message):
    with pytest.raises(SpecError) as caught:
        load_spec(_spec(step))
    assert message in str(caught.value)
