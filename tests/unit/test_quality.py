"""Quality checks: scores (DuckDB as oracle), gate, report, recommendations, spec errors, step."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError
from beam_etl.quality.checks import parse_check, parse_duration, run_quality
from beam_etl.quality.report import render_html


def _duck_scalar(table: pa.Table, sql: str):
    con = duckdb.connect()
    con.register("t", table)
    return con.execute(sql).fetchone()[0]


@st.composite
def tables(draw):
    n = draw(st.integers(1, 50))
    ids = draw(st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=n, max_size=n))
    amounts = draw(st.lists(st.one_of(st.none(), st.floats(-100, 100, allow_nan=False)), min_size=n, max_size=n))
    codes = draw(st.lists(st.one_of(st.none(), st.sampled_from(["A", "B", "", "C"])), min_size=n, max_size=n))
    return pa.table({"id": pa.array(ids, pa.int64()), "amount": pa.array(amounts, pa.float64()), "code": pa.array(codes, pa.string())})


@settings(max_examples=50, deadline=None)
@given(table=tables(), chunk=st.integers(1, 7))
def test_scores_match_duckdb_whatever_the_batching(table, chunk):
    checks = [
        {"completeness": ["id", "amount"]},
        {"completeness": "code", "blank_as_missing": True},
        {"accuracy": "amount >= 0"},
        {"uniqueness": "id"},
        {"uniqueness": ["id", "code"]},
    ]
    batched = pa.Table.from_batches(table.to_batches(max_chunksize=chunk), schema=table.schema)
    scores = {c["name"]: c["score"] for c in run_quality(batched, checks)["checks"]}
    n = table.num_rows
    missing = _duck_scalar(table, "SELECT count(*) FILTER (WHERE id IS NULL) + count(*) FILTER (WHERE amount IS NULL) FROM t")
    assert scores["completeness:id,amount"] == pytest.approx(1 - missing / (2 * n))
    blank = _duck_scalar(table, "SELECT count(*) FILTER (WHERE code IS NULL OR trim(code) = '') FROM t")
    assert scores["completeness:code"] == pytest.approx(1 - blank / n)
    good = _duck_scalar(table, "SELECT count(*) FILTER (WHERE amount >= 0) FROM t")  # NULL is not >= 0
    assert scores["accuracy:amount >= 0"] == pytest.approx(good / n)
    dup_rows = _duck_scalar(
        table, "SELECT coalesce(sum(c) FILTER (WHERE c > 1), 0) FROM (SELECT id, count(*) c FROM t WHERE id IS NOT NULL GROUP BY id)"
    )
    considered = _duck_scalar(table, "SELECT count(*) FROM t WHERE id IS NOT NULL")
    assert scores["uniqueness:id"] == pytest.approx(1 - dup_rows / considered if considered else 1.0)
    compound_considered = _duck_scalar(table, "SELECT count(*) FROM t WHERE NOT (id IS NULL AND code IS NULL)")
    compound_dups = _duck_scalar(
        table,
        "SELECT coalesce(sum(c), 0) FROM (SELECT count(*) c FROM t WHERE NOT (id IS NULL AND code IS NULL) "
        "GROUP BY id, code HAVING count(*) > 1)",
    )
    expected = 1 - compound_dups / compound_considered if compound_considered else 1.0
    assert scores["uniqueness:id,code"] == pytest.approx(expected)


def test_weighted_score_gate_samples_and_recommendations():
    table = pa.table(
        {
            "id": [1, 2, 2, 4],
            "email": ["a@x.io", None, "bad", "c@z.io"],
            "age": [31, -1, 45, 200],
            "zip": ["12345", "1234x", "54321", "99999"],
        }
    )
    report = run_quality(
        table,
        [
            {"completeness": "email", "threshold": 0.9, "weight": 2},
            {"accuracy": "age BETWEEN 0 AND 130", "weight": 1},
            {"uniqueness": "id", "severity": "warning"},
            {"validity": "email", "format": "email", "threshold": 0.5},
            {"consistency": "zip", "type": "int64"},
            {"expectation": "expect_column_values_to_be_between", "column": "age", "min_value": 0, "max_value": 130, "mostly": 0.4},
        ],
        min_score=0.8,
    )
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["completeness:email"]["score"] == pytest.approx(0.75) and not checks["completeness:email"]["passed"]
    assert checks["accuracy:age BETWEEN 0 AND 130"]["samples"] == [
        {"id": 2, "email": None, "age": -1, "zip": "1234x"},
        {"id": 4, "email": "c@z.io", "age": 200, "zip": "99999"},
    ]
    assert checks["uniqueness:id"]["samples"] == [{"id": 2, "count": 2}]
    assert checks["validity:email"]["score"] == pytest.approx(0.75) and checks["validity:email"]["passed"]
    assert checks["consistency:zip:int64"]["samples"] == ["1234x"]
    expectation = checks["expect_column_values_to_be_between(age)"]
    assert expectation["passed"] and expectation["score"] == pytest.approx(0.5)
    assert expectation["result"]["result"]["partial_unexpected_list"] == [-1, 200]
    weights = {"completeness:email": 2}
    total = sum(weights.get(c["name"], 1) * c["score"] for c in report["checks"]) / sum(weights.get(c["name"], 1) for c in report["checks"])
    assert report["score"] == pytest.approx(total)
    gate = report["gate"]
    assert gate["passed"] is False and gate["action"] == "continue"
    assert any("below min_score 0.8" in r for r in gate["reasons"])
    assert not any("uniqueness" in r for r in gate["reasons"])  # a warning does not fail the gate
    text = " ".join(report["recommendations"])
    assert "email: {required: true}" in text  # completeness: a concrete validate rule
    assert "dedupe step on [id]" in text
    assert "schema: {zip: int64}" in text
    html = render_html(report)
    assert "gate failed" in html and "Recommendations" in html and "1234x" in html


def test_timeliness_against_a_reference_and_now():
    table = pa.table({"ts": pa.array([dt.datetime(2024, 5, 1, 12), None, dt.datetime(2024, 5, 2, 6)])})
    fresh = run_quality(table, [{"timeliness": "ts", "max_age": "1d", "reference": "2024-05-03T00:00:00Z"}])["checks"][0]
    assert fresh["passed"] and fresh["metrics"]["lag_seconds"] == 18 * 3600
    stale = run_quality(table, [{"timeliness": "ts", "max_age": "12h", "reference": "2024-05-03T00:00:00Z"}])["checks"][0]
    assert not stale["passed"] and stale["score"] == 0.0 and "18.0h" in stale["message"]
    text = pa.table({"ts": ["2024-05-02T06:00:00Z", "2024-05-01", None]})
    assert run_quality(text, [{"timeliness": "ts", "max_age": "1d", "reference": "2024-05-03"}])["checks"][0]["passed"]
    now_check = run_quality(table, [{"timeliness": "ts", "max_age": "1d"}])["checks"][0]
    assert not now_check["passed"]  # 2024 is long before "now"


def test_dominant_type_consistency_and_cross_field_rule():
    table = pa.table({"zip": ["12345", "02139", "n/a", None, "99999"], "start": [1, 5, 2, 3, 1], "end": [2, 4, 2, None, 9]})
    report = run_quality(table, [{"consistency": "zip"}, {"consistency": "end >= start"}])
    dominant, rule = report["checks"]
    assert dominant["score"] == pytest.approx(0.75) and dominant["metrics"]["dominant"] == "integer"
    assert dominant["samples"] == ["n/a"]
    assert rule["score"] == pytest.approx(3 / 5)  # 5 < 4 fails, NULL end fails


@pytest.mark.parametrize(
    "item, message",
    [
        ({"completness": "email"}, "unknown check kind 'completness' (did you mean 'completeness'?)"),
        ({"completeness": "email", "treshold": 0.9}, "unknown option 'treshold' for a completeness check (did you mean 'threshold'?)"),
        ({"completeness": "email", "threshold": 1.5}, "threshold must be a number between 0 and 1"),
        ({"accuracy": "amount >>= 0"}, ""),
        ({"timeliness": "ts"}, "timeliness needs max_age"),
        ({"timeliness": "ts", "max_age": "soon"}, "is not a duration"),
        ({"validity": "email", "format": "emial"}, "validity rules for 'email'"),
        ({"expectation": "expect_column_values_to_be_betwen", "column": "a"}, "did you mean 'expect_column_values_to_be_between'"),
        ({"expectation": "expect_column_values_to_be_between", "column": "a", "min_value": 5, "max_value": 1}, "greater than max_value"),
        ({"expectation": "expect_column_values_to_match_regex", "column": "a", "regex": "("}, "does not compile"),
        ({"completeness": "a", "accuracy": "a > 1"}, "split it into several checks"),
    ],
)
def test_bad_checks_are_refused_with_a_reason(item, message):
    with pytest.raises(ValueError) as info:
        parse_check(item)
    assert message in str(info.value)


def test_spec_errors_carry_paths_and_hints_before_the_run():
    from beam_etl.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(
            {
                "name": "q",
                "sources": {"src": {"type": "inline", "rows": [{"amount": 1, "email": "x"}], "schema": {"amount": "int64", "email": "string"}}},
                "steps": [
                    {
                        "name": "gate",
                        "type": "quality",
                        "input": "src",
                        "checks": [
                            {"completeness": "emial"},
                            {"accuracy": "amout >= 0"},
                            {"expectation": "expect_column_values_to_not_be_nul", "column": "email"},
                            {"uniquenes": "amount"},
                        ],
                    }
                ],
                "sinks": {},
            }
        )
    text = str(info.value)
    assert "steps[0].checks[2]" in text and "expect_column_values_to_not_be_null" in text
    assert "steps[0].checks[3]" in text and "did you mean 'uniqueness'" in text


def test_unknown_columns_in_checks_are_spec_errors():
    from beam_etl.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(
            {
                "name": "q",
                "sources": {"src": {"type": "inline", "rows": [{"amount": 1, "email": "x"}], "schema": {"amount": "int64", "email": "string"}}},
                "steps": [{"name": "gate", "type": "quality", "input": "src", "checks": [{"completeness": "emial"}, {"accuracy": "amout >= 0"}]}],
                "sinks": {},
            }
        )
    text = str(info.value)
    assert "steps[0].checks[0].completeness: unknown column 'emial' (did you mean 'email'?)" in text
    assert "steps[0].checks[1].accuracy" in text and "amout" in text


def test_parse_duration():
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("1d12h").total_seconds() == 36 * 3600
    assert parse_duration(30).total_seconds() == 30
    with pytest.raises(ValueError):
        parse_duration("12 parsecs")


def _spec(tmp_path, on_failure: str, suite: str | None = None) -> dict:
    step = {
        "name": "gate",
        "type": "quality",
        "input": "src",
        "min_score": 0.95,
        "on_failure": on_failure,
        "checks": [{"completeness": "email", "threshold": 0.99}, {"uniqueness": "id"}],
    }
    if suite:
        step["suite"] = suite
    return {
        "name": "quality_gate_test",
        "sources": {
            "src": {
                "type": "inline",
                "rows": [{"id": 1, "email": "a@x.io"}, {"id": 2, "email": None}, {"id": 2, "email": "b@y.io"}],
                "schema": {"id": "int64", "email": "string"},
            }
        },
        "steps": [step],
        "sinks": {"out": {"type": "ndjson", "input": "gate", "path": "out/rows.ndjson"}},
    }


def test_gate_fails_the_job_after_writing_the_report(tmp_path):
    from beam_etl.run import run_spec
    from beam_etl.spec import load_spec

    result = run_spec(load_spec(_spec(tmp_path, "fail")), ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert result.status == "failed"
    assert "step 'gate' failed: quality gate failed" in result.error
    report = json.loads((tmp_path / "reports" / "gate.json").read_text())
    assert report["gate"] == {"min_score": 0.95, "passed": False, "action": "fail", "reasons": report["gate"]["reasons"]}
    assert (tmp_path / "reports" / "gate.html").exists()


def test_gate_can_continue_and_marks_the_report(tmp_path):
    from beam_etl.run import run_spec
    from beam_etl.spec import load_spec

    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "name": "customers",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}, "meta": {}},
                    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 5}},
                ],
            }
        )
    )
    result = run_spec(load_spec(_spec(tmp_path, "continue", str(suite))), ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert result.ok, result.error
    step = next(s for s in result.summary["steps"] if s["name"] == "gate")
    assert step["rows_in"] == step["rows_out"] == 3  # rows pass through unchanged
    report = json.loads((tmp_path / "reports" / "gate.json").read_text())
    assert report["gate"]["passed"] is False and report["gate"]["action"] == "continue"
    names = [c["name"] for c in report["checks"]]
    assert "expect_table_row_count_to_be_between" in names
    row_count = next(c for c in report["checks"] if c["name"] == "expect_table_row_count_to_be_between")
    assert row_count["passed"] is False and row_count["result"]["result"]["observed_value"] == 3


def test_run_metrics_feed_anomaly_detection_across_runs(tmp_path):
    from beam_etl.run import run_spec
    from beam_etl.spec import load_spec
    from beam_etl.state import StateStore

    url = f"sqlite:///{tmp_path / 'state.db'}"
    spec = _spec(tmp_path, "continue")
    spec["steps"][0]["anomalies"] = {
        "metrics": ["row_count", "completeness"],
        "columns": ["email"],
        "strategies": [{"type": "relative_rate_of_change", "max_rate_decrease": 0.5, "max_rate_increase": 2.0}],
    }
    for rows in (3, 3, 12):
        spec["sources"]["src"]["rows"] = [{"id": i, "email": "a@x.io"} for i in range(rows)]
        result = run_spec(load_spec(spec), ["--runner=DirectRunner"], output_dir=str(tmp_path / f"run{rows}"), state_url=url, record_state=False)
        assert result.ok, result.error
    report = json.loads((tmp_path / "run12" / "reports" / "gate.json").read_text())
    row_count = next(a for a in report["anomalies"] if a["metric"] == "row_count")
    assert row_count["anomaly"] is True and "above 2" in row_count["detail"]
    completeness = next(a for a in report["anomalies"] if a["metric"] == "completeness")
    assert completeness["anomaly"] is False
    with StateStore(url) as store:
        history = store.metrics_history("quality_gate_test", "row_count", step="gate")
    assert [h["value"] for h in history] == [3, 3, 12]


def test_windowed_input_gets_one_report_per_window(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.transforms import window

    from beam_etl.quality.checks import Quality

    batches = [(pa.RecordBatch.from_pydict({"x": [1, 2, None]}), 10), (pa.RecordBatch.from_pydict({"x": [5, 5]}), 70)]
    with TestPipeline() as p:
        (
            p
            | beam.Create(batches)
            | beam.Map(lambda e: window.TimestampedValue(e[0], e[1])).with_output_types(pa.RecordBatch)
            | beam.WindowInto(window.FixedWindows(60))
            | Quality("q", [{"completeness": "x"}], report=str(tmp_path / "q.json"), on_failure="continue")
        )
    first = json.loads((tmp_path / "q-19700101T000100.json").read_text())
    second = json.loads((tmp_path / "q-19700101T000200.json").read_text())
    assert (first["row_count"], first["score"]) == (3, pytest.approx(2 / 3))
    assert (second["row_count"], second["score"]) == (2, 1.0)
