"""Dead-letter rows: the one schema every rejected row takes, and helpers to build them.

A DLQ batch keeps the original row as JSON in ``record`` and the step it failed at in
``step``, so ``python -m beam_etl dlq retry`` can re-enter the graph there (DESIGN §7).

Example:
    >>> import pyarrow as pa
    >>> bad = pa.RecordBatch.from_pydict({"id": [7], "age": [-3]})
    >>> dlq = dlq_batch(bad, step="valid", error_type="validate.min", error_message="age < 0")
    >>> dlq.column("record").to_pylist()
    ['{"id": 7, "age": -3}']
"""

from __future__ import annotations

import datetime as _dt
from typing import Sequence

import pyarrow as pa

from beam_etl.batch import concat_batches
from beam_etl.json_rows import rows_as_json

__all__ = ["DLQ_SCHEMA", "dlq_batch", "empty_dlq", "with_job_id"]

DLQ_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("step", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("source", pa.string()),
        pa.field("record", pa.string()),
        pa.field("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _column(value: str | Sequence[str | None] | pa.Array | None, rows: int) -> pa.Array:
    if value is None or isinstance(value, str):
        return pa.array([value] * rows, type=pa.string())
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    array = value if isinstance(value, pa.Array) else pa.array(list(value), type=pa.string())
    if len(array) != rows:
        raise ValueError(f"DLQ column has {len(array)} values for {rows} rows")
    return array.cast(pa.string())


def dlq_batch(
    rows: pa.RecordBatch | None,
    *,
    step: str,
    error_type: str,
    error_message: str | Sequence[str | None] | pa.Array,
    source: str | Sequence[str | None] | pa.Array | None = None,
    records: Sequence[str | None] | pa.Array | None = None,
    job_id: str | None = None,
) -> pa.RecordBatch:
    """DLQ rows for the rows of ``rows`` (or for raw ``records`` when no row could be parsed).

    Args:
        rows: the rejected rows; each becomes one DLQ row with the row as JSON in ``record``.
        step: the step (or source) name the rows failed at.
        error_type: a short machine-readable kind, e.g. ``validate.required``, ``csv.parse``.
        error_message: one message for all rows, or one per row.
        source: where the row came from, e.g. ``customers.csv:12``; one or one per row.
        records: raw text per row instead of ``rows`` (unparsable input).
        job_id: filled in later by the DLQ sink when None.
    """
    if records is not None:
        record_array = _column(records, len(records))
    elif rows is not None:
        record_array = rows_as_json(rows)
    else:
        raise ValueError("dlq_batch needs rows or records")
    n = len(record_array)
    now = _dt.datetime.now(_dt.timezone.utc)
    return pa.RecordBatch.from_arrays(
        [
            _column(job_id, n),
            _column(step, n),
            _column(error_type, n),
            _column(error_message, n),
            _column(source, n),
            record_array,
            pa.array([now] * n, type=DLQ_SCHEMA.field("failed_at").type),
        ],
        schema=DLQ_SCHEMA,
    )


def empty_dlq() -> pa.RecordBatch:
    return concat_batches([], schema=DLQ_SCHEMA)


def with_job_id(batch: pa.RecordBatch, job_id: str) -> pa.RecordBatch:
    """Fill the ``job_id`` column where it is still null."""
    import pyarrow.compute as pc

    column = pc.fill_null(batch.column("job_id"), job_id)
    return batch.set_column(0, DLQ_SCHEMA.field("job_id"), column)
