"""Kafka source and sink in pure Python (kafka-python): no Java expansion service needed.

Source, two modes. ``streaming: true`` (or unset in a pipeline run with ``--streaming``) reads
each partition without end, as a splittable DoFn with a watermark from record timestamps
and offsets committed when the runner finalizes each bundle — see
:mod:`beam_etl.io.kafka_streaming`. Otherwise the read is bounded:

Source (bounded): at graph-build time the driver reads each partition's committed offset
for ``group_id`` (or the earliest) and its end offset; workers read the ranges
``[start, end)`` in parallel, one range per partition. The group's offsets are committed
to ``end`` only after the run succeeded and every sink committed — at-least-once: a failed
run re-reads the same messages. Values are decoded as json, avro, csv or raw; key,
headers, partition, offset and timestamp are kept as ``_key``, ``_headers``,
``_partition``, ``_offset``, ``_timestamp``. Undecodable values go to the DLQ.

Sink: an idempotent producer (``acks=all``, ``enable_idempotence``), the key from a
column, json or avro values; messages that fail delivery go to the DLQ.

Example spec::

    sources:
      orders: {type: kafka, bootstrap_servers: "localhost:9092", topic: orders, group_id: etl}
      clicks: {type: kafka, bootstrap_servers: "localhost:9092", topic: clicks, group_id: etl,
               streaming: true, watermark_delay_seconds: 5, idle_seconds: 30}
    sinks:
      out: {type: kafka, input: valid, bootstrap_servers: "localhost:9092", topic: orders_clean, key: id}
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SourceError
from beam_etl.io.messages import DecodeError, MessageFormat, value_decoder, value_encoder
from beam_etl.io.microbatch import MicroBatcher
from beam_etl.models import SinkModel, SourceModel, schema_from_spec
from beam_etl.registry import register_sink, register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["KafkaSource", "KafkaSink", "ReadFromKafka", "WriteToKafka", "plan_offsets", "add_record"]


class KafkaSource(SourceModel, MessageFormat):
    type: Literal["kafka"]
    bootstrap_servers: str
    topic: str
    group_id: str
    start: Literal["committed", "earliest", "latest"] = "committed"
    poll_timeout_ms: int = Field(default=1000, ge=10)
    consumer_config: dict[str, Any] = Field(default_factory=dict)
    streaming: bool | None = Field(
        default=None, description="read without end (unbounded); default: when the pipeline runs with --streaming"
    )
    batch_seconds: float = Field(default=1.0, gt=0, description="streaming: how long one read collects before it emits and checkpoints")
    watermark_delay_seconds: float = Field(
        default=0.0, ge=0, description="streaming: the watermark trails the newest record timestamp by this much"
    )
    idle_seconds: float | None = Field(
        default=10.0, gt=0, description="streaming: a caught-up partition quiet this long moves its watermark to now; null: never"
    )

    def is_streaming(self, pipeline: Any = None) -> bool:
        """``streaming`` if set, else whether ``pipeline`` runs with ``--streaming``."""
        if self.streaming is not None:
            return self.streaming
        if pipeline is None:
            return False
        from apache_beam.options.pipeline_options import StandardOptions

        return bool(pipeline.options.view_as(StandardOptions).streaming)


class KafkaSink(SinkModel, MessageFormat):
    type: Literal["kafka"]
    bootstrap_servers: str
    topic: str
    key: str | None = None
    producer_config: dict[str, Any] = Field(default_factory=dict)


def _consumer(spec: KafkaSource, **extra):
    from kafka import KafkaConsumer

    settings = {"group_id": spec.group_id, "enable_auto_commit": False, "auto_offset_reset": "earliest", **spec.consumer_config, **extra}
    try:
        return KafkaConsumer(bootstrap_servers=spec.bootstrap_servers, **settings)
    except Exception as exc:
        raise SourceError(f"Kafka at {spec.bootstrap_servers} is not reachable: {exc}") from None


def plan_offsets(spec: KafkaSource) -> list[dict[str, int]]:
    """Per partition: ``{partition, start, end}`` — what this run will read."""
    from kafka import TopicPartition

    consumer = _consumer(spec)
    try:
        partitions = consumer.partitions_for_topic(spec.topic)
        if not partitions:
            raise SourceError(f"Kafka topic '{spec.topic}' does not exist at {spec.bootstrap_servers}")
        tps = [TopicPartition(spec.topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        beginnings = consumer.beginning_offsets(tps)
        plan = []
        for tp in tps:
            if spec.start == "latest":
                start = ends[tp]
            elif spec.start == "earliest":
                start = beginnings[tp]
            else:
                committed = consumer.committed(tp)
                start = committed if committed is not None else beginnings[tp]
            plan.append({"partition": tp.partition, "start": max(start, beginnings[tp]), "end": ends[tp]})
        return plan
    finally:
        consumer.close()


def commit_offsets(spec: KafkaSource, plan: list[dict[str, int]]) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = _consumer(spec)
    try:
        offsets = {TopicPartition(spec.topic, p["partition"]): OffsetAndMetadata(p["end"], "", -1) for p in plan}
        consumer.commit(offsets=offsets)
    finally:
        consumer.close()


def add_record(batcher: MicroBatcher, decode, record, source: str, step: str) -> None:
    """Decode one Kafka record into ``batcher`` with its metadata columns; undecodable -> DLQ.

    Per record by nature (a message is one payload): key, headers and timestamp are Python
    values here, and the batcher builds the Arrow batch.
    """
    try:
        rows = decode(record.value)
    except DecodeError as exc:
        raw = record.value.decode("utf-8", "replace") if isinstance(record.value, bytes) else str(record.value)
        batcher.dead.append(dlq_batch(None, step=step, error_type="kafka.decode", error_message=str(exc), source=f"{source}@{record.offset}", records=[raw]))
        return
    meta = {
        "_key": record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else record.key,
        "_partition": record.partition,
        "_offset": record.offset,
        "_timestamp": dt.datetime.fromtimestamp(record.timestamp / 1000, tz=dt.timezone.utc) if record.timestamp is not None else None,
        "_headers": json.dumps({k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in (record.headers or [])}) if record.headers else None,
    }
    for row in rows:
        batcher.add_record({**row, **meta})


class _ReadPartitionFn(beam.DoFn):
    def __init__(self, name: str, spec: KafkaSource, batch_rows: int):
        self._name, self._spec, self._batch_rows = name, spec, batch_rows

    def setup(self) -> None:
        self._counters = StepCounters("source", self._name)
        self._decode = value_decoder(self._spec)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, part: dict[str, int]):
        from kafka import TopicPartition

        spec = self._spec
        if part["start"] >= part["end"]:
            return
        tp = TopicPartition(spec.topic, part["partition"])
        consumer = _consumer(spec, group_id=None)  # assign-only: no group membership
        batcher = MicroBatcher(max_rows=self._batch_rows, max_seconds=float("inf"), schema=schema_from_spec(spec.schema_), step=self._name)
        source = f"kafka://{spec.topic}/{part['partition']}"
        try:
            consumer.assign([tp])
            consumer.seek(tp, part["start"])
            position = part["start"]
            while position < part["end"]:
                polled = consumer.poll(timeout_ms=spec.poll_timeout_ms, max_records=self._batch_rows)
                for record in polled.get(tp, []):
                    if record.offset >= part["end"]:
                        position = part["end"]
                        break
                    position = record.offset + 1
                    add_record(batcher, self._decode, record, source, self._name)
                    yield from self._emit(batcher, batcher.due())
                if not polled and consumer.position(tp) >= part["end"]:
                    break
            yield from self._emit(batcher, batcher.flush())
        finally:
            consumer.close()

    def _emit(self, batcher: MicroBatcher, batches):
        for batch in batches:
            self._counters.rows_out.inc(batch.num_rows)
            yield batch
        for dead in batcher.take_dead():
            self._counters.rows_dlq.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput("dlq", dead)


class ReadFromKafka(beam.PTransform):
    """Read the offset ranges of ``plan`` (see :func:`plan_offsets`) in parallel, one per partition.

    When the source streams (``spec.streaming``, or unset and the pipeline runs with
    ``--streaming``) each partition is read from its planned start without end
    (:class:`beam_etl.io.kafka_streaming.ReadKafkaStream`); otherwise up to the planned end.

    Args:
        name: the source name (counters, DLQ rows).
        spec: the :class:`KafkaSource`.
        plan: per partition ``{partition, start, end}`` from :func:`plan_offsets`.
        batch_rows: rows per batch when the spec does not say.

    Example:
        >>> spec = KafkaSource(type="kafka", bootstrap_servers="localhost:9092", topic="t", group_id="g")
        >>> p | ReadFromKafka("orders", spec, plan_offsets(spec))  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: KafkaSource, plan: list[dict[str, int]], batch_rows: int = 10_000):
        super().__init__()
        self._name, self._spec, self._plan = name, spec, plan
        self._batch_rows = spec.batch_rows or batch_rows

    def expand(self, pbegin) -> StepOutputs:
        if self._spec.is_streaming(pbegin.pipeline):
            from beam_etl.io.kafka_streaming import ReadKafkaStream

            return pbegin | "stream" >> ReadKafkaStream(self._name, self._spec, self._plan, self._batch_rows)
        results = (
            pbegin
            | "partitions" >> beam.Create(self._plan)
            | "spread" >> beam.Reshuffle()
            | "read" >> beam.ParDo(_ReadPartitionFn(self._name, self._spec, self._batch_rows)).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_source("kafka", KafkaSource)
def build_kafka_source(spec: KafkaSource, root, ctx: BuildContext) -> StepOutputs:
    plan = plan_offsets(spec)
    if ctx.lifecycle is not None and not spec.is_streaming(root):
        # Streaming commits as the runner finalizes bundles (kafka_streaming); bounded after the run.
        ctx.lifecycle.on_success(lambda: commit_offsets(spec, plan))
    return root | ctx.label() >> ReadFromKafka(ctx.name, spec, plan, ctx.batch_rows)


# --------------------------------------------------------------------------- sink


class _WriteKafkaFn(beam.DoFn):
    def __init__(self, name: str, spec: KafkaSink):
        self._name, self._spec = name, spec

    def setup(self) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=self._spec.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **self._spec.producer_config,
        )
        self._encode = value_encoder(self._spec)
        self._counters = StepCounters("sink", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.close(timeout=10)

    def process(self, batch: pa.RecordBatch):
        from beam_etl.batch import to_json_value

        self._counters.rows_in.inc(batch.num_rows)
        rows = batch.to_pylist()  # messages are per row by nature (DESIGN §3: edges)
        futures = []
        for row in rows:
            key = row.get(self._spec.key) if self._spec.key else None
            payload = self._encode(row if self._spec.format == "avro" else to_json_value(row))
            futures.append(self._producer.send(self._spec.topic, value=payload, key=None if key is None else str(key).encode()))
        self._producer.flush()
        failed, reasons = [], []
        for index, future in enumerate(futures):
            exc = future.exception if future.failed() else None
            if exc is not None or not future.is_done:
                failed.append(index)
                reasons.append(f"delivery failed: {exc or 'not acknowledged'}")
        self._counters.rows_out.inc(len(rows) - len(failed))
        if failed:
            self._counters.rows_dlq.inc(len(failed))
            yield beam.pvalue.TaggedOutput(
                "dlq", dlq_batch(batch.take(pa.array(failed)), step=self._name, error_type="kafka.write", error_message=reasons, source=f"kafka://{self._spec.topic}")
            )


class WriteToKafka(beam.PTransform):
    """Produce each row as a message; undelivered rows on the ``dlq`` output.

    Example:
        >>> batches | WriteToKafka("out", KafkaSink(type="kafka", input="x", bootstrap_servers="localhost:9092",
        ...                                           topic="clean", key="id"))  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: KafkaSink):
        super().__init__()
        self._name, self._spec = name, spec

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "produce" >> beam.ParDo(_WriteKafkaFn(self._name, self._spec)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_sink("kafka", KafkaSink)
def build_kafka_sink(spec: KafkaSink, pcoll, ctx: BuildContext) -> StepOutputs:
    return pcoll | ctx.label() >> WriteToKafka(ctx.name, spec)
