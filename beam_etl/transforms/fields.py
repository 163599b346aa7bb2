"""Field operations: ``select``, ``rename``, ``drop``, ``cast``, ``derive`` — vectorized per batch.

Each is a spec step type and a public PTransform over ``PCollection[pa.RecordBatch]``.

Example:
    >>> import apache_beam as beam
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     out = (batches | Derive("enrich", {"total": "amount * (1 + tax_rate)"})).main
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa

import pyarrow.compute as pc

from beam_etl.batch import row_mask
from beam_etl.dlq import dlq_batch
from beam_etl.errors import ExpressionError, SpecIssue, StepFailed
from beam_etl.models import StepModel, parse_type
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.casting import cast_isolating_errors
from beam_etl.steps import BatchStep, BatchOutcome, BuildContext, StepOutputs

__all__ = [
    "Select",
    "Rename",
    "Drop",
    "Cast",
    "Derive",
    "select_columns",
    "rename_columns",
    "drop_columns",
    "Flatten",
    "Unflatten",
    "flatten_batch",
    "unflatten_batch",
]

CastOnError = Literal["dlq", "null", "fail"]


# --------------------------------------------------------------------------- shared helpers


def _missing_columns(names, schema: pa.Schema | None, path: str, field: str) -> list[SpecIssue]:
    if schema is None:
        return []
    issues = []
    for name in names:
        if name not in schema.names:
            issues.append(
                SpecIssue(f"{path}.{field}", f"unknown column '{name}'", did_you_mean(name, schema.names))
            )
    return issues


def _expression_issues(sql_by_name: dict[str, str], schema: pa.Schema | None, path: str, field: str) -> list[SpecIssue]:
    from beam_etl.expressions import compile_expression

    issues = []
    for name, sql in sql_by_name.items():
        try:
            expression = compile_expression(sql)
            if schema is not None:
                expression.check(schema)
        except ExpressionError as exc:
            issues.append(SpecIssue(f"{path}.{field}.{name}", exc.message, exc.hint))
    return issues


class _ExpressionColumns:
    """Evaluate ``{name: sql}`` on a batch; rows whose evaluation fails are reported.

    Compiles lazily so the object pickles as plain strings to remote workers.
    """

    def __init__(self, step: str, columns: dict[str, str], on_error: str):
        self.step = step
        self.columns = dict(columns)
        self.on_error = on_error
        self._compiled = None

    def compiled(self):
        if self._compiled is None:
            from beam_etl.expressions import compile_expression

            self._compiled = {name: compile_expression(sql) for name, sql in self.columns.items()}
        return self._compiled

    def __getstate__(self):
        return {"step": self.step, "columns": self.columns, "on_error": self.on_error, "_compiled": None}

    def evaluate(self, batch: pa.RecordBatch) -> tuple[dict[str, pa.Array], dict[int, str]]:
        values: dict[str, pa.Array] = {}
        errors: dict[int, str] = {}
        for name, expression in self.compiled().items():
            array, failed = expression.evaluate_with_errors(batch)
            values[name] = array
            for row, message in failed.items():
                errors.setdefault(row, f"{name}: {message}")
        return values, errors

    def split_errors(self, batch: pa.RecordBatch, result: pa.RecordBatch, errors: dict[int, str], error_type: str) -> BatchOutcome:
        """Apply ``on_error`` to the failed rows of ``result`` (built from ``batch``)."""
        if not errors or self.on_error == "null":
            return BatchOutcome(out=result)
        rows = sorted(errors)
        if self.on_error == "fail":
            raise StepFailed(self.step, f"row {rows[0]}: {errors[rows[0]]}")
        failed = row_mask(batch.num_rows, rows)
        dlq = dlq_batch(
            batch.filter(failed), step=self.step, error_type=error_type, error_message=[errors[i] for i in rows]
        )
        return BatchOutcome(out=result.filter(pc.invert(failed)), dlq=dlq)


def select_columns(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """Keep ``names`` in that order; a missing column is null (DESIGN §3)."""
    arrays, fields = [], []
    for name in names:
        index = batch.schema.get_field_index(name)
        if index >= 0:
            arrays.append(batch.column(index))
            fields.append(batch.schema.field(index))
        else:
            arrays.append(pa.nulls(batch.num_rows))
            fields.append(pa.field(name, pa.null()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def rename_columns(batch: pa.RecordBatch, mapping: dict[str, str]) -> pa.RecordBatch:
    return batch.rename_columns([mapping.get(name, name) for name in batch.schema.names])


def drop_columns(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    keep = [name for name in batch.schema.names if name not in set(names)]
    return batch.select(keep)


def _with_columns(batch: pa.RecordBatch, values: dict[str, pa.Array]) -> pa.RecordBatch:
    """``batch`` with ``values`` replacing same-named columns or appended at the end."""
    for name, array in values.items():
        if isinstance(array, pa.Scalar):
            array = pa.array([array.as_py()] * batch.num_rows, type=array.type)
        index = batch.schema.get_field_index(name)
        field = pa.field(name, array.type)
        batch = batch.set_column(index, field, array) if index >= 0 else batch.append_column(field, array)
    return batch


# --------------------------------------------------------------------------- select


class SelectSpec(StepModel):
    """``columns``: a list of names, or ``{output_name: sql_expression}``."""

    type: Literal["select"]
    columns: list[str] | dict[str, str]
    on_error: CastOnError = "dlq"

    def _as_expressions(self) -> dict[str, str] | None:
        return self.columns if isinstance(self.columns, dict) else None

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if isinstance(self.columns, list):
            return _missing_columns(self.columns, schema, path, "columns")
        return _expression_issues(self.columns, schema, path, "columns")

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        if isinstance(self.columns, list):
            return pa.schema([schema.field(name) for name in self.columns])
        from beam_etl.expressions import compile_expression

        fields = []
        for name, sql in self.columns.items():
            data_type = compile_expression(sql).output_type(schema)
            if data_type is None:
                return None
            fields.append(pa.field(name, data_type))
        return pa.schema(fields)


class _SelectFn:
    def __init__(self, step: str, columns: list[str] | dict[str, str], on_error: str):
        self.names = columns if isinstance(columns, list) else None
        self.expressions = _ExpressionColumns(step, columns, on_error) if isinstance(columns, dict) else None

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        if self.names is not None:
            return BatchOutcome(out=select_columns(batch, self.names))
        values, errors = self.expressions.evaluate(batch)
        result = pa.RecordBatch.from_pydict(values) if values else batch.select([])
        return self.expressions.split_errors(batch, result, errors, "select.expression")


class Select(BatchStep):
    """Keep or compute columns.

    Args:
        step: the step name (counters and DLQ rows carry it).
        columns: names to keep, or ``{name: sql_expression}``.
        on_error: for expressions that fail on a row: ``dlq`` (default), ``null`` or ``fail``.

    Example:
        >>> batches | Select("slim", ["id", "email"])  # doctest: +SKIP
    """

    def __init__(self, step: str, columns: list[str] | dict[str, str], on_error: CastOnError = "dlq"):
        super().__init__()
        if not columns:
            raise ValueError(f"select step '{step}' needs at least one column")
        self._fn = _SelectFn(step, columns, on_error)
        self._step = step



@register_step("select", SelectSpec)
def build_select(spec: SelectSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Select(spec.name, spec.columns, spec.on_error)


# --------------------------------------------------------------------------- rename / drop


class RenameSpec(StepModel):
    """``columns``: ``{old_name: new_name}``."""

    type: Literal["rename"]
    columns: dict[str, str]

    def check(self, schemas, path):
        return _missing_columns(self.columns, schemas[0] if schemas else None, path, "columns")

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        return pa.schema([field.with_name(self.columns.get(field.name, field.name)) for field in schema])


class _RenameFn:
    def __init__(self, mapping: dict[str, str]):
        self.mapping = dict(mapping)

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        return BatchOutcome(out=rename_columns(batch, self.mapping))


class Rename(BatchStep):
    """Rename columns: ``batches | Rename("r", {"fname": "first_name"})``."""

    def __init__(self, step: str, mapping: dict[str, str]):
        super().__init__()
        if len(set(mapping.values())) != len(mapping):
            raise ValueError(f"rename step '{step}' maps two columns to the same name")
        self._step, self._fn = step, _RenameFn(mapping)



@register_step("rename", RenameSpec)
def build_rename(spec: RenameSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Rename(spec.name, spec.columns)


class DropSpec(StepModel):
    type: Literal["drop"]
    columns: list[str]

    def check(self, schemas, path):
        return _missing_columns(self.columns, schemas[0] if schemas else None, path, "columns")

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        return pa.schema([field for field in schema if field.name not in self.columns])


class _DropFn:
    def __init__(self, names: list[str]):
        self.names = list(names)

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        return BatchOutcome(out=drop_columns(batch, self.names))


class Drop(BatchStep):
    """Drop columns: ``batches | Drop("d", ["internal_id"])``."""

    def __init__(self, step: str, columns: list[str]):
        super().__init__()
        self._step, self._fn = step, _DropFn(columns)



@register_step("drop", DropSpec)
def build_drop(spec: DropSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Drop(spec.name, spec.columns)


# --------------------------------------------------------------------------- cast


class CastSpec(StepModel):
    """``columns``: ``{column: arrow_type}``; ``on_error``: dlq (default), null or fail."""

    type: Literal["cast"]
    columns: dict[str, str]
    on_error: CastOnError = "dlq"

    def check(self, schemas, path):
        issues = _missing_columns(self.columns, schemas[0] if schemas else None, path, "columns")
        for name, type_name in self.columns.items():
            try:
                parse_type(type_name)
            except ValueError as exc:
                issues.append(SpecIssue(f"{path}.columns.{name}", str(exc)))
        return issues

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        return pa.schema(
            [pa.field(f.name, parse_type(self.columns[f.name])) if f.name in self.columns else f for f in schema]
        )


def _cast_string(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast, trimming whitespace around numbers/bools/dates in strings first ("  42 " -> 42)."""
    import pyarrow.compute as pc

    if pa.types.is_string(array.type) and not pa.types.is_string(target):
        array = pc.utf8_trim_whitespace(array)
        array = pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    return pc.cast(array, target, safe=True)


class _CastFn:
    def __init__(self, step: str, columns: dict[str, str], on_error: str):
        self.step = step
        self.columns = dict(columns)
        self.on_error = on_error

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        values: dict[str, pa.Array] = {}
        errors: dict[int, str] = {}
        for name, type_name in self.columns.items():
            target = parse_type(type_name)
            column = batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows)
            array, failed = cast_isolating_errors(column, target, lambda a: _cast_string(a, target), strip=True)
            values[name] = array
            for row in failed:
                errors.setdefault(row, f"cannot cast {column[row].as_py()!r} in column '{name}' to {type_name}")
        result = _with_columns(batch, values)
        return _ExpressionColumns(self.step, {}, self.on_error).split_errors(batch, result, errors, "cast")


class Cast(BatchStep):
    """Cast columns to Arrow types; values that do not fit follow ``on_error``.

    Example:
        >>> batches | Cast("types", {"age": "int64", "signup_date": "date32"})  # doctest: +SKIP
    """

    def __init__(self, step: str, columns: dict[str, str], on_error: CastOnError = "dlq"):
        super().__init__()
        for name, type_name in columns.items():
            parse_type(type_name)  # fail early with the accepted type names
        self._step, self._fn = step, _CastFn(step, columns, on_error)



@register_step("cast", CastSpec)
def build_cast(spec: CastSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Cast(spec.name, spec.columns, spec.on_error)


# --------------------------------------------------------------------------- derive


class DeriveSpec(StepModel):
    """``columns``: ``{name: sql_expression}``, evaluated in order; a later one may use an earlier one."""

    type: Literal["derive"]
    columns: dict[str, str]
    on_error: CastOnError = "dlq"

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        issues = []
        for name, sql in self.columns.items():
            issues += _expression_issues({name: sql}, schema, path, "columns")
            schema = self._extend(schema, name, sql)
        return issues

    @staticmethod
    def _extend(schema: pa.Schema | None, name: str, sql: str) -> pa.Schema | None:
        if schema is None:
            return None
        from beam_etl.expressions import compile_expression

        try:
            data_type = compile_expression(sql).output_type(schema)
        except ExpressionError:
            return None
        data_type = data_type or pa.null()
        index = schema.get_field_index(name)
        field = pa.field(name, data_type)
        return schema.set(index, field) if index >= 0 else schema.append(field)

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        for name, sql in self.columns.items():
            schema = self._extend(schema, name, sql)
        return schema


class _DeriveFn:
    def __init__(self, step: str, columns: dict[str, str], on_error: str):
        self.expressions = _ExpressionColumns(step, columns, on_error)

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        errors: dict[int, str] = {}
        result = batch
        # Column by column so a later expression can use an earlier derived column.
        for name, expression in self.expressions.compiled().items():
            array, failed = expression.evaluate_with_errors(result)
            result = _with_columns(result, {name: array})
            for row, message in failed.items():
                errors.setdefault(row, f"{name}: {message}")
        return self.expressions.split_errors(batch, result, errors, "derive.expression")


class Derive(BatchStep):
    """Add or replace columns computed by SQL expressions (sqlglot -> pyarrow.compute).

    Args:
        step: the step name.
        columns: ``{name: sql_expression}``, evaluated in order.
        on_error: rows whose expression fails (division by zero, bad cast): ``dlq``
            (default), ``null`` (keep the row, value null) or ``fail``.

    Example:
        >>> batches | Derive("enrich", {"total": "amount * (1 + tax_rate)"})  # doctest: +SKIP
    """

    def __init__(self, step: str, columns: dict[str, str], on_error: CastOnError = "dlq"):
        super().__init__()
        if not columns:
            raise ValueError(f"derive step '{step}' needs at least one column")
        self._step, self._fn = step, _DeriveFn(step, columns, on_error)



@register_step("derive", DeriveSpec)
def build_derive(spec: DeriveSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Derive(spec.name, spec.columns, spec.on_error)


# --------------------------------------------------------------------------- flatten / unflatten


def flatten_batch(batch: pa.RecordBatch, separator: str = ".", explode: list[str] | None = None) -> pa.RecordBatch:
    """Nested structs to ``parent<sep>child`` columns; list columns in ``explode`` to one row per item.

    Exploding repeats the other columns for each item (an empty or null list gives one row
    with a null item, like a LEFT JOIN UNNEST, so no row disappears).
    """
    table = pa.Table.from_batches([batch])
    for name in explode or []:
        table = _explode(table, name)
    while any(pa.types.is_struct(field.type) for field in table.schema):
        arrays, names = [], []
        for field, column in zip(table.schema, table.columns):
            if pa.types.is_struct(field.type):
                column = column.combine_chunks()
                for index, child in enumerate(field.type):
                    # StructArray.field ignores the parent's validity: a null struct must
                    # give null children, which flatten() honours.
                    arrays.append(column.flatten()[index])
                    names.append(f"{field.name}{separator}{child.name}")
            else:
                arrays.append(column)
                names.append(field.name)
        table = pa.Table.from_arrays(arrays, names=names)
    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _explode(table: pa.Table, name: str) -> pa.Table:
    column = table.column(name).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"cannot explode column '{name}' of type {column.type}: it is not a list")
    # Empty and null lists become [null] so their row survives.
    lengths = pc.fill_null(pc.list_value_length(column), 0)
    padded = pc.if_else(pc.equal(lengths, 0), pa.scalar([None], type=column.type), column)
    parents = pc.list_parent_indices(padded)
    items = pc.list_flatten(padded)
    exploded = table.take(parents)
    index = exploded.schema.get_field_index(name)
    return exploded.set_column(index, pa.field(name, items.type), items)


def unflatten_batch(batch: pa.RecordBatch, separator: str = ".") -> pa.RecordBatch:
    """``parent<sep>child`` columns back into struct columns (any depth)."""

    def build(names: list[tuple[list[str], pa.Array]]) -> tuple[list[str], list[pa.Array]]:
        order: list[str] = []
        groups: dict[str, list[tuple[list[str], pa.Array]]] = {}
        leaves: dict[str, pa.Array] = {}
        for parts, array in names:
            head = parts[0]
            if head not in order:
                order.append(head)
            if len(parts) == 1:
                leaves[head] = array
            else:
                groups.setdefault(head, []).append((parts[1:], array))
        out_names, out_arrays = [], []
        for head in order:
            if head in groups and head not in leaves:
                child_names, child_arrays = build(groups[head])
                out_arrays.append(pa.StructArray.from_arrays(child_arrays, names=child_names))
            else:
                out_arrays.append(leaves[head])
            out_names.append(head)
        return out_names, out_arrays

    names, arrays = build([(name.split(separator), batch.column(i)) for i, name in enumerate(batch.schema.names)])
    return pa.RecordBatch.from_arrays(arrays, names=names)


class FlattenSpec(StepModel):
    """Flatten nested structs (``separator``: ``.`` or ``_``); ``explode``: list columns to rows."""

    reshapes: ClassVar[bool] = True  # exploding lists changes the row count
    type: Literal["flatten"]
    separator: str = "."
    explode: list[str] = []

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        issues = _missing_columns(self.explode, schema, path, "explode")
        if schema is not None:
            for name in self.explode:
                if name in schema.names and not pa.types.is_list(schema.field(name).type):
                    issues.append(SpecIssue(f"{path}.explode", f"column '{name}' is {schema.field(name).type}, not a list", "explode only list columns"))
        return issues


class UnflattenSpec(StepModel):
    type: Literal["unflatten"]
    separator: str = "."


class _FlattenFn:
    def __init__(self, separator: str, explode: list[str]):
        self.separator, self.explode = separator, list(explode)

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        return BatchOutcome(out=flatten_batch(batch, self.separator, self.explode), merged=batch.num_rows)


class _UnflattenFn:
    def __init__(self, separator: str):
        self.separator = separator

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        return BatchOutcome(out=unflatten_batch(batch, self.separator))


class Flatten(BatchStep):
    """Flatten nested struct columns, optionally exploding list columns into rows.

    Example:
        >>> batches | Flatten("flat", separator="_", explode=["items"])  # doctest: +SKIP
    """

    def __init__(self, step: str, separator: str = ".", explode: list[str] | None = None):
        super().__init__()
        if not separator:
            raise ValueError(f"flatten step '{step}' needs a non-empty separator")
        self._step, self._fn = step, _FlattenFn(separator, explode or [])



class Unflatten(BatchStep):
    """Turn ``a.b``-named columns back into struct columns: ``batches | Unflatten("nest")``."""

    def __init__(self, step: str, separator: str = "."):
        super().__init__()
        self._step, self._fn = step, _UnflattenFn(separator)



@register_step("flatten", FlattenSpec)
def build_flatten(spec: FlattenSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Flatten(spec.name, spec.separator, spec.explode)


@register_step("unflatten", UnflattenSpec)
def build_unflatten(spec: UnflattenSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Unflatten(spec.name, spec.separator)
