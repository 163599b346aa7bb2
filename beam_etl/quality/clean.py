"""``clean``: per-column cleaning functions, vectorized with pyarrow.compute.

``ops`` maps a column to a list of cleaning functions applied in order; a function with an
argument is written as a one-key mapping (``{null_if: ["N/A", "-"]}``). Non-string columns
are left alone by string functions. Cleaning never rejects rows; use ``validate`` for that.

Example:
    >>> batches | Clean("clean", {"email": ["trim", "lower"],
    ...                           "name": ["trim", "collapse_spaces", "title"]})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import field_validator

from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepOutputs

__all__ = ["Clean", "CleanSpec", "CLEANERS", "clean_column"]

Cleaner = Callable[[pa.Array, Any], pa.Array]


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _text_only(fn: Callable[[pa.Array], pa.Array]) -> Cleaner:
    return lambda array, _arg=None: fn(array) if _is_text(array) else array


def _null_if(array: pa.Array, values: Any = None) -> pa.Array:
    if values is None:
        values = [""]
    if not isinstance(values, list):
        values = [values]
    candidates = pa.array([str(v) for v in values]) if _is_text(array) else pa.array(values).cast(array.type)
    probe = pc.utf8_trim_whitespace(array) if _is_text(array) else array
    return pc.if_else(pc.is_in(probe, value_set=candidates), pa.scalar(None, array.type), array)


#: cleaning function name -> vectorized implementation (column, argument) -> column.
CLEANERS: dict[str, Cleaner] = {
    "trim": _text_only(pc.utf8_trim_whitespace),
    "collapse_spaces": _text_only(lambda a: pc.replace_substring_regex(a, r"\s+", " ")),
    "lower": _text_only(pc.utf8_lower),
    "upper": _text_only(pc.utf8_upper),
    "title": _text_only(pc.utf8_title),
    "null_if": _null_if,
}


def _op_name_and_arg(op: str | dict[str, Any]) -> tuple[str, Any]:
    if isinstance(op, str):
        return op, None
    ((name, arg),) = op.items()
    return name, arg


def clean_column(array: pa.Array, ops: list[str | dict[str, Any]]) -> pa.Array:
    """Apply cleaning functions in order (usable without Beam)."""
    for op in ops:
        name, arg = _op_name_and_arg(op)
        array = CLEANERS[name](array, arg)
    return array


class CleanSpec(StepModel):
    type: Literal["clean"]
    ops: dict[str, list[str | dict[str, Any]]]

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: dict[str, list]) -> dict[str, list]:
        for column, functions in ops.items():
            for op in functions:
                if isinstance(op, dict) and len(op) != 1:
                    raise ValueError(f"{column}: write a function with an argument as one key, e.g. {{null_if: ['N/A']}}")
                name, _ = _op_name_and_arg(op)
                if name not in CLEANERS:
                    hint = did_you_mean(name, CLEANERS) or f"known: {', '.join(sorted(CLEANERS))}"
                    raise ValueError(f"{column}: unknown cleaning function '{name}' ({hint})")
        return ops

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        return [
            SpecIssue(f"{path}.ops.{name}", f"unknown column '{name}'", did_you_mean(name, schema.names))
            for name in self.ops
            if name not in schema.names
        ]

    def output_schema(self, schemas):
        return schemas[0] if schemas else None


class _CleanFn:
    def __init__(self, ops: dict[str, list]):
        self.ops = ops

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        for name, functions in self.ops.items():
            index = batch.schema.get_field_index(name)
            if index < 0:
                continue
            column = clean_column(batch.column(index), functions)
            batch = batch.set_column(index, pa.field(name, column.type), column)
        return BatchOutcome(out=batch)


class Clean(beam.PTransform):
    """Apply cleaning functions per column.

    Args:
        step: the step name.
        ops: ``{column: [function, {function: argument}, ...]}``; functions: see ``CLEANERS``.
    """

    def __init__(self, step: str, ops: dict[str, list]):
        super().__init__()
        CleanSpec.model_validate({"name": step, "type": "clean", "input": "-", "ops": ops})
        self._step, self._fn = step, _CleanFn(ops)

    def expand(self, pcoll) -> StepOutputs:
        return pcoll | ApplyBatchFn(self._step, self._fn)


@register_step("clean", CleanSpec)
def build_clean(spec: CleanSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Clean(spec.name, spec.ops)
