"""Smoke test of the benchmark (issue 6): the generator and the cross-check, no timings.

The benchmark itself is ``python -m benchmarks.run`` (README, Performance); this only makes
sure that, on ~2k generated rows, beam-etl's job gives DuckDB's answer (same output table,
same rejected rows) and that the generator is deterministic — so the full run does not
find out after an hour that something drifted.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pytest.importorskip("duckdb")

from benchmarks.compare import compare_dlq, compare_results, load_dlq_ids, load_result  # noqa: E402
from benchmarks import generate  # noqa: E402
from benchmarks.generate import ensure_data  # noqa: E402
from benchmarks.run import cross_check, run_implementation  # noqa: E402

ROWS = 2_000


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ensure_data(ROWS, seed=7, formats=("csv", "parquet"), data_dir=str(tmp_path_factory.mktemp("data")))


def test_generator_is_deterministic_dirty_and_prefix_stable(data, tmp_path):
    again = ensure_data(ROWS, seed=7, formats=("csv",), data_dir=str(tmp_path))
    assert _digest(again.orders_csv) == _digest(data.orders_csv)
    other_seed = ensure_data(ROWS, seed=8, formats=("csv",), data_dir=str(tmp_path))
    assert _digest(other_seed.orders_csv) != _digest(data.orders_csv)

    table = pacsv.read_csv(data.orders_csv, convert_options=pacsv.ConvertOptions(column_types={
        name: pa.string() for name in ("customer_id", "amount", "quantity", "ts", "country", "email", "status")}))  # fmt: skip
    assert table.num_rows == ROWS
    assert table.column("order_id").to_pylist() == list(range(1, ROWS + 1))
    amounts = table.column("amount").to_pylist()
    assert any(a == "" for a in amounts) and any(a.startswith("-") for a in amounts)  # missing, negative
    assert any(c != c.strip() for c in table.column("country").to_pylist())  # padded values to clean

    parquet = pq.read_table(data.orders_parquet)
    assert [e or "" for e in parquet.column("email").to_pylist()] == table.column("email").to_pylist()


def test_first_rows_of_a_larger_data_set_are_the_smaller_one(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "CHUNK_ROWS", 500)  # several chunks, each seeded on its own
    big = generate.ensure_orders(1_700, seed=3, data_dir=str(tmp_path / "big"))
    small = generate.ensure_orders(1_200, seed=3, data_dir=str(tmp_path / "small"))
    with open(big, "rb") as big_file, open(small, "rb") as small_file:
        head = small_file.read()
        assert big_file.read(len(head)) == head


def test_beam_etl_and_duckdb_agree_on_output_and_dlq(data, tmp_path):
    outputs = {}
    dlq_rows = {}
    for name, args in (("duckdb", []), ("beam_etl", ["--direct_num_workers=1"])):
        out = str(tmp_path / name)
        measured, stats = run_implementation(name, data.orders_csv, data.products_csv, out, args)
        assert measured.returncode == 0 and measured.peak_rss_mb > 0
        outputs[name] = out
        dlq_rows[name] = stats["dlq_rows"]
    assert cross_check(outputs) == []
    # The job rejects the ~3.5% dirty rows and both send the same ones to their DLQ.
    assert 0.02 * ROWS < dlq_rows["duckdb"] == dlq_rows["beam_etl"] < 0.06 * ROWS
    result = load_result("beam_etl", outputs["beam_etl"])
    assert result.num_rows > 100
    assert min(result.column("revenue_rank").to_pylist()) == 1


def test_cross_check_catches_a_wrong_answer(data, tmp_path):
    out = str(tmp_path / "duckdb")
    run_implementation("duckdb", data.orders_csv, data.products_csv, out)
    reference = load_result("duckdb", out)
    revenue = reference.column("revenue").to_numpy().copy()
    revenue[3] *= 1 + 1e-7  # beyond the 1e-9 tolerance
    tampered = reference.set_column(reference.schema.get_field_index("revenue"), "revenue", pa.array(revenue))
    problems = compare_results(reference, tampered)
    assert len(problems) == 1 and "revenue" in problems[0]
    ids = load_dlq_ids("duckdb", out)
    assert compare_dlq(ids, ids) == []
    assert compare_dlq(ids, np.delete(ids, 0)) != []
    assert os.path.exists(os.path.join(out, "dlq.parquet"))
