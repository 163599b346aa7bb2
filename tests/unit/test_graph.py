"""The graph builder and run summary on the DirectRunner: wiring by name, side outputs,
DLQ flatten, counters that balance, and a failing step that stops the run."""

from __future__ import annotations

import json

import pytest

from beam_etl.run import run_spec
from beam_etl.spec import load_spec

ROWS = [{"id": i, "amount": float(i * 10), "country": ["US", "CA", "DE"][i % 3], "qty": i % 4} for i in range(12)]


def spec_dict(steps, sinks=None):
    return {
        "name": "graph_test",
        "sources": {"orders": {"type": "inline", "rows": ROWS}},
        "steps": steps,
        "sinks": sinks or {"out": {"type": "ndjson", "input": steps[-1]["name"], "path": "out/"}},
        "settings": {"batch_rows": 5},  # several batches per source
    }


def read_ndjson(directory):
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    spec = load_spec(
        spec_dict(
            [
                {"name": "per_unit", "type": "derive", "input": "orders", "columns": {"unit": "amount / qty"}},
                {"name": "kept", "type": "filter", "input": "per_unit", "where": "country <> 'DE'", "keep_filtered": True},
                {"name": "valid", "type": "validate", "input": "kept", "rules": {"unit": {"max": 25}}},
            ],
            sinks={
                "out": {"type": "ndjson", "input": "valid", "path": "out/"},
                "germany": {"type": "ndjson", "input": "kept.filtered", "path": "de/"},
            },
        )
    )
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(out), record_state=False)
    return out, report


def test_rows_flow_through_named_steps_and_side_outputs(graph_run):
    out, report = graph_run
    assert report.status == "succeeded", report.error
    # qty = id % 4 == 0 -> division by zero -> DLQ; DE rows -> filtered side output; unit > 25 -> DLQ
    expected = [r["id"] for r in ROWS if r["qty"] and r["country"] != "DE" and r["amount"] / r["qty"] <= 25]
    assert sorted(r["id"] for r in read_ndjson(out / "out")) == expected
    germany = [r["id"] for r in ROWS if r["qty"] and r["country"] == "DE"]
    assert sorted(r["id"] for r in read_ndjson(out / "de")) == germany


def test_summary_balances_each_step(graph_run):
    _, report = graph_run
    steps = {row["name"]: row for row in report.summary["steps"]}
    assert steps["orders"]["rows_out"] == 12
    assert steps["per_unit"]["rows_in"] == 12 and steps["per_unit"]["rows_dlq"] == 3  # ids 0, 4, 8
    assert steps["kept"]["rows_in"] == 9
    assert steps["kept"]["rows_filtered"] == sum(1 for r in ROWS if r["qty"] and r["country"] == "DE")
    assert all(row["balanced"] for row in report.summary["steps"]), report.summary["steps"]
    reasons = {(r["step"], r["error_type"]): r["rows"] for r in report.summary["dlq_reasons"]}
    assert reasons[("per_unit", "derive.expression")] == 3
    assert report.summary["dlq_rows"] == sum(reasons.values())


def test_dlq_rows_carry_step_reason_and_record(graph_run):
    out, report = graph_run
    dlq = read_ndjson(out / "dlq")
    assert len(dlq) == report.summary["dlq_rows"]
    division = [row for row in dlq if row["step"] == "per_unit"]
    assert sorted(json.loads(row["record"])["id"] for row in division) == [0, 4, 8]
    assert all("zero" in row["error_message"] for row in division)
    assert {row["job_id"] for row in dlq} == {report.run_id}


def test_step_with_on_error_fail_fails_the_run(tmp_path):
    spec = load_spec(spec_dict([{"name": "strict", "type": "validate", "input": "orders", "on_error": "fail", "rules": {"qty": {"min": 1}}}]))
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "failed"
    assert "step 'strict' failed" in report.error
    assert json.loads((tmp_path / "run_summary.json").read_text())["status"] == "failed"


def test_file_dlq_is_written_where_rows_fail_without_a_flatten(tmp_path):
    """Beam's in-process runner holds a multi-stage Flatten whole: the file DLQ must not need one."""
    import apache_beam as beam

    from beam_etl.graph import build_graph

    spec = load_spec(
        spec_dict(
            [
                {"name": "per_unit", "type": "derive", "input": "orders", "columns": {"unit": "amount / qty"}},
                {"name": "valid", "type": "validate", "input": "per_unit", "rules": {"unit": {"max": 25}}},
            ]
        )
    )
    pipeline = beam.Pipeline(argv=["--runner=DirectRunner"])
    build_graph(pipeline, spec, job_id="no-flatten", output_dir=str(tmp_path))
    transforms = pipeline.to_runner_api().components.transforms.values()
    flattens = [t.unique_name for t in transforms if t.spec.urn == "beam:transform:flatten:v1"]
    assert not [name for name in flattens if "dlq" in name and "temp files" not in name and "rejected" not in name], flattens
    writers = {t.unique_name for t in transforms if t.unique_name.startswith("sink:dlq/write:") and "/" not in t.unique_name[9:]}
    producers = {t.unique_name for t in transforms if t.unique_name.startswith("dlq:stamp:")}
    assert len(writers) == len(producers) >= 3, (writers, producers)  # the source, per_unit, valid
