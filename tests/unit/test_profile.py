"""Profile: statistics against DuckDB, merging across batches, sketches, reports, CLI, step."""

from __future__ import annotations

import json
import math
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.quality.profile import (
    DistinctCounter,
    ProfileOptions,
    QuantileSketch,
    profile_batches,
    profile_command,
    profile_table,
    report_paths,
)
from beam_etl.quality.report import render_html


def _duck(table: pa.Table, column: str) -> dict:
    con = duckdb.connect()
    con.register("t", table)
    q = f'"{column}"'
    numeric = pa.types.is_integer(table.schema.field(column).type) or pa.types.is_floating(table.schema.field(column).type)
    missing = f"{q} IS NULL" + (f" OR isnan({q})" if pa.types.is_floating(table.schema.field(column).type) else "")
    row = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE {missing}),
                   count(DISTINCT {q}) FILTER (WHERE NOT ({missing}))
            FROM t"""
    ).fetchone()
    out = {"count": row[0], "nulls": row[1], "distinct": row[2]}
    if numeric:
        stats = con.execute(
            f"""SELECT min({q}), max({q}), avg({q}), stddev_samp({q}), quantile_cont({q}, 0.25), quantile_cont({q}, 0.5)
                FROM t WHERE NOT ({missing})"""
        ).fetchone()
        out.update(dict(zip(["min", "max", "mean", "stddev", "p25", "p50"], stats)))
    return out


def _close(a, b, rel=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 60))
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=n, max_size=n))
    floats = draw(st.lists(st.one_of(st.none(), st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False)), min_size=n, max_size=n))
    texts = draw(st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "é", "x y", "12"]), st.text(max_size=6)), min_size=n, max_size=n))
    return pa.table({"i": pa.array(ints, pa.int64()), "f": pa.array(floats, pa.float64()), "s": pa.array(texts, pa.string())})


@settings(max_examples=60, deadline=None)
@given(table=tables(), chunk=st.integers(1, 9))
def test_profile_matches_duckdb_and_does_not_depend_on_batching(table, chunk):
    whole = profile_table(table)
    batched = profile_batches(table.to_batches(max_chunksize=chunk), schema=table.schema)
    for column in ("i", "f", "s"):
        oracle = _duck(table, column)
        mine = batched["columns"][column]
        assert mine["count"] == oracle["count"]
        assert mine["nulls"] == oracle["nulls"]
        assert mine["distinct"] == oracle["distinct"], column
        if column != "s":
            assert _close(mine["min"], oracle["min"]) and _close(mine["max"], oracle["max"])
            assert _close(mine["mean"], oracle["mean"], rel=1e-6)
            assert _close(mine["stddev"], oracle["stddev"], rel=1e-6)
            if oracle["p50"] is not None:
                assert _close(mine["quantiles"]["p50"], oracle["p50"], rel=1e-9)
                assert _close(mine["quantiles"]["p25"], oracle["p25"], rel=1e-9)
                assert sum(mine["histogram"]["counts"]) == oracle["count"] - oracle["nulls"]
        # batching changes nothing but timing
        assert {k: v for k, v in mine.items() if k not in ("mean", "stddev", "sum", "length")} == {
            k: v for k, v in whole["columns"][column].items() if k not in ("mean", "stddev", "sum", "length")
        }


def test_top_values_patterns_lengths_and_inferred_types():
    table = pa.table(
        {
            "zip": ["12345", "02139", "12345", None, "99999"],
            "when": ["2024-01-05", "2023-12-31", "2024-02-01", "2024-02-01", ""],
            "email": ["a@x.io", "b@y.org", "c@z.com", "d@e.fr", "e@f.de"],
            "name": ["Ann Lee", "Bob", "Émile Zola", "ann", "X"],
            "flag": [True, False, True, None, True],
        }
    )
    report = profile_table(table)["columns"]
    assert report["zip"]["top_values"][0] == {"value": "12345", "count": 2}
    assert report["zip"]["inferred_type"] == "integer"
    assert report["when"]["inferred_type"] == "date" and report["when"]["empty"] == 1
    assert report["email"]["inferred_type"] == "email"
    assert report["name"]["inferred_type"] == "string"
    assert report["zip"]["patterns"][0] == {"pattern": "99999", "count": 4}
    assert {"pattern": "Aa Aa", "count": 2} in report["name"]["patterns"]  # "Ann Lee", "Émile Zola"
    assert report["name"]["length"] == {"min": 1, "max": 10, "mean": pytest.approx((7 + 3 + 10 + 3 + 1) / 5)}
    assert report["flag"]["true_fraction"] == pytest.approx(0.75)
    assert report["when"]["min"] == "" and report["when"]["max"] == "2024-02-01"


def test_distinct_switches_to_hyperloglog_beyond_the_exact_bound():
    pytest.importorskip("datasketches")
    values = pa.array(np.arange(200_000, dtype=np.int64) % 150_000)
    counter = DistinctCounter(limit=10_000)
    for start in range(0, len(values), 50_000):
        counter.add(values.slice(start, 50_000))
    assert counter.approximate
    assert abs(counter.count() - 150_000) / 150_000 < 0.03
    # a merged pair of sketches estimates the union
    other = DistinctCounter(limit=10_000)
    other.add(pa.array(np.arange(150_000, 180_000, dtype=np.int64)))
    counter.merge(other)
    assert abs(counter.count() - 180_000) / 180_000 < 0.03


def test_quantiles_switch_to_kll_beyond_the_exact_bound_and_merge():
    pytest.importorskip("datasketches")
    rng = np.random.default_rng(3)
    data = rng.normal(size=300_000)
    a, b = QuantileSketch(limit=50_000), QuantileSketch(limit=50_000)
    a.add(data[:200_000])
    b.add(data[200_000:])
    a.merge(b)
    assert a.approximate and a.n == 300_000
    # KLL compacts at random, so the error bound is in rank, not value: near the tails of a
    # normal a 0.5% rank error is a ~0.06 value error. The sketch's own 99%-confidence
    # bound (1.33% at k=200) holds with room: the worst of 900 draws here was 0.73%.
    import datasketches

    bound = datasketches.kll_doubles_sketch.get_normalized_rank_error(a.k, False)
    ordered = np.sort(data)
    approx = a.quantiles([0.05, 0.5, 0.95])
    for q, x in zip([0.05, 0.5, 0.95], approx):
        rank = np.searchsorted(ordered, x, side="right") / len(ordered)
        assert abs(rank - q) <= bound, (q, x, rank)
    histogram = a.histogram(10, float(data.min()), float(data.max()))
    assert abs(sum(histogram["counts"]) - 300_000) < 50


def test_state_survives_pickling_with_sketches():
    import pickle

    pytest.importorskip("datasketches")
    state_table = pa.table({"x": pa.array(np.arange(30_000, dtype=np.float64))})
    from beam_etl.quality.profile import ProfileState

    state = ProfileState(ProfileOptions(exact_distinct_limit=1000, exact_quantile_limit=1000)).add(state_table)
    copy = pickle.loads(pickle.dumps(state))
    assert copy.to_dict()["columns"]["x"]["distinct"] == state.to_dict()["columns"]["x"]["distinct"]
    assert copy.to_dict()["columns"]["x"]["quantiles_approximate"] is True


def test_html_is_self_contained_with_a_histogram_per_numeric_column():
    table = pa.table({"a": [1, 2, 3, 10], "b": [0.5, None, 2.5, 1.0], "s": ["x", "<script>", "y", None]})
    html = render_html(dict(profile_table(table), title="T"))
    assert html.count("<svg") == 2  # a and b, not s
    assert "<script>" not in html and "&lt;script&gt;" in html  # data is escaped
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<link" not in html and "src=" not in html


def test_report_paths():
    assert report_paths("out/p.json", "x") == ("out/p.json", "out/p.html")
    assert report_paths("out/p.html", "x") == ("out/p.json", "out/p.html")
    assert report_paths("out/reports/", "prof") == ("out/reports/prof.json", "out/reports/prof.html")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson", "json"])
def test_profile_command_reads_files_and_writes_both_reports(tmp_path, fmt, capsys):
    table = pa.table({"id": [1, 2, 3, 3], "city": ["Oslo", "Rome", None, "Rome"]})
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        path.write_text("id,city\n1,Oslo\n2,Rome\n3,\n3,Rome\n")
    elif fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "ndjson":
        path.write_text("\n".join(json.dumps(r) for r in table.to_pylist()) + "\n")
    else:
        path.write_text(json.dumps(table.to_pylist()))
    out = tmp_path / "report.json"
    assert profile_command(str(path), str(out), "both") == 0
    report = json.loads(out.read_text())
    assert report["row_count"] == 4
    assert report["columns"]["id"]["distinct"] == 3
    city = report["columns"]["city"]
    assert city["nulls"] + city.get("empty", 0) == 1  # CSV reads the blank as null or as ""
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "wrote" in capsys.readouterr().out


def test_profile_command_prints_json_and_reports_missing_files(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("x\n1\n2\n")
    assert profile_command(str(path), None, "json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["columns"]["x"]["max"] == 2
    assert profile_command(str(tmp_path / "nope.csv"), None, "json") == 2
    assert "not found" in capsys.readouterr().err


def test_profile_step_passes_rows_through_and_writes_the_report(tmp_path):
    from beam_etl.run import run_spec
    from beam_etl.spec import load_spec

    spec = load_spec(
        {
            "name": "profile_step",
            "sources": {"src": {"type": "inline", "rows": [{"a": i, "b": f"v{i % 3}"} for i in range(20)]}},
            "steps": [{"name": "prof", "type": "profile", "input": "src", "report": "reports/"}],
            "sinks": {"out": {"type": "ndjson", "input": "prof", "path": "out/rows.ndjson"}},
        }
    )
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.ok, report.error
    step = next(s for s in report.summary["steps"] if s["name"] == "prof")
    assert step["rows_in"] == step["rows_out"] == 20
    profile = json.loads((tmp_path / "reports" / "prof.json").read_text())
    assert profile["row_count"] == 20
    assert profile["columns"]["b"]["distinct"] == 3
    assert os.path.exists(tmp_path / "reports" / "prof.html")


def test_unknown_profile_column_is_a_spec_error_with_a_hint():
    from beam_etl.errors import SpecError
    from beam_etl.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec(
            {
                "name": "p",
                "sources": {"src": {"type": "inline", "rows": [{"amount": 1}], "schema": {"amount": "int64"}}},
                "steps": [{"name": "prof", "type": "profile", "input": "src", "columns": ["amout"]}],
                "sinks": {},
            }
        )
    assert "steps[0].columns[0]" in str(info.value) and "did you mean 'amount'" in str(info.value)
