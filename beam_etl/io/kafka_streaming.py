"""Kafka in streaming mode: an unbounded splittable DoFn per partition (see :mod:`beam_etl.io.kafka`).

Each partition is one element whose restriction is the offset range ``[start, ∞)``; ``start``
is the group's committed offset (or earliest/latest) planned when the pipeline is built. One
call of the DoFn polls for ``batch_seconds``, claims every record's offset, emits
micro-batches, and checkpoints the rest of the range (``defer_remainder``) so the runner
commits what was read and calls again. The runner may checkpoint a partition but not split
it: a partition is read in order by one consumer.

Watermark (a ``ManualWatermarkEstimator`` per partition, from record timestamps, as Java
KafkaIO's ``CustomTimestampPolicyWithLimitedDelay``):

- it trails the newest record timestamp seen on the partition by ``watermark_delay_seconds``
  (how much older than the newest a record may still arrive without being late);
- a partition that is caught up and has received nothing for ``idle_seconds`` moves it to
  ``now - watermark_delay_seconds``, so windows close on a quiet topic (``idle_seconds:
  null`` keeps it where the data left it: a partition that never receives data then holds
  every window open);
- on runners that keep one watermark estimate per SDF stage (Prism, the DirectRunner's
  default engine, takes the last bundle's), each partition reports the minimum over all
  partitions of the source in the process, so one fast partition cannot make another's
  records late.

Offsets are committed to the consumer group in the bundle-finalization callback
(``DoFn.BundleFinalizerParam``): the runner calls it after it has durably accepted the
bundle's outputs. Delivery is at-least-once: a crash before the commit re-reads from the
last committed offset. The runner, not the sinks, holds those outputs once committed: on
runners with durable state (Dataflow, Flink with checkpoints) they survive a worker crash;
on the DirectRunner/Prism (in memory) rows still waiting in an open window when the
pipeline is stopped or crashes are lost, since their offsets were committed. A failed
commit (broker unreachable) is logged and retried by the next finalization: commits are
cumulative.

Example:
    >>> spec = KafkaSource(type="kafka", bootstrap_servers="localhost:9092", topic="t", group_id="g",
    ...                    streaming=True)  # doctest: +SKIP
    >>> p | ReadFromKafka("events", spec, plan_offsets(spec))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from beam_etl.io.messages import value_decoder
from beam_etl.io.microbatch import MicroBatcher
from beam_etl.models import schema_from_spec
from beam_etl.steps import StepCounters, StepOutputs

__all__ = ["ReadKafkaStream", "PartitionOffsets", "OFFSET_INFINITY", "shared_watermark_runner"]

log = logging.getLogger(__name__)

#: The open end of a partition's offset range (Kafka offsets are int64).
OFFSET_INFINITY = 2**63 - 1

# Runners whose SDF watermark is one estimate per stage (the last bundle's): Prism, and the
# DirectRunner, which runs on Prism here. See shared_watermark_runner.
_STAGE_WATERMARK_RUNNERS = {"", "directrunner", "direct", "prismrunner", "prism", "switchingdirectrunner"}


def shared_watermark_runner(pipeline: beam.Pipeline) -> bool:
    """True when the pipeline runs on Prism (directly or as the DirectRunner's engine)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline.runner
    name = type(runner).__name__ if runner is not None else (pipeline.options.view_as(StandardOptions).runner or "")
    return str(name).lower() in _STAGE_WATERMARK_RUNNERS


class _PartitionWatermarks:
    """Per source and partition, the newest watermark each partition reached in this process.

    Prism keeps one watermark estimate per SDF stage and takes the last bundle's residuals'
    value; with one restriction per partition, a partition that is ahead would make the
    others' records late. Reporting the minimum over every planned partition keeps the
    estimate a lower bound for all of them. Partitions never seen in this process are unknown
    (None): the minimum stays unknown until each partition has reported once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, dict[int, Timestamp | None]] = {}

    def update(self, token: str, partitions: list[int], partition: int, watermark: Timestamp | None) -> Timestamp | None:
        with self._lock:
            known = self._sources.setdefault(token, {p: None for p in partitions})
            if watermark is not None and (known.get(partition) is None or watermark > known[partition]):
                known[partition] = watermark
            values = list(known.values())
        if any(value is None for value in values):
            return None
        return min(values)


_WATERMARKS = _PartitionWatermarks()


class _PartitionTracker(OffsetRestrictionTracker):
    """Offsets of one partition: checkpoints allowed, splits refused (one ordered reader)."""

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        return super().try_split(0)

    def is_bounded(self) -> bool:
        return self.current_restriction().stop < OFFSET_INFINITY


class PartitionOffsets(RestrictionProvider):
    """Restriction ``[start, ∞)`` for ``{"partition": p, "start": offset}`` elements."""

    def initial_restriction(self, element: dict[str, int]) -> OffsetRange:
        return OffsetRange(element["start"], OFFSET_INFINITY)

    def create_tracker(self, restriction: OffsetRange) -> _PartitionTracker:
        return _PartitionTracker(restriction)

    def split(self, element, restriction):
        yield restriction  # a partition is never split up front

    def restriction_size(self, element, restriction) -> int:
        return 1  # the backlog is unknown without a broker call; every partition weighs the same

    def truncate(self, element, restriction):
        return None  # on drain: stop reading at once


class _Committer:
    """Commits a partition's next offset to the consumer group; failures wait for the next try."""

    def __init__(self, spec: Any, timeout_ms: int = 10_000):
        self._spec = spec
        self._timeout_ms = timeout_ms
        self._lock = threading.Lock()
        self._consumer = None
        self._committed: dict[int, int] = {}

    def commit(self, partition: int, offset: int) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        from beam_etl.io.kafka import _consumer

        with self._lock:
            if self._committed.get(partition, -1) >= offset:
                return  # finalizations may arrive out of order: never move a commit back
            try:
                if self._consumer is None:
                    self._consumer = _consumer(self._spec)
                tp = TopicPartition(self._spec.topic, partition)
                self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1)}, timeout_ms=self._timeout_ms)
                self._committed[partition] = offset
            except Exception as exc:  # broker away: the next finalization commits a newer offset
                log.warning("Kafka offset commit for %s/%d at %d failed (retried on the next bundle): %s", self._spec.topic, partition, offset, exc)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
                self._consumer = None


class _PartitionReader:
    """One assign-only consumer for one partition, positioned where the restriction starts."""

    def __init__(self, spec: Any, partition: int):
        from kafka import TopicPartition

        from beam_etl.io.kafka import _consumer

        self.tp = TopicPartition(spec.topic, partition)
        settings = {"reconnect_backoff_max_ms": 2000, **spec.consumer_config}
        self.consumer = _consumer(spec.model_copy(update={"consumer_config": settings}), group_id=None)
        self.consumer.assign([self.tp])
        self.next_offset: int | None = None
        self.quiet_since: float | None = None

    def poll(self, start: int, timeout_ms: int, max_records: int):
        if self.next_offset != start:
            self.consumer.seek(self.tp, start)
            self.next_offset = start
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return polled.get(self.tp, [])

    def caught_up(self) -> bool:
        highwater = self.consumer.highwater(self.tp)
        return highwater is None or self.next_offset is None or self.next_offset >= highwater

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _ReadPartitionStreamFn(beam.DoFn):
    """Unbounded read of one partition per element; see the module docstring."""

    def __init__(self, name: str, spec: Any, batch_rows: int, partitions: list[int], shared_watermark: bool, token: str):
        self._name = name
        self._spec = spec
        self._batch_rows = batch_rows
        self._partitions = partitions
        self._shared = shared_watermark
        self._token = token

    def setup(self) -> None:
        self._counters = StepCounters("source", self._name)
        self._decode = value_decoder(self._spec)
        self._schema = schema_from_spec(self._spec.schema_)
        self._readers: dict[int, _PartitionReader] = {}
        self._committer = _Committer(self._spec)
        self._newest: dict[int, Timestamp] = {}

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        for reader in getattr(self, "_readers", {}).values():
            reader.close()
        committer = getattr(self, "_committer", None)
        if committer is not None:
            committer.close()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: dict[str, int],
        finalizer=beam.DoFn.BundleFinalizerParam,  # before the SDF parameters: Beam passes it by position
        tracker=beam.DoFn.RestrictionParam(PartitionOffsets()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[Any]:
        from beam_etl.io.kafka import add_record

        spec = self._spec
        partition = element["partition"]
        reader = self._readers.get(partition)
        if reader is None:
            reader = self._readers[partition] = _PartitionReader(spec, partition)
        source = f"kafka://{spec.topic}/{partition}"
        batcher = MicroBatcher(max_rows=self._batch_rows, max_seconds=float("inf"), schema=self._schema, step=self._name)
        position = tracker.current_restriction().start
        deadline = time.monotonic() + spec.batch_seconds
        last: int | None = None
        stopped = False
        newest = self._newest.get(partition)
        while not stopped and time.monotonic() < deadline:
            remaining_ms = max(10, int((deadline - time.monotonic()) * 1000))
            records = reader.poll(position, min(spec.poll_timeout_ms, remaining_ms), self._batch_rows)
            if records:
                reader.quiet_since = None
            elif reader.quiet_since is None:
                reader.quiet_since = time.monotonic()
            for record in records:
                if not tracker.try_claim(record.offset):
                    stopped = True
                    reader.next_offset = None  # records past the claim were polled: seek next time
                    break
                last = record.offset
                position = reader.next_offset = record.offset + 1
                if record.timestamp is not None and record.timestamp >= 0:
                    stamp = Timestamp(micros=record.timestamp * 1000)
                    newest = stamp if newest is None or stamp > newest else newest
                add_record(batcher, self._decode, record, source, self._name)
                if len(batcher) >= self._batch_rows:
                    yield from self._emit(batcher, batcher.flush(), watermark)
        if newest is not None:
            self._newest[partition] = newest
        yield from self._emit(batcher, batcher.flush(), watermark)
        self._advance(partition, newest, reader, watermark)
        # Every bundle registers a callback, also when it read nothing: Prism asks every bundle of
        # this stage to finalize, and the SDK logs an error for a bundle that registered none.
        committer = self._committer
        finalizer.register((lambda: committer.commit(partition, last + 1)) if last is not None else _nothing)
        if not stopped:
            tracker.defer_remainder()

    def _advance(self, partition: int, newest: Timestamp | None, reader: _PartitionReader, watermark) -> None:
        spec = self._spec
        delay = spec.watermark_delay_seconds
        candidate = newest - delay if newest is not None else None
        idle = spec.idle_seconds
        if idle is not None and reader.quiet_since is not None and time.monotonic() - reader.quiet_since >= idle and reader.caught_up():
            now = Timestamp.now() - delay
            candidate = now if candidate is None or now > candidate else candidate
        if self._shared:
            candidate = _WATERMARKS.update(self._token, self._partitions, partition, candidate)
        current = watermark.current_watermark()
        if candidate is not None and (current is None or candidate > current):
            watermark.set_watermark(candidate)

    def _emit(self, batcher: MicroBatcher, batches, watermark) -> Iterator[Any]:
        current = watermark.current_watermark() or MIN_TIMESTAMP
        for batch in batches:
            self._counters.rows_out.inc(batch.num_rows)
            yield TimestampedValue(batch, _oldest_in(batch, current))
        for dead in batcher.take_dead():
            self._counters.rows_dlq.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput("dlq", TimestampedValue(dead, current))


def _nothing() -> None:
    pass


def _oldest_in(batch: pa.RecordBatch, fallback: Timestamp) -> Timestamp:
    """A batch's element timestamp: its oldest record timestamp.

    Never later than any of its rows, so a step that re-stamps rows by event time (window_into)
    outputs nothing earlier than its input, and downstream watermarks stay held until the rows
    are through. A batch older than the watermark is late as a whole, as its oldest row is.
    """
    if "_timestamp" not in batch.schema.names:
        return fallback
    oldest = pc.min(batch.column("_timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())).as_py()
    return Timestamp(micros=oldest) if oldest is not None else fallback


class ReadKafkaStream(beam.PTransform):
    """Unbounded read of the partitions in ``plan`` (``[{partition, start}, ...]``), one SDF element each.

    Used by :class:`beam_etl.io.kafka.ReadFromKafka` when the source streams; see the module
    docstring for the watermark and the delivery guarantee.

    Args:
        name: the source name (counters, DLQ rows).
        spec: the :class:`~beam_etl.io.kafka.KafkaSource`.
        plan: start offsets per partition (:func:`~beam_etl.io.kafka.plan_offsets`; ``end`` is ignored).
        batch_rows: maximum rows per emitted batch.
        shared_watermark: report the minimum watermark over all partitions (Prism); None = decide
            from the pipeline's runner.

    Example:
        >>> p | ReadKafkaStream("events", spec, plan_offsets(spec))  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: Any, plan: list[dict[str, int]], batch_rows: int = 10_000, shared_watermark: bool | None = None):
        super().__init__()
        if not plan:
            raise ValueError(f"source '{name}': no partitions to read (plan is empty)")
        self._name, self._spec, self._batch_rows = name, spec, spec.batch_rows or batch_rows
        self._plan = [{"partition": int(p["partition"]), "start": int(p["start"])} for p in plan]
        self._shared = shared_watermark

    def expand(self, pbegin) -> StepOutputs:
        shared = shared_watermark_runner(pbegin.pipeline) if self._shared is None else self._shared
        fn = _ReadPartitionStreamFn(
            self._name, self._spec, self._batch_rows, [p["partition"] for p in self._plan], shared, uuid.uuid4().hex
        )
        results = (
            pbegin
            | "partitions" >> beam.Create(self._plan)
            | "read" >> beam.ParDo(fn).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)
