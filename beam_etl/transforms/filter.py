"""``filter``: keep rows matching a SQL ``where`` or a structured AND/OR/NOT condition.

Rows the condition rejects (false or NULL, as in SQL) are counted as ``rows_filtered``
and, with ``keep_filtered: true``, written to the side output ``<step>.filtered`` that
sinks and later steps can read. Rows whose condition cannot be evaluated (a bad cast,
division by zero) go to the DLQ.

Example:
    >>> batches | Filter("kept", "country IN ('US', 'CA') AND NOT is_test")  # doctest: +SKIP
    >>> batches | Filter("adults", {"and": [{"column": "age", "op": "gte", "value": 18},
    ...                                     {"not": {"column": "email", "op": "is_null"}}]})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batch import row_mask
from beam_etl.dlq import dlq_batch
from beam_etl.errors import ExpressionError, SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.steps import BatchStep, BatchOutcome, BuildContext, StepOutputs

__all__ = ["Filter", "FilterSpec", "filter_batch_by"]


class FilterSpec(StepModel):
    type: Literal["filter"]
    where: str | dict[str, Any]
    keep_filtered: bool = False
    on_error: Literal["dlq", "fail", "drop"] = "dlq"

    def side_outputs(self) -> list[str]:
        return ["filtered"] if self.keep_filtered else []

    def check(self, schemas, path):
        from beam_etl.expressions import compile_condition

        try:
            condition = compile_condition(self.where)
            if schemas and schemas[0] is not None:
                condition.check(schemas[0])
        except ExpressionError as exc:
            return [SpecIssue(f"{path}.where", exc.message, exc.hint)]
        return []

    def output_schema(self, schemas):
        return schemas[0] if schemas else None


class _FilterFn:
    def __init__(self, step: str, where: str | dict, on_error: str):
        self.step = step
        self.where = where
        self.on_error = on_error
        self._condition = None

    def __getstate__(self):
        return {**self.__dict__, "_condition": None}

    def __call__(self, batch: pa.RecordBatch) -> BatchOutcome:
        if self._condition is None:
            from beam_etl.expressions import compile_condition

            self._condition = compile_condition(self.where)
        return filter_batch_by(self._condition, batch, self.step, self.on_error)


def filter_batch_by(condition, batch: pa.RecordBatch, step: str = "filter", on_error: str = "dlq") -> BatchOutcome:
    """Split ``batch`` by a compiled condition: kept rows, filtered rows, DLQ rows."""
    values, errors = condition.evaluate_with_errors(batch)
    keep = pc.fill_null(values, False)
    dlq = None
    if errors:
        failed = row_mask(batch.num_rows, sorted(errors))
        keep = pc.and_(keep, pc.invert(failed))
        if on_error == "fail":
            from beam_etl.errors import StepFailed

            first = min(errors)
            raise StepFailed(step, f"row {first}: {errors[first]}")
        if on_error == "dlq":
            dlq = dlq_batch(
                batch.filter(failed),
                step=step,
                error_type="filter.expression",
                error_message=[errors[i] for i in sorted(errors)],
            )
        rejected = pc.and_(pc.invert(keep), pc.invert(failed)) if on_error == "dlq" else pc.invert(keep)
    else:
        rejected = pc.invert(keep)
    return BatchOutcome(out=batch.filter(keep), dlq=dlq, filtered=batch.filter(rejected))


class Filter(BatchStep):
    """Keep the rows where ``where`` is true.

    Args:
        step: the step name (counters and DLQ rows carry it).
        where: a SQL boolean expression, or a structured condition
            (``{and: [...]}``, ``{or: [...]}``, ``{not: ...}``, leaves ``{column, op, value}``).
        keep_filtered: also emit rejected rows on ``side['filtered']``.
        on_error: rows whose condition fails to evaluate: ``dlq`` (default), ``drop`` or ``fail``.
    """

    def __init__(self, step: str, where: str | dict, keep_filtered: bool = False, on_error: str = "dlq"):
        super().__init__()
        from beam_etl.expressions import compile_condition

        compile_condition(where)  # raise ExpressionError now, not on a worker
        self._step = step
        self._fn = _FilterFn(step, where, on_error)
        self._keep_filtered = keep_filtered



@register_step("filter", FilterSpec)
def build_filter(spec: FilterSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> Filter(spec.name, spec.where, spec.keep_filtered, spec.on_error)
