"""Aggregate functions without Beam: parsing, spec checks, and partial/merge/finalize against
DuckDB on hypothesis-generated tables split into arbitrary chunks and merged in any order."""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_etl.errors import ExpressionError
from beam_etl.transforms.aggregate_functions import (
    AggregateOverflow,
    AggregatePlan,
    OrderKey,
    group_ids,
    normalize_values,
    parse_aggregate,
    parse_order_by,
)

# --------------------------------------------------------------------------- shared oracle helpers
# (imported by test_aggregate.py and test_pivot.py: one definition of "equal to DuckDB")

NAN = float("nan")

SCHEMA = pa.schema(
    [
        ("k", pa.string()),
        ("j", pa.int64()),
        ("i", pa.int64()),
        ("f", pa.float64()),
        ("t", pa.int64()),
        ("s", pa.string()),
    ]
)

_text = st.sampled_from(["", "a", "A", "é", "日本", "a b", "🙂", "NULL", "z" * 30])
_keys = st.one_of(st.just("hot"), st.none(), _text)  # "hot": about half of the rows (skew)
_ints = st.one_of(st.none(), st.integers(-5, 5), st.integers(-(2**53), 2**53))
_floats = st.one_of(
    st.none(),
    st.just(NAN),
    st.sampled_from([0.0, -0.0, 1.5, -2.25, float("inf"), float("-inf")]),
    st.integers(-5, 5).map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e100, 1e100, allow_nan=False, allow_infinity=False),
)
ROW = st.fixed_dictionaries(
    {
        "k": _keys,
        "j": st.one_of(st.none(), st.integers(-2, 2)),
        "i": _ints,
        "f": _floats,
        "t": st.one_of(st.none(), st.integers(0, 4)),  # few values: ties on the order key
        "s": st.one_of(st.none(), _text),
    }
)
TABLES = st.lists(ROW, max_size=40).map(lambda rows: pa.Table.from_pylist(rows, schema=SCHEMA))

#: Our aggregate -> the DuckDB SQL that has the same (deterministic) meaning.
AGGREGATES = {
    "n": ("count(*)", "count(*)"),
    "ci": ("count(i)", "count(i)"),
    "cf": ("count(f)", "count(f)"),
    "si": ("sum(i)", "sum(i)"),
    "sf": ("sum(f)", "sum(f)"),
    "ai": ("avg(i)", "avg(i)"),
    "af": ("avg(f)", "avg(f)"),
    "mini": ("min(i)", "min(i)"),
    "maxf": ("max(f)", "max(f)"),
    "minf": ("min(f)", "min(f)"),
    "mins": ("min(s)", "min(s)"),
    "maxs": ("max(s)", "max(s)"),
    "sdf": ("stddev(f)", "stddev_samp(f)"),
    "sdpi": ("stddev_pop(i)", "stddev_pop(i)"),
    "vf": ("variance(f)", "var_samp(f)"),
    "vpf": ("var_pop(f)", "var_pop(f)"),
    "medi": ("median(i)", "median(i)"),
    "medf": ("median(f)", "median(f)"),
    "p90": ("percentile(f, 0.9)", "quantile_cont(f, 0.9)"),
    "p10i": ("percentile_cont(i, 0.1)", "quantile_cont(i, 0.1)"),
    "pd": ("percentile_disc(f, 0.6)", "quantile_disc(f, 0.6)"),
    "pds": ("percentile_disc(s, 0.25)", "quantile_disc(s, 0.25)"),
    "cdf": ("count_distinct(f)", "count(DISTINCT f)"),
    "cds": ("count(DISTINCT s)", "count(DISTINCT s)"),
    "first_s": ("first(s ORDER BY t)", "first(s ORDER BY t ASC NULLS LAST, s ASC NULLS LAST)"),
    "last_s": ("last(s ORDER BY t)", "last(s ORDER BY t ASC NULLS LAST, s ASC NULLS LAST)"),
    "first_f": ("first(f ORDER BY t DESC NULLS FIRST)", "first(f ORDER BY t DESC NULLS FIRST, f ASC NULLS LAST)"),
    "last_i": ("last(i ORDER BY t DESC, s)", "last(i ORDER BY t DESC NULLS LAST, s ASC NULLS LAST, i ASC NULLS LAST)"),
    "list_s": ("collect_list(s)", "coalesce(list(s ORDER BY s) FILTER (WHERE s IS NOT NULL), [])"),
    "list_it": (
        "collect_list(i ORDER BY t DESC)",
        "coalesce(list(i ORDER BY t DESC NULLS LAST, i) FILTER (WHERE i IS NOT NULL), [])",
    ),
    "set_s": ("collect_set(s)", "coalesce(list(DISTINCT s ORDER BY s) FILTER (WHERE s IS NOT NULL), [])"),
    "sum_pos": ("sum(i) FILTER (WHERE t > 1)", "sum(i) FILTER (WHERE t > 1)"),
    "n_pos": ("count(*) FILTER (WHERE t > 1)", "count(*) FILTER (WHERE t > 1)"),
    "sum_expr": ("sum(i * 2 - j)", "sum(i * 2 - j)"),
    "max_expr": ("max(lower(s) || '!')", "max(lower(s) || '!')"),
    "first_expr": ("first(f ORDER BY t * -1, length(s))", "first(f ORDER BY t * -1 ASC NULLS LAST, length(s) ASC NULLS LAST, f ASC NULLS LAST)"),
}

#: Error scale per float aggregate: float sums may round differently in another order, so
#: results must agree to 1e-9 relative to the magnitudes summed (DuckDB SQL for that scale).
SCALES = {
    "sf": "sum(abs(f))",
    "af": "max(abs(f))",
    "ai": "max(abs(i))",
    "sdf": "sqrt(sum(f * f))",
    "vf": "sum(f * f)",
    "vpf": "sum(f * f)",
    "sdpi": "sqrt(sum(i::double * i))",
    "p90": "max(abs(f))",
    "p10i": "max(abs(i))",
    "medf": "max(abs(f))",
    "medi": "max(abs(i))",
}


_DUCKDB = duckdb.connect()


def duckdb_query(table: pa.Table, sql: str) -> list[dict]:
    """Run ``sql`` over ``table`` registered as ``t``.

    A cursor per call: pipelines call this from several bundle threads at once, and DuckDB 2
    refuses concurrent calls on one connection.
    """
    connection = _DUCKDB.cursor()
    try:
        connection.register("t", table)
        return connection.sql(sql).arrow().read_all().to_pylist()
    finally:
        connection.close()


def duckdb_aggregate(table: pa.Table, group_by: list[str], aggregates: dict[str, str]) -> list[dict]:
    """Run the same aggregation in DuckDB (``aggregates``: name -> DuckDB SQL)."""
    items = [f'"{name}"' for name in group_by] + [f'{sql} AS "{name}"' for name, sql in aggregates.items()]
    quoted = ", ".join(f'"{name}"' for name in group_by)
    group = f" GROUP BY {quoted}" if group_by else ""
    return duckdb_query(table, f"SELECT {', '.join(items)} FROM t{group}")


def _sort_key(value):
    if value is None:
        return (2, "")
    if isinstance(value, float) and math.isnan(value):
        return (1, "")
    if isinstance(value, float) and value == 0:
        value = 0.0
    return (0, repr(type(value)), value)


def rows_by_key(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    out = {}
    for row in rows:
        key = tuple(_sort_key(row[name]) for name in keys)
        assert key not in out, f"two output rows for group {key}"
        out[key] = row
    return out


def values_equal(got, want, scale: float | None = None) -> bool:
    """Exact for ints/strings and infinities; floats within 1e-9 relative (to ``scale`` when
    given, the magnitude of what was summed); NaN == NaN."""
    if isinstance(want, list) or isinstance(got, list):
        return isinstance(got, list) and isinstance(want, list) and len(got) == len(want) and all(
            values_equal(a, b, scale) for a, b in zip(got, want)
        )
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, float) or isinstance(got, float):
        got, want = float(got), float(want)
        if math.isnan(want) or math.isnan(got):
            return math.isnan(want) and math.isnan(got)
        if math.isinf(want) or math.isinf(got):
            return want == got
        tolerance = 1e-9 * max(abs(want), abs(scale or 0.0), 1e-300)
        return abs(got - want) <= tolerance
    return got == want


def assert_same_rows(got: list[dict], want: list[dict], keys: list[str], columns: list[str], scales: dict | None = None, context=""):
    got_by, want_by = rows_by_key(got, keys), rows_by_key(want, keys)
    assert set(got_by) == set(want_by), f"{context}: groups differ: got {sorted(got_by)} want {sorted(want_by)}"
    for key, want_row in want_by.items():
        got_row = got_by[key]
        for name in columns:
            scale = (scales or {}).get((key, name))
            assert values_equal(got_row[name], want_row[name], scale), (
                f"{context} group {key} {name}: got {got_row[name]!r}, DuckDB {want_row[name]!r}"
            )


def with_scales(aggregates: dict[str, str]) -> dict[str, str]:
    """DuckDB aggregates plus ``scale_<name>`` columns for the float ones (see SCALES)."""
    return {**aggregates, **{f"scale_{name}": SCALES[name] for name in aggregates if name in SCALES}}


def oracle_scales(rows: list[dict], group_by: list[str]) -> dict:
    """``{(group key, name): scale}`` from DuckDB rows that carry ``scale_<name>`` columns."""
    scales = {}
    for row in rows:
        key = tuple(_sort_key(row[name]) for name in group_by)
        for column, value in row.items():
            if column.startswith("scale_"):
                scales[(key, column[6:])] = float(value) if value is not None and not math.isnan(value) else None
    return scales


# --------------------------------------------------------------------------- partial/merge vs DuckDB


def _split(table: pa.Table, cuts: list[int]) -> list[pa.RecordBatch]:
    bounds = sorted({0, table.num_rows, *[c % (table.num_rows + 1) for c in cuts]})
    return [table.slice(a, b - a).combine_chunks().to_batches()[0] if b > a else None for a, b in zip(bounds, bounds[1:]) if b > a]


def _merge_in_random_tree(plan: AggregatePlan, partials: list, rng: random.Random):
    partials = list(partials)
    while len(partials) > 1:
        rng.shuffle(partials)
        take = rng.randint(2, len(partials))
        partials = [plan.merge(partials[:take])] + partials[take:]
    return partials[0]


@pytest.mark.parametrize("group_by", [["k"], ["k", "j"], []], ids=["one_key", "two_keys", "global"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table=TABLES, cuts=st.lists(st.integers(0, 40), max_size=6), seed=st.integers(0, 2**16))
def test_partial_merge_finalize_matches_duckdb(group_by, table, cuts, seed):
    plan = AggregatePlan(group_by, {name: ours for name, (ours, _) in AGGREGATES.items()})
    batches = _split(table, cuts)
    partials = [plan.partial(batch) for batch in batches]
    merged = _merge_in_random_tree(plan, partials, random.Random(seed)) if partials else None
    got = plan.finalize(merged).to_pylist()
    want = duckdb_aggregate(table, group_by, with_scales({name: theirs for name, (_, theirs) in AGGREGATES.items()}))
    assert_same_rows(got, want, group_by, list(AGGREGATES), oracle_scales(want, group_by), context=f"{len(batches)} chunks")


def test_global_aggregate_over_no_rows_is_one_sql_row():
    plan = AggregatePlan([], {name: ours for name, (ours, _) in AGGREGATES.items()}, input_schema=SCHEMA)
    got = plan.finalize(None).to_pylist()
    want = duckdb_aggregate(SCHEMA.empty_table(), [], {name: theirs for name, (_, theirs) in AGGREGATES.items()})
    assert len(got) == 1
    assert_same_rows(got, want, [], list(AGGREGATES))
    assert got[0]["n"] == 0 and got[0]["si"] is None and got[0]["list_s"] == []


def test_grouped_aggregate_over_no_rows_is_empty_with_types():
    plan = AggregatePlan(["k"], {"n": "count(*)", "s": "sum(i)", "m": "max(s)"}, input_schema=SCHEMA)
    out = plan.finalize(None)
    assert out.num_rows == 0
    assert out.schema == pa.schema([("k", pa.string()), ("n", pa.int64()), ("s", pa.int64()), ("m", pa.string())])


def test_integer_sums_are_exact_beyond_int64_partials():
    big = 2**62
    batch = pa.RecordBatch.from_pydict({"x": [big, big, -big, -big + 5, 3]})
    plan = AggregatePlan([], {"s": "sum(x)", "a": "avg(x)"})
    parts = [plan.partial(batch.slice(0, 2)), plan.partial(batch.slice(2))]
    out = plan.finalize(plan.merge(parts)).to_pylist()[0]
    assert out["s"] == 8  # 2**63 in a partial sum: no wrap-around
    assert out["a"] == pytest.approx(8 / 5)


def test_integer_sum_overflow_names_the_fix():
    plan = AggregatePlan([], {"s": "sum(x)"})
    batch = pa.RecordBatch.from_pydict({"x": [2**62, 2**62, 2**62]})
    with pytest.raises(AggregateOverflow, match=r"sum\(x\) does not fit int64 .* sum\(CAST\(x AS DOUBLE\)\)"):
        plan.finalize(plan.partial(batch))


def test_variance_merge_is_stable_for_large_offsets():
    # Chan's merge of (n, mean, M2): naive sum-of-squares would lose every digit here.
    values = [1e9 + v for v in (4.0, 7.0, 13.0, 16.0)]
    plan = AggregatePlan([], {"v": "var_samp(x)", "sd": "stddev_pop(x)"})
    parts = [plan.partial(pa.RecordBatch.from_pydict({"x": [v]})) for v in values]
    out = plan.finalize(plan.merge(parts)).to_pylist()[0]
    assert out["v"] == pytest.approx(30.0, rel=1e-12)
    assert out["sd"] == pytest.approx(math.sqrt(22.5), rel=1e-12)


def test_keys_nan_negative_zero_and_null_group_like_duckdb():
    other_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]  # another NaN payload
    keys = pa.array([0.0, -0.0, NAN, other_nan, None, None, 1.0])
    ids, groups, representative = group_ids([normalize_values(keys)])
    assert groups == 4  # {0.0, -0.0}, {NaN, NaN}, {NULL, NULL}, {1.0}
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[4] == ids[5]


@pytest.mark.parametrize(
    "text, function, argument",
    [
        ("sum(amount * qty)", "sum", "amount * qty"),
        ("count(*)", "count_star", None),
        ("COUNT()", "count_star", None),
        ("count(DISTINCT id)", "count_distinct", "id"),
        ("count_distinct(id)", "count_distinct", "id"),
        ("mean(x)", "avg", "x"),
        ("stddev(x)", "stddev_samp", "x"),
        ("variance(x)", "var_samp", "x"),
        ("median(total)", "percentile_cont", "total"),
        ("percentile_cont(0.25) WITHIN GROUP (ORDER BY total)", "percentile_cont", "total"),
        ("quantile_disc(x, 0.5)", "percentile_disc", "x"),
        ("collect_set(tag)", "collect_set", "tag"),
    ],
)
def test_parse_aggregate_table(text, function, argument):
    call = parse_aggregate(text)
    assert (call.function, call.argument) == (function, argument)


def test_parse_keeps_order_filter_fraction_and_approximate():
    call = parse_aggregate("first(name ORDER BY ts DESC, id NULLS FIRST) FILTER (WHERE amount > 0)")
    assert call.order_by == (OrderKey("ts", True, False), OrderKey("id", False, True))
    assert call.where == "amount > 0"
    assert parse_aggregate("percentile(x, 0.9)").fraction == Fraction(9, 10)
    assert parse_aggregate("approx_count_distinct(x)").approximate
    assert parse_aggregate("median(x)", approximate=True).approximate
    assert not parse_aggregate("sum(x)", approximate=True).approximate
    assert parse_aggregate("last(x)", default_order=parse_order_by(["ts"])).order_by == (OrderKey("ts"),)


@pytest.mark.parametrize(
    "text, message",
    [
        ("summ(x)", r"unknown aggregate function 'summ' \(did you mean 'sum'\?\)"),
        ("abs(x)", r"'abs' is not an aggregate function"),
        ("sum(x) + 1", r"is not a single aggregate call"),
        ("x", r"is not a single aggregate call"),
        ("sum(x) OVER (PARTITION BY k)", r"window function"),
        ("first(x)", r"first\(\) needs an order: .* first\(x ORDER BY <column>\)"),
        ("percentile(x, 90)", r"between 0 and 1, got 90 \(did you mean 0.9\?\)"),
        ("percentile(x, y)", r"must be a number literal"),
        ("percentile(x)", r"percentile takes 2 arguments"),
        ("sum(x, y)", r"cannot parse aggregate 'sum\(x, y\)': The number of provided arguments \(2\)"),
        ("collect_list(x, y)", r"collect_list takes 1 argument"),
        ("sum(*)", r"sum\(\*\) is not defined"),
        ("sum(DISTINCT x)", r"DISTINCT is only supported as count\(DISTINCT x\)"),
        ("sum(x ORDER BY y)", r"ORDER BY inside sum\(\) has no effect"),
        ("sum(x", r"cannot parse aggregate"),
    ],
)
def test_parse_errors_say_what_and_how(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse_aggregate(text)


def test_check_reports_unknown_and_non_numeric_columns():
    plan = AggregatePlan(["contry"], {"revenue": "sum(name)", "p": "median(totl)", "ok": "max(name)"})
    problems = {name: str(error) for name, error in plan.check(pa.schema([("country", pa.string()), ("name", pa.string()), ("total", pa.float64())]))}
    assert problems[None] == "unknown column 'contry' (did you mean 'country'?)"
    assert problems["revenue"].startswith("sum(name) needs a numeric argument, got string")
    assert problems["p"] == "unknown column 'totl' (did you mean 'total'?)"
    assert "ok" not in problems


def test_output_schema_types():
    plan = AggregatePlan(
        ["k"],
        {"n": "count(*)", "s": "sum(i)", "sf": "sum(f)", "a": "avg(i)", "m": "min(s)", "l": "collect_list(s)", "p": "percentile_disc(i, 0.5)"},
    )
    schema = plan.output_schema(SCHEMA)
    assert [str(t) for t in schema.types] == ["string", "int64", "int64", "double", "double", "string", "list<item: string>", "int64"]


def test_group_by_name_collision_is_refused():
    with pytest.raises(ValueError, match="aggregate output 'k' has the name of a group_by column"):
        AggregatePlan(["k"], {"k": "count(*)"})


# --------------------------------------------------------------------------- approximate


def test_approximate_distinct_and_percentiles_are_close_to_exact():
    pytest.importorskip("datasketches")
    import numpy as np

    rng = np.random.default_rng(7)
    values = rng.integers(0, 20_000, 60_000)
    batch = pa.RecordBatch.from_pydict({"g": values % 2, "x": values, "f": values.astype(float)})
    exact = AggregatePlan(["g"], {"d": "count_distinct(x)", "p": "percentile(f, 0.9)"})
    approx = AggregatePlan(["g"], {"d": "count_distinct(x)", "p": "percentile(f, 0.9)"}, approximate=True)
    parts = [approx.partial(b) for b in pa.Table.from_batches([batch]).to_batches(max_chunksize=7_000)]
    got = {row["g"]: row for row in approx.finalize(approx.merge(parts)).to_pylist()}
    want = {row["g"]: row for row in exact.aggregate([batch]).to_pylist()}
    for group in (0, 1):
        assert abs(got[group]["d"] - want[group]["d"]) <= 0.05 * want[group]["d"]  # ~3 sigma at lg_k 12
        rank = float(np.mean(values[values % 2 == group] <= got[group]["p"]))
        assert abs(rank - 0.9) <= 0.03  # KLL rank error
