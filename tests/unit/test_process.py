"""Data-processor operations against DuckDB on generated data, and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl import process

numbers = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))


@st.composite
def tables(draw):
    n = draw(st.integers(min_value=2, max_value=40))
    return pa.table(
        {
            "g": pa.array(draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))),
            "x": pa.array(draw(st.lists(numbers, min_size=n, max_size=n)), pa.float64()),
            "y": pa.array(draw(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=n, max_size=n)), pa.int64()),
        }
    )


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == pytest.approx(b, rel=1e-9, abs=1e-9)


@settings(max_examples=40)
@given(tables())
def test_statistics_match_duckdb(table):
    t = table  # noqa: F841 (DuckDB reads the local by name)
    stats = process.statistics(table)
    for column in ("x", "y"):
        expected = duckdb.sql(
            f"SELECT avg({column}), median({column}), stddev_samp({column}), var_samp({column}), min({column}), max({column}) FROM t"
        ).fetchall()[0]
        got = stats[column]
        for value, name in zip(expected, ["mean", "median", "stdev", "variance", "min", "max"]):
            assert close(got[name], value), (column, name, got[name], value)


@settings(max_examples=40)
@given(tables())
def test_aggregate_matches_duckdb(table):
    t = table  # noqa: F841
    result = process.aggregate(table, ["g"], ["total=sum(x)", "n=count(*)", "hi=max(y)"])
    got = {r["g"]: (r["total"], r["n"], r["hi"]) for r in result.to_pylist()}
    for g, total, n, hi in duckdb.sql("SELECT g, sum(x), count(*), max(y) FROM t GROUP BY g").fetchall():
        assert close(got[g][0], total) and got[g][1] == n and got[g][2] == hi


@settings(max_examples=30)
@given(tables())
def test_normalize_correlation_fill_and_dedupe_match_duckdb(table):
    t = table  # noqa: F841
    lo, hi = duckdb.sql("SELECT min(x), max(x) FROM t").fetchall()[0]
    scaled = process.normalize(table, ["x"]).column("x").to_pylist()
    for value, original in zip(scaled, table.column("x").to_pylist()):
        if original is None:
            assert value is None
        elif hi == lo:
            assert value == 0.0
        else:
            assert close(value, (original - lo) / (hi - lo))
    corr = process.correlation(table, ["x", "y"])["x"]["y"]
    expected = duckdb.sql("SELECT corr(x, y) FROM t").fetchall()[0][0]
    if expected is not None and corr is not None:
        assert corr == pytest.approx(expected, rel=1e-6, abs=1e-9)
    mean = duckdb.sql("SELECT avg(x) FROM t").fetchall()[0][0]
    filled = process.fill_missing(table, "mean", ["x"]).column("x").to_pylist()
    assert all(close(f, o if o is not None else mean) for f, o in zip(filled, table.column("x").to_pylist()))
    kept = process.deduplicate(table)
    assert kept.num_rows == duckdb.sql("SELECT count(*) FROM (SELECT DISTINCT g, x, y FROM t)").fetchall()[0][0]


def test_outliers_and_bad_options():
    table = pa.table({"v": [10.0, 11.0, 9.0, 10.5, 9.5, 500.0]})
    found = process.outliers(table, threshold=2.0)
    assert found.column("v").to_pylist() == [500.0] and "zscore" in found.column("outlier_reason")[0].as_py()
    with pytest.raises(ValueError, match="unknown column"):
        process.statistics(table, ["nope"])
    with pytest.raises(ValueError, match="NAME=FUNCTION"):
        process.aggregate(table, [], ["sum(v)"])


def test_process_cli_reads_json_and_ndjson_and_writes_files(tmp_path):
    rows = [{"id": 1, "name": "  ann "}, {"id": 1, "name": "  ann "}, {"id": 2, "name": None}]
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.json"
    cli = [sys.executable, "-m", "beam_etl", "process"]
    done = subprocess.run([*cli, "deduplicate", "--input", str(source), "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == [{"id": 1, "name": "  ann "}, {"id": 2, "name": None}]
    cleaned = subprocess.run([*cli, "clean", "--input", str(source), "--ops", '{"name": ["trim", "title"]}'], capture_output=True, text=True)
    assert json.loads(cleaned.stdout)[0]["name"] == "Ann"
    bad = subprocess.run([*cli, "clean", "--input", str(source), "--ops", '{"name": ["trimm"]}'], capture_output=True, text=True)
    assert bad.returncode == 2 and "trimm" in bad.stderr and "\n" == bad.stderr[-1] and bad.stderr.count("\n") == 1
