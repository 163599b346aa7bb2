"""``websocket`` and ``sse`` sources: JSON messages from a WebSocket or Server-Sent Events.

Both reconnect with exponential backoff and jitter when the connection drops (after
``reconnect.max_attempts`` failed attempts in a row the source fails clearly); SSE resumes
with ``Last-Event-ID`` so a reconnect continues where the stream stopped.

Modes:

- bounded (``max_messages`` and/or ``max_seconds`` set): read until either is reached, then
  stop — for batch pipelines and tests;
- streaming (neither set; run with ``--streaming``): a ``PeriodicImpulse`` fires every
  ``batch_seconds``; each firing drains what arrived on a connection kept open by the
  worker, so rows flow as micro-batches for as long as the pipeline runs.

Delivery: at-most-once across a worker crash (a WebSocket has no acknowledgement to
replay from); SSE with server-side event ids resumes from the last id seen by the worker.

Example spec::

    sources:
      ticks:
        type: websocket
        url: wss://feed.example.com/ticks
        subscribe: {op: subscribe, channel: trades}
        max_seconds: 30
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.errors import SourceError
from beam_etl.io.microbatch import MicroBatcher
from beam_etl.io.resilience import RetrySpec
from beam_etl.models import SourceModel, schema_from_spec
from beam_etl.registry import register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["WebSocketSource", "SseSource", "ReadFromWebSocket", "ReadFromSse"]


class _StreamModel(SourceModel):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    records_path: str | None = None
    max_messages: int | None = Field(default=None, gt=0)
    max_seconds: float | None = Field(default=None, gt=0)
    batch_seconds: float = Field(default=1.0, gt=0)
    reconnect: RetrySpec = Field(default_factory=lambda: RetrySpec(max_attempts=10, initial_backoff=0.2, max_backoff=10))

    @property
    def bounded(self) -> bool:
        return self.max_messages is not None or self.max_seconds is not None


class WebSocketSource(_StreamModel):
    type: Literal["websocket"]
    subscribe: dict[str, Any] | list[Any] | str | None = Field(default=None, description="sent after every (re)connect")


class SseSource(_StreamModel):
    type: Literal["sse"]
    events: list[str] | None = Field(default=None, description="only these event types (default: all)")


class _Backoff:
    """Consecutive-failure counter with exponential backoff and full jitter."""

    def __init__(self, spec: RetrySpec, what: str):
        self.spec = spec
        self.what = what
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        import random

        self.failures += 1
        if self.failures >= self.spec.max_attempts:
            raise SourceError(f"{self.what}: {self.failures} connection attempts failed in a row (last: {exc}); check the server")
        time.sleep(random.uniform(0, min(self.spec.max_backoff, self.spec.initial_backoff * 2 ** (self.failures - 1))))

    def ok(self) -> None:
        self.failures = 0


# --------------------------------------------------------------------------- readers
# A reader keeps one connection and hands out messages until a deadline; it reconnects
# on its own. They are plain classes so both modes (and tests) use the same code.


class _WebSocketReader:
    def __init__(self, spec: WebSocketSource, name: str):
        self.spec = spec
        self.backoff = _Backoff(spec.reconnect, f"source '{name}' ({spec.url})")
        self.connection = None
        self.reconnects = 0

    def _connect(self) -> None:
        from websockets.sync.client import connect

        self.connection = connect(self.spec.url, additional_headers=self.spec.headers or None, open_timeout=10)
        if self.spec.subscribe is not None:
            payload = self.spec.subscribe
            self.connection.send(payload if isinstance(payload, str) else json.dumps(payload))
        self.backoff.ok()

    def messages(self, deadline: float) -> Iterator[str | bytes]:
        from websockets.exceptions import ConnectionClosed

        while time.monotonic() < deadline:
            if self.connection is None:
                try:
                    self._connect()
                except (OSError, TimeoutError, ConnectionClosed) as exc:
                    self.backoff.failed(exc)
                    continue
                except Exception as exc:  # websockets raises InvalidStatus/InvalidURI etc.
                    self.backoff.failed(exc)
                    continue
            try:
                yield self.connection.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return
            except ConnectionClosed as exc:
                self.close()
                self.reconnects += 1
                self.backoff.failed(exc)

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                pass
            self.connection = None


class _SseReader:
    def __init__(self, spec: SseSource, name: str):
        import httpx

        self.spec = spec
        self.backoff = _Backoff(spec.reconnect, f"source '{name}' ({spec.url})")
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self.last_event_id: str | None = None
        self.reconnects = 0
        self._events = None
        self._context = None

    def _open(self, deadline: float) -> None:
        from httpx_sse import connect_sse

        headers = dict(self.spec.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        self._context = connect_sse(self.client, "GET", self.spec.url, headers=headers)
        source = self._context.__enter__()
        source.response.raise_for_status()
        self._events = source.iter_sse()
        self.backoff.ok()

    def messages(self, deadline: float) -> Iterator[str]:
        import httpx

        while time.monotonic() < deadline:
            try:
                if self._events is None:
                    self._open(deadline)
                event = next(self._events)
            except StopIteration as exc:  # the server ended the stream: reconnect and resume
                self.close()
                self.reconnects += 1
                self.backoff.failed(RuntimeError("stream ended"))
                continue
            except (httpx.HTTPError, OSError) as exc:
                self.close()
                self.reconnects += 1
                self.backoff.failed(exc)
                continue
            if event.id:
                self.last_event_id = event.id
            if self.spec.events and event.event not in self.spec.events:
                continue
            if event.data:
                yield event.data

    def close(self) -> None:
        if self._context is not None:
            try:
                self._context.__exit__(None, None, None)
            except Exception:
                pass
        self._context = None
        self._events = None


_READERS = {"websocket": _WebSocketReader, "sse": _SseReader}


class _ReadStreamFn(beam.DoFn):
    """Bounded: one call reads until the limits. Streaming: each impulse drains ``batch_seconds``."""

    def __init__(self, name: str, spec: _StreamModel, batch_rows: int):
        self._name = name
        self._spec = spec
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._reader = _READERS[self._spec.type](self._spec, self._name)
        self._counters = StepCounters("source", self._name)
        self._batcher = MicroBatcher(
            max_rows=self._batch_rows,
            max_seconds=self._spec.batch_seconds,
            schema=schema_from_spec(self._spec.schema_),
            records_path=self._spec.records_path,
            step=self._name,
        )
        self._seen = 0

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

    def process(self, _tick: Any):
        spec = self._spec
        if spec.bounded:
            deadline = time.monotonic() + (spec.max_seconds or float("inf"))
        else:
            deadline = time.monotonic() + spec.batch_seconds
        for message in self._reader.messages(deadline):
            self._seen += 1
            yield from self._emit(self._batcher.add_text(message, source=spec.url))
            if spec.max_messages is not None and self._seen >= spec.max_messages:
                break
        yield from self._emit(self._batcher.flush())
        if spec.bounded:
            self._reader.close()

    def _emit(self, batches: Iterator[pa.RecordBatch]):
        for batch in batches:
            self._counters.rows_out.inc(batch.num_rows)
            yield batch
        for dead in self._batcher.take_dead():
            self._counters.rows_dlq.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput("dlq", dead)


class _ReadStream(beam.PTransform):
    def __init__(self, name: str, spec: _StreamModel, batch_rows: int = 10_000):
        super().__init__()
        self._name, self._spec, self._batch_rows = name, spec, spec.batch_rows or batch_rows

    def expand(self, pbegin) -> StepOutputs:
        if self._spec.bounded:
            ticks = pbegin | "start" >> beam.Create([None])
        else:
            from apache_beam.transforms.periodicsequence import PeriodicImpulse

            ticks = pbegin | "ticks" >> PeriodicImpulse(fire_interval=self._spec.batch_seconds, apply_windowing=False)
        results = ticks | "read" >> beam.ParDo(_ReadStreamFn(self._name, self._spec, self._batch_rows)).with_outputs("dlq", main="main")
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


class ReadFromWebSocket(_ReadStream):
    """JSON messages from a WebSocket as RecordBatches (see the module docstring for modes).

    Example:
        >>> p | ReadFromWebSocket("ticks", WebSocketSource(type="websocket", url="ws://localhost:8765",
        ...                                                  max_messages=100))  # doctest: +SKIP
    """


class ReadFromSse(_ReadStream):
    """Server-Sent Events ``data:`` payloads (JSON) as RecordBatches, resuming by Last-Event-ID.

    Example:
        >>> p | ReadFromSse("events", SseSource(type="sse", url="http://localhost:8000/events",
        ...                                       max_seconds=10))  # doctest: +SKIP
    """


@register_source("websocket", WebSocketSource)
def build_websocket(spec: WebSocketSource, root, ctx: BuildContext) -> StepOutputs:
    return root | ctx.label() >> ReadFromWebSocket(ctx.name, spec, ctx.batch_rows)


@register_source("sse", SseSource)
def build_sse(spec: SseSource, root, ctx: BuildContext) -> StepOutputs:
    return root | ctx.label() >> ReadFromSse(ctx.name, spec, ctx.batch_rows)
