"""``validate``: per-column rules computed as one boolean mask per rule, per batch.

A row failing any rule leaves as one DLQ row whose ``error_type`` names the first failing
rule (``validate.required``, ``validate.min`` ...) and whose ``error_message`` lists every
failure on that row (``age: -3 is less than min 0; email: 'x' does not match regex ...``).

``on_error``: ``dlq`` (default), ``drop`` (count as filtered), ``fail`` (stop the job), or
``flag`` (keep every row, add ``_valid`` and ``_errors`` columns).

Example:
    >>> batches | Validate("valid", {"id": {"required": True},
    ...                              "age": {"type": "int64", "min": 0, "max": 130}})  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Literal

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SpecIssue, StepFailed
from beam_etl.models import StepModel, StrictModel, parse_type
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepOutputs, isolate_row_errors

__all__ = ["Validate", "ValidateSpec", "ColumnRules", "RULES", "validate_batch"]

Scalar = int | float | str | bool | _dt.date | _dt.datetime


class ColumnRules(StrictModel):
    """The rules for one column. Nulls pass every rule but ``required``."""

    required: bool = False
    type: str | None = None
    min: Scalar | None = None
    max: Scalar | None = None
    regex: str | None = None
    enum: list[Scalar] | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ColumnRules":
        if self.min is not None and self.max is not None:
            try:
                if self.min > self.max:  # type: ignore[operator]
                    raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
            except TypeError:
                raise ValueError(f"min {self.min!r} and max {self.max!r} are not comparable") from None
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is greater than max_length {self.max_length}")
        if self.type is not None:
            parse_type(self.type)
        if self.regex is not None:
            try:  # pyarrow uses RE2: check with the engine that will run it
                pc.match_substring_regex(pa.array([""]), self.regex)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class ValidateSpec(StepModel):
    type: Literal["validate"]
    rules: dict[str, ColumnRules]
    on_error: Literal["dlq", "drop", "fail", "flag"] = "dlq"

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        return [
            SpecIssue(f"{path}.rules.{name}", f"unknown column '{name}'", did_you_mean(name, schema.names))
            for name in self.rules
            if name not in schema.names
        ]

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None or self.on_error != "flag":
            return schema
        return schema.append(pa.field("_valid", pa.bool_())).append(pa.field("_errors", pa.string()))


# --------------------------------------------------------------------------- rules
# Each rule: (column, parameter) -> boolean array, true where the row FAILS, never null.

RuleFn = Callable[[pa.Array, Any], pa.Array]


def _fails(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False)


def _comparable(column: pa.Array, bound: Any) -> tuple[pa.Array, pa.Scalar]:
    """Column and bound in one type: numbers compare as numbers, even in string columns."""
    if isinstance(bound, (int, float)) and not isinstance(bound, bool):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)):
            numeric, _ = isolate_row_errors(lambda b: pc.cast(b.column(0), pa.float64()), pa.RecordBatch.from_arrays([column], ["v"]), pa.float64())
            column = numeric
        return column, pa.scalar(bound, type=pa.float64() if isinstance(bound, float) or pa.types.is_floating(column.type) else pa.int64())
    if isinstance(bound, (_dt.date, _dt.datetime)) and pa.types.is_string(column.type):
        target = pa.timestamp("us") if isinstance(bound, _dt.datetime) else pa.date32()
        converted, _ = isolate_row_errors(lambda b: pc.cast(b.column(0), target), pa.RecordBatch.from_arrays([column], ["v"]), target)
        return converted, pa.scalar(bound, type=target)
    return column, pa.scalar(bound)


def _rule_required(column: pa.Array, param: bool) -> pa.Array:
    if not param:
        return pa.array([False] * len(column))
    missing = pc.is_null(column, nan_is_null=True)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        missing = pc.or_(missing, pc.equal(pc.utf8_trim_whitespace(column), ""))
    return _fails(missing)


def _rule_type(column: pa.Array, type_name: str) -> pa.Array:
    target = parse_type(type_name)
    if column.type == target:
        return pa.array([False] * len(column))
    source = column
    if pa.types.is_string(column.type):
        source = pc.utf8_trim_whitespace(column)
        source = pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source)
    _, errors = isolate_row_errors(lambda b: pc.cast(b.column(0), target), pa.RecordBatch.from_arrays([source], ["v"]), target)
    mask = [False] * len(column)
    for row in errors:
        mask[row] = True
    return pa.array(mask)


def _rule_min(column: pa.Array, bound: Any) -> pa.Array:
    values, scalar = _comparable(column, bound)
    return _fails(pc.less(values, scalar))


def _rule_max(column: pa.Array, bound: Any) -> pa.Array:
    values, scalar = _comparable(column, bound)
    return _fails(pc.greater(values, scalar))


def _as_text(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _rule_regex(column: pa.Array, pattern: str) -> pa.Array:
    return _fails(pc.invert(pc.match_substring_regex(_as_text(column), pattern)))


def _rule_enum(column: pa.Array, allowed: list) -> pa.Array:
    return _fails(pc.invert(pc.is_in(column, value_set=pa.array(allowed).cast(column.type))))


def _rule_min_length(column: pa.Array, length: int) -> pa.Array:
    return _fails(pc.less(pc.utf8_length(_as_text(column)), length))


def _rule_max_length(column: pa.Array, length: int) -> pa.Array:
    return _fails(pc.greater(pc.utf8_length(_as_text(column)), length))


#: rule name -> (mask function, message template). ``{value}`` is the row's value.
RULES: dict[str, tuple[RuleFn, str]] = {
    "required": (_rule_required, "is required"),
    "type": (_rule_type, "{value} is not a valid {param}"),
    "min": (_rule_min, "{value} is less than min {param}"),
    "max": (_rule_max, "{value} is greater than max {param}"),
    "regex": (_rule_regex, "{value} does not match regex {param}"),
    "enum": (_rule_enum, "{value} is not one of {param}"),
    "min_length": (_rule_min_length, "{value} is shorter than {param} characters"),
    "max_length": (_rule_max_length, "{value} is longer than {param} characters"),
}


def _messages(column: pa.Array, name: str, template: str, param: Any, failed: pa.Array) -> pa.Array:
    """One message per row (null where the rule passed), built with vectorized string joins."""
    template = template.replace("{param}", str(param))
    before, _, after = template.partition("{value}")
    before = f"{name}: " + before
    if "{value}" in template:
        try:
            text = pc.cast(column, pa.string())
            if pa.types.is_string(column.type):
                text = pc.binary_join_element_wise("'", text, "'", "")
            text = pc.fill_null(text, "NULL")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = pa.array(["value"] * len(column))
        message = pc.binary_join_element_wise(before, text, after, "")
    else:
        message = pa.array([f"{name} {template}"] * len(column))
    return pc.if_else(failed, message, pa.scalar(None, pa.string()))


def validate_batch(batch: pa.RecordBatch, rules: dict[str, ColumnRules]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(valid mask, first failing rule per row, all failure messages per row).

    Pure and vectorized: usable without Beam, e.g. in tests or notebooks.
    """
    rows = batch.num_rows
    valid = pa.array([True] * rows)
    first_rule = pa.nulls(rows, pa.string())
    messages: list[pa.Array] = []
    for name, column_rules in rules.items():
        index = batch.schema.get_field_index(name)
        column = batch.column(index) if index >= 0 else pa.nulls(rows, pa.string())
        for rule, param in column_rules.model_dump(exclude_none=True).items():
            if rule == "required" and not param:
                continue
            fn, template = RULES[rule]
            failed = fn(column, param)
            valid = pc.and_(valid, pc.invert(failed))
            first_rule = pc.if_else(pc.and_(failed, pc.is_null(first_rule)), pa.scalar(f"validate.{rule}"), first_rule)
            messages.append(_messages(column, name, template, param, failed))
    joined = pa.nulls(rows, pa.string())
    for message in messages:
        # binary_join's null_handling="skip" mis-sizes its result in pyarrow 25, so join
        # pairwise and coalesce: both -> "a; b", one -> that one.
        joined = pc.coalesce(pc.binary_join_element_wise(joined, message, "; "), joined, message)
    return valid, first_rule, joined


class _ValidateFn:
    def __init__(self, step: str, rules: dict[str, ColumnRules], on_error: str):
        self.step = step
        self.rules = rules
        self.on_error = on_error

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        valid, first_rule, messages = validate_batch(batch, self.rules)
        if self.on_error == "flag":
            flagged = batch.append_column("_valid", valid).append_column("_errors", messages)
            return BatchOutcome(out=flagged)
        invalid = pc.invert(valid)
        bad = batch.filter(invalid)
        if bad.num_rows == 0:
            return BatchOutcome(out=batch)
        good = batch.filter(valid)
        if self.on_error == "fail":
            raise StepFailed(self.step, f"{bad.num_rows} invalid row(s); first: {messages.filter(invalid)[0].as_py()}")
        if self.on_error == "drop":
            return BatchOutcome(out=good, filtered=bad)
        dlq = dlq_batch(
            bad,
            step=self.step,
            error_type=first_rule.filter(invalid),
            error_message=messages.filter(invalid),
        )
        return BatchOutcome(out=good, dlq=dlq)


class Validate(beam.PTransform):
    """Check rows against per-column rules; invalid rows follow ``on_error``.

    Args:
        step: the step name (counters and DLQ rows carry it).
        rules: ``{column: {required, type, min, max, regex, enum, min_length, max_length}}``.
        on_error: ``dlq`` (default), ``drop``, ``fail`` or ``flag``.

    Example:
        >>> batches | Validate("valid", {"email": {"required": True, "regex": "^[^@]+@[^@]+$"}})  # doctest: +SKIP
    """

    def __init__(self, step: str, rules: dict[str, ColumnRules | dict], on_error: str = "dlq"):
        super().__init__()
        self._step = step
        parsed = {name: r if isinstance(r, ColumnRules) else ColumnRules.model_validate(r) for name, r in rules.items()}
        self._fn = _ValidateFn(step, parsed, on_error)

    def expand(self, pcoll) -> StepOutputs:
        return pcoll | ApplyBatchFn(self._step, self._fn)


@register_step("validate", ValidateSpec)
def build_validate(spec: ValidateSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Validate(spec.name, spec.rules, spec.on_error)
