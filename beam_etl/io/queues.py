"""Bounded drains of message queues (RabbitMQ, SQS): messages are acknowledged only after
every sink committed.

A queue message can only be acknowledged on the connection (RabbitMQ channel) or with the
receipt (SQS) it was received with, and a Beam worker's bundle ends long before the sinks
commit. So for a bounded drain the *driver* receives the messages without acknowledging
them, stages the decoded rows as Arrow IPC files in the run's scratch directory (any Beam
filesystem), and the pipeline reads those files in parallel. When the run has finished the
driver acknowledges everything it staged (success) or returns it to the queue (failure) —
at-least-once, with the queue holding the messages until then.

One helper serves both connectors: :class:`StagedDrain` (decode, stage, DLQ the
undecodable) and :class:`ReadStaged` (the pipeline side).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import apache_beam as beam
import pyarrow as pa

from beam_etl.dlq import dlq_batch
from beam_etl.io.messages import DecodeError
from beam_etl.io.microbatch import MicroBatcher
from beam_etl.steps import StepCounters, StepOutputs

__all__ = ["StagedDrain", "ReadStaged"]


class StagedDrain:
    """Decode messages into rows and write them as Arrow IPC files under ``directory``.

    Args:
        name: the source name (DLQ rows carry it).
        directory: where to stage (the run's scratch directory; any Beam filesystem).
        decode: payload -> list of row dicts (raises DecodeError when invalid).
        schema: declared Arrow schema, if any.
        batch_rows: rows per staged file.
    """

    def __init__(self, name: str, directory: str, decode: Callable[[Any], list[dict]], schema: pa.Schema | None, batch_rows: int):
        from apache_beam.io.filesystems import FileSystems

        self.name = name
        self.directory = FileSystems.join(directory, "staged", name)
        self._decode = decode
        self._batcher = MicroBatcher(max_rows=batch_rows, max_seconds=float("inf"), schema=schema, step=name)
        self.paths: list[str] = []
        self.messages = 0

    def add(self, payload: Any, source: str, metadata: dict[str, Any] | None = None) -> bool:
        """Stage one message; False when it could not be decoded (it is in the DLQ stage)."""
        self.messages += 1
        try:
            rows = self._decode(payload)
        except DecodeError as exc:
            raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
            self._batcher.dead.append(dlq_batch(None, step=self.name, error_type="queue.decode", error_message=str(exc), source=source, records=[raw]))
            return False
        for row in rows:
            self._batcher.add_record({**row, **(metadata or {})})
        for batch in self._batcher.due():
            self._write(batch, "rows")
        return True

    def close(self) -> None:
        for batch in self._batcher.flush():
            self._write(batch, "rows")
        for dead in self._batcher.take_dead():
            self._write(dead, "dlq")

    def _write(self, batch: pa.RecordBatch, kind: str) -> None:
        import os

        from apache_beam.io.filesystems import FileSystems

        if "://" not in self.directory:
            os.makedirs(self.directory, exist_ok=True)
        path = FileSystems.join(self.directory, f"{kind}-{uuid.uuid4().hex}.arrow")
        with FileSystems.create(path) as handle:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            handle.write(sink.getvalue().to_pybytes())
        self.paths.append(path)


class _ReadStagedFn(beam.DoFn):
    def __init__(self, name: str):
        self._name = name

    def setup(self) -> None:
        self._counters = StepCounters("source", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            reader = pa.ipc.open_stream(pa.py_buffer(handle.read()))
            for batch in reader:
                if path.rsplit("/", 1)[-1].startswith("dlq-"):
                    self._counters.rows_dlq.inc(batch.num_rows)
                    yield beam.pvalue.TaggedOutput("dlq", batch)
                else:
                    self._counters.rows_out.inc(batch.num_rows)
                    yield batch


class ReadStaged(beam.PTransform):
    """Read the staged files of a :class:`StagedDrain` (rows and DLQ rows), in parallel."""

    def __init__(self, name: str, paths: list[str]):
        super().__init__()
        self._name, self._paths = name, list(paths)

    def expand(self, pbegin) -> StepOutputs:
        results = (
            pbegin
            | "staged" >> beam.Create(self._paths)
            | "spread" >> beam.Reshuffle()
            | "read" >> beam.ParDo(_ReadStagedFn(self._name)).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)
