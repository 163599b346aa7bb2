"""The aggregate step on the DirectRunner: hypothesis-generated tables against DuckDB in ONE
pipeline (a case id is an extra group key), batches small enough that groups span batches and
shards, the global row over no input, sketches through the accumulator coder, and the spec
(errors with paths, counters that balance)."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from beam_etl.transforms.aggregate import Aggregate, AggregateSpec, _MergePartials, _PartialsCoder
from beam_etl.transforms.aggregate_functions import AggregatePlan
from test_aggregate_functions import (
    AGGREGATES,
    SCHEMA,
    TABLES,
    assert_same_rows,
    duckdb_aggregate,
    oracle_scales,
    with_scales,
)

OURS = {name: ours for name, (ours, _) in AGGREGATES.items()}
THEIRS = {name: theirs for name, (_, theirs) in AGGREGATES.items()}
CASES = 30
BATCH_ROWS = 7  # groups span several batches; 4 shards: groups of one batch span shards


def _tagged(tables: list[pa.Table]) -> pa.Table:
    """All cases in one table, each row tagged with its case number."""
    parts = [t.append_column("case_id", pa.array([index] * t.num_rows, pa.int64())) for index, t in enumerate(tables)]
    return pa.concat_tables(parts) if parts else SCHEMA.append(pa.field("case_id", pa.int64())).empty_table()


def _create(p, label: str, table: pa.Table):
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    return p | label >> beam.Create(batches).with_output_types(pa.RecordBatch)


def _equals_duckdb(table: pa.Table, group_by: list[str], names: list[str], context: str):
    def check(batches: list[pa.RecordBatch]) -> None:
        got = [row for batch in batches for row in batch.to_pylist()]
        want = duckdb_aggregate(table, group_by, with_scales({name: THEIRS[name] for name in names}))
        assert_same_rows(got, want, group_by, names, oracle_scales(want, group_by), context=context)

    return check


def _one_global_row(expected: dict):
    def check(batches: list[pa.RecordBatch]) -> None:
        rows = [row for batch in batches for row in batch.to_pylist()]
        assert len(rows) == 1, rows
        for name, value in expected.items():
            assert rows[0][name] == value, (name, rows[0][name], value)

    return check


def _sketches_close(values: np.ndarray):
    def check(batches: list[pa.RecordBatch]) -> None:
        rows = {row["g"]: row for batch in batches for row in batch.to_pylist()}
        assert sorted(rows) == [0, 1, 2]
        for group, row in rows.items():
            mine = values[values % 3 == group]
            distinct = len(np.unique(mine))
            assert abs(row["d"] - distinct) <= 0.05 * distinct, (row, distinct)
            assert abs(float(np.mean(mine <= row["p50"])) - 0.5) <= 0.03, row

    return check


def _batches_for(seed: int) -> pa.RecordBatch:
    values = np.random.default_rng(seed).integers(0, 30_000, 5_000)
    return pa.RecordBatch.from_pydict({"g": values % 3, "x": values})


# No shrinking: each example is a whole pipeline; test_aggregate_functions shrinks the same
# semantics without Beam in milliseconds.
@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tables=st.lists(TABLES, min_size=CASES, max_size=CASES))
def test_aggregate_pipeline_matches_duckdb(tables):
    table = _tagged(tables)
    names = list(OURS)
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = _create(p, "rows", table)
        by_key = rows | "by case_id,k,j" >> Aggregate("by_key", OURS, ["case_id", "k", "j"], shards=4, batch_rows=5)
        by_case = rows | "by case" >> Aggregate("by_case", OURS, ["case_id"], shards=4)
        overall = rows | "global" >> Aggregate("overall", OURS, shards=4)
        empty = (
            p
            | "no rows" >> beam.Create([]).with_output_types(pa.RecordBatch)
            | "global of nothing" >> Aggregate("nothing", {"n": "count(*)", "s": "sum(i)", "l": "collect_list(s)"})
        )
        assert_that(by_key.main, _equals_duckdb(table, ["case_id", "k", "j"], names, "by case_id,k,j"), label="check by_key")
        assert_that(by_case.main, _equals_duckdb(table, ["case_id"], names, "by case"), label="check by_case")
        assert_that(overall.main, _equals_duckdb(table, [], names, "global"), label="check global")
        assert_that(empty.main, _one_global_row({"n": 0, "s": None, "l": []}), label="check empty")
        assert_that(by_key.dlq, lambda got: got == [] or pytest.fail(f"unexpected DLQ rows {got}"), label="no dlq")


def test_approximate_aggregates_through_the_pipeline():
    pytest.importorskip("datasketches")  # the test extras should install it (approximate: true)
    values = np.concatenate([_batches_for(seed).column("x").to_numpy() for seed in range(8)])
    with beam.Pipeline(runner="DirectRunner") as p:
        sketches = (
            p
            | "seeds" >> beam.Create(list(range(8)))
            | "sketch batches" >> beam.Map(_batches_for).with_output_types(pa.RecordBatch)
            | "approximate" >> Aggregate(
                "approx", {"d": "count_distinct(x)", "p50": "median(x)"}, ["g"], approximate=True, shards=2
            )
        )
        assert_that(sketches.main, _sketches_close(values))


def test_output_batches_respect_batch_rows_and_declared_schema():
    schema = pa.schema([("k", pa.int64()), ("v", pa.float64())])
    table = pa.table({"k": list(range(50)) * 2, "v": [float(i) for i in range(100)]}, schema=schema)

    def check(batches):
        assert all(batch.num_rows <= 8 for batch in batches)
        assert all(batch.schema == pa.schema([("k", pa.int64()), ("n", pa.int64()), ("s", pa.float64())]) for batch in batches)
        assert sorted(row["k"] for batch in batches for row in batch.to_pylist()) == list(range(50))

    with beam.Pipeline(runner="DirectRunner") as p:
        out = _create(p, "rows", table) | Aggregate(
            "small", {"n": "count(*)", "s": "sum(v)"}, ["k"], shards=3, batch_rows=8, input_schema=schema
        )
        assert_that(out.main, check)


def test_partials_coder_round_trips_accumulators():
    parts = [pa.RecordBatch.from_pydict({"k": ["a"], "__s0_n": [3]}), pa.RecordBatch.from_pydict({"k": [], "__s0_n": []})]
    coder = _PartialsCoder()
    decoded = coder.decode(coder.encode(parts))
    assert [batch.to_pylist() for batch in decoded] == [batch.to_pylist() for batch in parts]
    assert coder.decode(coder.encode([])) == []


def test_merging_partials_one_by_one_is_exact_and_does_not_re_merge_everything():
    """A combiner fed 1,000 partials answers like one merge of all, each value merged O(log n) times."""
    aggregates = {"n": "count(*)", "d": "count_distinct(v)", "m": "median(v)"}
    plan = AggregatePlan(["k"], aggregates)
    rng = np.random.default_rng(7)
    partials = [
        _batch(plan.partial(pa.RecordBatch.from_pydict({"k": rng.integers(0, 5, 50), "v": rng.random(50)})))
        for _ in range(1000)
    ]
    merged_bytes: list[int] = []

    class CountingPlan(AggregatePlan):
        def merge(self, tables):
            merged_bytes.append(sum(table.get_total_buffer_size() for table in tables))
            return super().merge(tables)

    combine = _MergePartials(CountingPlan(["k"], aggregates))
    accumulator = combine.create_accumulator()
    for partial in partials:
        accumulator = combine.add_input(accumulator, partial)
    result = combine.extract_output(accumulator)

    expected = _batch(plan.merge(partials))
    assert sorted(plan.finalize(result).to_pylist(), key=str) == sorted(plan.finalize(expected).to_pylist(), key=str)
    # Merging everything at every 16th partial re-reads the growing state ~31x the input here;
    # size tiers read each value about log2(1000 / 16) ~ 6 times.
    input_bytes = sum(partial.get_total_buffer_size() for partial in partials)
    assert sum(merged_bytes) < 10 * input_bytes


def _batch(table) -> pa.RecordBatch:
    from beam_etl.transforms.aggregate import table_to_batch

    return table_to_batch(table)


# --------------------------------------------------------------------------- the spec


def _spec(step: dict, rows=None, schema=None) -> dict:
    source = {"type": "inline", "rows": rows if rows is not None else [{"country": "US", "total": 1.5, "id": 1}]}
    if schema:
        source["schema"] = schema
    return {
        "name": "agg",
        "sources": {"orders": source},
        "steps": [{"name": "by_country", "type": "aggregate", "input": "orders", **step}],
        "sinks": {"out": {"type": "ndjson", "input": "by_country", "path": "out/"}},
        "settings": {"batch_rows": 3},
    }


@pytest.mark.parametrize(
    "step, message",
    [
        ({"group_by": ["contry"], "aggregates": {"n": "count(*)"}}, "steps[0].group_by: unknown column 'contry' (did you mean 'country'?)"),
        ({"aggregates": {"revenue": "sum(totl)"}}, "steps[0].aggregates.revenue: unknown column 'totl' (did you mean 'total'?)"),
        ({"aggregates": {"revenue": "sum(country)"}}, "steps[0].aggregates.revenue: sum(country) needs a numeric argument, got string"),
        ({"aggregates": {"p": "median(country)"}}, "steps[0].aggregates.p: median(country) needs a numeric argument, got string"),
        ({"aggregates": {"revenue": "summ(total)"}}, "steps[0].aggregates.revenue: unknown aggregate function 'summ' (did you mean 'sum'?)"),
        ({"aggregates": {"f": "first(id)"}}, "steps[0].aggregates.f: first() needs an order"),
        ({"aggregates": {"n": "count(*)"}, "order_by": ["ts DESC LIMIT 1"]}, "steps[0].order_by: "),
        ({"group_by": "country", "aggregates": {"country": "count(*)"}}, "steps[0].aggregates.country: 'country' is also a group_by column"),
    ],
)
def test_spec_errors_have_paths(step, message):
    with pytest.raises(SpecError) as caught:
        load_spec(_spec(step))
    assert message in str(caught.value)


def test_spec_accepts_a_single_group_by_name_and_knows_the_output_schema():
    spec = load_spec(_spec({"group_by": "country", "aggregates": {"n": "count(*)", "t": "sum(total)"}}))
    step = spec.step("by_country")
    assert isinstance(step, AggregateSpec) and step.group_by == ["country"]
    assert spec.schemas["by_country"] == pa.schema([("country", pa.string()), ("n", pa.int64()), ("t", pa.float64())])


def test_spec_run_writes_groups_routes_failing_rows_and_balances(tmp_path):
    rows = [{"country": c, "total": float(i), "id": i % 4} for i, c in enumerate(["US", "CA", "US", None, "US", "CA", "DE"])]
    aggregates = {
        "n": "count(*)",
        "revenue": "sum(total)",
        "buyers": "count_distinct(id)",
        "top": "last(id ORDER BY total)",
        "unit": "avg(total / id)",  # id 0 (rows 0 and 4): division by zero -> those rows to the DLQ
    }
    spec = load_spec(_spec({"group_by": ["country"], "aggregates": aggregates}, rows=rows))
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    out = [json.loads(line) for f in sorted((tmp_path / "out").glob("*")) for line in f.read_text().splitlines() if line]
    assert {row["country"]: row for row in out} == {
        "US": {"country": "US", "n": 1, "revenue": 2.0, "buyers": 1, "top": 2, "unit": 1.0},
        "CA": {"country": "CA", "n": 2, "revenue": 6.0, "buyers": 1, "top": 1, "unit": 3.0},
        None: {"country": None, "n": 1, "revenue": 3.0, "buyers": 1, "top": 3, "unit": 1.0},
        "DE": {"country": "DE", "n": 1, "revenue": 6.0, "buyers": 1, "top": 2, "unit": 3.0},
    }
    dlq = [json.loads(line) for f in sorted((tmp_path / "dlq").glob("*")) for line in f.read_text().splitlines() if line]
    assert sorted(json.loads(row["record"])["total"] for row in dlq) == [0.0, 4.0]
    assert {(row["step"], row["error_type"]) for row in dlq} == {("by_country", "aggregate.expression")}
    assert all("division by zero" in row["error_message"] for row in dlq)
    step = next(row for row in report.summary["steps"] if row["name"] == "by_country")
    assert (step["rows_in"], step["rows_merged"], step["rows_out"], step["rows_dlq"]) == (7, 5, 4, 2)
    assert step["balanced"]
