"""Arrow RecordBatch helpers: row <-> batch conversion, slicing, and the Beam coder.

Every PCollection inside a beam-etl graph carries ``pyarrow.RecordBatch`` elements
(DESIGN §3). This module is the one place that knows how to build, split and encode
them.

Example:
    >>> batch = rows_to_batch([{"id": 1, "name": "a"}, {"id": 2, "name": None}])
    >>> batch.num_rows
    2
    >>> batch_to_rows(batch)[1]
    {'id': 2, 'name': None}
"""

from __future__ import annotations

import datetime as _dt
import decimal as _decimal
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import coders

from beam_etl.memory import use_jemalloc

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "ArrowBatchCoder",
    "rows_to_batch",
    "batch_to_rows",
    "empty_batch",
    "concat_batches",
    "split_batch",
    "rebatch",
    "filter_batch",
    "take_rows",
    "row_mask",
    "to_json_value",
    "align_to_schema",
]

use_jemalloc()  # before any batch is built: see beam_etl/memory.py

#: Rows per batch produced by sources unless a spec says otherwise (DESIGN §3).
DEFAULT_BATCH_ROWS = 65_536


class ArrowBatchCoder(coders.Coder):
    """Encodes a ``pyarrow.RecordBatch`` as one Arrow IPC stream.

    Registered for ``pa.RecordBatch`` at import time, so any PCollection declared
    ``with_output_types(pa.RecordBatch)`` crosses shuffles and the Fn API (Flink,
    Dataflow) as Arrow bytes rather than as a pickle.
    """

    def encode(self, value: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_batch(value)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.RecordBatch:
        reader = pa.ipc.open_stream(pa.py_buffer(encoded))
        batches = list(reader)
        if not batches:  # a zero-row batch with no record message
            return empty_batch(reader.schema)
        if len(batches) == 1:
            return batches[0]
        return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]

    def is_deterministic(self) -> bool:
        # Same batch -> same bytes; good enough for keys we never use batches as.
        return True

    def estimate_size(self, value: pa.RecordBatch) -> int:
        # Beam samples element sizes for its metrics; the default encodes the whole batch
        # just to measure it (~5% of a benchmark run). The buffers are what the stream holds.
        return value.nbytes

    def to_type_hint(self):
        return pa.RecordBatch

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


coders.registry.register_coder(pa.RecordBatch, ArrowBatchCoder)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch with ``schema``."""
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=field.type) for field in schema], schema=schema
    )


def rows_to_batch(
    rows: Sequence[Mapping[str, Any]], schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """Build a batch from row dicts; a key missing from a row is null.

    With ``schema`` the columns and types are fixed (extra keys are ignored);
    without it, columns appear in first-seen order and types are inferred.
    """
    if schema is None:
        names: dict[str, None] = {}
        for row in rows:
            for key in row:
                names.setdefault(key, None)
        columns = {name: [row.get(name) for row in rows] for name in names}
        return pa.RecordBatch.from_pydict(columns)
    arrays = [
        pa.array([row.get(field.name) for row in rows], type=field.type) for field in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def batch_to_rows(batch: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """The batch as a list of row dicts (Python values)."""
    return batch.to_pylist()


def concat_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> pa.RecordBatch:
    """One batch holding all rows of ``batches`` (schemas unified, missing columns null)."""
    batches = [b for b in batches]
    if not batches:
        if schema is None:
            raise ValueError("concat_batches needs a schema when there are no batches")
        return empty_batch(schema)
    tables = [pa.Table.from_batches([b]) for b in batches]
    table = pa.concat_tables(tables, promote_options="permissive")
    if schema is not None:
        table = table.cast(schema)
    table = table.combine_chunks()
    out = table.to_batches()
    return out[0] if out else empty_batch(table.schema)


def split_batch(batch: pa.RecordBatch, max_rows: int) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of at most ``max_rows`` rows (nothing for an empty batch)."""
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    for start in range(0, batch.num_rows, max_rows):
        yield batch.slice(start, max_rows)


def rebatch(batches: Iterable[pa.RecordBatch], max_rows: int) -> Iterator[pa.RecordBatch]:
    """Regroup a stream of (possibly tiny) batches into batches of ~``max_rows`` rows."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= max_rows:
            merged = concat_batches(pending)
            full = (merged.num_rows // max_rows) * max_rows
            yield from split_batch(merged.slice(0, full), max_rows)
            rest = merged.slice(full)
            pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending:
        yield concat_batches(pending)


def filter_batch(batch: pa.RecordBatch, mask: pa.Array) -> pa.RecordBatch:
    """Rows where ``mask`` is true (null counts as false)."""
    return batch.filter(pc.fill_null(mask, False))


def row_mask(num_rows: int, rows: Sequence[int]) -> pa.Array:
    """A boolean mask of ``num_rows`` that is true at ``rows``."""
    import numpy as np

    mask = np.zeros(num_rows, dtype=bool)
    mask[list(rows)] = True
    return pa.array(mask)


def take_rows(batch: pa.RecordBatch, indices: Sequence[int] | pa.Array) -> pa.RecordBatch:
    """Rows at ``indices``, in that order."""
    return batch.take(pa.array(indices, type=pa.int64()))


def to_json_value(value: Any) -> Any:
    """A Python value from Arrow made JSON-serialisable (dates ISO, decimals str, bytes hex)."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, _decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Arrow maps come back as lists of (key, value) tuples.
        return [to_json_value(v) for v in value]
    return value


def align_to_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Reorder/add columns so ``batch`` has exactly ``schema``'s names (missing -> null).

    Types are cast with Arrow's safe cast; a failing cast raises ``pa.ArrowInvalid``.
    """
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
        else:
            column = batch.column(index)
            arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
