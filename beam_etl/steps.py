"""What every builder gets and returns, and the one DoFn that runs a vectorized step.

Most steps are a function ``RecordBatch -> BatchOutcome`` (rows kept, rows to the DLQ,
rows filtered). :class:`ApplyBatchFn` turns such a function into a PTransform with a
main output, a ``dlq`` output and a ``filtered`` output, and keeps the per-step
counters (``rows_in``, ``rows_out``, ``rows_dlq``, ``rows_filtered``) that the run
summary balances.

Example:
    >>> import apache_beam as beam, pyarrow as pa, pyarrow.compute as pc
    >>> def keep_positive(batch):
    ...     mask = pc.greater(batch.column("x"), 0)
    ...     return BatchOutcome(out=batch.filter(mask), filtered=batch.filter(pc.invert(mask)))
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     result = (p | beam.Create([pa.RecordBatch.from_pydict({"x": [1, -1]})])
    ...                 | ApplyBatchFn("positive", keep_positive))
    ...     result.main  # batches with x > 0
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection, TaggedOutput

from beam_etl import batch as _batch  # noqa: F401  (registers the ArrowBatchCoder)
from beam_etl.casting import DATA_ERRORS, isolate_row_errors
from beam_etl.dlq import dlq_batch
from beam_etl.errors import StepFailed

__all__ = [
    "COUNTERS",
    "BuildContext",
    "StepOutputs",
    "BatchOutcome",
    "ApplyBatchFn",
    "BatchStep",
    "StepCounters",
    "metrics_namespace",
    "route_errors",
    "RunLifecycle",
    "isolate_row_errors",
    "DATA_ERRORS",
]

COUNTERS = ("rows_in", "rows_out", "rows_dlq", "rows_filtered", "rows_merged")


def metrics_namespace(kind: str, name: str) -> str:
    """The Beam metrics namespace of one source/step/sink (read back by the run summary)."""
    return f"beam_etl.{kind}.{name}"


class StepCounters:
    """The four counters of one step, created lazily inside a worker."""

    def __init__(self, kind: str, name: str):
        namespace = metrics_namespace(kind, name)
        self.rows_in = Metrics.counter(namespace, "rows_in")
        self.rows_out = Metrics.counter(namespace, "rows_out")
        self.rows_dlq = Metrics.counter(namespace, "rows_dlq")
        self.rows_filtered = Metrics.counter(namespace, "rows_filtered")
        # Reshaping steps only: input rows absorbed into output rows (see StepModel.reshapes).
        self.rows_merged = Metrics.counter(namespace, "rows_merged")

    def announce(self) -> None:
        """Report every counter (as 0) now; call it from ``start_bundle``.

        Released Prism 2.77 (which Beam's DirectRunner runs on) learns a counter's name in a
        second request the first time a bundle reports its short id, and keeps one pending
        value per id meanwhile: when two bundles report a new id at once, one bundle's count
        is lost and the step no longer balances. Counters that exist from the start of a
        bundle are resolved in its first progress report, which narrows the race on a
        released Prism; the Prism that ``scripts/services/prism.sh`` builds is patched to
        keep every value (``scripts/services/prism/``), and the in-process runner is exact.
        """
        for counter in (self.rows_in, self.rows_out, self.rows_dlq, self.rows_filtered, self.rows_merged):
            counter.inc(0)


@dataclass
class BuildContext:
    """What a builder may know about its place in the pipeline.

    Args:
        name: the step/source/sink name from the spec.
        path: its spec path, e.g. ``steps[2]`` (used in error messages).
        kind: ``source``, ``step`` or ``sink``.
        job_id: the run id, also written into DLQ rows.
        batch_rows: target rows per batch for sources.
        spec_dir: directory that relative input paths are resolved against.
        output_dir: directory that relative sink paths are resolved against.
    """

    name: str
    path: str
    kind: str = "step"
    job_id: str = "local"
    batch_rows: int = _batch.DEFAULT_BATCH_ROWS
    spec_dir: str = "."
    output_dir: str = "."
    input_schemas: list[pa.Schema | None] = field(default_factory=list)
    lifecycle: "RunLifecycle | None" = None
    pipeline_name: str = ""
    state_url: str | None = None

    def label(self, suffix: str = "") -> str:
        """A unique, readable Beam transform label for this entry."""
        base = f"{self.kind}:{self.name}"
        return f"{base}/{suffix}" if suffix else base

    def resolve_input(self, path: str) -> str:
        return _resolve(path, self.spec_dir)

    def resolve_output(self, path: str) -> str:
        return _resolve(path, self.output_dir)


def _resolve(path: str, base: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path)) + (os.sep if path.endswith(("/", os.sep)) else "")


class RunLifecycle:
    """Driver-side hooks that run after the whole pipeline: acknowledge only after sinks commit.

    Sources whose position must advance only when every sink has committed (broker offsets,
    queue acks, incremental watermarks) register ``on_success`` (commit/ack/advance) and
    ``on_failure`` (requeue/leave as is). The runner calls them once the pipeline has
    finished: ``on_success`` only if the run succeeded and balanced.

    Example:
        >>> life = RunLifecycle()
        >>> life.on_success(lambda: print("watermark advanced"))
        >>> life.finish(succeeded=True)
        watermark advanced
    """

    def __init__(self) -> None:
        self._success: list[Callable[[], None]] = []
        self._failure: list[Callable[[], None]] = []
        self.scratch_dir: str | None = None  # where workers leave results for the hooks

    def on_success(self, hook: Callable[[], None]) -> None:
        self._success.append(hook)

    def on_failure(self, hook: Callable[[], None]) -> None:
        self._failure.append(hook)

    def finish(self, succeeded: bool) -> None:
        errors = []
        for hook in self._success if succeeded else self._failure:
            try:
                hook()
            except Exception as exc:  # every hook runs; the first error is reported
                errors.append(exc)
        if errors:
            raise errors[0]


@dataclass
class StepOutputs:
    """A builder's result: the main output, the DLQ output, and named side outputs."""

    main: PCollection
    dlq: PCollection | None = None
    side: dict[str, PCollection] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    """What a vectorized step made of one input batch.

    ``out`` rows continue; ``dlq`` rows are already DLQ-shaped (see ``beam_etl.dlq``);
    ``filtered`` rows were removed on purpose (counted, optionally written to a side output).
    ``filtered_count`` may be given instead of ``filtered`` when the rows are not needed.
    """

    out: pa.RecordBatch | None
    dlq: pa.RecordBatch | None = None
    filtered: pa.RecordBatch | None = None
    filtered_count: int | None = None
    merged: int = 0  # reshaping steps: input rows absorbed into ``out`` (see StepModel.reshapes)


def route_errors(
    step: str, on_error: str, bad_rows: pa.RecordBatch, error_type: str, messages
) -> tuple[pa.RecordBatch | None, int]:
    """Apply a step's ``on_error`` policy to rows that failed.

    Returns (dlq batch or None, rows dropped). ``fail`` raises :class:`StepFailed` naming the
    first message; ``drop`` counts the rows as filtered; ``dlq`` routes them with reasons.
    """
    if bad_rows.num_rows == 0:
        return None, 0
    if on_error == "fail":
        first = messages if isinstance(messages, str) else list(messages)[0]
        raise StepFailed(step, f"{bad_rows.num_rows} row(s) failed {error_type}: {first}")
    if on_error == "drop":
        return None, bad_rows.num_rows
    return dlq_batch(bad_rows, step=step, error_type=error_type, error_message=messages), 0


class _ApplyBatchDoFn(beam.DoFn):
    def __init__(self, kind: str, name: str, fn: Callable[[pa.RecordBatch], BatchOutcome], keep_filtered: bool):
        self._kind = kind
        self._name = name
        self._fn = fn
        self._keep_filtered = keep_filtered

    def setup(self) -> None:
        self._counters = StepCounters(self._kind, self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch) -> Iterable:
        counters = self._counters
        counters.rows_in.inc(batch.num_rows)
        try:
            outcome = self._fn(batch)
        except StepFailed:
            raise
        except Exception as exc:  # a bug or unexpected input: the whole batch goes to the DLQ
            counters.rows_dlq.inc(batch.num_rows)
            yield TaggedOutput(
                "dlq",
                dlq_batch(
                    batch,
                    step=self._name,
                    error_type=f"exception.{type(exc).__name__}",
                    error_message=f"{exc} [{traceback.format_exc(limit=1).splitlines()[-1]}]",
                ),
            )
            return
        if outcome.merged:
            counters.rows_merged.inc(outcome.merged)
        if outcome.out is not None and outcome.out.num_rows:
            counters.rows_out.inc(outcome.out.num_rows)
            yield outcome.out
        if outcome.dlq is not None and outcome.dlq.num_rows:
            counters.rows_dlq.inc(outcome.dlq.num_rows)
            yield TaggedOutput("dlq", outcome.dlq)
        filtered = outcome.filtered_count
        if filtered is None:
            filtered = outcome.filtered.num_rows if outcome.filtered is not None else 0
        if filtered:
            counters.rows_filtered.inc(filtered)
            if self._keep_filtered and outcome.filtered is not None:
                yield TaggedOutput("filtered", outcome.filtered)


class ApplyBatchFn(beam.PTransform):
    """Run a vectorized ``RecordBatch -> BatchOutcome`` function as a counted step.

    Args:
        name: the step name (counters and DLQ rows carry it).
        fn: the per-batch function; it must be picklable (a module-level function or
            a small object), and must not keep state between batches.
        keep_filtered: also emit filtered rows on the ``filtered`` output.
        kind: counter namespace kind (``step`` unless used for a source or sink).

    Returns a :class:`StepOutputs` (``main``, ``dlq``, ``side['filtered']``).
    """

    def __init__(self, name: str, fn: Callable[[pa.RecordBatch], BatchOutcome], keep_filtered: bool = False, kind: str = "step"):
        super().__init__()
        if not callable(fn):
            raise ValueError(f"ApplyBatchFn needs a callable, got {fn!r}")
        self._name = name
        self._fn = fn
        self._keep_filtered = keep_filtered
        self._kind = kind

    def expand(self, pcoll: PCollection) -> StepOutputs:
        results = pcoll | beam.ParDo(
            _ApplyBatchDoFn(self._kind, self._name, self._fn, self._keep_filtered)
        ).with_outputs("dlq", "filtered", main="main")
        for tag in ("main", "dlq", "filtered"):
            results[tag].element_type = pa.RecordBatch
        side = {"filtered": results.filtered} if self._keep_filtered else {}
        return StepOutputs(main=results.main, dlq=results.dlq, side=side)


class BatchStep(beam.PTransform):
    """Base of the public per-batch step PTransforms (Select, Derive, Filter, Clean, ...).

    A subclass validates its arguments in ``__init__`` and sets ``_step`` (the step name) and
    ``_fn`` (a picklable ``RecordBatch -> BatchOutcome``); ``_keep_filtered`` adds the
    ``filtered`` side output. ``expand`` runs ``_fn`` through :class:`ApplyBatchFn`.
    """

    _keep_filtered = False

    def expand(self, pcoll: PCollection) -> StepOutputs:
        return pcoll | ApplyBatchFn(self._step, self._fn, keep_filtered=self._keep_filtered)
