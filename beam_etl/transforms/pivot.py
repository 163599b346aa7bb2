"""``pivot`` (values of a column become columns, with aggregates) and ``unpivot`` (columns to rows).

Spec entries::

    - {name: wide, type: pivot, input: sales, group_by: [region], on: product,
       values: "sum(amount)", columns: [A, B, C]}           # listed output columns
    - {name: wide2, type: pivot, input: sales, group_by: [region], on: product,
       values: {total: "sum(amount)", n: "count(*)"}}       # discovered: A_total, A_n, B_total, ...
    - {name: long, type: unpivot, input: wide, columns: [q1, q2, q3, q4],
       name_column: quarter, value_column: revenue}

``pivot`` means what DuckDB's ``PIVOT t ON on [IN (columns)] USING values GROUP BY group_by``
means: one row per ``group_by`` key (every key of the input, even one whose ``on`` values are all
NULL or unlisted), and for each value ``v`` of ``on`` one column per aggregate computed over the
rows with ``on = v`` — so an empty cell is what the aggregate gives for no rows (``count`` 0,
``sum`` NULL, ``collect_list`` []). NULL ``on`` values make no column. Columns are named ``v``
(one aggregate given as a string) or ``v_name`` (a mapping); strings keep their text (the empty
string is named ``''``), numbers and dates their SQL text. Any aggregate of the ``aggregate``
step works (:mod:`beam_etl.transforms.aggregate_functions`).

How it runs: the rows are aggregated by ``group_by + [on]`` with the aggregate step's
partial tables, but sharded by ``group_by`` only, so every shard's merged table holds whole
output rows; the finish step spreads each shard's (key, value) rows into columns, vectorized.
Listed ``columns`` are known when the graph is built (rows with other values only make their
key's row exist). **Discovered columns need a pass over the data first**: the distinct ``on``
values of every shard's merged table are combined into a side input before any output row is
written, so the merged tables are materialised once more and the output schema is unknown at
spec-check time (later steps cannot be column-checked). List ``columns`` when you know them.
A pivot over no rows writes no rows (DuckDB writes one row when there is no ``group_by``).

``unpivot`` is vectorized per batch: each input row becomes one row per listed column (the
other columns repeated, then ``name_column`` and ``value_column``), in row-major order. Like
DuckDB's ``UNPIVOT`` it leaves out NULL values unless ``include_nulls: true``. The value
column takes the columns' common type (integers -> int64, mixed numbers -> float64); other
mixes must be cast first. Counters: ``rows_in`` = ``rows_merged`` (every input row is absorbed),
``rows_out`` = rows written (``rows_in * len(columns)`` with ``include_nulls``).

Example:
    >>> import pyarrow as pa
    >>> batch = pa.RecordBatch.from_pydict({"region": ["EU"], "q1": [1.5], "q2": [None]})
    >>> unpivot_batch(batch, ["q1", "q2"], include_nulls=True).to_pylist()
    [{'region': 'EU', 'name': 'q1', 'value': 1.5}, {'region': 'EU', 'name': 'q2', 'value': None}]
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, ClassVar, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.pvalue import AsSingleton, PCollection
from pydantic import Field, field_validator, model_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS
from beam_etl.errors import ExpressionError, SpecIssue, StepFailed
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepCounters, StepOutputs
from beam_etl.transforms.aggregate import aggregate_issues, combine_partials
from beam_etl.transforms.aggregate_functions import AggregateOverflow, AggregatePlan, group_ids, normalize_values
from beam_etl.transforms.shard import DEFAULT_SHARDS

__all__ = ["Pivot", "PivotSpec", "Unpivot", "UnpivotSpec", "pivot_column_name", "pivot_table", "unpivot_batch"]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- pivot: vectorized


def pivot_column_name(value: Any, aggregate: str | None = None) -> str:
    """The output column for pivot value ``value`` (and aggregate name when several)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else repr(value + 0.0)
    elif isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        text = value.isoformat()
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    if text == "":
        text = "''"
    return text if aggregate is None else f"{text}_{aggregate}"


class _PivotPlan:
    """The aggregation behind a pivot plus the long -> wide spreading (picklable)."""

    def __init__(
        self,
        group_by: Sequence[str],
        on: str,
        values: str | dict[str, str],
        *,
        order_by: Sequence[str] | None = None,
        approximate: bool = False,
        input_schema: pa.Schema | None = None,
    ):
        self.group_by = list(group_by)
        self.on = on
        self.single = isinstance(values, str)
        self.values = {"value": values} if isinstance(values, str) else dict(values)
        if on in self.group_by:
            raise ValueError(f"pivot column '{on}' is also a group_by column; remove it from group_by")
        self.plan = AggregatePlan(
            [*self.group_by, on], self.values, order_by=order_by, approximate=approximate, input_schema=input_schema
        )
        # What each aggregate gives for no rows: the value of an empty cell.
        empty_plan = AggregatePlan([], self.values, order_by=order_by, approximate=approximate, input_schema=input_schema)
        self.empty = empty_plan.finalize(None)

    def column_names(self, values: Sequence[Any]) -> list[str]:
        names = [
            pivot_column_name(value, None if self.single else name) for value in values for name in self.values
        ]
        taken = set(self.group_by)
        for name in names:
            if name in taken:
                raise ValueError(f"pivot output column '{name}' appears twice (a group_by column or a repeated value)")
            taken.add(name)
        return names

    def spread(self, merged: pa.Table, values: Sequence[Any]) -> pa.Table:
        """A merged partial table keyed by (group_by, on) -> one wide row per group_by key."""
        long = self.plan.finalize(merged)
        index = [long.column(name).combine_chunks() for name in self.group_by]
        if index:
            ids, groups, representative = group_ids([normalize_values(column) for column in index])
        else:
            ids = np.zeros(long.num_rows, dtype=np.int64)
            groups, representative = (1 if long.num_rows else 0), np.zeros(1 if long.num_rows else 0, dtype=np.int64)
        columns: dict[str, pa.Array] = {
            name: column.take(pa.array(representative)) for name, column in zip(self.group_by, index)
        }
        on_values = normalize_values(long.column(self.on))
        lookup = normalize_values(pa.array(list(values), type=on_values.type)) if len(values) else None
        position = (
            pc.index_in(on_values, value_set=lookup).to_numpy(zero_copy_only=False)
            if lookup is not None
            else np.full(long.num_rows, np.nan)
        )
        names = iter(self.column_names(values))
        for slot in range(len(values)):
            rows = np.flatnonzero(position == slot)
            take = np.full(groups, -1, dtype=np.int64)
            take[ids[rows]] = rows
            missing = take < 0
            indices = pa.array(take, mask=missing)
            for aggregate in self.values:
                cell = long.column(aggregate).combine_chunks().take(indices)
                empty = self.empty.column(aggregate)[0]
                if missing.any() and empty.is_valid:
                    cell = pc.if_else(pa.array(missing), pa.array([empty.as_py()] * groups, type=cell.type), cell)
                columns[next(names)] = cell
        return pa.table(columns)


def pivot_table(
    table: pa.Table | pa.RecordBatch,
    on: str,
    values: str | dict[str, str],
    group_by: Sequence[str] = (),
    columns: Sequence[Any] | None = None,
) -> pa.Table:
    """Pivot a whole table in memory (the vectorized core of :class:`Pivot`; handy in tests).

    Example:
        >>> t = pa.table({"region": ["EU", "EU", "US"], "product": ["A", "B", "A"], "amount": [1, 2, 3]})
        >>> pivot_table(t, "product", "sum(amount)", ["region"]).sort_by("region").to_pylist()
        [{'region': 'EU', 'A': 1, 'B': 2}, {'region': 'US', 'A': 3, 'B': None}]
    """
    if isinstance(table, pa.Table):
        table = table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
    plan = _PivotPlan(group_by, on, values, input_schema=table.schema)
    merged = plan.plan.partial(table)
    found = columns if columns is not None else _distinct_values(merged, on)
    return plan.spread(merged, found)


def _distinct_values(table: pa.Table | pa.RecordBatch, on: str) -> list:
    """Sorted distinct non-null values of column ``on`` (NaN last)."""
    column = normalize_values(table.column(on))
    unique = pc.unique(column.filter(pc.is_valid(column)))
    return pc.take(unique, pc.sort_indices(unique)).to_pylist()


# --------------------------------------------------------------------------- pivot: spec and Beam


class PivotSpec(StepModel):
    """``{name, type: pivot, input, on, values, group_by, columns, order_by, approximate, shards}``."""

    reshapes: ClassVar[bool] = True

    type: Literal["pivot"]
    on: str
    values: str | dict[str, str]
    group_by: list[str] = Field(default_factory=list)
    columns: list[Any] | None = None
    order_by: list[str] | None = None
    approximate: bool = False
    on_error: Literal["dlq", "drop", "fail"] = "dlq"
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)

    @field_validator("group_by", "order_by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)

    @model_validator(mode="after")
    def _shape(self) -> "PivotSpec":
        if self.on in self.group_by:
            raise ValueError(f"on: '{self.on}' is also in group_by; a column cannot be both")
        if isinstance(self.values, dict) and not self.values:
            raise ValueError("values: name at least one aggregate, e.g. {total: 'sum(amount)'}")
        if self.columns is not None and len(self.columns) == 0:
            raise ValueError("columns: list at least one value, or leave columns out to discover them")
        return self

    def _aggregates(self) -> dict[str, str]:
        return {"value": self.values} if isinstance(self.values, str) else dict(self.values)

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        schema = schemas[0] if schemas else None
        issues = []
        if schema is not None and self.on not in schema.names:
            issues.append(SpecIssue(f"{path}.on", f"unknown column '{self.on}'", did_you_mean(self.on, schema.names)))
        values_path = "values" if isinstance(self.values, dict) else None
        for issue in aggregate_issues(
            self.group_by, self._aggregates(), self.order_by, self.approximate, schema, path, aggregates_field="values"
        ):
            where = issue.path if values_path else issue.path.replace(".values.value", ".values")
            issues.append(SpecIssue(where, issue.message, issue.hint))
        if not issues and schema is not None and self.columns is not None:
            try:
                _typed_values(self.columns, schema.field(self.on).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                issues.append(SpecIssue(f"{path}.columns", f"values do not fit column '{self.on}' ({schema.field(self.on).type}): {exc}"))
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        schema = schemas[0] if schemas else None
        if schema is None or self.columns is None:
            return None  # discovered columns are known only after a pass over the data
        try:
            plan = _PivotPlan(self.group_by, self.on, self.values, order_by=self.order_by, approximate=self.approximate, input_schema=schema)
            long = plan.plan.output_schema(schema)
            if long is None:
                return None
            values = _typed_values(self.columns, schema.field(self.on).type).to_pylist()
            fields = [long.field(name) for name in self.group_by]
            aggregates = [aggregate for _ in values for aggregate in plan.values]
            for name, aggregate in zip(plan.column_names(values), aggregates):
                fields.append(pa.field(name, long.field(aggregate).type))
            return pa.schema(fields)
        except (ExpressionError, ValueError, KeyError, pa.ArrowInvalid):
            return None


def _typed_values(values: Sequence[Any], data_type: pa.DataType) -> pa.Array:
    array = pa.array(list(values))
    return array if array.type == data_type else array.cast(data_type)


class _DistinctValuesFn(beam.CombineFn):
    """The union of distinct pivot values (small: one per output column)."""

    def __init__(self, on: str):
        self._on = on

    def create_accumulator(self) -> list:
        return []

    def add_input(self, accumulator: list, merged: pa.RecordBatch) -> list:
        if merged.num_columns == 0 or merged.num_rows == 0:
            return accumulator
        return self._union([accumulator, _distinct_values(merged, self._on)])

    def merge_accumulators(self, accumulators) -> list:
        return self._union(list(accumulators))

    def extract_output(self, accumulator: list) -> list:
        return accumulator

    @staticmethod
    def _union(lists: list[list]) -> list:
        values = [value for values in lists for value in values]
        if not values:
            return []
        array = normalize_values(pa.array(values))
        unique = pc.unique(array)
        return pc.take(unique, pc.sort_indices(unique)).to_pylist()


class _MaskUnlisted(beam.DoFn):
    """Listed columns: other ``on`` values become NULL (their rows still make their key's row)."""

    def __init__(self, on: str, listed: list):
        self._on = on
        self._listed = listed

    def process(self, batch: pa.RecordBatch):
        index = batch.schema.get_field_index(self._on)
        if index < 0:
            yield batch
            return
        column = batch.column(index)
        lookup = normalize_values(_typed_values(self._listed, column.type))
        keep = pc.fill_null(pc.is_in(normalize_values(column), value_set=lookup), False)
        yield batch.set_column(index, batch.schema.field(index), pc.if_else(keep, column, pa.scalar(None, column.type)))


class _SpreadFn(beam.DoFn):
    def __init__(self, step: str, plan: _PivotPlan, batch_rows: int, listed: list | None):
        self._step = step
        self._plan = plan
        self._batch_rows = batch_rows
        self._listed = listed

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, merged: pa.RecordBatch, discovered=None):
        if merged.num_columns == 0 or merged.num_rows == 0:
            return
        values = self._listed if self._listed is not None else (discovered or [])
        if self._listed is not None:
            values = _typed_values(values, merged.schema.field(self._plan.on).type).to_pylist()
        try:
            wide = self._plan.spread(pa.Table.from_batches([merged]), values)
        except AggregateOverflow as exc:
            raise StepFailed(self._step, str(exc)) from exc
        except ValueError as exc:  # a column name clash found only now that the values are known
            raise StepFailed(self._step, str(exc)) from exc
        for batch in wide.to_batches(max_chunksize=self._batch_rows):
            self._counters.rows_out.inc(batch.num_rows)
            yield batch


class Pivot(beam.PTransform):
    """Values of column ``on`` become columns holding aggregates (see the module docstring).

    Args:
        step: the step name (counters and DLQ rows carry it).
        on: the column whose values become output columns.
        values: one aggregate (``"sum(amount)"``; columns named by value) or several
            (``{"total": "sum(amount)", "n": "count(*)"}``; columns named ``<value>_<name>``).
        group_by: the columns that identify an output row (none: one row).
        columns: the values to make columns for, in order; None discovers them (an extra pass).
        order_by, approximate, on_error, shards: as for :class:`~beam_etl.transforms.aggregate.Aggregate`.
        batch_rows: maximum rows per output batch.
        input_schema: the input schema when known.

    Returns a :class:`StepOutputs` (``main``, ``dlq``).

    Example:
        >>> out = sales | Pivot("wide", on="product", values="sum(amount)", group_by=["region"],
        ...                     columns=["A", "B"])  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        on: str,
        values: str | dict[str, str],
        group_by: Sequence[str] = (),
        columns: Sequence[Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        approximate: bool = False,
        on_error: str = "dlq",
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        input_schema: pa.Schema | None = None,
    ):
        super().__init__()
        if columns is not None and len(columns) == 0:
            raise ValueError("columns: list at least one value, or pass None to discover them")
        self._step = step
        self._plan = _PivotPlan(
            group_by, on, values, order_by=_as_list(order_by), approximate=approximate, input_schema=input_schema
        )
        self._columns = list(columns) if columns is not None else None
        if self._columns is not None:
            self._plan.column_names(self._columns)  # name clashes fail now
        self._on_error = on_error
        self._shards = shards
        self._batch_rows = batch_rows

    def expand(self, pcoll: PCollection) -> StepOutputs:
        plan = self._plan
        if self._columns is not None:
            pcoll = pcoll | "drop unlisted" >> beam.ParDo(_MaskUnlisted(plan.on, self._columns)).with_output_types(pa.RecordBatch)
        merged, dlq = combine_partials(
            pcoll, self._step, plan.plan, on_error=self._on_error, shards=self._shards, shard_keys=plan.group_by
        )
        spread = _SpreadFn(self._step, plan, self._batch_rows, self._columns)
        if self._columns is not None:
            out = merged | "spread" >> beam.ParDo(spread)
        else:
            discovered = merged | "discover columns" >> beam.CombineGlobally(_DistinctValuesFn(plan.on)).without_defaults()
            out = merged | "spread" >> beam.ParDo(spread, discovered=AsSingleton(discovered, default_value=[]))
        out.element_type = pa.RecordBatch
        return StepOutputs(main=out, dlq=dlq)


@register_step("pivot", PivotSpec)
def build_pivot(spec: PivotSpec, inputs: list[PCollection], ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Pivot(
        spec.name,
        spec.on,
        spec.values,
        spec.group_by,
        spec.columns,
        order_by=spec.order_by,
        approximate=spec.approximate,
        on_error=spec.on_error,
        shards=spec.shards,
        batch_rows=ctx.batch_rows,
        input_schema=ctx.input_schemas[0] if ctx.input_schemas else None,
    )


# --------------------------------------------------------------------------- unpivot


def _common_type(types: Sequence[pa.DataType], names: Sequence[str]) -> pa.DataType:
    """The value column's type: one shared type, int64 for integers, float64 for mixed numbers."""
    decoded = [t.value_type if pa.types.is_dictionary(t) else t for t in types]
    known = [t for t in decoded if not pa.types.is_null(t)]
    if not known:
        return pa.null()
    if all(t == known[0] for t in known):
        return known[0]
    if all(pa.types.is_integer(t) for t in known):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in known):
        return pa.float64()
    listing = ", ".join(f"{name} {t}" for name, t in zip(names, decoded))
    raise ValueError(f"unpivot columns must share a type, got {listing}; cast them to one type first")


def unpivot_batch(
    batch: pa.RecordBatch,
    columns: Sequence[str],
    name_column: str = "name",
    value_column: str = "value",
    include_nulls: bool = False,
) -> pa.RecordBatch:
    """Each row -> one row per column of ``columns`` (row-major), other columns repeated.

    A missing column counts as all NULL. Raises ValueError when the columns' types cannot share
    one value column.
    """
    keep = [name for name in batch.schema.names if name not in set(columns)]
    arrays = []
    for name in columns:
        index = batch.schema.get_field_index(name)
        column = batch.column(index) if index >= 0 else pa.nulls(batch.num_rows)
        arrays.append(column.dictionary_decode() if pa.types.is_dictionary(column.type) else column)
    value_type = _common_type([array.type for array in arrays], columns)
    rows, width = batch.num_rows, len(columns)
    # Row-major: output row r * width + c is input row r, column c.
    stacked = pa.concat_arrays([array.cast(value_type) for array in arrays]) if arrays else pa.nulls(0)
    order = (np.arange(width)[None, :] * rows + np.arange(rows)[:, None]).ravel()
    values = stacked.take(pa.array(order))
    source_rows = np.repeat(np.arange(rows), width)
    names = pa.array(np.tile(np.array(list(columns), dtype=object), rows), type=pa.string())
    if not include_nulls:
        valid = pc.is_valid(values)
        values, names = values.filter(valid), names.filter(valid)
        source_rows = source_rows[valid.to_numpy(zero_copy_only=False)]
    kept = batch.select(keep).take(pa.array(source_rows, type=pa.int64()))
    return kept.append_column(name_column, names).append_column(value_column, values)


class UnpivotSpec(StepModel):
    """``{name, type: unpivot, input, columns, name_column, value_column, include_nulls}``."""

    reshapes: ClassVar[bool] = True

    type: Literal["unpivot"]
    columns: list[str] = Field(min_length=1)
    name_column: str = "name"
    value_column: str = "value"
    include_nulls: bool = False

    @model_validator(mode="after")
    def _names(self) -> "UnpivotSpec":
        if self.name_column == self.value_column:
            raise ValueError("name_column and value_column must differ")
        return self

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        issues = [
            SpecIssue(f"{path}.columns", f"unknown column '{name}'", did_you_mean(name, schema.names))
            for name in self.columns
            if name not in schema.names
        ]
        if issues:
            return issues
        try:
            _common_type([schema.field(name).type for name in self.columns], self.columns)
        except ValueError as exc:
            issues.append(SpecIssue(f"{path}.columns", str(exc)))
        for field_name in ("name_column", "value_column"):
            name = getattr(self, field_name)
            if name in schema.names and name not in self.columns:
                issues.append(SpecIssue(f"{path}.{field_name}", f"'{name}' is already a column of the input", "choose another name"))
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        try:
            value_type = _common_type([schema.field(name).type for name in self.columns], self.columns)
        except (ValueError, KeyError):
            return None
        fields = [field for field in schema if field.name not in self.columns]
        return pa.schema(fields + [pa.field(self.name_column, pa.string()), pa.field(self.value_column, value_type)])


class _UnpivotFn:
    def __init__(self, columns: Sequence[str], name_column: str, value_column: str, include_nulls: bool):
        self.columns = list(columns)
        self.name_column = name_column
        self.value_column = value_column
        self.include_nulls = include_nulls

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        out = unpivot_batch(batch, self.columns, self.name_column, self.value_column, self.include_nulls)
        return BatchOutcome(out=out, merged=batch.num_rows)


class Unpivot(beam.PTransform):
    """Turn ``columns`` into rows of (``name_column``, ``value_column``) (see the module docstring).

    Args:
        step: the step name (counters and DLQ rows carry it).
        columns: the columns to turn into rows; every other column is repeated.
        name_column: the output column holding the source column's name.
        value_column: the output column holding its value.
        include_nulls: also write rows for NULL values (default: leave them out, like SQL).

    Returns a :class:`StepOutputs` (``main``, ``dlq``: batches whose columns cannot share a type).

    Example:
        >>> out = wide | Unpivot("long", ["q1", "q2"], name_column="quarter", value_column="revenue")  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        columns: Sequence[str],
        name_column: str = "name",
        value_column: str = "value",
        include_nulls: bool = False,
    ):
        super().__init__()
        if not columns:
            raise ValueError("unpivot needs at least one column")
        if name_column == value_column:
            raise ValueError("name_column and value_column must differ")
        self._step = step
        self._fn = _UnpivotFn(columns, name_column, value_column, include_nulls)

    def expand(self, pcoll: PCollection) -> StepOutputs:
        return pcoll | ApplyBatchFn(self._step, self._fn)


@register_step("unpivot", UnpivotSpec)
def build_unpivot(spec: UnpivotSpec, inputs: list[PCollection], ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Unpivot(
        spec.name, spec.columns, spec.name_column, spec.value_column, spec.include_nulls
    )
