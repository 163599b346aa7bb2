"""The demo job end to end through the CLI in a subprocess: exact output rows and DLQ rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

EXPECTED = [
    # id, name, email, tier, amount_with_tax
    (1, "Alice Johnson", "alice@example.com", "silver", 144.6),
    (2, "Bob Smith", "bob.smith@example.com", "silver", 107.99),
    (6, "Farah Khan", "farah.khan@example.com", "gold", 372.0),
    (8, "Hiroshi Tanaka", "hiroshi@example.jp", "silver", 90.3),
    (10, "Jamal Brown", "jamal.brown@example.com", "gold", 239.99),
]

EXPECTED_DLQ = [
    # (step, error_type, record id or None, message fragment)
    ("valid", "validate.regex", 3, "email: 'carla.diaz@example' does not match regex"),
    ("valid", "validate.min", 4, "age: -5 is less than min 0"),
    ("valid", "validate.required", None, "id is required"),
    ("typed", "cast", 9, "cannot cast '2024-13-40' in column 'signup_date' to date32"),
]


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "BEAM_ETL_STATE_URL": f"sqlite:///{cwd / 'state.db'}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "beam_etl", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=600
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    result = run_cli("--runner=DirectRunner", "--quiet", cwd=cwd)
    return cwd, result


def test_demo_exits_zero_and_prints_summary(demo_run):
    cwd, result = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "customers_demo" in out and "succeeded" in out
    assert "Every entry balances: in = out + dlq + filtered" in out
    assert "DLQ: 4 row(s)" in out
    assert "valid: validate.required" in out and "typed: cast" in out
    assert "Run summary:" in out


def test_demo_outputs_exact_rows(demo_run):
    cwd, _ = demo_run
    table = pq.read_table(cwd / "beam_etl_output" / "customers")
    rows = sorted(table.to_pylist(), key=lambda row: row["id"])
    got = [(r["id"], r["name"], r["email"], r["tier"], r["amount_with_tax"]) for r in rows]
    assert got == EXPECTED
    assert {row["signup_year"] for row in rows} == {2024}
    assert str(table.schema.field("signup_date").type) == "date32[day]"
    csv_files = list((cwd / "beam_etl_output" / "customers_csv").glob("*.csv"))
    assert csv_files, "the CSV sink wrote no file"
    csv_lines = sum(len(f.read_text().splitlines()) - 1 for f in csv_files)
    assert csv_lines == 5


def test_demo_dlq_rows_with_reasons(demo_run):
    cwd, _ = demo_run
    dlq_dir = cwd / "beam_etl_output" / "dlq"
    rows = [json.loads(line) for f in sorted(dlq_dir.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]
    assert len(rows) == 4
    got = sorted((r["step"], r["error_type"], json.loads(r["record"])["id"]) for r in rows)
    assert got == sorted((step, kind, rid) for step, kind, rid, _ in EXPECTED_DLQ)
    by_type = {r["error_type"]: r for r in rows}
    for _, kind, _, fragment in EXPECTED_DLQ:
        assert fragment in by_type[kind]["error_message"]
    assert all(r["job_id"] and r["failed_at"] for r in rows)
    assert set(rows[0].keys()) == {"job_id", "step", "error_type", "error_message", "source", "record", "failed_at"}


def test_demo_summary_json_balances_every_step(demo_run):
    cwd, _ = demo_run
    summary = json.loads((cwd / "beam_etl_output" / "run_summary.json").read_text())
    steps = {row["name"]: row for row in summary["steps"] if row["kind"] != "sink"}
    sinks = {row["name"]: row for row in summary["steps"] if row["kind"] == "sink"}
    assert steps["customers"]["rows_out"] == 10
    assert (steps["valid"]["rows_in"], steps["valid"]["rows_out"], steps["valid"]["rows_dlq"]) == (10, 7, 3)
    assert (steps["typed"]["rows_out"], steps["typed"]["rows_dlq"]) == (6, 1)
    assert (steps["kept"]["rows_out"], steps["kept"]["rows_filtered"]) == (5, 1)
    assert sinks["customers_csv"]["rows_in"] == 5 and sinks["customers"]["rows_out"] == 5
    assert sinks["dlq"]["rows_in"] == 4
    assert summary["balanced"] is True and summary["dlq_rows"] == 4
    assert all(row["balanced"] for row in summary["steps"])


def test_demo_run_is_recorded_in_the_state_store(demo_run):
    cwd, _ = demo_run
    from beam_etl.state import StateStore

    store = StateStore(f"sqlite:///{cwd / 'state.db'}")
    runs = store.list_runs("customers_demo")
    assert runs and runs[0]["status"] == "succeeded"


def test_output_flag_and_bad_command(tmp_path):
    bad = run_cli("frobnicate", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr
    missing = run_cli("run", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "spec file 'nope.yaml' not found" in missing.stderr
