"""``join``: SQL joins of two inputs — inner, left, right, full, semi, anti — over Arrow batches.

How it runs (DESIGN §3): each batch of both sides is split by a stable hash of its join key
into ``shards`` sub-batches (:func:`beam_etl.transforms.shard.shard_batch`); a
``CoGroupByKey`` on the shard number brings the rows of equal keys of both sides to one
worker; there a vectorized hash join (``pyarrow.Table.join`` on narrow index tables) pairs
the rows, and the output columns are gathered with ``take``. ``strategy: broadcast`` instead
sends the whole right side to every worker as a side input and joins each left batch as it
comes (no shuffle of the left side) — for a small right side.

SQL semantics, including where ``pyarrow.Table.join`` differs and is corrected here:

- NULL keys never match; rows with a NULL key are kept as unmatched rows by outer joins and
  by ``anti`` (``NOT EXISTS`` semantics), dropped by ``inner``/``semi``.
- NaN matches NaN and ``-0.0`` matches ``0.0`` (as in DuckDB and PostgreSQL; pyarrow alone
  would not match ``-0.0`` with ``0.0``).
- Keys of different but compatible types are compared in their common type (``int32`` with
  ``int64``, ``int64`` with ``float64``, ``string`` with ``large_string``, ``date32`` with
  ``timestamp``); incompatible types (``int64`` with ``string``) are a spec error.
- A key with the same name on both sides appears once in the output (like SQL ``USING``;
  for ``right``/``full`` joins it is the value of whichever side matched); keys with different
  names both appear (like SQL ``ON``). Any other column name found on both sides gets the
  suffixes (``_left``/``_right`` by default) — pyarrow alone would silently drop one of them.
- ``semi``/``anti`` output the left columns only.

Memory: a shard holds every row of both sides whose key hashes to it, so a worker needs
about ``(left rows + right rows) / shards`` rows plus the rows of its hottest key: all rows of
one key land in one shard, so a key holding half the rows puts half the input on one worker
and produces ``left rows of that key × right rows of that key`` output rows. The join inside a
shard walks the left rows in chunks of ``chunk_rows`` so the pairs held at once are bounded by
``chunk_rows × (largest right group)``, and output leaves in batches of ``batch_rows``.

Example:
    >>> joined = (orders, customers) | Join("joined", on={"customer_id": "id"}, how="left")  # doctest: +SKIP
    >>> joined.main  # doctest: +SKIP
"""

from __future__ import annotations

import traceback
import uuid
from dataclasses import dataclass
from typing import ClassVar, Iterable, Iterator, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import typehints
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput
from pydantic import Field, field_validator, model_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS, align_to_schema, concat_batches, split_batch
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import BuildContext, StepCounters, StepOutputs
from beam_etl.transforms.shard import DEFAULT_SHARDS, shard_batch

__all__ = [
    "Join",
    "JoinSpec",
    "JoinStats",
    "hash_join",
    "join_tables",
    "join_output_names",
    "common_key_type",
    "hashable_key_columns",
    "shard_by_keys",
    "JOIN_TYPES",
]

TJoinHow = Literal["inner", "left", "right", "full", "semi", "anti"]

#: Our join types -> the pyarrow join type used per left chunk. ``right``/``full`` add the
#: right rows no chunk matched after the last chunk (see :func:`hash_join`).
JOIN_TYPES: dict[str, str] = {
    "inner": "inner",
    "left": "left outer",
    "right": "inner",
    "full": "left outer",
    "semi": "left semi",
    "anti": "left anti",
}

#: Left rows joined at once inside a shard (bounds the index pairs held in memory).
DEFAULT_CHUNK_ROWS = 262_144

_ROW = "__beam_etl_row"
_HASH_PREFIX = "__beam_etl_key"


# --------------------------------------------------------------------------- key types


def _decoded(data_type: pa.DataType) -> pa.DataType:
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def _family(data_type: pa.DataType) -> str:
    """The comparison family of a type: values of one family can be compared with each other."""
    t = _decoded(data_type)
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_duration(t):
        return "duration"
    return str(t)


_UNITS = ["s", "ms", "us", "ns"]


def _finer(a: str, b: str) -> str:
    return a if _UNITS.index(a) >= _UNITS.index(b) else b


def common_key_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type two join key columns are compared in, or None when they cannot be compared.

    Example:
        >>> common_key_type(pa.int32(), pa.float64())
        DataType(double)
        >>> common_key_type(pa.int64(), pa.string()) is None
        True
    """
    a, b = _decoded(a), _decoded(b)
    fa, fb = _family(a), _family(b)
    if fa == "null":
        return b if fb != "null" else pa.null()
    if fb == "null":
        return a
    if fa != fb:
        return None
    if a == b and not (pa.types.is_string(a) or pa.types.is_binary(a) or pa.types.is_floating(a)):
        return a
    if fa == "number":
        if pa.types.is_integer(a) and pa.types.is_integer(b):
            if pa.types.is_unsigned_integer(a) and pa.types.is_unsigned_integer(b):
                return pa.uint64()
            if pa.types.is_uint64(a) or pa.types.is_uint64(b):
                return pa.decimal128(20, 0)  # every int64 and uint64 value, exactly
            return pa.int64()
        if pa.types.is_decimal(a) and a == b:
            return a
        return pa.float64()  # floats, and decimals mixed with anything else
    if fa == "string":
        return pa.large_string()
    if fa == "binary":
        return pa.large_binary()
    if fa == "datetime":
        if pa.types.is_date(a) and pa.types.is_date(b):
            return pa.date32()
        tz_a = a.tz if pa.types.is_timestamp(a) else None
        tz_b = b.tz if pa.types.is_timestamp(b) else None
        if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and tz_a != tz_b:
            return None  # naive vs zoned (or two zones): no single meaning of equality
        if tz_a is not None and pa.types.is_date(b) or tz_b is not None and pa.types.is_date(a):
            return None
        unit_a = a.unit if pa.types.is_timestamp(a) else "s"
        unit_b = b.unit if pa.types.is_timestamp(b) else "s"
        return pa.timestamp(_finer(unit_a, unit_b), tz=tz_a)
    if fa in ("time", "duration"):
        unit = _finer(a.unit, b.unit)
        if fa == "duration":
            return pa.duration(unit)
        return pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
    if fa == "bool":
        return pa.bool_()
    return a if a == b else None


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _exact_key(column: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array:
    """``column`` in the comparison type, with ``-0.0`` as ``0.0`` (SQL: they are equal)."""
    array = _as_array(column)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type != target:
        array = array.cast(target)
    if pa.types.is_floating(target):
        # -0.0 == 0.0 in SQL; pyarrow's hash join compares bit patterns. NaN already
        # matches NaN in pyarrow, as in DuckDB/PostgreSQL.
        array = pc.if_else(pc.equal(array, 0), pa.scalar(0.0, target), array)
    return array


def _hash_form(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A lossy canonical form of a key column for *sharding*: equal keys, equal form.

    Both join sides are sharded without seeing each other's types, so every type of a
    comparison family maps to one form (numbers to float64, strings to large_string,
    dates and timestamps to microseconds). Distinct keys may share a form (a huge int64
    rounded to float64); that only puts them in the same shard, where they are compared
    exactly.
    """
    array = _as_array(column)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    family = _family(array.type)
    if family == "number":
        # unsafe: int64 beyond 2**53 rounds, which is fine for choosing a shard
        array = array.cast(pa.float64(), safe=False)
        return pc.if_else(pc.equal(array, 0), 0.0, array)
    if family == "string":
        return array.cast(pa.large_string())
    if family == "binary":
        return array.cast(pa.large_binary())
    if family == "datetime":
        if pa.types.is_date(array.type):
            array = array.cast(pa.timestamp("s")).cast(pa.timestamp("us"))
        else:
            array = array.cast(pa.timestamp("us", tz=array.type.tz), safe=False)
        return array.cast(pa.int64())
    return array


def hashable_key_columns(batch: pa.RecordBatch, keys: Sequence[str]) -> pa.RecordBatch:
    """``batch`` with one extra canonical column per key (see :func:`_hash_form`) for sharding."""
    out = batch
    for index, key in enumerate(keys):
        out = out.append_column(f"{_HASH_PREFIX}{index}", _hash_form(batch.column(key)))
    return out


def shard_by_keys(batch: pa.RecordBatch, keys: Sequence[str], num_shards: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(shard, sub-batch)`` pairs, equal keys (in the SQL sense) always in the same shard.

    Wraps :func:`beam_etl.transforms.shard.shard_batch` with canonical key forms so that
    ``1`` (int) and ``1.0`` (float), or ``-0.0`` and ``0.0``, land in one shard.
    """
    if batch.num_rows == 0:
        return
    if not keys:  # one partition: everything in shard 0
        yield 0, batch
        return
    hidden = [f"{_HASH_PREFIX}{i}" for i in range(len(keys))]
    width = batch.num_columns
    for shard, part in shard_batch(hashable_key_columns(batch, keys), hidden, num_shards):
        yield shard, part.select(list(range(width)))


# --------------------------------------------------------------------------- output names


def _pairs(on: dict[str, str] | list[str] | str) -> list[tuple[str, str]]:
    if isinstance(on, str):
        return [(on, on)]
    if isinstance(on, dict):
        return [(str(left), str(right)) for left, right in on.items()]
    return [(str(name), str(name)) for name in on]


def join_output_names(
    left_names: Sequence[str],
    right_names: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    how: str,
    suffixes: Sequence[str] = ("_left", "_right"),
) -> tuple[list[str], list[str | None]]:
    """Output column names for the left columns and the right columns (None = not output).

    A key with the same name on both sides is output once (under the left position);
    other names present on both sides get ``suffixes``. Raises ValueError when a suffixed
    name collides with another column.

    Example:
        >>> join_output_names(["id", "v"], ["id", "v", "w"], [("id", "id")], "inner")
        (['id', 'v_left'], [None, 'v_right', 'w'])
    """
    if how in ("semi", "anti"):
        return list(left_names), [None] * len(right_names)
    merged = {left for left, right in pairs if left == right}
    right_out = [name for name in right_names if name not in merged]
    clash = set(left_names) & set(right_out)
    left_result = [f"{name}{suffixes[0]}" if name in clash else name for name in left_names]
    right_result: list[str | None] = [
        None if name in merged else (f"{name}{suffixes[1]}" if name in clash else name) for name in right_names
    ]
    names = left_result + [name for name in right_result if name is not None]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(
                f"join output would have two columns named '{name}'; choose other suffixes "
                "(suffixes: [_a, _b]) or rename a column before the join"
            )
        seen.add(name)
    return left_result, right_result


# --------------------------------------------------------------------------- the join itself


@dataclass
class JoinStats:
    """Row accounting of one join call: input rows that appear in some output row, and not."""

    left_rows: int = 0
    right_rows: int = 0
    left_used: int = 0
    right_used: int = 0
    out_rows: int = 0

    @property
    def rows_in(self) -> int:
        return self.left_rows + self.right_rows

    @property
    def merged(self) -> int:
        return self.left_used + self.right_used

    @property
    def filtered(self) -> int:
        return self.rows_in - self.merged


def _as_table(data: pa.Table | pa.RecordBatch) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_batches([data])


def _index_table(table: pa.Table, keys: Sequence[str], types: Sequence[pa.DataType], row_name: str) -> pa.Table:
    columns = {f"k{i}": _exact_key(table.column(key), data_type) for i, (key, data_type) in enumerate(zip(keys, types))}
    columns[row_name] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return pa.table(columns)


def _key_types(left: pa.Schema, right: pa.Schema, pairs: Sequence[tuple[str, str]]) -> list[pa.DataType]:
    types = []
    for left_key, right_key in pairs:
        lt, rt = left.field(left_key).type, right.field(right_key).type
        common = common_key_type(lt, rt)
        if common is None:
            raise ValueError(
                f"join keys '{left_key}' ({lt}) and '{right_key}' ({rt}) have incompatible types; "
                "cast one side to the other's type first"
            )
        if pa.types.is_null(common):
            common = pa.int8()  # both sides all-null: nothing can match; any type will do
        types.append(common)
    return types


def hash_join(
    left: pa.Table | pa.RecordBatch,
    right: pa.Table | pa.RecordBatch,
    on: dict[str, str] | list[str] | str,
    how: str = "inner",
    suffixes: Sequence[str] = ("_left", "_right"),
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    stats: JoinStats | None = None,
    right_matched: np.ndarray | None = None,
) -> Iterator[pa.Table]:
    """Join two tables with SQL semantics; yields the output in pieces (one per left chunk).

    Args:
        left: the left rows.
        right: the right rows.
        on: ``{left_key: right_key}``, or a list of key names common to both sides.
        how: ``inner``, ``left``, ``right``, ``full``, ``semi`` or ``anti``.
        suffixes: appended to non-key column names present on both sides.
        chunk_rows: left rows joined at once (bounds memory for skewed keys).
        stats: filled with the row accounting when given.
        right_matched: a boolean array over the right rows, OR-ed with the rows this call
            matched (used by the broadcast strategy to count right rows across batches).

    Example:
        >>> left = pa.table({"id": [1, 2, None], "a": ["x", "y", "z"]})
        >>> right = pa.table({"id": [1, 1, None], "a": ["p", "q", "r"]})
        >>> out = pa.concat_tables(hash_join(left, right, ["id"], "left"))
        >>> sorted(out.column("a_right").to_pylist(), key=str)  # y and z match nothing (NULL never matches)
        [None, None, 'p', 'q']
    """
    if how not in JOIN_TYPES:
        raise ValueError(f"unknown join type '{how}'; use one of {', '.join(JOIN_TYPES)}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    left, right = _as_table(left), _as_table(right)
    pairs = _pairs(on)
    left_keys = [lk for lk, _ in pairs]
    right_keys = [rk for _, rk in pairs]
    for side, table, keys in (("left", left, left_keys), ("right", right, right_keys)):
        for key in keys:
            if key not in table.column_names:
                hint = did_you_mean(key, table.column_names)
                raise ValueError(f"{side} input has no join key column '{key}'" + (f" ({hint})" if hint else ""))
    types = _key_types(left.schema, right.schema, pairs)
    left_names, right_names = join_output_names(left.column_names, right.column_names, pairs, how, suffixes)
    stats = stats if stats is not None else JoinStats()
    stats.left_rows += left.num_rows
    stats.right_rows += right.num_rows

    right_index = _index_table(right, right_keys, types, "__r")
    used_right = np.zeros(right.num_rows, dtype=bool)
    key_names = [f"k{i}" for i in range(len(pairs))]
    pa_how = JOIN_TYPES[how]
    for start in range(0, max(left.num_rows, 1), chunk_rows):
        chunk = left.slice(start, chunk_rows)
        if chunk.num_rows == 0 and how not in ("right", "full"):
            break
        left_index = _index_table(chunk, left_keys, types, "__l")
        pairs_table = left_index.join(right_index, key_names, join_type=pa_how, use_threads=False)
        lrows = pairs_table.column("__l")
        if how in ("semi", "anti"):
            stats.left_used += pairs_table.num_rows
            piece = chunk.take(lrows)
            stats.out_rows += piece.num_rows
            if piece.num_rows:
                yield piece
            continue  # right rows never appear in a semi/anti output: all of them count as filtered
        rrows = pairs_table.column("__r")
        matched_r = pc.drop_null(rrows).to_numpy()
        used_right[matched_r] = True
        stats.left_used += chunk.num_rows if how in ("left", "full") else len(np.unique(pc.drop_null(lrows).to_numpy()))
        piece = _assemble(chunk, right, lrows, rrows, left_names, right_names, pairs, how)
        stats.out_rows += piece.num_rows
        if piece.num_rows:
            yield piece
    if right_matched is not None and how not in ("semi", "anti"):
        right_matched |= used_right
    if how in ("right", "full"):
        missing = np.flatnonzero(~used_right)
        stats.right_used += right.num_rows
        if len(missing):
            lrows = pa.nulls(len(missing), pa.int64())
            piece = _assemble(left.slice(0, 0), right, lrows, pa.array(missing), left_names, right_names, pairs, how)
            stats.out_rows += piece.num_rows
            yield piece
    elif how not in ("semi", "anti"):
        stats.right_used += int(used_right.sum())


def _assemble(
    left: pa.Table,
    right: pa.Table,
    lrows: pa.Array,
    rrows: pa.Array,
    left_names: Sequence[str],
    right_names: Sequence[str | None],
    pairs: Sequence[tuple[str, str]],
    how: str,
) -> pa.Table:
    """Gather output columns by row index (null index -> null values, as outer joins need)."""
    lrows, rrows = _as_array(lrows), _as_array(rrows)
    left_part = left.take(lrows) if left.num_rows else _null_rows(left.schema, len(lrows))
    right_part = right.take(rrows) if right.num_rows else _null_rows(right.schema, len(rrows))
    arrays, names = [], []
    merged = {lk for lk, rk in pairs if lk == rk}
    for name, out_name in zip(left.column_names, left_names):
        column = left_part.column(name)
        if name in merged and how in ("right", "full"):
            # USING semantics: the key is whichever side's value exists
            target = common_key_type(column.type, right_part.column(name).type) or column.type
            column = pc.coalesce(column.cast(target), right_part.column(name).cast(target))
        arrays.append(column)
        names.append(out_name)
    for name, out_name in zip(right.column_names, right_names):
        if out_name is not None:
            arrays.append(right_part.column(name))
            names.append(out_name)
    return pa.Table.from_arrays(arrays, names=names)


def _null_rows(schema: pa.Schema, rows: int) -> pa.Table:
    return pa.Table.from_arrays([pa.nulls(rows, field.type) for field in schema], schema=schema)


def join_tables(
    left: pa.Table | pa.RecordBatch,
    right: pa.Table | pa.RecordBatch,
    on: dict[str, str] | list[str] | str,
    how: str = "inner",
    suffixes: Sequence[str] = ("_left", "_right"),
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    stats: JoinStats | None = None,
) -> pa.Table:
    """:func:`hash_join` collected into one table (with the output schema even when empty).

    Example:
        >>> join_tables(pa.table({"k": [1, 2]}), pa.table({"k": [2]}), ["k"], "anti").to_pylist()
        [{'k': 1}]
    """
    left, right = _as_table(left), _as_table(right)
    pieces = list(hash_join(left, right, on, how, suffixes, chunk_rows=chunk_rows, stats=stats))
    if pieces:
        return pa.concat_tables(pieces, promote_options="permissive")
    if how in ("semi", "anti"):
        return left.slice(0, 0)
    pairs = _pairs(on)
    names = join_output_names(left.column_names, right.column_names, pairs, how, suffixes)
    no_rows = pa.array([], pa.int64())
    return _assemble(left.slice(0, 0), right.slice(0, 0), no_rows, no_rows, *names, pairs, how)


# --------------------------------------------------------------------------- spec


class JoinSpec(StepModel):
    """``{name, type: join, left, right, on, how, suffixes, strategy, shards}``."""

    reshapes: ClassVar[bool] = True

    type: Literal["join"]
    left: str
    right: str
    on: dict[str, str] | list[str] | str
    how: TJoinHow = "inner"
    suffixes: tuple[str, str] = ("_left", "_right")
    strategy: Literal["shuffle", "broadcast"] = "shuffle"
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, gt=0)

    @field_validator("on")
    @classmethod
    def _keys_given(cls, value):
        if not value:
            raise ValueError("on: name at least one key, e.g. on: {id: customer_id} or on: [id]")
        return value

    @model_validator(mode="after")
    def _shape(self) -> "JoinSpec":
        if self.input is not None:
            raise ValueError("a join reads 'left:' and 'right:', not 'input:'; remove input")
        if self.suffixes[0] == self.suffixes[1]:
            raise ValueError("suffixes must differ, e.g. [_left, _right]")
        if self.strategy == "broadcast" and self.how in ("right", "full"):
            raise ValueError(
                f"strategy: broadcast cannot do how: {self.how} (the unmatched right rows are known only "
                "after every left batch); use strategy: shuffle, or swap left and right and use how: left"
            )
        return self

    def inputs(self) -> list[str]:
        return [self.left, self.right]

    def input_fields(self) -> list[str]:
        return ["left", "right"]

    def pairs(self) -> list[tuple[str, str]]:
        return _pairs(self.on)

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        left, right = (list(schemas) + [None, None])[:2]
        issues: list[SpecIssue] = []
        on_path = f"{path}.on"
        for side, schema, index in (("left", left, 0), ("right", right, 1)):
            if schema is None:
                continue
            for pair in self.pairs():
                key = pair[index]
                if key not in schema.names:
                    hint = did_you_mean(key, schema.names) or f"{side} columns: {', '.join(schema.names)}"
                    issues.append(SpecIssue(on_path, f"unknown {side} join key '{key}'", hint))
        if issues or left is None or right is None:
            return issues
        for left_key, right_key in self.pairs():
            lt, rt = left.field(left_key).type, right.field(right_key).type
            if common_key_type(lt, rt) is None:
                issues.append(
                    SpecIssue(
                        on_path,
                        f"join keys '{left_key}' ({lt}) and '{right_key}' ({rt}) have incompatible types",
                        f"cast one of them first, e.g. a cast step with {{{right_key}: {lt}}}",
                    )
                )
        try:
            join_output_names(left.names, right.names, self.pairs(), self.how, self.suffixes)
        except ValueError as exc:
            issues.append(SpecIssue(f"{path}.suffixes", str(exc)))
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        left, right = (list(schemas) + [None, None])[:2]
        if left is None or right is None:
            return None
        empty = join_tables(left.empty_table(), right.empty_table(), self.on, self.how, self.suffixes)
        return empty.schema


# --------------------------------------------------------------------------- Beam plumbing


class _UnifySchemas(beam.CombineFn):
    """The union of every batch schema of one input (types promoted), or None for no batches."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, schema):
        return schema if accumulator is None else _unify(accumulator, schema)

    def merge_accumulators(self, accumulators):
        result = None
        for schema in accumulators:
            if schema is not None:
                result = schema if result is None else _unify(result, schema)
        return result

    def extract_output(self, accumulator):
        return accumulator


def _unify(a: pa.Schema, b: pa.Schema) -> pa.Schema:
    return pa.unify_schemas([a, b], promote_options="permissive")


def _table_of(batches: Iterable[pa.RecordBatch], schema: pa.Schema | None) -> pa.Table:
    batches = [b for b in batches if b.num_rows]
    if schema is None:
        schema = batches[0].schema if batches else pa.schema([])
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches([align_to_schema(concat_batches(batches), schema)])


def _to_batches(table: pa.Table, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in table.combine_chunks().to_batches():
        yield from split_batch(batch, batch_rows)


class _CountingFn(beam.DoFn):
    """A DoFn that keeps the step's counters and reports all of them from the start of a bundle.

    Prism dropped one split bundle's counters here (rows_in 16 of 32 while every output row
    was there); :meth:`StepCounters.announce` says why and what this does and does not fix.
    """

    def __init__(self, step: str):
        self._step = step

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()


class _ShardFn(beam.DoFn):
    def __init__(self, keys: Sequence[str], shards: int):
        self._keys = list(keys)
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        yield from shard_by_keys(batch, self._keys, self._shards)


class _JoinShardFn(_CountingFn):
    """Join the rows of one shard: CoGroupByKey result -> output batches (+ DLQ)."""

    def __init__(self, step: str, on, how: str, suffixes, batch_rows: int, chunk_rows: int):
        super().__init__(step)
        self._on = on
        self._how = how
        self._suffixes = tuple(suffixes)
        self._batch_rows = batch_rows
        self._chunk_rows = chunk_rows

    def process(self, element, left_schema=None, right_schema=None):
        _shard, grouped = element
        left_batches = list(grouped.get("left", ()))
        right_batches = list(grouped.get("right", ()))
        counters = self._counters
        stats = JoinStats()
        try:
            left = _table_of(left_batches, left_schema)
            right = _table_of(right_batches, right_schema)
            pieces = hash_join(left, right, self._on, self._how, self._suffixes, chunk_rows=self._chunk_rows, stats=stats)
            for piece in pieces:
                yield from _to_batches(piece, self._batch_rows)
        except Exception as exc:  # bad key types at run time, a name clash: the shard's rows go to the DLQ
            rows = sum(b.num_rows for b in left_batches + right_batches)
            counters.rows_in.inc(rows)
            counters.rows_dlq.inc(rows)
            # stats.out_rows may be > 0 when a late chunk failed; those rows were emitted already
            counters.rows_out.inc(stats.out_rows)
            message = f"{exc} [{traceback.format_exc(limit=1).splitlines()[-1]}]"
            for side, batches in (("left", left_batches), ("right", right_batches)):
                for batch in batches:
                    if batch.num_rows:
                        yield TaggedOutput("dlq", dlq_batch(batch, step=self._step, error_type=f"join.{side}.{type(exc).__name__}", error_message=message))
            return
        counters.rows_in.inc(stats.rows_in)
        counters.rows_merged.inc(stats.merged)
        counters.rows_filtered.inc(stats.filtered)
        counters.rows_out.inc(stats.out_rows)


class _TagBatch(_CountingFn):
    """Give each right batch an id (for counting its matched rows across left batches)."""

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows:
            self._counters.rows_in.inc(batch.num_rows)
            yield uuid.uuid4().hex, batch


class _BroadcastJoinFn(_CountingFn):
    """Join one left batch with the whole (small) right side from a side input."""

    def __init__(self, step: str, on, how: str, suffixes, batch_rows: int, chunk_rows: int):
        super().__init__(step)
        self._on = on
        self._how = how
        self._suffixes = tuple(suffixes)
        self._batch_rows = batch_rows
        self._chunk_rows = chunk_rows
        self._source = None
        self._right = None

    def _prepare(self, tagged: list, right_schema) -> tuple[pa.Table, list[tuple[str, int, int]]]:
        if self._source is not tagged:  # the side input is the same object within a bundle
            spans, offset = [], 0
            for tag, batch in tagged:
                spans.append((tag, offset, batch.num_rows))
                offset += batch.num_rows
            self._right = (_table_of([batch for _, batch in tagged], right_schema), spans)
            self._source = tagged
        return self._right

    def process(self, batch: pa.RecordBatch, tagged_right, right_schema=None):
        counters = self._counters
        if batch.num_rows == 0:
            return
        try:
            right, spans = self._prepare(tagged_right, right_schema)
            matched = np.zeros(right.num_rows, dtype=bool)
            stats = JoinStats()
            pieces = hash_join(batch, right, self._on, self._how, self._suffixes, chunk_rows=self._chunk_rows, stats=stats, right_matched=matched)
            outputs = [out for piece in pieces for out in _to_batches(piece, self._batch_rows)]
        except Exception as exc:
            counters.rows_in.inc(batch.num_rows)
            counters.rows_dlq.inc(batch.num_rows)
            message = f"{exc} [{traceback.format_exc(limit=1).splitlines()[-1]}]"
            yield TaggedOutput("dlq", dlq_batch(batch, step=self._step, error_type=f"join.left.{type(exc).__name__}", error_message=message))
            return
        # right rows are counted once, by _TagBatch and _CountRightRows; here only the left side
        counters.rows_in.inc(stats.left_rows)
        counters.rows_merged.inc(stats.left_used)
        counters.rows_filtered.inc(stats.left_rows - stats.left_used)
        counters.rows_out.inc(stats.out_rows)
        yield from outputs
        for tag, offset, rows in spans:
            part = matched[offset : offset + rows]
            if part.any():
                yield TaggedOutput("matched", (tag, part))


class _OrMasks(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, mask):
        return mask.copy() if accumulator is None else accumulator | mask

    def merge_accumulators(self, accumulators):
        result = None
        for mask in accumulators:
            if mask is not None:
                result = mask.copy() if result is None else result | mask
        return result

    def extract_output(self, accumulator):
        return accumulator


class _CountRightRows(_CountingFn):
    """Per right batch: rows matched by some left batch are merged, the rest filtered."""

    def process(self, element):
        _tag, grouped = element
        sizes = list(grouped["rows"])
        masks = list(grouped["matched"])
        if not sizes:
            return
        rows = sizes[0]
        matched = int(masks[0].sum()) if masks else 0
        self._counters.rows_merged.inc(matched)
        self._counters.rows_filtered.inc(rows - matched)


class Join(beam.PTransform):
    """Join two PCollections of batches with SQL semantics (see the module docstring).

    Apply it to ``(left, right)`` or ``{"left": left, "right": right}``.

    Args:
        step: the step name (counters and DLQ rows carry it).
        on: ``{left_key: right_key}``, a list of key names common to both sides, or one name.
        how: ``inner`` (default), ``left``, ``right``, ``full``, ``semi`` or ``anti``.
        suffixes: appended to non-key column names present on both sides.
        strategy: ``shuffle`` (hash shards + CoGroupByKey) or ``broadcast`` (the right side
            is sent whole to every worker; for a small right side; not for right/full joins).
        shards: hash shards of the shuffle strategy.
        batch_rows: maximum rows per output batch.
        chunk_rows: left rows joined at once inside a shard (memory bound for hot keys).
        left_schema, right_schema: the input schemas when known (else discovered at run time).

    Returns a :class:`StepOutputs` (``main``, ``dlq``).

    Example:
        >>> out = (orders, customers) | Join("joined", on={"customer_id": "id"}, how="left")  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        on: dict[str, str] | list[str] | str,
        how: str = "inner",
        suffixes: Sequence[str] = ("_left", "_right"),
        strategy: str = "shuffle",
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ):
        super().__init__()
        self._spec = JoinSpec.model_validate(
            {"name": step, "type": "join", "left": "left", "right": "right", "on": on, "how": how,
             "suffixes": list(suffixes), "strategy": strategy, "shards": shards, "chunk_rows": chunk_rows}
        )
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self._batch_rows = batch_rows

    def expand(self, inputs) -> StepOutputs:
        if isinstance(inputs, dict):
            left, right = inputs["left"], inputs["right"]
        else:
            left, right = inputs
        spec = self._spec
        pairs = spec.pairs()
        kv = typehints.KV[int, pa.RecordBatch]
        right_schema = AsSingleton(
            right
            | "right schema" >> beam.Map(lambda batch: batch.schema)
            | "unify right" >> beam.CombineGlobally(_UnifySchemas()).without_defaults(),
            default_value=None,
        )
        if spec.strategy == "broadcast":
            tagged = right | "tag right" >> beam.ParDo(_TagBatch(spec.name)).with_output_types(typehints.KV[str, pa.RecordBatch])
            results = left | "broadcast join" >> beam.ParDo(
                _BroadcastJoinFn(spec.name, spec.on, spec.how, spec.suffixes, self._batch_rows, spec.chunk_rows),
                AsList(tagged),
                right_schema=right_schema,
            ).with_outputs("dlq", "matched", main="main")
            sizes = tagged | "right sizes" >> beam.MapTuple(lambda tag, batch: (tag, batch.num_rows))
            masks = results.matched | "or matches" >> beam.CombinePerKey(_OrMasks())
            _ = (
                {"rows": sizes, "matched": masks}
                | "right rows" >> beam.CoGroupByKey()
                | "count right" >> beam.ParDo(_CountRightRows(spec.name))
            )
        else:
            left_schema = AsSingleton(
                left
                | "left schema" >> beam.Map(lambda batch: batch.schema)
                | "unify left" >> beam.CombineGlobally(_UnifySchemas()).without_defaults(),
                default_value=None,
            )
            left_parts = left | "shard left" >> beam.ParDo(_ShardFn([lk for lk, _ in pairs], spec.shards)).with_output_types(kv)
            right_parts = right | "shard right" >> beam.ParDo(_ShardFn([rk for _, rk in pairs], spec.shards)).with_output_types(kv)
            results = (
                {"left": left_parts, "right": right_parts}
                | "cogroup" >> beam.CoGroupByKey()
                | "join shards" >> beam.ParDo(
                    _JoinShardFn(spec.name, spec.on, spec.how, spec.suffixes, self._batch_rows, spec.chunk_rows),
                    left_schema=left_schema,
                    right_schema=right_schema,
                ).with_outputs("dlq", main="main")
            )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_step("join", JoinSpec)
def build_join(spec: JoinSpec, inputs: list, ctx: BuildContext) -> StepOutputs:
    return (inputs[0], inputs[1]) | ctx.label() >> Join(
        spec.name, spec.on, spec.how, spec.suffixes, spec.strategy, spec.shards, ctx.batch_rows, spec.chunk_rows
    )
