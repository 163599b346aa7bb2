"""Amazon SQS source and sink (boto3).

Source (bounded drain): receives with long polling until the queue is empty (or
``max_messages``), stages the rows (:mod:`beam_etl.io.queues`), and deletes the messages
only after every sink committed. While the run is in flight a heartbeat thread extends
the visibility timeout of every staged message, so none reappears mid-run; a failed run
makes them visible again at once. Undecodable messages go to our DLQ and are deleted
(their text is kept there). Delivery: at-least-once.

Sink: ``SendMessageBatch`` in groups of 10; entries SQS reports as failed go to the DLQ.

Tests run against moto in server mode on loopback: no real SQS is reachable from CI.

Example spec::

    sources:
      orders: {type: sqs, queue_url: "${env:ORDERS_QUEUE}", region: eu-west-1}
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SourceError
from beam_etl.io.messages import MessageFormat, value_decoder, value_encoder
from beam_etl.io.queues import ReadStaged, StagedDrain
from beam_etl.models import SinkModel, SourceModel, schema_from_spec
from beam_etl.registry import register_sink, register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["SqsSource", "SqsSink", "WriteToSqs"]


class _SqsOptions(MessageFormat):
    queue_url: str
    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="e.g. a local emulator")
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None


class SqsSource(SourceModel, _SqsOptions):
    type: Literal["sqs"]
    max_messages: int | None = Field(default=None, gt=0)
    wait_seconds: int = Field(default=2, ge=0, le=20, description="long-poll wait per receive")
    visibility_timeout: int = Field(default=60, ge=5, le=43200)


class SqsSink(SinkModel, _SqsOptions):
    type: Literal["sqs"]


def _client(spec: _SqsOptions):
    import boto3

    return boto3.client(
        "sqs",
        region_name=spec.region,
        endpoint_url=spec.endpoint_url,
        aws_access_key_id=spec.aws_access_key_id,
        aws_secret_access_key=spec.aws_secret_access_key,
    )


def _chunks(items: list, size: int = 10):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Heartbeat(threading.Thread):
    """Keep staged messages invisible while the run is in flight."""

    def __init__(self, client, queue_url: str, receipts: list[str], timeout: int):
        super().__init__(daemon=True)
        self._client, self._queue, self._receipts, self._timeout = client, queue_url, receipts, timeout
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self._timeout / 2):
            for chunk in _chunks(self._receipts):
                entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": self._timeout} for i, r in enumerate(chunk)]
                try:
                    self._client.change_message_visibility_batch(QueueUrl=self._queue, Entries=entries)
                except Exception:  # best effort: a miss only risks a redelivery (at-least-once)
                    pass


@register_source("sqs", SqsSource)
def build_sqs_source(spec: SqsSource, root, ctx: BuildContext) -> StepOutputs:
    client = _client(spec)
    scratch = ctx.lifecycle.scratch_dir if ctx.lifecycle is not None else ctx.resolve_output("_beam_etl_scratch")
    stage = StagedDrain(ctx.name, scratch, value_decoder(spec), schema_from_spec(spec.schema_), spec.batch_rows or ctx.batch_rows)
    receipts: list[str] = []
    try:
        while spec.max_messages is None or len(receipts) < spec.max_messages:
            want = 10 if spec.max_messages is None else min(10, spec.max_messages - len(receipts))
            response = client.receive_message(
                QueueUrl=spec.queue_url, MaxNumberOfMessages=want, WaitTimeSeconds=spec.wait_seconds,
                VisibilityTimeout=spec.visibility_timeout, MessageSystemAttributeNames=["SentTimestamp"],
            )
            messages = response.get("Messages", [])
            if not messages:
                break  # the queue is drained
            for message in messages:
                stage.add(message["Body"], source=spec.queue_url, metadata={"_message_id": message["MessageId"]})
                receipts.append(message["ReceiptHandle"])
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"source '{ctx.name}': cannot receive from {spec.queue_url}: {exc}") from None
    stage.close()
    heartbeat = _Heartbeat(client, spec.queue_url, receipts, spec.visibility_timeout)
    heartbeat.start()

    def delete() -> None:
        heartbeat.stopped.set()
        for chunk in _chunks(receipts):
            client.delete_message_batch(QueueUrl=spec.queue_url, Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)])

    def release() -> None:
        heartbeat.stopped.set()
        for chunk in _chunks(receipts):
            client.change_message_visibility_batch(QueueUrl=spec.queue_url, Entries=[{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0} for i, r in enumerate(chunk)])

    if ctx.lifecycle is not None:
        ctx.lifecycle.on_success(delete)
        ctx.lifecycle.on_failure(release)
    return root | ctx.label() >> ReadStaged(ctx.name, stage.paths)


class _SendFn(beam.DoFn):
    def __init__(self, name: str, spec: SqsSink):
        self._name, self._spec = name, spec

    def setup(self) -> None:
        self._client = _client(self._spec)
        self._encode = value_encoder(self._spec)
        self._counters = StepCounters("sink", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch):
        from beam_etl.batch import to_json_value

        self._counters.rows_in.inc(batch.num_rows)
        rows = batch.to_pylist()
        failed: dict[int, str] = {}
        for start in range(0, len(rows), 10):
            entries = [
                {"Id": str(start + i), "MessageBody": self._encode(to_json_value(row)).decode()}
                for i, row in enumerate(rows[start : start + 10])
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self._spec.queue_url, Entries=entries)
            except Exception as exc:
                failed.update({int(e["Id"]): f"send failed: {exc}" for e in entries})
                continue
            for failure in response.get("Failed", []):
                failed[int(failure["Id"])] = f"{failure.get('Code')}: {failure.get('Message')}"
        self._counters.rows_out.inc(len(rows) - len(failed))
        if failed:
            order = sorted(failed)
            self._counters.rows_dlq.inc(len(order))
            yield beam.pvalue.TaggedOutput(
                "dlq", dlq_batch(batch.take(pa.array(order)), step=self._name, error_type="sqs.send", error_message=[failed[i] for i in order], source=self._spec.queue_url)
            )


class WriteToSqs(beam.PTransform):
    """Send rows as JSON messages with SendMessageBatch; failed entries on ``dlq``.

    Example:
        >>> batches | WriteToSqs("out", SqsSink(type="sqs", input="x", queue_url=URL))  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: SqsSink):
        super().__init__()
        self._name, self._spec = name, spec

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "send" >> beam.ParDo(_SendFn(self._name, self._spec)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_sink("sqs", SqsSink)
def build_sqs_sink(spec: SqsSink, pcoll, ctx: BuildContext) -> StepOutputs:
    return pcoll | ctx.label() >> WriteToSqs(ctx.name, spec)
