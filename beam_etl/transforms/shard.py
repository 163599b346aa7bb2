"""Hash-partition batches by key columns into shards (DESIGN §3).

Joins, window functions and dedupe send each batch's rows to ``num_shards`` shards by a
hash of the key, so rows with equal keys meet on one worker after a ``GroupByKey`` /
``CoGroupByKey`` on the shard number, and the work inside a shard is vectorized again.

The hash is pandas' ``hash_pandas_object`` (SipHash with a fixed key): vectorized and the
same in every process and on every machine — Python's ``hash()`` is salted per process and
so cannot be used across workers. NULL keys hash like any other value; callers that need
SQL semantics (NULL never matches) handle them before or after.

Example:
    >>> import pyarrow as pa
    >>> batch = pa.RecordBatch.from_pydict({"k": [1, 2, 1], "v": ["a", "b", "c"]})
    >>> parts = dict(shard_batch(batch, ["k"], 4))
    >>> sorted(sum((p.column("v").to_pylist() for p in parts.values()), []))
    ['a', 'b', 'c']
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["key_hash", "shard_ids", "shard_batch", "DEFAULT_SHARDS"]

#: Shards per keyed shuffle unless a step says otherwise: enough to spread work over the
#: workers of a small cluster, few enough that each shard holds whole batches.
DEFAULT_SHARDS = 16


def key_hash(batch: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> np.ndarray:
    """A uint64 hash per row of the ``keys`` columns (stable across processes)."""
    import pandas as pd

    selected = batch.select(list(keys))
    frame = selected.to_pandas(types_mapper=pd.ArrowDtype)
    # ArrowDtype columns hash through their object representation: normalise to plain
    # numpy/object values first so equal keys of equal type hash equally everywhere.
    # Numbers and booleans take a fast path instead (object floats hash ~100x slower): always
    # as float64, -0.0 as 0.0 and one NaN, NULL as NaN — equal keys get equal hashes whatever
    # the batch; the few distinct keys that collide (NULL/NaN, ints beyond 2**53) only share
    # a shard.
    columns = {}
    for name, column in zip(selected.schema.names, selected.columns):
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            values = column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False) + 0.0
            values[np.isnan(values)] = np.nan
            columns[name] = values
        else:
            columns[name] = frame[name].astype(object)
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy(dtype=np.uint64)


def shard_ids(batch: pa.RecordBatch | pa.Table, keys: Sequence[str], num_shards: int) -> np.ndarray:
    """The shard (0..num_shards-1) of each row."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}")
    if batch.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    return (key_hash(batch, keys) % np.uint64(num_shards)).astype(np.int64)


def shard_batch(batch: pa.RecordBatch, keys: Sequence[str], num_shards: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(shard, rows of that shard)`` for each non-empty shard, rows kept in input order."""
    ids = shard_ids(batch, keys, num_shards)
    if len(ids) == 0:
        return
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ids)]])
    taken = batch.take(pa.array(order))
    for start, end in zip(starts, ends):
        yield int(sorted_ids[start]), taken.slice(int(start), int(end - start))
