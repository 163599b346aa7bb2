"""``window``: window functions checked against DuckDB — the vectorized core with hypothesis,
and many generated cases through one DirectRunner pipeline (small batches, several shards)."""

from __future__ import annotations

import os

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from beam_etl.transforms.window import (
    OrderKey,
    WindowCall,
    WindowFunctions,
    parse_order_key,
    parse_window_call,
    window_table,
)

# shared oracle helpers (pytest's default "prepend" import mode puts tests/unit on sys.path)
from test_join import assert_same_rows, collect, counters, read_all

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: output column -> (our call, DuckDB expression with {w}: the full window, {peer}: order keys only)
FUNCTIONS = {
    "rn": ("row_number()", "row_number() OVER ({w})"),
    "rk": ("rank()", "rank() OVER ({peer})"),
    "dr": ("dense_rank()", "dense_rank() OVER ({peer})"),
    "pr": ("percent_rank()", "percent_rank() OVER ({peer})"),
    "cd": ("cume_dist()", "cume_dist() OVER ({peer})"),
    "nt": ("ntile(3)", "ntile(3) OVER ({w})"),
    "lg": ("lag(f, 2, 0.5)", "lag(f, 2, 0.5) OVER ({w})"),
    "ld": ("lead(s, 1, 'zz')", "lead(s, 1, 'zz') OVER ({w})"),
    "li": ("lag(i)", "lag(i) OVER ({w})"),
    "cs": ("cumsum(i)", "sum(i) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
    "cf": ("cumsum(f)", "sum(f) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
    "cc": ("cumcount(f)", "count(f) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
    "ca": ("cumcount()", "count(*) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
    "ms": ("moving_sum(i, 3)", "sum(i) OVER ({w} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)"),
    "mf": ("moving_sum(f, 2)", "sum(f) OVER ({w} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"),
    "ma": ("moving_avg(f, 2)", "avg(f) OVER ({w} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"),
    "mi": ("moving_avg(i, 3)", "avg(i) OVER ({w} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)"),
    "fv": ("first_value(s)", "first_value(s) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"),
    "lv": ("last_value(f)", "last_value(f) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"),
    "nv": ("nth_value(i, 2)", "nth_value(i, 2) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"),
}
INT_SUMS = ("cs", "ms")  # DuckDB widens these to HUGEINT; we send rows beyond int64 to the DLQ


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duckdb_window(table: pa.Table, partition_by: list[str], order_by: list[OrderKey], names=FUNCTIONS) -> tuple[pa.Table, pa.Table]:
    """DuckDB's answer: (rows whose int sums fit int64, with our columns; the overflowing input rows)."""
    part = f"PARTITION BY {', '.join(map(quote, partition_by))}" if partition_by else ""
    keys = [key.sql() for key in order_by]
    used = set(partition_by) | {key.column for key in order_by}
    tiebreak = [f"{quote(c)} ASC NULLS LAST" for c in table.column_names if c not in used]
    w = f"{part} ORDER BY {', '.join(keys + tiebreak)}" if keys + tiebreak else part
    peer = f"{part} ORDER BY {', '.join(keys)}" if keys else part
    exprs = [f"{sql.format(w=w, peer=peer)} AS {name}" for name, (_, sql) in names.items()]
    con = duckdb.connect()
    con.register("t", table)
    inner = f"SELECT *, {', '.join(exprs)} FROM t"
    sums = [n for n in INT_SUMS if n in names]
    fits = " AND ".join(f"({n} IS NULL OR {n} BETWEEN {INT64_MIN} AND {INT64_MAX})" for n in sums) or "TRUE"
    casts = ", ".join(f"CAST({n} AS BIGINT) AS {n}" if n in sums else quote(n) for n in [*table.column_names, *names])
    good = con.sql(f"SELECT {casts} FROM ({inner}) WHERE {fits}").to_arrow_table()
    bad = con.sql(f"SELECT {', '.join(map(quote, table.column_names))} FROM ({inner}) WHERE NOT ({fits})").to_arrow_table()
    return good, bad


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, call",
    [
        ("rank()", WindowCall("rank")),
        ("ROW_NUMBER()", WindowCall("row_number")),
        ("lag(total)", WindowCall("lag", "total", 1)),
        ("lead(\"unit price\", 3, -1.5)", WindowCall("lead", "unit price", 3, -1.5)),
        ("lag(x, 0, 'none')", WindowCall("lag", "x", 0, "none")),
        ("cumcount(*)", WindowCall("cumcount")),
        ("moving_avg(total, 3)", WindowCall("moving_avg", "total", 3)),
        ("ntile(4)", WindowCall("ntile", None, 4)),
    ],
)
def test_calls_parse_against_the_whitelist(text, call):
    assert parse_window_call(text) == call


@pytest.mark.parametrize(
    "text, message",
    [
        ("rnak()", "unknown window function 'rnak' (did you mean 'rank'?)"),
        ("sum(x)", "unknown window function 'sum'"),
        ("moving_avg(total)", "moving_avg needs a count; usage: moving_avg(column, n)"),
        ("moving_avg(total, 0)", "moving_avg: the count must be an integer literal >= 1"),
        ("lag(x, y)", "lag: the count must be an integer literal >= 0"),
        ("ntile(2, 3)", "greater than the maximum number of supported arguments (1)"),
        ("cumcount(x, 2)", "cumcount takes fewer arguments"),
        ("cumsum()", "cumsum needs a column as its first argument"),
        ("rank() OVER (PARTITION BY a)", "write the function without OVER"),
        ("x + 1", "is not a function call"),
        ("lag(x, 1, y)", "the default must be a literal"),
    ],
)
def test_bad_calls_say_what_to_write(text, message):
    with pytest.raises(ValueError) as caught:
        parse_window_call(text)
    assert message in str(caught.value)


def test_order_keys_parse_direction_and_nulls():
    assert parse_order_key("total") == OrderKey("total", False, False)
    assert parse_order_key("total DESC NULLS FIRST") == OrderKey("total", True, True)
    assert parse_order_key('"unit price" asc nulls last') == OrderKey("unit price", False, False)
    with pytest.raises(ValueError, match="derive an expression into a column first"):
        parse_order_key("total * 2 DESC")


# --------------------------------------------------------------------------- semantics, table-driven


def test_ntile_gives_earlier_buckets_the_extra_rows_and_more_buckets_than_rows():
    table = pa.table({"x": list(range(7))})
    assert window_table(table, {"n": "ntile(3)"}, [], ["x"]).out.column("n").to_pylist() == [1, 1, 1, 2, 2, 3, 3]
    assert window_table(table.slice(0, 2), {"n": "ntile(5)"}, [], ["x"]).out.column("n").to_pylist() == [1, 2]


def test_ties_share_a_rank_and_the_tiebreak_orders_by_the_other_columns():
    table = pa.table({"g": ["a"] * 4, "score": [10, 10, 5, 10], "name": ["d", "b", "c", "a"]})
    out = window_table(table, {"rn": "row_number()", "rk": "rank()", "dr": "dense_rank()"}, ["g"], ["score DESC"]).out
    assert out.select(["name", "rn", "rk", "dr"]).to_pylist() == [
        {"name": "a", "rn": 1, "rk": 1, "dr": 1},
        {"name": "b", "rn": 2, "rk": 1, "dr": 1},
        {"name": "d", "rn": 3, "rk": 1, "dr": 1},
        {"name": "c", "rn": 4, "rk": 4, "dr": 2},
    ]


def test_nulls_and_nan_place_like_duckdb():
    table = pa.table({"x": [1.0, None, float("nan"), 3.0]})
    order = lambda key: window_table(table, {"rn": "row_number()"}, [], [key]).out.column("x").to_pylist()  # noqa: E731
    assert str(order("x")) == "[1.0, 3.0, nan, None]"  # NaN above every number, NULLs last by default
    assert str(order("x DESC")) == "[nan, 3.0, 1.0, None]"
    assert str(order("x DESC NULLS FIRST")) == "[None, nan, 3.0, 1.0]"


def test_lag_default_applies_only_outside_the_partition():
    table = pa.table({"g": [1, 1, 1, 2], "t": [1, 2, 3, 1], "x": [None, 5, 6, 7]})
    out = window_table(table, {"prev": "lag(x, 1, -1)", "next": "lead(x, 1, -1)"}, ["g"], ["t"]).out
    assert out.column("prev").to_pylist() == [-1, None, 5, -1]  # a NULL value stays NULL; no row -> default
    assert out.column("next").to_pylist() == [5, 6, -1, -1]


def test_integer_sum_overflow_sends_the_row_to_the_dlq_with_the_fix():
    table = pa.table({"g": [1, 1, 1, 2], "t": [1, 2, 3, 1], "x": [2**62, 2**62, -(2**62), 2**62]})
    outcome = window_table(table, {"run": "cumsum(x)"}, ["g"], ["t"])
    assert outcome.out.select(["t", "run"]).to_pylist() == [{"t": 1, "run": 2**62}, {"t": 3, "run": 2**62}, {"t": 1, "run": 2**62}]
    assert outcome.failed.column("t").to_pylist() == [2]
    assert outcome.messages == ["run: cumsum(x) exceeds the int64 range; cast x to float64 or decimal first"]


# --------------------------------------------------------------------------- hypothesis vs DuckDB (no Beam)

FLOAT_VALUES = [0.0, -0.0, 0.5, -2.25, 3.0, 1e12, -7.125, 1e300, float("nan"), float("inf"), float("-inf")]
INT_VALUES = [0, 1, -1, 2, 7, 2**62, INT64_MIN, INT64_MAX, -(2**40)]
STR_VALUES = ["", "a", "A", "é", "日本", "a ", "zz"]


def maybe(values):
    return st.one_of(st.none(), st.sampled_from(values))


@st.composite
def tables(draw, min_rows: int = 0, max_rows: int = 14):
    n = draw(st.integers(min_rows, max_rows))
    return pa.table(
        {
            "p": pa.array([draw(maybe(["x", "é", ""])) for _ in range(n)], pa.string()),
            "q": pa.array([draw(maybe([1, 2])) for _ in range(n)], pa.int64()),
            "i": pa.array([draw(maybe(INT_VALUES)) for _ in range(n)], pa.int64()),
            "f": pa.array([draw(maybe(FLOAT_VALUES)) for _ in range(n)], pa.float64()),
            "s": pa.array([draw(maybe(STR_VALUES)) for _ in range(n)], pa.string()),
        }
    )


ORDER_KEYS = st.lists(
    st.builds(OrderKey, st.sampled_from(["i", "f", "s"]), st.booleans(), st.booleans()),
    max_size=3,
    unique_by=lambda key: key.column,
)
PARTITIONS = st.sampled_from([[], ["p"], ["q"], ["p", "q"]])


def check_against_duckdb(table, partition_by, order_by, outcome, context=""):
    expected, overflow = duckdb_window(table, partition_by, order_by)
    assert_same_rows(outcome.out.select(expected.column_names), expected, context)
    failed = outcome.failed if outcome.failed is not None else table.slice(0, 0)
    assert_same_rows(failed, overflow, f"{context} overflow rows")


@settings(max_examples=60, deadline=None)
@given(table=tables(), partition_by=PARTITIONS, order_by=ORDER_KEYS)
def test_window_functions_match_duckdb(table, partition_by, order_by):
    functions = {name: call for name, (call, _) in FUNCTIONS.items()}
    outcome = window_table(table, functions, partition_by, order_by)
    check_against_duckdb(table, partition_by, order_by, outcome, f"partition {partition_by} order {order_by}")


# --------------------------------------------------------------------------- many cases through one pipeline


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(cases=st.lists(tables(min_rows=1, max_rows=12), min_size=16, max_size=16))
def test_pipeline_window_functions_match_duckdb_across_batches_and_shards(tmp_path_factory, cases):
    """Cases are tagged with a ``case`` column that becomes an extra partition key."""
    out_dir = str(tmp_path_factory.mktemp("window"))
    table = pa.concat_tables([t.append_column("case", pa.array([c] * t.num_rows, pa.int64())) for c, t in enumerate(cases)])
    functions = {name: call for name, (call, _) in FUNCTIONS.items()}
    runs = [
        ("by_case_p", ["case", "p"], [OrderKey("f", True, True), OrderKey("i")]),
        ("by_case_q", ["case", "q"], [OrderKey("s"), OrderKey("i", True)]),
        ("one_partition", [], [OrderKey("i", False, True)]),
    ]
    pipeline = beam.Pipeline(runner="DirectRunner")
    batches = pipeline | beam.Create(table.combine_chunks().to_batches(max_chunksize=5)).with_output_types(pa.RecordBatch)
    for label, partition_by, order_by in runs:
        result = batches | label >> WindowFunctions(label, functions, partition_by, [k.sql().replace('"', "") for k in order_by], shards=4, batch_rows=6)
        collect(result.main, os.path.join(out_dir, label), f"write {label}")
        collect(result.dlq, os.path.join(out_dir, f"{label}_dlq"), f"dlq {label}")
    outcome = pipeline.run()
    outcome.wait_until_finish()
    for label, partition_by, order_by in runs:
        expected, overflow = duckdb_window(table, partition_by, order_by)
        actual = read_all(os.path.join(out_dir, label), expected.schema).select(expected.column_names)
        for case in range(len(cases)):
            pick = lambda t: t.filter(pc.equal(t.column("case"), case))  # noqa: E731
            assert_same_rows(pick(actual), pick(expected), f"{label} case {case}")
        dlq = read_all(os.path.join(out_dir, f"{label}_dlq"))
        assert dlq.num_rows == overflow.num_rows, label
        assert all(t == "window.overflow" for t in dlq.column("error_type").to_pylist()) if dlq.num_rows else True
        numbers = counters(outcome, label)
        assert numbers["rows_in"] == table.num_rows == numbers.get("rows_out", 0) + numbers.get("rows_dlq", 0), label


# --------------------------------------------------------------------------- spec level

ROWS = [{"country": ["US", "CA", "DE"][i % 3], "total": float((i * 37) % 11), "id": i} for i in range(30)]


def _spec(step: dict) -> dict:
    return {
        "name": "window_spec",
        "sources": {"kept": {"type": "inline", "rows": ROWS}},
        "steps": [step],
        "sinks": {"out": {"type": "parquet", "input": step["name"], "path": "out/"}},
        "settings": {"batch_rows": 4},
    }


def test_spec_window_step_runs_balanced_and_matches_duckdb(tmp_path):
    step = {"name": "ranked", "type": "window", "input": "kept", "partition_by": ["country"], "order_by": ["total DESC"],
            "functions": {"rnk": "rank()", "prev": "lag(total, 1)", "running": "cumsum(total)", "ma3": "moving_avg(total, 3)"}}
    spec = load_spec(_spec(step))
    assert spec.schemas["ranked"].names == ["country", "total", "id", "rnk", "prev", "running", "ma3"]
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    row = next(r for r in report.summary["steps"] if r["name"] == "ranked")
    assert row["rows_in"] == row["rows_out"] == 30 and row["balanced"]
    table = pa.Table.from_pylist(ROWS)
    names = {"rnk": ("rank()", "rank() OVER ({peer})"), "prev": ("", "lag(total, 1) OVER ({w})"),
             "running": ("", "sum(total) OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"),
             "ma3": ("", "avg(total) OVER ({w} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)")}
    expected, _ = duckdb_window(table, ["country"], [OrderKey("total", True)], names)
    assert_same_rows(pq.read_table(str(tmp_path / "out")).select(expected.column_names), expected, "spec")


def test_spec_errors_name_the_path_and_the_fix():
    def issues(**fields):
        step = {"name": "w", "type": "window", "input": "kept", "functions": {"r": "rank()"}, **fields}
        with pytest.raises(SpecError) as caught:
            load_spec(_spec(step))
        return str(caught.value)

    assert "steps[0].functions.r: unknown window function 'rnak' (did you mean 'rank'?)" in issues(functions={"r": "rnak()"})
    assert "steps[0].functions.r: unknown column 'totl' (did you mean 'total'?)" in issues(functions={"r": "cumsum(totl)"})
    assert "steps[0].functions.r: cumsum needs a numeric column; 'country' is string" in issues(functions={"r": "cumsum(country)"})
    assert "steps[0].partition_by[0]: unknown column 'contry' (did you mean 'country'?)" in issues(partition_by=["contry"])
    assert "steps[0].order_by[0]: order_by item 'total +' is not" in issues(order_by=["total +"])
