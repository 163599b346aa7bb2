"""Spec -> Beam graph: sources, steps and sinks wired by name, every DLQ output flattened
into the DLQ sink, and the run summary that balances each step's counters.

Example:
    >>> import apache_beam as beam
    >>> from beam_etl.spec import load_spec
    >>> spec = load_spec("pipeline.yaml")  # doctest: +SKIP
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     graph = build_graph(p, spec, job_id="run-1")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.pvalue import PCollection

from beam_etl import registry
from beam_etl.batch import DEFAULT_BATCH_ROWS
from beam_etl.dlq import DLQ_SCHEMA, with_job_id
from beam_etl.models import SinkModel
from beam_etl.spec import PipelineSpec
from beam_etl.steps import COUNTERS, BuildContext, RunLifecycle, StepOutputs, metrics_namespace

__all__ = ["BuiltGraph", "build_graph", "summarize", "DLQ_NAME"]

DLQ_NAME = "dlq"
_DLQ_REASONS = "beam_etl.dlq_reasons"


@dataclass
class BuiltGraph:
    """What the builder made: the outputs by name and the entries to summarise, in order."""

    outputs: dict[str, PCollection]
    entries: list[tuple[str, str, str]]  # (kind, name, type)
    reshaping: set[str] = field(default_factory=set)  # steps balanced on rows_merged
    lifecycle: RunLifecycle = field(default_factory=RunLifecycle)
    dlq: PCollection | tuple[PCollection, ...] | None = None  # what the DLQ sink was given
    written: dict[str, Any] = field(default_factory=dict)


class _FillJobIdAndCount(beam.DoFn):
    """Stamp the run id into DLQ rows and count them per (step, error_type) for the summary."""

    def __init__(self, job_id: str):
        self._job_id = job_id

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        batch = with_job_id(batch, self._job_id)
        keys = pc.binary_join_element_wise(
            pc.fill_null(batch.column("step"), "?"), pc.fill_null(batch.column("error_type"), "?"), "|"
        )
        counts = pc.value_counts(keys)
        for item in counts.to_pylist():  # one call per distinct reason, not per row
            Metrics.counter(_DLQ_REASONS, item["values"]).inc(item["counts"])
        yield batch


def build_graph(
    pipeline: beam.Pipeline,
    spec: PipelineSpec,
    *,
    job_id: str = "local",
    output_dir: str = ".",
    progress_tap: beam.DoFn | None = None,
    state_url: str | None = None,
) -> BuiltGraph:
    """Add the spec's sources, steps, sinks and DLQ to ``pipeline``.

    Args:
        pipeline: the Beam pipeline to extend.
        spec: a validated spec from :func:`beam_etl.spec.load_spec`.
        job_id: the run id written into DLQ rows.
        output_dir: the directory relative sink and DLQ paths resolve against.
        progress_tap: an optional DoFn applied to every source's batches (progress display).
    """
    registry.load_plugins()
    batch_rows = spec.batch_rows or DEFAULT_BATCH_ROWS
    outputs: dict[str, PCollection] = {}
    dlqs: list[PCollection] = []
    entries: list[tuple[str, str, str]] = []
    reshaping: set[str] = set()
    lifecycle = RunLifecycle()
    lifecycle.scratch_dir = os.path.join(output_dir, "_beam_etl_scratch", job_id)

    def context(kind: str, name: str, path: str, input_schemas=()) -> BuildContext:
        return BuildContext(
            name=name,
            path=path,
            kind=kind,
            job_id=job_id,
            batch_rows=batch_rows,
            spec_dir=spec.base_dir,
            output_dir=output_dir,
            input_schemas=list(input_schemas),
            lifecycle=lifecycle,
            pipeline_name=spec.name,
            state_url=state_url,
        )

    def collect(name: str, result: StepOutputs | PCollection | None) -> None:
        if result is None:
            return
        if isinstance(result, PCollection):
            outputs[name] = result
            return
        outputs[name] = result.main
        if result.dlq is not None:
            dlqs.append(result.dlq)
        for side, pcoll in result.side.items():
            outputs[f"{name}.{side}"] = pcoll

    for name, source in spec.sources.items():
        entry = registry.SOURCES[source.type]
        ctx = context("source", name, f"sources.{name}")
        collect(name, entry.build(source, pipeline, ctx))
        if progress_tap is not None:
            outputs[name] = outputs[name] | f"progress:{name}" >> beam.ParDo(progress_tap).with_output_types(pa.RecordBatch)
        entries.append(("source", name, source.type))

    for index, step in enumerate(spec.steps):
        entry = registry.STEPS[step.type]
        inputs = [outputs[ref] for ref in step.inputs()]
        schemas = [spec.schemas.get(ref.split(".")[0]) for ref in step.inputs()]
        ctx = context("step", step.name, f"steps[{index}]", schemas)
        collect(step.name, entry.build(step, inputs, ctx))
        entries.append(("step", step.name, step.type))
        if step.reshapes:
            reshaping.add(step.name)

    written: dict[str, Any] = {}
    for name, sink in spec.sinks.items():
        entry = registry.SINKS[sink.type]
        ctx = context("sink", name, f"sinks.{name}")
        result = entry.build(sink, outputs[sink.input], ctx)
        if isinstance(result, StepOutputs):
            written[name] = result.main
            if result.dlq is not None:
                dlqs.append(result.dlq)
        else:
            written[name] = result
        entries.append(("sink", name, sink.type))

    dlq = None
    if dlqs:
        stamped = tuple(
            _globally_windowed(pcoll, index)
            | f"dlq:stamp:{index}" >> beam.ParDo(_FillJobIdAndCount(job_id)).with_output_types(pa.RecordBatch)
            for index, pcoll in enumerate(dlqs)
        )
        dlq_sink = _dlq_sink_model(spec)
        # A Flatten of inputs made in different stages is held in memory whole by Beam's
        # in-process runner ("sink_flattens" materialises it): every DLQ row of the run, then
        # decoded at once. A sink that takes many inputs writes each where it is made.
        if dlq_sink.accepts_many_inputs or len(stamped) == 1:
            dlq = stamped if len(stamped) > 1 else stamped[0]
        else:
            dlq = stamped | "dlq:flatten" >> beam.Flatten().with_output_types(pa.RecordBatch)
        entry = registry.SINKS[dlq_sink.type]
        ctx = context("sink", DLQ_NAME, "dlq")
        written[DLQ_NAME] = entry.build(dlq_sink, dlq, ctx)
        entries.append(("sink", DLQ_NAME, dlq_sink.type))
    return BuiltGraph(outputs=outputs, entries=entries, dlq=dlq, written=written, reshaping=reshaping, lifecycle=lifecycle)


def _globally_windowed(pcoll: PCollection, index: int) -> PCollection:
    """DLQ rows from after a ``window_into`` leave their window: one DLQ, one (global) windowing.

    Flatten needs inputs of one windowing (Prism fails on a mix of interval and global windows).
    """
    from apache_beam.transforms.window import GlobalWindows

    if isinstance(pcoll.windowing.windowfn, GlobalWindows):
        return pcoll
    return pcoll | f"dlq:unwindow:{index}" >> beam.WindowInto(GlobalWindows()).with_output_types(pa.RecordBatch)


def _dlq_sink_model(spec: PipelineSpec) -> SinkModel:
    entry = registry.SINKS[spec.dlq.type]
    fields = {"type": spec.dlq.type, "input": DLQ_NAME}
    if spec.dlq.type == "kafka":
        fields.update(bootstrap_servers=spec.dlq.bootstrap_servers, topic=spec.dlq.topic)
    else:
        fields["path"] = spec.dlq.path
    return entry.model.model_validate(fields)


# --------------------------------------------------------------------------- run summary


def summarize(result: Any, graph: BuiltGraph) -> dict[str, Any]:
    """Per-entry counters from the finished run, each step's balance, and DLQ reasons.

    A step balances when ``rows_in == rows_out + rows_dlq + rows_filtered``; a reshaping step
    (aggregate, join, ...) when ``rows_in == rows_merged + rows_dlq + rows_filtered``. Sources
    have no input counter of their own: rows seen = rows read + rows rejected while parsing.
    """
    counters: dict[tuple[str, str], int] = {}
    reasons: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter())
    for counter in query["counters"]:
        namespace, name = counter.key.metric.namespace, counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        if namespace == _DLQ_REASONS:
            reasons[name] = reasons.get(name, 0) + int(value or 0)
        else:
            counters[(namespace, name)] = counters.get((namespace, name), 0) + int(value or 0)

    rows = []
    for kind, name, type_name in graph.entries:
        namespace = metrics_namespace(kind, name)
        values = {counter: counters.get((namespace, counter), 0) for counter in COUNTERS}
        if kind == "source":
            values["rows_in"] = values["rows_out"] + values["rows_dlq"] + values["rows_filtered"]
        kept = values["rows_merged"] if name in graph.reshaping and kind == "step" else values["rows_out"]
        balanced = values["rows_in"] == kept + values["rows_dlq"] + values["rows_filtered"]
        if name not in graph.reshaping:
            values.pop("rows_merged")
        rows.append({"kind": kind, "name": name, "type": type_name, **values, "balanced": balanced})
    dlq_reasons = [
        {"step": key.split("|", 1)[0], "error_type": key.split("|", 1)[1], "rows": count}
        for key, count in sorted(reasons.items())
    ]
    return {
        "steps": rows,
        "balanced": all(row["balanced"] for row in rows),
        "dlq_rows": sum(item["rows"] for item in dlq_reasons),
        "dlq_reasons": dlq_reasons,
    }
