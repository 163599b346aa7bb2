"""``coerce``: safe, format-aware casts of a whole batch to a declared schema.

Where ``cast`` applies Arrow's cast, ``coerce`` first reads text the way people write it:

* numbers with thousands separators and currency signs: ``"$1,234.50"``, ``"1.234,50 €"``
  (``thousands: "."``, ``decimal: ","``), ``"(12.00)"`` (accounting negative), ``"+5"``,
  ``"12.0"`` into an integer; a misplaced separator (``"1,23"``) is a failure, not a guess;
* booleans: ``yes/y/true/t/1/on`` and ``no/n/false/f/0/off`` (any case), or your own lists;
* dates and timestamps: ISO 8601 by default, or strptime ``formats`` tried in order
  (calendar-checked: ``2023-02-29`` fails); ``timezone`` says which zone wall-clock values
  without an offset are in; values with an offset are exact instants.

Empty or blank strings become null. A value that cannot be coerced sends its row to the
DLQ (``error_type: coerce``) with the value and the target type in the message, or follows
``on_error`` (``null`` keeps the row with a null, ``drop`` filters it, ``fail`` stops).

A ``schema:`` entry is either a type name or a mapping with options::

    - name: typed
      type: coerce
      input: raw
      schema:
        id: int64
        price: {type: "decimal128(12, 2)", thousands: ",", currency: true}
        joined: {type: date32, formats: ["%d/%m/%Y", "%Y-%m-%d"]}
        seen_at: {type: "timestamp[us, tz=UTC]", formats: ["%d.%m.%Y %H:%M"], timezone: Europe/Berlin}
        active: {type: bool, true_values: [ja, j], false_values: [nein, n]}
      extra: keep          # columns not in the schema: keep (default) or drop

Columns named in the schema but missing from a batch are added as nulls.

Example:
    >>> batches | Coerce("typed", {"amount": {"type": "float64"}, "day": "date32"})  # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from beam_etl.errors import StepFailed
from beam_etl.models import StepModel, StrictModel, parse_type
from beam_etl.registry import register_step
from beam_etl.casting import cast_isolating_errors
from beam_etl.steps import BatchStep, BatchOutcome, BuildContext, StepOutputs, isolate_row_errors, route_errors

__all__ = [
    "Coerce",
    "CoerceSpec",
    "ColumnCoercion",
    "coerce_batch",
    "coerce_column",
    "bool_from_text",
    "TRUE_VALUES",
    "FALSE_VALUES",
]

TRUE_VALUES = ("true", "t", "yes", "y", "1", "on")
FALSE_VALUES = ("false", "f", "no", "n", "0", "off")

_DstPolicy = Literal["raise", "earliest", "latest"]


def _check_timezone(zone: str) -> str:
    try:  # the engine's own tz database decides, not Python's
        pc.assume_timezone(pa.array([0], pa.timestamp("s")), zone)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"unknown time zone '{zone}'; use an IANA name such as UTC, Europe/Berlin, America/New_York") from None
    return zone


class ColumnCoercion(StrictModel):
    """How one column is coerced.

    Args:
        type: the Arrow type name (``int64``, ``float64``, ``decimal128(12, 2)``, ``bool``,
            ``date32``, ``timestamp[us]``, ``timestamp[us, tz=UTC]``, ``string`` ...).
        formats: dates/timestamps: strptime formats tried in order (default ISO 8601).
        timezone: timestamps: the IANA zone of values written without an offset (default:
            the target type's zone, else left as wall-clock time).
        ambiguous / nonexistent: local times that a DST change repeats or skips: ``raise``
            (the row fails, default), ``earliest`` or ``latest``.
        thousands: numbers: the thousands separator (default ``,``; ``null`` for none).
        decimal: numbers: the decimal mark (default ``.``).
        currency: numbers: strip currency signs (``$ € £ ¥`` ...) and ISO codes (``USD``).
        true_values / false_values: booleans: the accepted words (case-insensitive).
    """

    type: str
    formats: list[str] | None = None
    timezone: str | None = None
    ambiguous: _DstPolicy = "raise"
    nonexistent: _DstPolicy = "raise"
    thousands: str | None = ","
    decimal: str = Field(default=".", min_length=1, max_length=1)
    currency: bool = True
    true_values: list[str] | None = None
    false_values: list[str] | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, type_name: str) -> str:
        parse_type(type_name)
        return type_name

    @field_validator("formats", mode="before")
    @classmethod
    def _one_or_many(cls, formats: Any) -> Any:
        return [formats] if isinstance(formats, str) else formats

    @field_validator("formats")
    @classmethod
    def _valid_formats(cls, formats: list[str] | None) -> list[str] | None:
        from beam_etl.quality.validators import check_strptime_format

        for fmt in formats or []:
            check_strptime_format(fmt)
        return formats

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        return _check_timezone(zone) if zone is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> "ColumnCoercion":
        target = parse_type(self.type)
        if pa.types.is_timestamp(target) and target.tz is not None:
            _check_timezone(target.tz)
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"thousands separator and decimal mark are both {self.decimal!r}; set thousands: '.' with decimal: ',' (or the reverse)")
        if self.thousands is not None and (not self.thousands or any(c.isdigit() for c in self.thousands)):
            raise ValueError(f"thousands separator {self.thousands!r} must be a non-empty, non-digit string")
        if self.true_values is not None and self.false_values is not None:
            overlap = {v.lower() for v in self.true_values} & {v.lower() for v in self.false_values}
            if overlap:
                raise ValueError(f"{sorted(overlap)} cannot be both true_values and false_values")
        return self

    @property
    def target(self) -> pa.DataType:
        return parse_type(self.type)


def _column_spec(value: str | ColumnCoercion | dict) -> ColumnCoercion:
    if isinstance(value, ColumnCoercion):
        return value
    if isinstance(value, str):
        return ColumnCoercion(type=value)
    return ColumnCoercion.model_validate(value)


class CoerceSpec(StepModel):
    type: Literal["coerce"]
    schema_: dict[str, ColumnCoercion] = Field(alias="schema", min_length=1)
    extra: Literal["keep", "drop"] = "keep"
    on_error: Literal["dlq", "null", "drop", "fail"] = "dlq"

    @field_validator("schema_", mode="before")
    @classmethod
    def _type_names(cls, schema: Any) -> Any:
        # ``column: int64`` is short for ``column: {type: int64}``.
        if isinstance(schema, dict):
            return {name: {"type": value} if isinstance(value, str) else value for name, value in schema.items()}
        return schema

    def columns(self) -> dict[str, ColumnCoercion]:
        return dict(self.schema_)

    def check(self, schemas, path):
        return []  # columns missing from the input are added as nulls, by design

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        return _output_schema(schema, self.columns(), self.extra)


def _output_schema(schema: pa.Schema | None, columns: dict[str, ColumnCoercion], extra: str) -> pa.Schema | None:
    declared = [pa.field(name, spec.target) for name, spec in columns.items()]
    if extra == "drop":
        return pa.schema(declared)
    if schema is None:
        return None
    fields = [pa.field(f.name, columns[f.name].target) if f.name in columns else f for f in schema]
    fields += [f for f in declared if f.name not in schema.names]
    return pa.schema(fields)


# --------------------------------------------------------------------------- parsers


def bool_from_text(
    values: pa.Array, true_values: list[str] | None = None, false_values: list[str] | None = None
) -> tuple[pa.Array, pa.Array]:
    """(booleans, unknown) from text: words matched case-insensitively after trimming.

    Blank strings are null, not unknown. ``unknown`` is true where a non-blank value is
    neither a true nor a false word.

    Example:
        >>> bool_from_text(pa.array(["Yes", "n", "maybe", ""]))[0].to_pylist()
        [True, False, None, None]
    """
    probe = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    trues = pa.array([str(v).lower() for v in (true_values or TRUE_VALUES)], pa.string())
    falses = pa.array([str(v).lower() for v in (false_values or FALSE_VALUES)], pa.string())
    is_true = pc.is_in(probe, value_set=trues)
    is_false = pc.is_in(probe, value_set=falses)
    result = pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))
    blank = pc.equal(probe, "")
    unknown = pc.and_(pc.is_valid(probe), pc.invert(pc.or_(pc.or_(is_true, is_false), blank)))
    return result, pc.fill_null(unknown, False)


def _blank_to_null(text: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _number_text(text: pa.Array, spec: ColumnCoercion, integer: bool) -> tuple[pa.Array, pa.Array]:
    """Text of numbers normalised for Arrow's cast, and a mask of misplaced separators."""
    if spec.currency:
        text = pc.replace_substring_regex(text, r"\p{Sc}|^[A-Z]{3}\s*|\s*[A-Z]{3}$", "")
        text = pc.utf8_trim_whitespace(text)
    # Accounting negatives: (1,234.00) -> -1,234.00 ; a sign after a currency sign: $-5 -> -5.
    text = pc.replace_substring_regex(text, r"^\((.*)\)$", r"-\1")
    text = pc.replace_substring_regex(text, r"^\+", "")
    bad = pa.array(np.zeros(len(text), dtype=bool))
    if spec.thousands is not None:
        seps = [spec.thousands] + (["\u00a0", "\u202f"] if spec.thousands == " " else [])
        sep_class = "(?:" + "|".join(re.escape(s) for s in seps) + ")"
        has_sep = pc.fill_null(pc.match_substring_regex(text, sep_class), False)
        grouped = rf"^-?[0-9]{{1,3}}(?:{sep_class}[0-9]{{3}})+(?:{re.escape(spec.decimal)}[0-9]*)?$"
        well_grouped = pc.fill_null(pc.match_substring_regex(text, grouped), False)
        bad = pc.and_(has_sep, pc.invert(well_grouped))
        text = pc.replace_substring_regex(text, sep_class, "")
    if spec.decimal != ".":
        text = pc.replace_substring(text, spec.decimal, ".")
    if integer:
        text = pc.replace_substring_regex(text, r"\.0*$", "")
    return pc.if_else(bad, pa.scalar(None, pa.string()), text), bad


def _rows(mask: pa.Array) -> list[int]:
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)).tolist()


def _cast_isolated(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Arrow cast; rows it rejects found by ``cast_isolating_errors`` (no second pass)."""
    array, errors = cast_isolating_errors(values, target)
    return array, sorted(errors)


def _localize(naive: pa.Array, zone: str, spec: ColumnCoercion) -> tuple[pa.Array, list[int]]:
    """Wall-clock times in ``zone`` -> instants (tz-aware ``zone``); DST failures by row."""
    target = pa.timestamp(naive.type.unit, tz=zone)
    array, errors = isolate_row_errors(
        lambda b: pc.assume_timezone(b.column(0), zone, ambiguous=spec.ambiguous, nonexistent=spec.nonexistent),
        pa.RecordBatch.from_arrays([naive], ["v"]),
        target,
    )
    return array, sorted(errors)


def _coerce_times(text: pa.Array, spec: ColumnCoercion, target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    from beam_etl.quality.validators import parse_datetimes

    is_date = pa.types.is_date(target)
    unit = "s" if is_date else target.unit
    parsed = parse_datetimes(text, spec.formats, unit=unit, date_only=is_date and not spec.formats)
    reason = f"matches none of the formats {spec.formats}" if spec.formats else ("is not an ISO 8601 date" if is_date else "is not an ISO 8601 date-time")
    errors = {row: reason for row in _rows(parsed.failed)}
    if is_date:
        return pc.cast(parsed.values, target, safe=False), errors
    null_ts = pa.scalar(None, parsed.values.type)
    local = pc.if_else(parsed.has_offset, null_ts, parsed.values)
    utc = pc.if_else(parsed.has_offset, parsed.values, null_ts)
    zone = spec.timezone or target.tz
    if target.tz is not None:
        local_instants, dst_rows = _localize(local, zone, spec)
        utc_instants = pc.assume_timezone(utc, "UTC")
        values = pc.coalesce(pc.cast(local_instants, target), pc.cast(utc_instants, target))
    else:
        dst_rows = []
        if spec.timezone is not None and pc.any(parsed.has_offset).as_py():
            utc = pc.local_timestamp(pc.cast(pc.assume_timezone(utc, "UTC"), pa.timestamp(unit, tz=spec.timezone)))
        values = pc.coalesce(local, utc)
    for row in dst_rows:
        errors.setdefault(row, f"does not exist or is ambiguous in time zone {zone} (set ambiguous/nonexistent: earliest or latest)")
    return values, errors


def coerce_column(column: pa.Array, spec: ColumnCoercion | str | dict) -> tuple[pa.Array, dict[int, str]]:
    """(coerced column with nulls where it failed, ``{row: reason}``) — usable without Beam.

    Example:
        >>> values, errors = coerce_column(pa.array(["$1,234.50", "1,23", None]), "float64")
        >>> values.to_pylist(), errors
        ([1234.5, None, None], {1: "misplaced thousands separator ','"})
    """
    spec = _column_spec(spec)
    target = spec.target
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if column.type == target:
        return column, {}
    is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), target), {}
    if not is_text:
        if pa.types.is_boolean(target) and (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            return pc.not_equal(column, pa.scalar(0).cast(column.type)), {}
        values, rows = _cast_isolated(column, target)
        return values, {row: "does not fit" for row in rows}
    text = _blank_to_null(pc.cast(column, pa.string()))
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return pc.cast(column, target), {}
    if pa.types.is_boolean(target):
        values, unknown = bool_from_text(text, spec.true_values, spec.false_values)
        words = "/".join((spec.true_values or list(TRUE_VALUES))[:3] + (spec.false_values or list(FALSE_VALUES))[:3])
        return values, {row: f"is not a recognised boolean ({words} ...)" for row in _rows(unknown)}
    if pa.types.is_date(target) or pa.types.is_timestamp(target):
        return _coerce_times(text, spec, target)
    if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target):
        prepared, misplaced = _number_text(text, spec, integer=pa.types.is_integer(target))
        values, rows = _cast_isolated(prepared, target)
        errors = {row: f"misplaced thousands separator {spec.thousands!r}" for row in _rows(misplaced)}
        reason = "is not a whole number in the range of the type" if pa.types.is_integer(target) else "is not a number"
        if pa.types.is_decimal(target):
            reason = f"is not a number that fits {target} without rounding"
        for row in rows:
            errors.setdefault(row, reason)
        return values, errors
    values, rows = _cast_isolated(text, target)
    return values, {row: "cannot be cast" for row in rows}


def coerce_batch(
    batch: pa.RecordBatch, columns: dict[str, ColumnCoercion | str | dict], extra: str = "keep"
) -> tuple[pa.RecordBatch, dict[int, str]]:
    """(batch in the declared schema, ``{row: message}`` for rows with a value that failed).

    Each message names the value, the column and the target type, e.g.
    ``cannot coerce 'abc' in column 'age' to int64: is not an integer that fits``; a row
    with several failures lists them all, separated by ``; ``.
    """
    specs = {name: _column_spec(value) for name, value in columns.items()}
    coerced: dict[str, pa.Array] = {}
    errors: dict[int, str] = {}
    for name, spec in specs.items():
        index = batch.schema.get_field_index(name)
        if index < 0:
            coerced[name] = pa.nulls(batch.num_rows, spec.target)
            continue
        column = batch.column(index)
        values, failed = coerce_column(column, spec)
        coerced[name] = values
        for row, reason in sorted(failed.items()):
            value = column[row].as_py()
            message = f"cannot coerce {value!r} in column '{name}' to {spec.type}: {reason}"
            errors[row] = f"{errors[row]}; {message}" if row in errors else message
    schema = _output_schema(batch.schema, specs, extra)
    arrays = [coerced[field.name] if field.name in coerced else batch.column(field.name) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema), errors


class _CoerceFn:
    def __init__(self, step: str, columns: dict[str, ColumnCoercion], extra: str, on_error: str):
        self.step = step
        self.columns = columns
        self.extra = extra
        self.on_error = on_error

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        result, errors = coerce_batch(batch, self.columns, self.extra)
        if not errors or self.on_error == "null":
            return BatchOutcome(out=result)
        rows = sorted(errors)
        failed = np.zeros(batch.num_rows, dtype=bool)
        failed[rows] = True
        keep = pa.array(~failed)
        messages = [errors[row] for row in rows]
        if self.on_error == "fail":
            raise StepFailed(self.step, f"{len(rows)} row(s) failed coerce: {messages[0]}")
        dlq, dropped = route_errors(self.step, self.on_error, batch.filter(pa.array(failed)), "coerce", messages)
        return BatchOutcome(out=result.filter(keep), dlq=dlq, filtered_count=dropped)


class Coerce(BatchStep):
    """Coerce a batch to a declared schema, reading numbers, booleans and dates as written.

    Args:
        step: the step name (counters and DLQ rows carry it).
        columns: ``{column: type name | {type, formats, timezone, thousands, decimal,
            currency, true_values, false_values, ambiguous, nonexistent}}``.
        extra: columns not in ``columns``: ``keep`` (default) or ``drop``.
        on_error: rows with a value that cannot be coerced: ``dlq`` (default), ``null``
            (keep the row, null the value), ``drop`` or ``fail``.

    Example:
        >>> batches | Coerce("typed", {"price": {"type": "float64", "thousands": "."  , "decimal": ","},
        ...                            "at": {"type": "timestamp[us, tz=UTC]", "timezone": "Europe/Paris"}})  # doctest: +SKIP
    """

    def __init__(self, step: str, columns: dict[str, str | ColumnCoercion | dict], extra: str = "keep", on_error: str = "dlq"):
        super().__init__()
        spec = CoerceSpec.model_validate(
            {"name": step, "type": "coerce", "input": "-", "schema": columns, "extra": extra, "on_error": on_error}
        )
        self._step = step
        self._fn = _CoerceFn(step, spec.columns(), spec.extra, spec.on_error)



@register_step("coerce", CoerceSpec)
def build_coerce(spec: CoerceSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Coerce(spec.name, spec.columns(), spec.extra, spec.on_error)
