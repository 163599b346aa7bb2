"""Expectations without GX: configuration errors, suites, result formats, merging, Beam."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from beam_etl.errors import SpecError
from beam_etl.quality import evaluate_expectations
from beam_etl.quality.expectations import ExpectationsEvaluator, expectations_combine_fn, load_suite, parse_expectations


@pytest.mark.parametrize(
    "item, message",
    [
        ({"expectation": "expect_column_values_to_be_betwen", "column": "a", "min_value": 1}, "did you mean 'expect_column_values_to_be_between'"),
        ({"expectation": "expect_colum_mean_to_be_between", "column": "a"}, "did you mean 'expect_column_mean_to_be_between'"),
        ({"expectation": "expect_column_values_to_be_between", "column": "a"}, "needs min_value or max_value"),
        ({"expectation": "expect_column_values_to_be_between", "column": "a", "min_value": 3, "max_value": 1}, "greater than max_value"),
        ({"expectation": "expect_column_values_to_be_between", "column": "a", "min_value": "abc"}, "must be a number, a date or a datetime"),
        ({"expectation": "expect_column_values_to_match_regex", "column": "a", "regex": "[a-"}, "does not compile"),
        ({"expectation": "expect_column_values_to_be_in_set", "column": "a"}, "needs value_set"),
        ({"expectation": "expect_column_values_to_not_be_null"}, "needs 'column'"),
        ({"expectation": "expect_column_values_to_not_be_null", "column": "a", "mostly": 1.5}, "mostly must be a number between 0 and 1"),
        ({"expectation": "expect_column_values_to_not_be_null", "column": "a", "colum": "b"}, "does not take colum"),
        ({"expectation": "expect_column_values_to_match_strftime_format", "column": "a", "strftime_format": "%Q"}, "strftime_format"),
        ({"expectation": "expect_column_values_to_not_be_null", "column": "a", "result_format": "COMPLETE"}, "COMPLETE"),
    ],
)
def test_bad_expectations_are_spec_errors_with_paths(item, message):
    with pytest.raises(SpecError) as info:
        parse_expectations([{"expectation": "expect_column_to_exist", "column": "a"}, item])
    text = str(info.value)
    assert text.startswith("expectations[1]: ") and message in text


def test_a_suite_file_in_gx_1_and_0_layouts(tmp_path):
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"name": "s", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "meta": {"n": 1}}]}))
    v0 = tmp_path / "v0.json"
    v0.write_text(json.dumps({"expectation_suite_name": "s", "expectations": [{"expectation_type": "expect_column_values_to_be_unique", "kwargs": {"column": "a"}}]}))
    assert load_suite(str(v1)) == [{"expectation": "expect_column_values_to_not_be_null", "column": "a", "meta": {"n": 1}}]
    results = evaluate_expectations(pa.table({"a": [1, 1, None]}), load_suite(str(v1)) + load_suite(str(v0)))
    assert [r["success"] for r in results] == [False, False]
    assert results[0]["expectation_config"]["meta"] == {"n": 1}
    with pytest.raises(ValueError, match="not found"):
        load_suite(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="needs an 'expectations' list"):
        load_suite(str(bad))


def test_gx_shaped_results_and_result_formats():
    table = pa.table({"age": [31, None, 200, 45, -1]})
    item = {"expectation": "expect_column_values_to_be_between", "column": "age", "min_value": 0, "max_value": 130, "mostly": 0.5}
    [summary] = evaluate_expectations(table, [item])
    assert set(summary) == {"success", "expectation_config", "result", "exception_info", "meta"}
    assert summary["success"] is True and summary["meta"] == {"engine": "native"}
    assert summary["result"] == {
        "element_count": 5,
        "unexpected_count": 2,
        "unexpected_percent": 50.0,
        "partial_unexpected_list": [200, -1],
        "missing_count": 1,
        "missing_percent": 20.0,
        "unexpected_percent_total": 40.0,
        "unexpected_percent_nonmissing": 50.0,
        "partial_unexpected_counts": [{"value": -1, "count": 1}, {"value": 200, "count": 1}],
        "partial_unexpected_index_list": [2, 4],
    }
    [basic] = evaluate_expectations(table, [item], result_format="BASIC")
    assert "partial_unexpected_counts" not in basic["result"] and basic["result"]["partial_unexpected_list"] == [200, -1]
    [boolean] = evaluate_expectations(table, [item], result_format="BOOLEAN_ONLY")
    assert boolean["result"] == {} and boolean["success"] is True
    [short] = evaluate_expectations(table, [{**item, "result_format": {"result_format": "SUMMARY", "partial_unexpected_count": 1}}])
    assert short["result"]["partial_unexpected_list"] == [200]


def test_a_missing_column_is_reported_like_gx_does_not_raised():
    [result] = evaluate_expectations(pa.table({"a": [1]}), [{"expectation": "expect_column_values_to_not_be_null", "column": "b"}])
    assert result["success"] is False and result["result"] == {}
    assert result["exception_info"]["raised_exception"] is True and '"b"' in result["exception_info"]["exception_message"]


def test_uniqueness_merges_in_any_order_across_many_parts():
    """Partial states merged in a tree (as Beam does) give the same counts as one pass."""
    import random

    values = [i % 37 for i in range(500)] + list(range(1000, 1200))
    table = pa.table({"k": values})
    configs = parse_expectations([{"expectation": "expect_column_values_to_be_unique", "column": "k"}])
    evaluator = ExpectationsEvaluator(configs, with_index=False)
    parts = [evaluator.add(evaluator.initial(), batch) for batch in table.to_batches(max_chunksize=13)]
    random.Random(4).shuffle(parts)
    while len(parts) > 1:
        parts = [evaluator.merge(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    [merged] = evaluator.finalize(parts[0])
    assert merged["result"]["unexpected_count"] == 500  # every 0..36 value repeats; 1000..1199 do not
    assert merged["result"]["element_count"] == 700
    assert "partial_unexpected_index_list" not in merged["result"]
    assert all(v < 37 for v in merged["result"]["partial_unexpected_list"])


def test_expectations_combine_fn_in_a_pipeline():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    configs = parse_expectations(
        [
            {"expectation": "expect_column_values_to_be_unique", "column": "id"},
            {"expectation": "expect_column_mean_to_be_between", "column": "x", "min_value": 1, "max_value": 3},
            {"expectation": "expect_table_row_count_to_be_between", "min_value": 6, "max_value": 6},
        ]
    )
    batches = [pa.RecordBatch.from_pydict({"id": [1, 2, 3], "x": [1.0, 2.0, 3.0]}), pa.RecordBatch.from_pydict({"id": [3, 4, 5], "x": [2.0, 2.0, 2.0]})]

    def check(outputs):
        [results] = outputs
        assert [r["success"] for r in results] == [False, True, True]
        assert results[0]["result"]["unexpected_count"] == 2
        assert results[1]["result"]["observed_value"] == 2.0

    with TestPipeline() as p:
        results = p | beam.Create(batches) | beam.CombineGlobally(expectations_combine_fn(configs))
        assert_that(results, check)
