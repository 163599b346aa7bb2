"""``validate``: rules computed as one boolean mask per rule, per batch; uniqueness over the
whole dataset through a keyed shuffle.

A row failing any rule leaves as one DLQ row whose ``error_type`` names the first failing
rule (``validate.required``, ``validate.min``, ``validate.unique``, ``validate.<check name>``
...) and whose ``error_message`` lists every failure on that row, each naming its column
and rule (``age: -3 is less than min 0; email: 'x' is not a valid email``).

Column rules (``rules: {column: {...}}``) — nulls pass every rule but ``required`` and
``nullable: false``:

====================  ==================================================================
required              not null, not NaN, not blank text
nullable              ``false``: not null (blank text is allowed)
type                  the value casts to this Arrow type (``int64``, ``date32`` ...)
min / max             inclusive bounds (numbers, also in text columns; dates)
exclusive_min/_max    exclusive bounds
regex                 RE2 pattern that must match (``search`` semantics: anchor with ^ $)
enum                  one of a list of values
length                exact length in characters; ``min_length`` / ``max_length``
format                a common validator: ``email``, ``url``, ``phone``, ``date``,
                      ``datetime``, ``zip`` / ``postal_code``, ``uuid``, ``ipv4``,
                      ``ipv6``, ``ip``, ``credit_card``; options as a one-key mapping:
                      ``format: {phone: {region: GB}}``, ``format: {zip: {country: CA}}``,
                      ``format: {date: {formats: ["%d/%m/%Y"]}}``
unique                no other row in the whole input has this value
====================  ==================================================================

Row checks (``checks: [...]``), each with an optional ``name`` (its rule name) and
``message``:

* ``{name: dates_ordered, expr: "end_date >= start_date"}`` — a SQL condition (or a
  structured ``{and: [...]}`` condition) that must hold; NULL counts as passing, as in a SQL
  ``CHECK`` constraint (write ``end_date IS NOT NULL AND ...`` to require values);
* ``{name: totals, function: "my_pkg.rules:totals_match"}`` — user Python by import path:
  ``fn(batch: pyarrow.RecordBatch, **args) -> mask`` with **true where the row is valid**
  (an Arrow/NumPy/pandas boolean array, one per row). ``mode: row`` calls
  ``fn(row: dict, **args) -> bool`` per row instead (slower). The import path is checked
  when the spec is loaded;
* ``{name: order_key, unique: [customer_id, order_no]}`` — compound uniqueness.

Uniqueness is over the whole input, not per batch: rows are hash-sharded by the key
(:func:`beam_etl.transforms.join.shard_by_keys`), a ``GroupByKey`` brings equal keys to one
worker, and there every row after the first of its key is a duplicate. "First" is a
deterministic order, independent of how batches arrived: by ``unique_order_by`` (``["updated_at
DESC"]`` keeps the latest), then by the row's content (its JSON text). Rows with a NULL in
the key never conflict (SQL ``UNIQUE``). Rows that fail other rules leave before the
uniqueness check (except with ``on_error: flag``, where every row stays and takes part);
several unique constraints apply in the order written. In a windowed stream, uniqueness
holds per window.

``on_error``: ``dlq`` (default), ``drop`` (count as filtered), ``fail`` (stop the job), or
``flag`` (keep every row, add ``_valid`` and ``_errors`` columns).

Example:
    >>> batches | Validate("valid", {"id": {"required": True, "unique": True},
    ...                              "age": {"type": "int64", "min": 0, "max": 130},
    ...                              "email": {"format": "email"}},
    ...                    checks=[{"name": "dates", "expr": "end_date >= start_date"}])  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import json
import re
import traceback
from typing import Any, Callable, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import typehints
from apache_beam.pvalue import TaggedOutput
from pydantic import Field, field_validator, model_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS, concat_batches, split_batch
from beam_etl.json_rows import rows_as_json
from beam_etl.dlq import dlq_batch
from beam_etl.errors import ExpressionError, SpecIssue, StepFailed
from beam_etl.models import StepModel, StrictModel, parse_type
from beam_etl.quality.validators import check_format_options, format_mask
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.casting import cast_isolating_errors
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepCounters, StepOutputs, isolate_row_errors
from beam_etl.transforms.shard import DEFAULT_SHARDS

__all__ = [
    "Validate",
    "ValidateSpec",
    "ColumnRules",
    "RowCheck",
    "RULES",
    "validate_batch",
    "duplicate_mask",
    "import_callable",
]

Scalar = int | float | str | bool | _dt.date | _dt.datetime

_ORDER_ITEM = re.compile(r"^\s*(?P<column>[^\s]+)(?:\s+(?P<direction>ASC|DESC))?\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- user Python


@functools.lru_cache(maxsize=64)
def import_callable(path: str) -> Callable:
    """The callable at ``package.module:function`` (or ``package.module.function``).

    Raises ValueError with a sentence saying what is wrong and how to fix it.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"'{path}' is not an import path; write 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}' for '{path}': {exc} (install it or put it on PYTHONPATH)") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            hint = did_you_mean(part, [n for n in dir(target) if not n.startswith("_")])
            raise ValueError(f"module '{module_name}' has no attribute '{attribute}'" + (f" ({hint})" if hint else ""))
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"'{path}' is not callable; point it at a function")
    return target


@functools.lru_cache(maxsize=256)
def _compile_condition_text(key: str):
    from beam_etl.expressions import compile_condition

    return compile_condition(json.loads(key))


def _compiled(expr: str | dict):
    # Compiled once per process and expression (the key is hashable JSON of the condition).
    return _compile_condition_text(json.dumps(expr, sort_keys=True))


# --------------------------------------------------------------------------- spec models


def _format_parts(value: str | dict) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("write a format as a name (format: email) or one name with options (format: {phone: {region: GB}})")
    ((name, options),) = value.items()
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options of format '{name}' must be a mapping, e.g. {{{name}: {{...}}}}")
    return str(name), options or {}


class ColumnRules(StrictModel):
    """The rules for one column. Nulls pass every rule but ``required`` and ``nullable``."""

    required: bool = False
    nullable: bool = True
    type: str | None = None
    min: Scalar | None = None
    max: Scalar | None = None
    exclusive_min: Scalar | None = None
    exclusive_max: Scalar | None = None
    regex: str | None = None
    enum: list[Scalar] | None = Field(default=None, min_length=1)
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    length: int | None = Field(default=None, ge=0)
    format: str | dict[str, Any] | None = None
    unique: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "ColumnRules":
        lows = [(name, getattr(self, name)) for name in ("min", "exclusive_min") if getattr(self, name) is not None]
        highs = [(name, getattr(self, name)) for name in ("max", "exclusive_max") if getattr(self, name) is not None]
        for low_name, low in lows:
            for high_name, high in highs:
                try:
                    empty = low > high or (low == high and (low_name, high_name) != ("min", "max"))  # type: ignore[operator]
                except TypeError:
                    raise ValueError(f"{low_name} {low!r} and {high_name} {high!r} are not comparable") from None
                if empty:
                    relation = "greater than" if low > high else "equal to"  # type: ignore[operator]
                    raise ValueError(f"{low_name} {low!r} is {relation} {high_name} {high!r}: no value can pass")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is greater than max_length {self.max_length}")
        return self

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None:
            parse_type(value)
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:  # pyarrow uses RE2: check with the engine that will run it
                pc.match_substring_regex(pa.array([""]), pattern)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
        return pattern

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | dict | None) -> str | dict | None:
        if value is not None:
            name, options = _format_parts(value)
            check_format_options(name, options)
        return value

    def row_rules(self) -> list[tuple[str, Any]]:
        """(rule, parameter) pairs evaluated per row, in a fixed order; ``unique`` excluded."""
        rules: list[tuple[str, Any]] = []
        if self.required:
            rules.append(("required", True))
        if not self.nullable:
            rules.append(("nullable", False))
        for name in ("type", "min", "max", "exclusive_min", "exclusive_max", "regex", "enum", "min_length", "max_length", "length"):
            value = getattr(self, name)
            if value is not None:
                rules.append((name, value))
        if self.format is not None:
            name, options = _format_parts(self.format)
            rules.append(("format", (name, check_format_options(name, options))))
        return rules


class RowCheck(StrictModel):
    """A rule over whole rows: a SQL condition, a user function, or a compound unique key.

    Args:
        name: the rule name in ``error_type`` (``validate.<name>``) and messages.
        expr: a SQL boolean expression (or structured condition) that valid rows satisfy.
        function: ``package.module:function``; ``fn(batch, **args) -> mask`` (true = valid),
            or ``fn(row, **args) -> bool`` with ``mode: row``.
        mode: ``batch`` (vectorized, preferred) or ``row``.
        args: keyword arguments passed to ``function``.
        unique: columns whose combined value must be unique over the whole input.
        message: the error message (default: the expression or function).
    """

    name: str | None = None
    expr: str | dict[str, Any] | None = None
    function: str | None = None
    mode: Literal["batch", "row"] = "batch"
    args: dict[str, Any] = Field(default_factory=dict)
    unique: list[str] | None = Field(default=None, min_length=1)
    message: str | None = None

    @field_validator("unique", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("expr")
    @classmethod
    def _compiles(cls, expr: str | dict | None) -> str | dict | None:
        if expr is not None:
            try:
                _compiled(expr)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return expr

    @field_validator("function")
    @classmethod
    def _importable(cls, path: str | None) -> str | None:
        if path is not None:
            import_callable(path)
        return path

    @model_validator(mode="after")
    def _one_kind(self) -> "RowCheck":
        kinds = [kind for kind in ("expr", "function", "unique") if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError("a check has exactly one of expr (SQL condition), function (import path) or unique (columns)")
        if (self.mode != "batch" or self.args) and self.function is None:
            raise ValueError("mode and args apply to function checks only")
        if self.name is None:
            default = "unique" if self.unique else "expr" if self.expr is not None else self.function.replace(":", ".").rsplit(".", 1)[-1]
            object.__setattr__(self, "name", default)
        return self


class ValidateSpec(StepModel):
    type: Literal["validate"]
    rules: dict[str, ColumnRules] = Field(default_factory=dict)
    checks: list[RowCheck] = Field(default_factory=list)
    on_error: Literal["dlq", "drop", "fail", "flag"] = "dlq"
    unique_order_by: list[str] = Field(default_factory=list)
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)

    @field_validator("unique_order_by", mode="before")
    @classmethod
    def _order_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("unique_order_by")
    @classmethod
    def _order_items(cls, items: list[str]) -> list[str]:
        for item in items:
            if not _ORDER_ITEM.match(item):
                raise ValueError(f"'{item}' is not 'column' or 'column ASC|DESC'")
        return items

    @model_validator(mode="after")
    def _something_to_check(self) -> "ValidateSpec":
        if not self.rules and not self.checks:
            raise ValueError("a validate step needs rules (per column) or checks (per row)")
        return self

    def unique_keys(self) -> list[tuple[list[str], str]]:
        """(key columns, rule name) for each uniqueness constraint, in spec order."""
        keys = [([column], "unique") for column, rules in self.rules.items() if rules.unique]
        keys += [(list(check.unique), check.name) for check in self.checks if check.unique]
        return keys

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        names = schema.names
        issues = [
            SpecIssue(f"{path}.rules.{name}", f"unknown column '{name}'", did_you_mean(name, names))
            for name in self.rules
            if name not in names
        ]
        for index, check in enumerate(self.checks):
            where = f"{path}.checks[{index}]"
            for column in check.unique or []:
                if column not in names:
                    issues.append(SpecIssue(f"{where}.unique", f"unknown column '{column}'", did_you_mean(column, names)))
            if check.expr is not None:
                try:
                    _compiled(check.expr).check(schema)
                except ExpressionError as exc:
                    issues.append(SpecIssue(f"{where}.expr", exc.message, exc.hint))
        for index, item in enumerate(self.unique_order_by):
            column = _ORDER_ITEM.match(item).group("column")
            if column not in names:
                issues.append(SpecIssue(f"{path}.unique_order_by[{index}]", f"unknown column '{column}'", did_you_mean(column, names)))
        return issues

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


def _rows_mask(rows: int, indices) -> pa.Array:
    mask = np.zeros(rows, dtype=bool)
    mask[list(indices)] = True
    return pa.array(mask)


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _cast_or_null(column: pa.Array, target: pa.DataType) -> pa.Array:
    values, _ = cast_isolating_errors(column, target)
    return values


def _comparable(column: pa.Array, bound: Any) -> tuple[pa.Array, pa.Scalar]:
    """Column and bound in one type: numbers compare as numbers, even in string columns."""
    if isinstance(bound, (int, float)) and not isinstance(bound, bool):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)):
            column = _cast_or_null(column, pa.float64())
        return column, pa.scalar(bound, type=pa.float64() if isinstance(bound, float) or pa.types.is_floating(column.type) else pa.int64())
    if isinstance(bound, (_dt.date, _dt.datetime)) and _is_text(column.type):
        target = pa.timestamp("us") if isinstance(bound, _dt.datetime) else pa.date32()
        return _cast_or_null(column, target), pa.scalar(bound, type=target)
    return column, pa.scalar(bound)


def _rule_required(column: pa.Array, param: bool) -> pa.Array:
    missing = pc.is_null(column, nan_is_null=True)
    if _is_text(column.type):
        missing = pc.or_kleene(missing, pc.equal(pc.utf8_trim_whitespace(column), ""))  # null OR x is null in or_
    return _fails(missing)


def _rule_nullable(column: pa.Array, param: bool) -> pa.Array:
    return pc.is_null(column)


def _rule_type(column: pa.Array, type_name: str) -> pa.Array:
    target = parse_type(type_name)
    if column.type == target:
        return _rows_mask(len(column), [])
    source = column
    if _is_text(column.type):
        source = pc.utf8_trim_whitespace(column)
        source = pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source)
    _, errors = cast_isolating_errors(source, target)
    return _rows_mask(len(column), errors)


def _bound_rule(compare: Callable) -> RuleFn:
    def rule(column: pa.Array, bound: Any) -> pa.Array:
        values, scalar = _comparable(column, bound)
        return _fails(compare(values, scalar))

    return rule


def _as_text(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _rule_regex(column: pa.Array, pattern: str) -> pa.Array:
    return _fails(pc.invert(pc.match_substring_regex(_as_text(column), pattern)))


def _rule_enum(column: pa.Array, allowed: list) -> pa.Array:
    outside = pc.invert(pc.is_in(column, value_set=pa.array(allowed).cast(column.type)))
    return _fails(pc.and_(pc.is_valid(column), outside))  # is_in says false for null: nulls pass


def _length_rule(compare: Callable) -> RuleFn:
    return lambda column, length: _fails(compare(pc.utf8_length(_as_text(column)), length))


def _rule_format(column: pa.Array, param: tuple[str, dict]) -> pa.Array:
    name, options = param
    return format_mask(column, name, options)


#: rule name -> (mask function, message template). ``{value}`` is the row's value.
RULES: dict[str, tuple[RuleFn, str]] = {
    "required": (_rule_required, "is required"),
    "nullable": (_rule_nullable, "is null (nullable: false)"),
    "type": (_rule_type, "{value} is not a valid {param}"),
    "min": (_bound_rule(pc.less), "{value} is less than min {param}"),
    "max": (_bound_rule(pc.greater), "{value} is greater than max {param}"),
    "exclusive_min": (_bound_rule(pc.less_equal), "{value} is not greater than exclusive_min {param}"),
    "exclusive_max": (_bound_rule(pc.greater_equal), "{value} is not less than exclusive_max {param}"),
    "regex": (_rule_regex, "{value} does not match regex {param}"),
    "enum": (_rule_enum, "{value} is not one of {param}"),
    "min_length": (_length_rule(pc.less), "{value} is shorter than {param} characters"),
    "max_length": (_length_rule(pc.greater), "{value} is longer than {param} characters"),
    "length": (_length_rule(pc.not_equal), "{value} does not have length {param}"),
    "format": (_rule_format, "{value} is not a valid {param}"),
}


def _value_text(column: pa.Array) -> pa.Array:
    """Each value as text for messages: strings quoted, nulls as NULL."""
    try:
        text = pc.cast(column, pa.string())
        if _is_text(column.type):
            text = pc.binary_join_element_wise("'", text, "'", "")
        return pc.fill_null(text, "NULL")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array(["value"] * len(column), pa.string())


def _format_label(param: tuple[str, dict]) -> str:
    name, options = param
    detail = options.get("country") or options.get("region")
    return f"{name} ({detail})" if detail else name


def _messages(column: pa.Array, name: str, template: str, param: Any, failed: pa.Array) -> pa.Array:
    """One message per row (null where the rule passed), built with vectorized string joins.

    Only the failing rows' values are formatted (a few percent of a batch, usually).
    """
    template = template.replace("{param}", str(param))
    if "{value}" not in template:
        return _constant_messages(f"{name} {template}", failed)
    failing = pc.fill_null(failed, False)
    if not pc.any(failing).as_py():
        return pa.nulls(len(column), pa.string())
    before, _, after = template.partition("{value}")
    message = pc.binary_join_element_wise(f"{name}: " + before, _value_text(column.filter(failing)), after, "")
    return pc.replace_with_mask(pa.nulls(len(column), pa.string()), failing, message)


def _constant_messages(text: str, failed: pa.Array) -> pa.Array:
    return pc.if_else(failed, pa.scalar(text), pa.scalar(None, pa.string()))


def _join_messages(messages: list[pa.Array], rows: int) -> pa.Array:
    present = [message for message in messages if message.null_count < len(message)]
    if not present:
        return pa.nulls(rows, pa.string())
    # Join only the rows that have a message at all, then put them back in place.
    has_message = pc.is_valid(present[0])
    for message in present[1:]:
        has_message = pc.or_(has_message, pc.is_valid(message))
    joined = pa.nulls(pc.sum(has_message).as_py(), pa.string())
    for message in present:
        message = message.filter(has_message)
        # binary_join's null_handling="skip" mis-sizes its result in pyarrow 25, so join
        # pairwise and coalesce: both -> "a; b", one -> that one.
        joined = pc.coalesce(pc.binary_join_element_wise(joined, message, "; "), joined, message)
    return pc.replace_with_mask(pa.nulls(rows, pa.string()), has_message, joined)


# --------------------------------------------------------------------------- row checks


def _sparse_messages(rows: int, by_row: dict[int, str], prefix: str = "") -> pa.Array:
    """A message array that is null except at the rows of ``by_row``."""
    values = np.full(rows, None, dtype=object)
    for row, text in by_row.items():
        values[row] = prefix + text
    return pa.array(values, pa.string())


def _to_mask(result: Any, rows: int, label: str) -> pa.Array:
    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    if not isinstance(result, pa.Array):
        result = pa.array(np.asarray(result)) if not hasattr(result, "__arrow_array__") else pa.array(result)
    if len(result) != rows:
        # TypeError, not ValueError: a wrong length is a bug in the function, not bad data.
        raise TypeError(f"{label} returned {len(result)} values for {rows} rows; return one boolean per row (true = valid)")
    return result.cast(pa.bool_())


def _check_mask(check: RowCheck, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """(failing mask, message per failing row) of one row check (not ``unique``)."""
    rows = batch.num_rows
    default = check.message
    if check.expr is not None:
        values, errors = _compiled(check.expr).evaluate_with_errors(batch)
        failed = pc.fill_null(pc.invert(values.cast(pa.bool_())), False)
        text = check.expr if isinstance(check.expr, str) else json.dumps(check.expr)
        messages = _constant_messages(default or f"check {check.name} failed: {text}", failed)
        if errors:
            failed = pc.or_(failed, _rows_mask(rows, errors))
            messages = pc.coalesce(_sparse_messages(rows, errors, f"check {check.name} could not be evaluated: "), messages)
        return failed, messages
    fn = import_callable(check.function)
    label = f"check {check.name} ({check.function})"
    if check.mode == "row":
        # Row mode is the user's explicit choice: one Python call per row is its contract.
        failed_rows: dict[int, str] = {}
        for index, row in enumerate(batch.to_pylist()):
            try:
                ok = fn(row, **check.args)
            except Exception as exc:  # the user's function failed on this row: the row fails
                failed_rows[index] = f"{label} raised {type(exc).__name__}: {exc}"
                continue
            if ok is not None and not ok:
                failed_rows[index] = default or f"check {check.name} failed"
        return _rows_mask(rows, failed_rows), _sparse_messages(rows, failed_rows)
    values, errors = isolate_row_errors(lambda b: _to_mask(fn(b, **check.args), b.num_rows, label), batch, pa.bool_())
    failed = pc.fill_null(pc.invert(values), False)
    messages = _constant_messages(default or f"check {check.name} failed", failed)
    if errors:
        failed = pc.or_(failed, _rows_mask(rows, errors))
        messages = pc.coalesce(_sparse_messages(rows, errors, f"{label} raised: "), messages)
    return failed, messages


def validate_batch(
    batch: pa.RecordBatch, rules: dict[str, ColumnRules], checks: list[RowCheck] | None = None
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(valid mask, first failing rule per row, all failure messages per row).

    Evaluates the column rules and the row checks of one batch; uniqueness needs the whole
    input and is done by :class:`Validate` (see :func:`duplicate_mask`). Pure and
    vectorized: usable without Beam, e.g. in tests or notebooks.
    """
    rows = batch.num_rows
    valid = pa.array(np.ones(rows, dtype=bool))
    first_rule = pa.nulls(rows, pa.string())
    messages: list[pa.Array] = []

    def record(rule: str, failed: pa.Array, message: pa.Array) -> None:
        nonlocal valid, first_rule
        valid = pc.and_(valid, pc.invert(failed))
        first_rule = pc.if_else(pc.and_(failed, pc.is_null(first_rule)), pa.scalar(f"validate.{rule}"), first_rule)
        messages.append(message)

    for name, column_rules in rules.items():
        index = batch.schema.get_field_index(name)
        column = batch.column(index) if index >= 0 else pa.nulls(rows, pa.string())
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        for rule, param in column_rules.row_rules():
            fn, template = RULES[rule]
            failed = fn(column, param)
            shown = _format_label(param) if rule == "format" else param
            record(rule, failed, _messages(column, name, template, shown, failed))
    for check in checks or []:
        if check.unique is not None:
            continue
        failed, message = _check_mask(check, batch)
        record(check.name, failed, message)
    return valid, first_rule, _join_messages(messages, rows)


class _ValidateFn:
    def __init__(self, step: str, rules: dict[str, ColumnRules], on_error: str, checks: list[RowCheck] | None = None):
        self.step = step
        self.rules = rules
        self.on_error = on_error
        self.checks = list(checks or [])

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        valid, first_rule, messages = validate_batch(batch, self.rules, self.checks)
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


# --------------------------------------------------------------------------- uniqueness


def _order_keys(order_by: list[str]) -> list[tuple[str, str]]:
    keys = []
    for item in order_by:
        match = _ORDER_ITEM.match(item)
        direction = (match.group("direction") or "ASC").upper()
        keys.append((match.group("column"), "descending" if direction == "DESC" else "ascending"))
    return keys


def _same_as_previous(table: pa.Table | pa.RecordBatch, keys: list[str]) -> np.ndarray:
    """Row i has the same (non-null) key as row i-1."""
    rows = table.num_rows
    same = np.ones(max(rows - 1, 0), dtype=bool)
    for key in keys:
        column = table.column(key)
        equal = pc.fill_null(pc.equal(column.slice(1), column.slice(0, rows - 1)), False)
        same &= equal.to_numpy(zero_copy_only=False) if isinstance(equal, pa.Array) else equal.to_numpy()
    return np.concatenate([[False], same]) if rows else np.zeros(0, dtype=bool)


def duplicate_mask(table: pa.Table | pa.RecordBatch, keys: list[str], order_by: list[str] | None = None) -> pa.Array:
    """True for every row whose key an earlier row already has (the first one is kept).

    "Earlier" is deterministic whatever the row order: rows of one key are ordered by
    ``order_by`` (``"col"``, ``"col DESC"``), then by the row's JSON text. Keys with a NULL
    never conflict.

    Example:
        >>> t = pa.table({"id": [2, 1, 2, None, None], "v": ["b", "a", "a", "x", "x"]})
        >>> duplicate_mask(t, ["id"]).to_pylist()
        [True, False, False, False, False]
    """
    rows = table.num_rows
    if rows < 2 or any(key not in table.schema.names for key in keys):
        return pa.array(np.zeros(rows, dtype=bool))
    sort_keys = [(key, "ascending", "at_end") for key in keys]
    order = pc.sort_indices(table.select(keys), sort_keys=sort_keys).to_numpy()
    same = _same_as_previous(table.select(keys).take(pa.array(order)), keys)
    in_group = same | np.concatenate([same[1:], [False]])
    candidates = order[in_group]
    dup = np.zeros(rows, dtype=bool)
    if len(candidates) == 0:
        return pa.array(dup)
    subset = table.take(pa.array(candidates))
    # Ties inside a key are broken by the row's content, so the kept row does not depend on
    # batch arrival order. rows_as_json is per row, but only over rows whose key repeats.
    tiebreak = "__beam_etl_row_json"
    ordered = pa.table(
        {**{f"k{i}": subset.column(key) for i, key in enumerate(keys)},
         **{f"o{i}": subset.column(column) for i, (column, _) in enumerate(_order_keys(order_by or []))},
         tiebreak: rows_as_json(subset if isinstance(subset, pa.RecordBatch) else subset.combine_chunks().to_batches()[0])}
    )
    spec = [(f"k{i}", "ascending", "at_end") for i in range(len(keys))]
    spec += [(f"o{i}", direction, "at_end") for i, (_, direction) in enumerate(_order_keys(order_by or []))]
    spec.append((tiebreak, "ascending", "at_end"))
    within = pc.sort_indices(ordered, sort_keys=spec).to_numpy()
    later = _same_as_previous(ordered.take(pa.array(within)), [f"k{i}" for i in range(len(keys))])
    dup[candidates[within[later]]] = True
    return pa.array(dup)


class _ShardByKeyFn(beam.DoFn):
    def __init__(self, keys: list[str], shards: int):
        self._keys = keys
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        from beam_etl.transforms.join import shard_by_keys

        if batch.num_rows == 0:
            return
        if any(key not in batch.schema.names for key in self._keys):
            yield 0, batch  # a missing key column is NULL: such rows never conflict
            return
        yield from shard_by_keys(batch, self._keys, self._shards)


def _unique_messages(table: pa.RecordBatch, keys: list[str], failed: pa.Array) -> pa.Array:
    label = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    values = _value_text(table.column(keys[0]))
    for key in keys[1:]:
        values = pc.binary_join_element_wise(values, _value_text(table.column(key)), ", ")
    if len(keys) > 1:
        values = pc.binary_join_element_wise("(", values, ")", "")
    message = pc.binary_join_element_wise(f"{label}: ", values, " is not unique (an earlier row has it)", "")
    return pc.if_else(failed, message, pa.scalar(None, pa.string()))


class _UniqueFn(beam.DoFn):
    """One shard of rows (all rows of its keys) -> the first row per key kept, later ones out."""

    def __init__(self, step: str, keys: list[str], rule: str, on_error: str, order_by: list[str], batch_rows: int):
        self._step = step
        self._keys = keys
        self._rule = rule
        self._on_error = on_error
        self._order_by = order_by
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, element):
        _shard, batches = element
        batches = [batch for batch in batches if batch.num_rows]
        if not batches:
            return
        table = concat_batches(batches)
        counters = self._counters
        try:
            dup = duplicate_mask(table, self._keys, self._order_by)
        except Exception as exc:  # keys of a type that cannot be sorted: the shard's rows go to the DLQ
            counters.rows_out.dec(table.num_rows)
            counters.rows_dlq.inc(table.num_rows)
            message = f"{exc} [{traceback.format_exc(limit=1).splitlines()[-1]}]"
            yield TaggedOutput("dlq", dlq_batch(table, step=self._step, error_type=f"validate.{type(exc).__name__}", error_message=message))
            return
        count = pc.sum(pc.cast(dup, pa.int64())).as_py() or 0
        if count and self._on_error == "flag":
            table = self._flag(table, dup)
        elif count:
            messages = _unique_messages(table, self._keys, dup).filter(dup)
            if self._on_error == "fail":
                raise StepFailed(self._step, f"{count} duplicate row(s); first: {messages[0].as_py()}")
            # The first stage counted these rows as passing (rows_out); they leave here.
            counters.rows_out.dec(count)
            if self._on_error == "drop":
                counters.rows_filtered.inc(count)
            else:
                counters.rows_dlq.inc(count)
                yield TaggedOutput("dlq", dlq_batch(table.filter(dup), step=self._step, error_type=f"validate.{self._rule}", error_message=messages))
            table = table.filter(pc.invert(dup))
        yield from split_batch(table, self._batch_rows)

    def _flag(self, table: pa.RecordBatch, dup: pa.Array) -> pa.RecordBatch:
        messages = _unique_messages(table, self._keys, dup)
        errors = _join_messages([table.column("_errors"), messages], table.num_rows)
        valid = pc.and_(table.column("_valid"), pc.invert(dup))
        table = table.set_column(table.schema.get_field_index("_valid"), pa.field("_valid", pa.bool_()), valid)
        return table.set_column(table.schema.get_field_index("_errors"), pa.field("_errors", pa.string()), errors)


class Validate(beam.PTransform):
    """Check rows against column rules and row checks; invalid rows follow ``on_error``.

    With a ``unique`` rule this is a multi-stage transform: per-batch rules first, then per
    unique constraint a shard -> ``GroupByKey`` -> keep-the-first pass over the whole input.

    Args:
        step: the step name (counters and DLQ rows carry it).
        rules: ``{column: {required, nullable, type, min, max, exclusive_min, exclusive_max,
            regex, enum, length, min_length, max_length, format, unique}}``.
        on_error: ``dlq`` (default), ``drop``, ``fail`` or ``flag``.
        checks: row checks: ``{name, expr}``, ``{name, function, mode, args}``, ``{name, unique}``.
        unique_order_by: which duplicate is kept: the first by these columns (``"col DESC"``),
            then by row content.
        shards: hash shards for the uniqueness shuffle.
        batch_rows: maximum rows per output batch after the uniqueness shuffle.

    Example:
        >>> batches | Validate("valid", {"email": {"required": True, "format": "email", "unique": True}},
        ...                    unique_order_by=["updated_at DESC"])  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        rules: dict[str, ColumnRules | dict] | None = None,
        on_error: str = "dlq",
        checks: list[RowCheck | dict] | None = None,
        unique_order_by: list[str] | None = None,
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ):
        super().__init__()
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        spec = ValidateSpec.model_validate(
            {"name": step, "type": "validate", "input": "-", "rules": rules or {}, "on_error": on_error,
             "checks": checks or [], "unique_order_by": unique_order_by or [], "shards": shards}
        )
        self._spec = spec
        self._batch_rows = batch_rows
        self._fn = _ValidateFn(step, spec.rules, spec.on_error, spec.checks)

    def expand(self, pcoll) -> StepOutputs:
        spec = self._spec
        keys = spec.unique_keys()
        if not keys:
            return pcoll | ApplyBatchFn(spec.name, self._fn)
        # Stage 1 counts rows_in and the per-row failures; rows it passes are counted as
        # rows_out there and corrected by the unique stages when they turn out duplicates.
        first = pcoll | "rules" >> ApplyBatchFn(spec.name, self._fn)
        current, dlqs = first.main, [first.dlq]
        for index, (columns, rule) in enumerate(keys):
            label = f"unique{index}_{'_'.join(columns)}"
            result = (
                current
                | f"{label}/shard" >> beam.ParDo(_ShardByKeyFn(columns, spec.shards)).with_output_types(typehints.KV[int, pa.RecordBatch])
                | f"{label}/group" >> beam.GroupByKey()
                | f"{label}/keep_first" >> beam.ParDo(
                    _UniqueFn(spec.name, columns, rule, spec.on_error, spec.unique_order_by, self._batch_rows)
                ).with_outputs("dlq", main="main")
            )
            result.main.element_type = pa.RecordBatch
            result.dlq.element_type = pa.RecordBatch
            current = result.main
            dlqs.append(result.dlq)
        dlq = tuple(dlqs) | "dlq" >> beam.Flatten()
        dlq.element_type = pa.RecordBatch
        return StepOutputs(main=current, dlq=dlq)


@register_step("validate", ValidateSpec)
def build_validate(spec: ValidateSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Validate(
        spec.name, spec.rules, spec.on_error, spec.checks, spec.unique_order_by, spec.shards, ctx.batch_rows
    )
