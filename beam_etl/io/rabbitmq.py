"""RabbitMQ source and sink (pika).

Source (bounded drain): the messages in ``queue`` when the run starts (up to
``max_messages``) are received without acknowledgement, staged, processed, and acked only
after every sink committed (:mod:`beam_etl.io.queues`). A failed run returns them to the
queue (nack + requeue). A message that cannot be decoded is nacked without requeue, so it
goes to the queue's dead-letter exchange when one is configured, and it is also written to
our DLQ with its text. Delivery: at-least-once.

Sink: publishes each row as a JSON (or Avro) message with publisher confirms; a message the
broker does not confirm (or returns as unroutable) goes to the DLQ.

Example spec::

    sources:
      jobs: {type: rabbitmq, url: "${env:AMQP_URL}", queue: jobs}
    sinks:
      done: {type: rabbitmq, input: valid, url: "${env:AMQP_URL}", exchange: "", routing_key: done}
"""

from __future__ import annotations

from typing import Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SourceError
from beam_etl.io.messages import MessageFormat, value_decoder, value_encoder
from beam_etl.io.queues import ReadStaged, StagedDrain
from beam_etl.io.sql import redact_url
from beam_etl.models import SinkModel, SourceModel, schema_from_spec
from beam_etl.registry import register_sink, register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["RabbitMqSource", "RabbitMqSink", "WriteToRabbitMq", "drain_queue"]


class RabbitMqSource(SourceModel, MessageFormat):
    type: Literal["rabbitmq"]
    url: str
    queue: str
    max_messages: int | None = Field(default=None, gt=0)
    prefetch: int = Field(default=1000, ge=1)


class RabbitMqSink(SinkModel, MessageFormat):
    type: Literal["rabbitmq"]
    url: str
    exchange: str = ""
    routing_key: str
    persistent: bool = True


def _connect(url: str, what: str):
    import pika

    parameters = pika.URLParameters(url)
    # The driver holds the channel for the whole run without serving it: no heartbeats,
    # or the broker would drop it (and requeue the staged messages) during a long run.
    parameters.heartbeat = 0
    try:
        return pika.BlockingConnection(parameters)
    except Exception as exc:
        raise SourceError(f"{what}: cannot connect to {redact_url(url)}: {type(exc).__name__} {exc}".strip()) from None


def drain_queue(spec: RabbitMqSource, name: str, stage: StagedDrain):
    """Receive (without ack) what is in the queue now; return (connection, channel, last tag)."""
    connection = _connect(spec.url, f"source '{name}'")
    channel = connection.channel()
    channel.basic_qos(prefetch_count=spec.prefetch)
    try:
        depth = channel.queue_declare(queue=spec.queue, passive=True).method.message_count
    except Exception as exc:
        connection.close()
        raise SourceError(f"source '{name}': queue '{spec.queue}' does not exist ({exc})") from None
    limit = min(depth, spec.max_messages) if spec.max_messages else depth
    last_tag = None
    for _ in range(limit):  # only what was there at the start: a bounded drain
        method, properties, body = channel.basic_get(queue=spec.queue, auto_ack=False)
        if method is None:
            break
        ok = stage.add(body, source=f"amqp://{spec.queue}", metadata={"_routing_key": method.routing_key, "_redelivered": bool(method.redelivered)})
        if not ok:
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=False)  # to the DLX
        last_tag = method.delivery_tag
    stage.close()
    return connection, channel, last_tag


@register_source("rabbitmq", RabbitMqSource)
def build_rabbitmq_source(spec: RabbitMqSource, root, ctx: BuildContext) -> StepOutputs:
    scratch = ctx.lifecycle.scratch_dir if ctx.lifecycle is not None else ctx.resolve_output("_beam_etl_scratch")
    stage = StagedDrain(ctx.name, scratch, value_decoder(spec), schema_from_spec(spec.schema_), spec.batch_rows or ctx.batch_rows)
    connection, channel, last_tag = drain_queue(spec, ctx.name, stage)

    def finish(ack: bool):
        def hook() -> None:
            if last_tag is None:
                if connection.is_open:
                    connection.close()
                return
            if not connection.is_open:
                raise SourceError(
                    f"source '{ctx.name}': the connection to RabbitMQ was lost before the run's "
                    f"{stage.messages} message(s) could be {'acknowledged' if ack else 'requeued'}; "
                    "the broker redelivers them (marked _redelivered) on the next run"
                )
            try:
                if ack:
                    channel.basic_ack(delivery_tag=last_tag, multiple=True)
                else:
                    channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
            except Exception as exc:
                raise SourceError(f"source '{ctx.name}': acknowledging {stage.messages} message(s) failed ({exc}); they will be redelivered") from None
            finally:
                if connection.is_open:
                    connection.close()

        return hook

    if ctx.lifecycle is not None:
        ctx.lifecycle.on_success(finish(True))
        ctx.lifecycle.on_failure(finish(False))
    return root | ctx.label() >> ReadStaged(ctx.name, stage.paths)


# --------------------------------------------------------------------------- sink


class _PublishFn(beam.DoFn):
    def __init__(self, name: str, spec: RabbitMqSink):
        self._name, self._spec = name, spec

    def setup(self) -> None:
        self._connection = _connect(self._spec.url, f"sink '{self._name}'")
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        self._encode = value_encoder(self._spec)
        self._counters = StepCounters("sink", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        connection = getattr(self, "_connection", None)
        if connection is not None and connection.is_open:
            connection.close()

    def process(self, batch: pa.RecordBatch):
        import pika

        from beam_etl.batch import to_json_value

        self._counters.rows_in.inc(batch.num_rows)
        properties = pika.BasicProperties(delivery_mode=2 if self._spec.persistent else 1)
        failed, reasons = [], []
        for index, row in enumerate(batch.to_pylist()):  # one message per row by nature
            payload = self._encode(row if self._spec.format == "avro" else to_json_value(row))
            try:
                self._channel.basic_publish(self._spec.exchange, self._spec.routing_key, payload, properties, mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                failed.append(index)
                reasons.append(f"not confirmed by the broker: {type(exc).__name__}")
        self._counters.rows_out.inc(batch.num_rows - len(failed))
        if failed:
            self._counters.rows_dlq.inc(len(failed))
            yield beam.pvalue.TaggedOutput(
                "dlq", dlq_batch(batch.take(pa.array(failed)), step=self._name, error_type="rabbitmq.publish", error_message=reasons, source=f"amqp://{self._spec.exchange}/{self._spec.routing_key}")
            )


class WriteToRabbitMq(beam.PTransform):
    """Publish rows with publisher confirms; unconfirmed rows on the ``dlq`` output.

    Example:
        >>> batches | WriteToRabbitMq("done", RabbitMqSink(type="rabbitmq", input="x", url=URL, routing_key="done"))  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: RabbitMqSink):
        super().__init__()
        self._name, self._spec = name, spec

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "publish" >> beam.ParDo(_PublishFn(self._name, self._spec)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_sink("rabbitmq", RabbitMqSink)
def build_rabbitmq_sink(spec: RabbitMqSink, pcoll, ctx: BuildContext) -> StepOutputs:
    return pcoll | ctx.label() >> WriteToRabbitMq(ctx.name, spec)
