"""Differential test: native expectations give Great Expectations' own results.

Generated tables (nulls, NaN, -0.0, empty strings, unicode, trailing newlines, duplicates)
are evaluated natively — batch by batch with a random batch size, so merging is exercised
— and by GX 1.x on ``table.to_pandas()`` in one validation run per table (GX is slow: all
expectations of a table share one run). Success, counts, percentages, partial lists and
observed values must agree; floats to 1e-9 relative.
"""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_etl.quality import evaluate_expectations
from beam_etl.quality.expectations import gx_runner, parse_expectations
from beam_etl.quality.expectations_native import NATIVE

TEXT_POOL = ["a", "", " x ", "é", "٣", "abc\n", "Zz 9", "日本", "a@b.co", "x@y", "2020-01-01", "2020-13-01", "A1", "a"]
REGEXES = [r"\d", r"^a", r"c$", r"\w+", r"\s", r"^[a-z]+$", r"(?i)a", r"é", r"\bx\b", r"^\S+@\S+$", r".", r"^$"]
FLOAT_POOL = [0.0, -0.0, 1.5, 1.5, -3.25, 100.0, 2.0, float("nan")]


def _compare(native, gx, path="result"):
    """Recursive equality with float tolerance; None equals NaN (JSON has no NaN)."""
    if isinstance(native, float) and math.isnan(native):
        native = None
    if isinstance(gx, float) and math.isnan(gx):
        gx = None
    if isinstance(native, (int, float)) and isinstance(gx, (int, float)) and not isinstance(native, bool) and not isinstance(gx, bool):
        assert math.isclose(native, gx, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {native!r} != {gx!r}"
        return
    if isinstance(native, dict) and isinstance(gx, dict):
        assert set(native) == set(gx), f"{path}: keys {sorted(native)} != {sorted(gx)}"
        for key in native:
            _compare(native[key], gx[key], f"{path}.{key}")
        return
    if isinstance(native, (list, tuple)) and isinstance(gx, (list, tuple)):
        assert len(native) == len(gx), f"{path}: {native!r} != {gx!r}"
        for i, (a, b) in enumerate(zip(native, gx)):
            _compare(a, b, f"{path}[{i}]")
        return
    assert native == gx, f"{path}: {native!r} != {gx!r}"


@st.composite
def tables(draw) -> pa.Table:
    n = draw(st.integers(min_value=0, max_value=30))
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-3, 6)), min_size=n, max_size=n))
    ints_b = draw(st.lists(st.one_of(st.none(), st.integers(-3, 6)), min_size=n, max_size=n))
    floats = draw(st.lists(st.one_of(st.none(), st.sampled_from(FLOAT_POOL), st.floats(-50, 50, allow_nan=False)), min_size=n, max_size=n))
    texts = draw(st.lists(st.one_of(st.none(), st.sampled_from(TEXT_POOL), st.text(max_size=4)), min_size=n, max_size=n))
    base = dt.datetime(2020, 1, 1)
    stamps = draw(st.lists(st.one_of(st.none(), st.integers(0, 400).map(lambda d: base + dt.timedelta(hours=d))), min_size=n, max_size=n))
    full = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))  # an int column without nulls
    return pa.table(
        {
            "i": pa.array(ints, pa.int64()),
            "j": pa.array(ints_b, pa.int64()),
            "k": pa.array(full, pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "s": pa.array(texts, pa.string()),
            "t": pa.array(stamps, pa.timestamp("us")),
        }
    )


@st.composite
def suites(draw, table: pa.Table) -> list[dict]:
    mostly = st.sampled_from([None, 0.5, 0.8, 1.0])
    texts = [v for v in table.column("s").to_pylist() if v is not None] or ["a"]
    nums = [v for v in table.column("i").to_pylist() if v is not None] or [0]
    lo = draw(st.integers(-3, 3))
    hi = lo + draw(st.integers(0, 6))

    def m(item):
        value = draw(mostly)
        return {**item, "mostly": value} if value is not None else item

    exps = [
        m({"expectation": "expect_column_values_to_not_be_null", "column": draw(st.sampled_from(["i", "f", "s", "k"]))}),
        m({"expectation": "expect_column_values_to_be_null", "column": draw(st.sampled_from(["i", "s"]))}),
        m({"expectation": "expect_column_values_to_be_unique", "column": draw(st.sampled_from(["i", "k", "f", "s"]))}),
        m({"expectation": "expect_column_values_to_be_between", "column": draw(st.sampled_from(["i", "k", "f"])), "min_value": lo, "max_value": hi,
           "strict_min": draw(st.booleans()), "strict_max": draw(st.booleans())}),
        m({"expectation": "expect_column_values_to_be_between", "column": "f", "max_value": float(hi)}),
        m({"expectation": "expect_column_values_to_be_between", "column": "t", "min_value": "2020-01-05T00:00:00"}),
        m({"expectation": "expect_column_values_to_be_between", "column": "s", "min_value": 1}),
        m({"expectation": "expect_column_values_to_be_in_set", "column": "s", "value_set": draw(st.lists(st.sampled_from(texts), max_size=3))}),
        m({"expectation": "expect_column_values_to_be_in_set", "column": "i", "value_set": draw(st.lists(st.sampled_from(nums + [1.0, "1"]), max_size=3))}),
        m({"expectation": "expect_column_values_to_not_be_in_set", "column": draw(st.sampled_from(["s", "k"])),
           "value_set": draw(st.lists(st.sampled_from(texts + [1, 2]), max_size=3))}),
        m({"expectation": "expect_column_values_to_match_regex", "column": "s", "regex": draw(st.sampled_from(REGEXES))}),
        m({"expectation": "expect_column_values_to_not_match_regex", "column": "s", "regex": draw(st.sampled_from(REGEXES))}),
        m({"expectation": "expect_column_value_lengths_to_be_between", "column": "s", "min_value": draw(st.integers(0, 2)), "max_value": draw(st.integers(2, 4))}),
        m({"expectation": "expect_column_values_to_match_strftime_format", "column": "s", "strftime_format": "%Y-%m-%d"}),
        {"expectation": "expect_column_mean_to_be_between", "column": draw(st.sampled_from(["i", "f", "k"])), "min_value": lo, "max_value": hi},
        {"expectation": "expect_column_min_to_be_between", "column": draw(st.sampled_from(["i", "f", "t"])), "min_value": lo},
        {"expectation": "expect_column_max_to_be_between", "column": draw(st.sampled_from(["i", "f"])), "max_value": hi},
        {"expectation": "expect_column_sum_to_be_between", "column": draw(st.sampled_from(["i", "f", "k"])), "min_value": lo * 5},
        {"expectation": "expect_column_median_to_be_between", "column": draw(st.sampled_from(["i", "f", "k"])), "min_value": lo, "max_value": hi},
        {"expectation": "expect_column_stdev_to_be_between", "column": draw(st.sampled_from(["i", "f"])), "max_value": float(hi + 1)},
        {"expectation": "expect_column_proportion_of_unique_values_to_be_between", "column": draw(st.sampled_from(["i", "f", "s"])), "min_value": 0.5},
        {"expectation": "expect_column_unique_value_count_to_be_between", "column": draw(st.sampled_from(["i", "f", "s", "k"])), "min_value": 2, "max_value": 6},
        m({"expectation": "expect_compound_columns_to_be_unique", "column_list": draw(st.sampled_from([["i", "s"], ["i", "j"], ["k", "f"]])),
           "ignore_row_if": draw(st.sampled_from(["all_values_are_missing", "any_value_is_missing", "never"]))}),
        {"expectation": "expect_table_row_count_to_be_between", "min_value": 1, "max_value": draw(st.integers(5, 30))},
        {"expectation": "expect_column_to_exist", "column": draw(st.sampled_from(["s", "nope"]))},
        {"expectation": "expect_column_to_exist", "column": "f", "column_index": draw(st.integers(0, 4))},
        m({"expectation": "expect_column_pair_values_a_to_be_greater_than_b", "column_A": "i", "column_B": draw(st.sampled_from(["j", "k", "f"])),
           "or_equal": draw(st.booleans()), "ignore_row_if": draw(st.sampled_from(["both_values_are_missing", "either_value_is_missing", "neither"]))}),
        {"expectation": "expect_column_values_to_be_unique", "column": "missing_column"},
    ]
    return exps


def _check_against_gx(table: pa.Table, exps: list[dict], batch_rows: int) -> None:
    native = evaluate_expectations(table, exps, batch_rows=batch_rows)
    gx = gx_runner().validate(table.to_pandas(), parse_expectations(exps))
    for expectation, mine, theirs in zip(exps, native, gx):
        label = f"{expectation} on {table.to_pydict()}"
        assert mine["meta"]["engine"] == "native", label
        raised, gx_raised = mine["exception_info"]["raised_exception"], theirs["exception_info"]["raised_exception"]
        assert raised == gx_raised, f"exception mismatch: native {mine['exception_info']} vs GX {theirs['exception_info']} for {label}"
        assert mine["success"] == theirs["success"], f"success: native {mine['result']} vs GX {theirs['result']} for {label}"
        if not raised:
            _compare(mine["result"], theirs["result"], label)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_native_results_equal_great_expectations(data):
    table = data.draw(tables())
    exps = data.draw(suites(table))
    batch_rows = data.draw(st.integers(min_value=1, max_value=8))
    _check_against_gx(table, exps, batch_rows)


def test_every_native_expectation_is_covered_by_the_differential_test():
    covered = {
        "expect_column_values_to_not_be_null", "expect_column_values_to_be_null", "expect_column_values_to_be_unique",
        "expect_column_values_to_be_between", "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex", "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_match_strftime_format", "expect_column_mean_to_be_between", "expect_column_min_to_be_between",
        "expect_column_max_to_be_between", "expect_column_sum_to_be_between", "expect_column_median_to_be_between",
        "expect_column_stdev_to_be_between", "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_unique_value_count_to_be_between", "expect_compound_columns_to_be_unique",
        "expect_table_row_count_to_be_between", "expect_column_to_exist", "expect_column_pair_values_a_to_be_greater_than_b",
    }
    assert set(NATIVE) == covered


def test_regex_semantics_follow_python_re_where_re2_differs():
    """Unicode digits, \\s on \\x0b and ``$`` before a final newline: GX (pandas) uses Python's re."""
    table = pa.table({"s": ["٣", "a\x0bb", "abc\n", "abc", "x", None]})
    exps = [
        {"expectation": "expect_column_values_to_match_regex", "column": "s", "regex": r"\d"},
        {"expectation": "expect_column_values_to_match_regex", "column": "s", "regex": r"\s"},
        {"expectation": "expect_column_values_to_match_regex", "column": "s", "regex": r"c$"},
        {"expectation": "expect_column_values_to_not_match_regex", "column": "s", "regex": r"(?<=a)b"},
    ]
    _check_against_gx(table, exps, batch_rows=2)
    results = evaluate_expectations(table, exps)
    assert results[0]["result"]["unexpected_count"] == 4  # only "٣" is a (Unicode) digit
    assert results[2]["result"]["partial_unexpected_list"] == ["٣", "a\x0bb", "x"]  # "abc\n" matches c$


def test_gx_fallback_for_other_expectations_runs_gx_itself():
    table = pa.table({"s": ['{"a": 1}', "not json", None, "[]"], "x": [1.0, 2.0, 3.0, 250.0]})
    exps = [
        {"expectation": "expect_column_values_to_be_json_parseable", "column": "s"},
        {"expectation": "expect_column_values_to_be_increasing", "column": "x"},
        {"expectation": "expect_column_distinct_values_to_be_in_set", "column": "x", "value_set": [1.0, 2.0, 3.0]},
    ]
    results = evaluate_expectations(table, exps)
    assert [r["meta"]["engine"] for r in results] == ["great_expectations"] * 3
    assert results[0]["success"] is False and results[0]["result"]["unexpected_count"] == 1
    assert results[1]["success"] is True
    assert results[2]["success"] is False


def test_gx_row_local_expectations_merge_across_batches_in_a_pipeline_evaluator():
    from beam_etl.quality.expectations import ExpectationsEvaluator

    configs = parse_expectations([{"expectation": "expect_column_values_to_be_json_parseable", "column": "s", "mostly": 0.6}])
    evaluator = ExpectationsEvaluator(configs)
    table = pa.table({"s": ['{"a": 1}', "nope", "[]", None, "{}", "x"]})
    state = evaluator.initial()
    offset = 0
    for batch in table.to_batches(max_chunksize=2):
        state = evaluator.merge(state, evaluator.add(evaluator.initial(), batch, offset))
        offset += batch.num_rows
    [merged] = evaluator.finalize(state)
    [whole] = gx_runner().validate(table.to_pandas(), configs)
    assert merged["success"] == whole["success"]
    for key in ("element_count", "unexpected_count", "missing_count", "partial_unexpected_list", "unexpected_percent"):
        _compare(merged["result"][key], whole["result"][key], key)
