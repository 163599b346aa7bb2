"""pivot and unpivot against DuckDB's PIVOT/UNPIVOT: generated tables through one DirectRunner
pipeline (listed and discovered columns, a hot key), the vectorized unpivot, and the spec."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from beam_etl.transforms.pivot import Pivot, pivot_table, unpivot_batch
from test_aggregate_functions import TABLES, _sort_key, assert_same_rows, duckdb_query

CASES = 30
BATCH_ROWS = 6
VALUES = {"total": "sum(i)", "n": "count(*)", "top": "max(f)", "names": "collect_list(s)"}
DUCK_VALUES = "sum(i) AS total, count(*) AS n, max(f) AS top, coalesce(list(s ORDER BY s) FILTER (WHERE s IS NOT NULL), []) AS names"


def _tagged(tables: list[pa.Table]) -> pa.Table:
    """All cases in one table with a case id; each case has at least its first row (DuckDB
    cannot PIVOT a table without rows, and an empty case tests nothing here)."""
    anchor = pa.Table.from_pylist([{"k": "hot", "j": 1, "i": 1, "f": 1.0, "t": 1, "s": "a"}], schema=tables[0].schema)
    parts = []
    for index, table in enumerate(tables):
        table = pa.concat_tables([anchor, table])
        # DuckDB's column names are case-insensitive: with values 'a' and 'A' it renames one
        # column 'a_1'; ours are case-sensitive and keep both. Keep the oracle comparable.
        k = table.column("k").combine_chunks()
        table = table.set_column(0, "k", pc.if_else(pc.equal(k, "A"), "AA", k))
        parts.append(table.append_column("case_id", pa.array([index] * table.num_rows, pa.int64())))
    return pa.concat_tables(parts)


def _quote(value) -> str:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else str(value)


def duckdb_pivot(table: pa.Table, on: str, group_by: list[str], using: str, listed: list | None = None) -> list[dict]:
    within = f" IN ({', '.join(_quote(v) for v in listed)})" if listed is not None else ""
    group = ", ".join(f'"{name}"' for name in group_by)
    return duckdb_query(table, f'PIVOT t ON "{on}"{within} USING {using} GROUP BY {group}')


def _pivot_matches(table, on, group_by, listed, context):
    def check(batches):
        got = [row for batch in batches for row in batch.to_pylist()]
        want = duckdb_pivot(table, on, group_by, DUCK_VALUES, listed)
        assert got and want, f"{context}: {len(got)} rows, DuckDB {len(want)}"
        assert set(got[0]) == set(want[0]), f"{context}: columns {sorted(got[0])} vs DuckDB {sorted(want[0])}"
        assert_same_rows(got, want, group_by, [name for name in want[0] if name not in group_by], context=context)

    return check


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each example is a pipeline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tables=st.lists(TABLES, min_size=CASES, max_size=CASES))
def test_pivot_pipeline_matches_duckdb(tables):
    table = _tagged(tables)
    listed = ["hot", "", "日本", "absent"]
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | beam.Create(table.to_batches(max_chunksize=BATCH_ROWS)).with_output_types(pa.RecordBatch)
        discovered = rows | "on k" >> Pivot("on_k", "k", VALUES, ["case_id", "j"], shards=4, batch_rows=7)
        listed_out = rows | "on k listed" >> Pivot("on_k_listed", "k", VALUES, ["case_id", "j"], listed, shards=3)
        on_int = rows | "on j" >> Pivot("on_j", "j", VALUES, ["case_id", "k"], shards=4)
        assert_that(discovered.main, _pivot_matches(table, "k", ["case_id", "j"], None, "discovered"), label="check discovered")
        assert_that(listed_out.main, _pivot_matches(table, "k", ["case_id", "j"], listed, "listed"), label="check listed")
        assert_that(on_int.main, _pivot_matches(table, "j", ["case_id", "k"], None, "int values"), label="check int")


def test_pivot_table_semantics_like_duckdb():
    table = pa.table(
        {"region": ["EU", "EU", "US", "US", None, "ASIA"], "product": ["A", "B", "A", None, "B", "C"], "amount": [1, 2, 3, 4, 5, 6]}
    )
    got = pivot_table(table, "product", {"total": "sum(amount)", "n": "count(*)"}, ["region"]).to_pylist()
    want = duckdb_query(table, 'PIVOT t ON product USING sum(amount) AS total, count(*) AS n GROUP BY region')
    assert list(got[0]) == list(want[0])  # same column order: by value, then aggregate
    assert_same_rows(got, want, ["region"], ["A_total", "A_n", "B_total", "B_n", "C_total", "C_n"])
    # US has a NULL product row: its row exists, no NULL column; ASIA has only unlisted values
    listed = pivot_table(table, "product", "count(*)", ["region"], columns=["A", "B"]).sort_by("region").to_pylist()
    assert listed[0] == {"region": "ASIA", "A": 0, "B": 0}


# --------------------------------------------------------------------------- unpivot


UNPIVOT_SCHEMA = pa.schema([("key", pa.string()), ("a", pa.int64()), ("b", pa.int32()), ("c", pa.int64())])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "key": st.one_of(st.none(), st.text(max_size=3)),
                "a": st.one_of(st.none(), st.integers(-(2**62), 2**62)),
                "b": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
                "c": st.one_of(st.none(), st.integers(-5, 5)),
            }
        ),
        max_size=30,
    )
)
def test_unpivot_matches_duckdb(rows):
    table = pa.Table.from_pylist(rows, schema=UNPIVOT_SCHEMA)
    batch = table.combine_chunks().to_batches()[0] if rows else pa.RecordBatch.from_pylist([], schema=UNPIVOT_SCHEMA)
    got = unpivot_batch(batch, ["a", "b", "c"], "col", "val").to_pylist()
    want = duckdb_query(table, "UNPIVOT t ON a, b, c INTO NAME col VALUE val") if rows else []
    key = lambda row: tuple(_sort_key(v) for v in row.values())  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    everything = unpivot_batch(batch, ["a", "b", "c"], include_nulls=True)
    assert everything.num_rows == 3 * batch.num_rows
    assert everything.column("name").to_pylist()[:3] == (["a", "b", "c"] if rows else [])  # row-major
    assert everything.schema.field("value").type == pa.int64()


def test_unpivot_types_and_errors():
    batch = pa.RecordBatch.from_pydict({"id": [1], "x": [1], "y": [2.5], "s": ["t"]})
    assert unpivot_batch(batch, ["x", "y"]).column("value").to_pylist() == [1.0, 2.5]
    with pytest.raises(ValueError, match="unpivot columns must share a type, got x int64, s string; cast them"):
        unpivot_batch(batch, ["x", "s"])


# --------------------------------------------------------------------------- the spec


SALES = [
    {"region": "EU", "product": "A", "amount": 1.0},
    {"region": "EU", "product": "B", "amount": 2.0},
    {"region": "US", "product": "A", "amount": 3.0},
    {"region": "US", "product": None, "amount": 4.0},
    {"region": None, "product": "B", "amount": 5.0},
    {"region": "ASIA", "product": "C", "amount": 6.0},
    {"region": "EU", "product": "A", "amount": 10.0},
]


def _spec(steps: list[dict], sinks: dict) -> dict:
    return {"name": "pivot", "sources": {"sales": {"type": "inline", "rows": SALES}}, "steps": steps, "sinks": sinks, "settings": {"batch_rows": 2}}


def _read(directory) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


def test_spec_run_pivot_listed_discovered_and_unpivot_back(tmp_path):
    spec = load_spec(
        _spec(
            [
                {"name": "wide", "type": "pivot", "input": "sales", "on": "product", "values": "sum(amount)", "group_by": "region", "columns": ["A", "B"]},
                {"name": "found", "type": "pivot", "input": "sales", "on": "product", "values": {"n": "count(*)"}, "group_by": ["region"]},
                {"name": "long", "type": "unpivot", "input": "wide", "columns": ["A", "B"], "name_column": "product", "value_column": "amount"},
            ],
            {
                "wide": {"type": "ndjson", "input": "wide", "path": "wide/"},
                "found": {"type": "ndjson", "input": "found", "path": "found/"},
                "long": {"type": "ndjson", "input": "long", "path": "long/"},
            },
        )
    )
    assert spec.schemas["wide"] == pa.schema([("region", pa.string()), ("A", pa.float64()), ("B", pa.float64())])
    assert spec.schemas["found"] is None  # discovered columns: unknown before the run
    assert spec.schemas["long"] == pa.schema([("region", pa.string()), ("product", pa.string()), ("amount", pa.float64())])
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    wide = {row["region"]: row for row in _read(tmp_path / "wide")}
    assert wide == {
        "EU": {"region": "EU", "A": 11.0, "B": 2.0},
        "US": {"region": "US", "A": 3.0, "B": None},
        None: {"region": None, "A": None, "B": 5.0},
        "ASIA": {"region": "ASIA", "A": None, "B": None},
    }
    found = {row["region"]: row for row in _read(tmp_path / "found")}
    assert found["ASIA"] == {"region": "ASIA", "A_n": 0, "B_n": 0, "C_n": 1}
    long = sorted((row["region"] or "", row["product"], row["amount"]) for row in _read(tmp_path / "long"))
    assert long == [("", "B", 5.0), ("EU", "A", 11.0), ("EU", "B", 2.0), ("US", "A", 3.0)]  # NULLs left out
    steps = {row["name"]: row for row in report.summary["steps"] if row["kind"] == "step"}
    assert (steps["wide"]["rows_in"], steps["wide"]["rows_merged"], steps["wide"]["rows_out"]) == (7, 7, 4)
    assert (steps["long"]["rows_in"], steps["long"]["rows_merged"], steps["long"]["rows_out"]) == (4, 4, 4)
    assert all(row["balanced"] for row in report.summary["steps"]), report.summary["steps"]


@pytest.mark.parametrize(
    "step, message",
    [
        ({"type": "pivot", "on": "prodct", "values": "sum(amount)"}, "steps[0].on: unknown column 'prodct' (did you mean 'product'?)"),
        ({"type": "pivot", "on": "product", "values": "sum(region)"}, "steps[0].values: sum(region) needs a numeric argument, got string"),
        ({"type": "pivot", "on": "product", "values": {"t": "summ(amount)"}}, "steps[0].values.t: unknown aggregate function 'summ'"),
        ({"type": "pivot", "on": "product", "values": "sum(amount)", "group_by": ["product"]}, "also in group_by"),
        ({"type": "pivot", "on": "amount", "values": "count(*)", "columns": ["x"]}, "steps[0].columns: values do not fit column 'amount' (double)"),
        ({"type": "unpivot", "columns": ["amount", "regon"]}, "steps[0].columns: unknown column 'regon' (did you mean 'region'?)"),
        ({"type": "unpivot", "columns": ["amount", "region"]}, "steps[0].columns: unpivot columns must share a type"),
        ({"type": "unpivot", "columns": ["amount"], "name_column": "region"}, "steps[0].name_column: 'region' is already a column"),
    ],
)
def test_spec_errors_have_paths(step, message):
    spec = _spec([{"name": "s", "input": "sales", **step}], {"out": {"type": "ndjson", "input": "s", "path": "out/"}})
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert message in str(caught.value)
