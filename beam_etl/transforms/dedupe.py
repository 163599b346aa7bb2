"""``dedupe``: drop exact duplicate rows, or keep one row per key (first/last by an order).

Spec entries::

    - {name: distinct_rows, type: dedupe, input: raw}                    # exact duplicates
    - {name: latest, type: dedupe, input: customers, key: [id],
       order_by: ["updated_at DESC"], keep: first}                         # newest row per id

Semantics (checked against DuckDB's ``DISTINCT`` and ``row_number() OVER (PARTITION BY ...)``):

- Keys compare as in SQL ``GROUP BY``/``DISTINCT``: NULL keys are one key, NaN is one key,
  ``-0.0`` equals ``0.0``.
- ``keep: first`` keeps the first row of each key when the key's rows are sorted by
  ``order_by`` (``col [ASC|DESC] [NULLS FIRST|LAST]``, default ASC NULLS LAST) and then by every
  other column in schema order (ASC NULLS LAST) as a tiebreak; ``keep: last`` keeps the last row
  of that same order. So the kept row never depends on arrival order, even without
  ``order_by`` (then the tiebreak alone decides). Nested columns (lists, structs) cannot be
  sorted and are left out of the tiebreak; rows that differ only there are ties.
- Without ``key`` every column is the key: exact duplicates go, one copy stays.
- Removed rows are counted as ``rows_filtered`` (and written to the ``<step>.duplicates``
  side output with ``keep_duplicates: true``); kept rows are ``rows_merged`` and
  ``rows_out`` (``rows_in = rows_merged + rows_filtered``).

How it runs: each batch is deduplicated on its own first (vectorized: dense key numbers, one
sort, first row per key) — the winner of a key is the winner of every subset holding it, so
this only removes losers — then hash-sharded by key (:mod:`beam_etl.transforms.shard`),
grouped by shard, and deduplicated again inside the shard, folding batches into the running
result. Memory: one shard's distinct keys (one row each) plus one batch.

Example:
    >>> out = batches | Dedupe("latest", key=["id"], order_by=["updated_at DESC"])  # doctest: +SKIP
    >>> out.main, out.side["duplicates"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import typehints
from apache_beam.pvalue import PCollection, TaggedOutput
from pydantic import Field, field_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS, concat_batches
from beam_etl.errors import ExpressionError, SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import BuildContext, StepCounters, StepOutputs
from beam_etl.transforms.aggregate_functions import (
    OrderKey,
    group_ids,
    normalize_values,
    parse_order_by,
    sort_indices,
)
from beam_etl.transforms.shard import DEFAULT_SHARDS

__all__ = ["Dedupe", "DedupeSpec", "dedupe_mask"]

Keep = Literal["first", "last"]


def _columns_of(order: Sequence[OrderKey]) -> list[str]:
    """Order keys must be plain column names here (no expressions)."""
    import sqlglot
    from sqlglot import exp

    names = []
    for key in order:
        tree = sqlglot.parse_one(key.sql, read="duckdb")
        if not isinstance(tree, exp.Column) or tree.table:
            raise ExpressionError(f"order_by '{key.sql}' must be a column name", "derive the value in an earlier step")
        names.append(tree.name)
    return names


def dedupe_mask(
    batch: pa.RecordBatch | pa.Table,
    key: Sequence[str] | None = None,
    order_by: Sequence[OrderKey] = (),
    keep: Keep = "first",
) -> pa.Array:
    """A boolean mask of the rows to keep: one per distinct key (see the module docstring).

    Args:
        batch: the rows.
        key: key columns; None or empty for exact duplicates (every column).
        order_by: parsed order keys over column names (:func:`parse_order_by`).
        keep: ``first`` or ``last`` row of each key in that order.

    Example:
        >>> batch = pa.RecordBatch.from_pydict({"id": [1, 1, 2], "v": [5, 9, 7]})
        >>> dedupe_mask(batch, ["id"], parse_order_by("v DESC")).to_pylist()
        [False, True, True]
    """
    names = list(batch.schema.names)
    key_names = list(key) if key else names
    for name in key_names:
        column_type = batch.schema.field(name).type
        if pa.types.is_nested(column_type):
            what = f"key column '{name}'" if key else f"column '{name}'"
            raise ValueError(
                f"dedupe cannot compare {what} of type {column_type}; "
                + ("choose scalar key columns" if key else "name scalar key columns with key:")
            )
    if batch.num_rows == 0:
        return pa.array([], type=pa.bool_())
    keys = [normalize_values(batch.column(name)) for name in key_names]
    ids, _, _ = group_ids(keys)
    order_names = _columns_of(order_by)
    tiebreak = [name for name in names if name not in key_names and name not in order_names]
    sort_keys = [*order_by, *(OrderKey(name) for name in tiebreak)]
    if keep == "last":
        sort_keys = [k.reversed() for k in sort_keys]
    columns = [*order_names, *tiebreak]
    order = sort_indices([(batch.column(name), k.descending, k.nulls_first) for name, k in zip(columns, sort_keys)], ids)
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))
    mask = np.zeros(batch.num_rows, dtype=bool)
    mask[order[starts]] = True
    return pa.array(mask)


# --------------------------------------------------------------------------- spec


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class DedupeSpec(StepModel):
    """``{name, type: dedupe, input, key, order_by, keep, keep_duplicates, shards}``."""

    reshapes: ClassVar[bool] = True

    type: Literal["dedupe"]
    key: list[str] | None = None
    order_by: list[str] | None = None
    keep: Keep = "first"
    keep_duplicates: bool = False
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)

    @field_validator("key", "order_by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)

    def side_outputs(self) -> list[str]:
        return ["duplicates"] if self.keep_duplicates else []

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        issues: list[SpecIssue] = []
        try:
            order_names = _columns_of(parse_order_by(self.order_by))
        except ExpressionError as exc:
            return [SpecIssue(f"{path}.order_by", exc.message, exc.hint)]
        schema = schemas[0] if schemas else None
        if schema is None:
            return issues
        for field_name, names in (("key", self.key or []), ("order_by", order_names)):
            for name in names:
                if name not in schema.names:
                    issues.append(SpecIssue(f"{path}.{field_name}", f"unknown column '{name}'", did_you_mean(name, schema.names)))
                elif pa.types.is_nested(schema.field(name).type):
                    issues.append(SpecIssue(f"{path}.{field_name}", f"column '{name}' of type {schema.field(name).type} cannot be compared", "use scalar columns"))
        if not self.key:
            nested = [f.name for f in schema if pa.types.is_nested(f.type)]
            if nested:
                issues.append(
                    SpecIssue(f"{path}.key", f"exact-duplicate dedupe cannot compare column '{nested[0]}' ({schema.field(nested[0]).type})", "name scalar key columns with key:")
                )
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        return schemas[0] if schemas else None


# --------------------------------------------------------------------------- Beam plumbing


class _Deduper:
    """Picklable settings + the vectorized split of a batch into kept and removed rows."""

    def __init__(self, key: Sequence[str] | None, order_by: Sequence[str] | None, keep: Keep):
        self.key = list(key) if key else None
        self.order_by = list(order_by) if order_by else None
        self.keep = keep
        self.order = parse_order_by(self.order_by)
        _columns_of(self.order)  # fail now on expressions

    def split(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        mask = dedupe_mask(batch, self.key, self.order, self.keep)
        return batch.filter(mask), batch.filter(pc.invert(mask))


class _LocalDedupeFn(beam.DoFn):
    """Dedupe within the batch, then shard the survivors by key."""

    def __init__(self, step: str, deduper: _Deduper, shards: int, keep_duplicates: bool):
        self._step = step
        self._deduper = deduper
        self._shards = shards
        self._keep_duplicates = keep_duplicates

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch):
        from beam_etl.transforms.join import shard_by_keys

        self._counters.rows_in.inc(batch.num_rows)
        kept, removed = self._deduper.split(batch)
        if removed.num_rows:
            self._counters.rows_filtered.inc(removed.num_rows)
            if self._keep_duplicates:
                yield TaggedOutput("duplicates", removed)
        yield from shard_by_keys(kept, self._deduper.key or list(kept.schema.names), self._shards)


class _ShardDedupeFn(beam.DoFn):
    """Fold a shard's batches into its distinct rows; emit them in ``batch_rows`` chunks."""

    def __init__(self, step: str, deduper: _Deduper, batch_rows: int, keep_duplicates: bool):
        self._step = step
        self._deduper = deduper
        self._batch_rows = batch_rows
        self._keep_duplicates = keep_duplicates

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def _removed(self, removed: pa.RecordBatch) -> Iterable[TaggedOutput]:
        if removed.num_rows:
            self._counters.rows_filtered.inc(removed.num_rows)
            if self._keep_duplicates:
                yield TaggedOutput("duplicates", removed)

    def process(self, element: tuple[int, Iterable[pa.RecordBatch]]):
        _, batches = element
        running: pa.RecordBatch | None = None
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            # Fold when the new rows outnumber the running result: amortized linear work,
            # memory bounded by the shard's distinct rows plus about as many pending ones.
            if pending_rows >= max(running.num_rows if running is not None else 0, self._batch_rows):
                running, removed = self._deduper.split(concat_batches(([running] if running is not None else []) + pending))
                yield from self._removed(removed)
                pending, pending_rows = [], 0
        if pending:
            running, removed = self._deduper.split(concat_batches(([running] if running is not None else []) + pending))
            yield from self._removed(removed)
        if running is None:
            return
        self._counters.rows_merged.inc(running.num_rows)
        self._counters.rows_out.inc(running.num_rows)
        for start in range(0, running.num_rows, self._batch_rows):
            yield running.slice(start, self._batch_rows)


class Dedupe(beam.PTransform):
    """Remove duplicate rows, or keep one row per key (see the module docstring).

    Args:
        step: the step name (counters carry it).
        key: key columns; None for exact duplicate rows.
        order_by: ``["updated_at DESC", "id"]`` — which row of a key is first.
        keep: ``first`` (default) or ``last`` row of each key in that order.
        keep_duplicates: also emit removed rows on ``side['duplicates']``.
        shards: hash shards of the key.
        batch_rows: maximum rows per output batch.

    Returns a :class:`StepOutputs` (``main``, and ``side['duplicates']`` when asked).

    Example:
        >>> out = batches | Dedupe("latest", key=["id"], order_by=["updated_at DESC"])  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        key: Sequence[str] | str | None = None,
        order_by: Sequence[str] | str | None = None,
        keep: Keep = "first",
        keep_duplicates: bool = False,
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ):
        super().__init__()
        if keep not in ("first", "last"):
            raise ValueError(f"keep must be 'first' or 'last', got '{keep}'")
        if shards <= 0 or batch_rows <= 0:
            raise ValueError(f"shards and batch_rows must be positive, got {shards} and {batch_rows}")
        self._step = step
        self._deduper = _Deduper(_as_list(key), _as_list(order_by), keep)
        self._keep_duplicates = keep_duplicates
        self._shards = shards
        self._batch_rows = batch_rows

    def expand(self, pcoll: PCollection) -> StepOutputs:
        local = pcoll | "dedupe batches" >> beam.ParDo(
            _LocalDedupeFn(self._step, self._deduper, self._shards, self._keep_duplicates)
        ).with_outputs("duplicates", main="main")
        local.main.element_type = typehints.KV[int, pa.RecordBatch]
        local.duplicates.element_type = pa.RecordBatch
        results = (
            local.main
            | "group shards" >> beam.GroupByKey()
            | "dedupe shards" >> beam.ParDo(
                _ShardDedupeFn(self._step, self._deduper, self._batch_rows, self._keep_duplicates)
            ).with_outputs("duplicates", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.duplicates.element_type = pa.RecordBatch
        side = {}
        if self._keep_duplicates:
            side["duplicates"] = (local.duplicates, results.duplicates) | "duplicates" >> beam.Flatten().with_output_types(
                pa.RecordBatch
            )
        return StepOutputs(main=results.main, side=side)


@register_step("dedupe", DedupeSpec)
def build_dedupe(spec: DedupeSpec, inputs: list[PCollection], ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Dedupe(
        spec.name, spec.key, spec.order_by, spec.keep, spec.keep_duplicates, spec.shards, ctx.batch_rows
    )
