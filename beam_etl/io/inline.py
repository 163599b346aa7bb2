"""``inline``: rows written in the spec itself — for small lookup tables, examples and tests.

Example spec entry::

    sources:
      countries:
        type: inline
        rows: [{code: US, name: United States}, {code: CA, name: Canada}]
        schema: {code: string, name: string}
"""

from __future__ import annotations

from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.batch import align_to_schema, rows_to_batch, split_batch
from beam_etl.models import SourceModel
from beam_etl.registry import register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["InlineSource", "ReadInline"]


class InlineSource(SourceModel):
    type: Literal["inline"]
    rows: list[dict[str, Any]] = Field(default_factory=list)

    def known_schema(self) -> pa.Schema | None:
        declared = super().known_schema()
        if declared is not None:
            return declared
        return rows_to_batch(self.rows).schema if self.rows else None


class _CountRows(beam.DoFn):
    def __init__(self, name: str):
        self._name = name

    def setup(self):
        self._counters = StepCounters("source", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch):
        self._counters.rows_out.inc(batch.num_rows)
        yield batch


def _typed_batch(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.RecordBatch:
    """Rows in the declared types; text like "2024-01-02" is cast the way Arrow casts it."""
    try:
        return rows_to_batch(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return align_to_schema(rows_to_batch(rows), schema)


class ReadInline(beam.PTransform):
    """Batches from a list of row dicts (kept small: the rows travel inside the graph).

    Example:
        >>> p | ReadInline("countries", [{"code": "US"}])  # doctest: +SKIP
    """

    def __init__(self, name: str, rows: list[dict[str, Any]], schema: pa.Schema | None = None, batch_rows: int = 65_536):
        super().__init__()
        self._name = name
        self._batches = list(split_batch(_typed_batch(rows, schema), batch_rows)) if rows else []

    def expand(self, pbegin) -> StepOutputs:
        batches = (
            pbegin
            | "create" >> beam.Create(self._batches).with_output_types(pa.RecordBatch)
            | "count" >> beam.ParDo(_CountRows(self._name)).with_output_types(pa.RecordBatch)
        )
        return StepOutputs(main=batches)


@register_source("inline", InlineSource)
def build_inline(spec: InlineSource, root, ctx: BuildContext) -> StepOutputs:
    return root | ctx.label() >> ReadInline(ctx.name, spec.rows, spec.known_schema(), spec.batch_rows or ctx.batch_rows)
