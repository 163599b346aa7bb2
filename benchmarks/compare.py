"""Load every implementation's output and check that they agree (before any figure is shown).

Two things are compared, each against a reference implementation:

* the output table, sorted by (country, category, order_month): keys and integer columns
  exactly, float columns to a relative 1e-9 (sums of floats depend on addition order);
* the rejected rows: the sorted ``order_id`` of every DLQ row (so the same rows were rejected,
  not only as many).

Example:
    >>> table = load_result("duckdb", "/tmp/bench/duckdb")  # doctest: +SKIP
    >>> problems = compare_results(table, load_result("polars", "/tmp/bench/polars"))  # doctest: +SKIP
    >>> problems  # doctest: +SKIP
    []
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.impls import KEY_COLUMNS, RESULT_COLUMNS

__all__ = ["RESULT_SCHEMA", "REL_TOLERANCE", "compare_dlq", "compare_results", "load_dlq_ids", "load_result"]

REL_TOLERANCE = 1e-9

RESULT_SCHEMA = pa.schema(
    [
        ("country", pa.string()),
        ("category", pa.string()),
        ("order_month", pa.timestamp("us")),
        ("orders", pa.int64()),
        ("customers", pa.int64()),
        ("revenue", pa.float64()),
        ("margin", pa.float64()),
        ("median_amount", pa.float64()),
        ("max_amount", pa.float64()),
        ("revenue_rank", pa.int64()),
    ]
)


def _parquet_files(out_dir: str, implementation: str, what: str) -> list[str]:
    if implementation == "beam_etl":
        directory = os.path.join(out_dir, "monthly" if what == "result" else "dlq")
        files = sorted(glob.glob(os.path.join(directory, "*.parquet")))
    else:
        files = sorted(glob.glob(os.path.join(out_dir, f"{what}*.parquet")))
    return files


def load_result(implementation: str, out_dir: str) -> pa.Table:
    """The output table of one run, in :data:`RESULT_SCHEMA`, sorted by the key columns.

    Args:
        implementation: a name from :data:`benchmarks.impls.IMPLEMENTATIONS`.
        out_dir: the directory the run wrote to.
    """
    files = _parquet_files(out_dir, implementation, "result")
    if not files:
        raise FileNotFoundError(f"{implementation}: no result Parquet under {out_dir}")
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    missing = [name for name in RESULT_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"{implementation}: result lacks columns {missing}")
    columns = []
    for field in RESULT_SCHEMA:
        column = table.column(field.name)
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))
        columns.append(pc.cast(column, field.type))
    table = pa.Table.from_arrays(columns, schema=RESULT_SCHEMA)
    return table.sort_by([(name, "ascending") for name in KEY_COLUMNS])


def load_dlq_ids(implementation: str, out_dir: str) -> np.ndarray:
    """The sorted ``order_id`` of every rejected row (-1 where a row had none)."""
    if implementation == "row_beam":
        ids = []
        for path in sorted(glob.glob(os.path.join(out_dir, "dlq*.jsonl"))):
            with open(path, encoding="utf-8") as handle:
                ids.extend(json.loads(line)["order_id"] for line in handle)
        return np.sort(np.array([-1 if i is None else i for i in ids], dtype=np.int64))
    files = _parquet_files(out_dir, implementation, "dlq")
    if not files:
        return np.array([], dtype=np.int64)
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    if implementation == "beam_etl":
        # The DLQ keeps the original row as JSON text in ``record``: {"order_id": 12, ...}
        # (or {"order_id": "12", ...} for rows rejected while parsing).
        found = pc.extract_regex(table.column("record"), r'"order_id": "?(?P<id>\d+)')
        ids = pc.cast(pc.struct_field(found, "id"), pa.int64())
    else:
        ids = pc.cast(table.column("order_id"), pa.int64())
    return np.sort(pc.fill_null(ids, -1).to_numpy(zero_copy_only=False))


def _describe_row(table: pa.Table, index: int) -> str:
    return json.dumps({k: str(v) for k, v in table.slice(index, 1).to_pylist()[0].items()})


def compare_results(reference: pa.Table, other: pa.Table, rel: float = REL_TOLERANCE) -> list[str]:
    """Differences between two sorted result tables (empty when they agree).

    Args:
        reference: :func:`load_result` of the reference implementation.
        other: :func:`load_result` of the implementation checked.
        rel: relative tolerance for float columns.
    """
    if reference.num_rows != other.num_rows:
        return [f"{other.num_rows} rows, expected {reference.num_rows}"]
    problems: list[str] = []
    for field in RESULT_SCHEMA:
        a, b = reference.column(field.name), other.column(field.name)
        if pa.types.is_floating(field.type):
            x = a.to_numpy(zero_copy_only=False).astype(np.float64)
            y = b.to_numpy(zero_copy_only=False).astype(np.float64)
            same = np.isclose(x, y, rtol=rel, atol=0.0, equal_nan=True)
        else:
            same = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
            same |= (pc.is_null(a).to_numpy(zero_copy_only=False) & pc.is_null(b).to_numpy(zero_copy_only=False))
        bad = np.flatnonzero(~same)
        if len(bad):
            first = int(bad[0])
            problems.append(
                f"column {field.name}: {len(bad)} row(s) differ; first at row {first}: "
                f"expected {_describe_row(reference, first)}, got {_describe_row(other, first)}"
            )
    return problems


def compare_dlq(reference: np.ndarray, other: np.ndarray) -> list[str]:
    """Differences between two sorted DLQ id arrays (empty when the same rows were rejected)."""
    if len(reference) == len(other) and np.array_equal(reference, other):
        return []
    only_ref = np.setdiff1d(reference, other)[:5].tolist()
    only_other = np.setdiff1d(other, reference)[:5].tolist()
    return [
        f"{len(other)} DLQ rows, expected {len(reference)}; e.g. order_id {only_ref} missing, {only_other} extra"
    ]
